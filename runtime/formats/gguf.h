// GGUF v3 (llama.cpp's model file format): a memory-mapped reader and a
// streaming writer.
//
// Layout (little-endian): "GGUF" magic, u32 version, u64 tensor count, u64
// metadata count; metadata key/value pairs (u64-length strings, u32 value
// type, arrays as u32 element type + u64 count + elements); tensor infos (name,
// u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset into
// the data section); zero padding to `general.alignment` (default 32); the
// tensor data, each tensor starting on an aligned offset.
//
// The reader validates every count, length and offset against the file size
// and reports bad files as InvalidArgument / DataLoss statuses naming the file
// and the key or tensor; it never reads outside the mapping. Tensor data is
// never copied: TensorView() borrows it, keeping the mapping alive.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/dtype.h"
#include "base/mapped_file.h"
#include "base/tensor.h"

namespace tessera {

// Metadata value types (gguf_type).
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "uint32", "string", "array"...
std::string_view GgufTypeName(GgufType type);

// Tensor element types (ggml_type). Only the ones tessera names explicitly are
// listed; the reader knows the block sizes of every ggml type so it can
// validate files holding others, but TensorView() maps only F32, F16, BF16,
// Q8_0, I8, I32 and I64 to a DType.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

// "F32", "Q8_0"... or "type#N" for an unknown id.
std::string GgmlTypeName(GgmlType type);
// Elements per block and bytes per block of `type`; NotFound-free: returns
// false for an unknown type id.
bool GgmlTypeBlock(GgmlType type, int64_t* block_elems, int64_t* block_bytes);
// The ggml type storing `dtype` (InvalidArgument for dtypes GGUF lacks).
absl::StatusOr<GgmlType> GgmlTypeFromDType(DType dtype);
// The DType of a ggml type (InvalidArgument for types tessera cannot compute
// with).
absl::StatusOr<DType> DTypeFromGgmlType(GgmlType type);

// One metadata value: a scalar, a string, or an array (possibly of arrays).
// Integers are kept as int64 (uint64 values above INT64_MAX keep their bit
// pattern; the original type is remembered so writing reproduces it).
class GgufValue {
 public:
  GgufValue() = default;

  static GgufValue Uint8(uint8_t v) { return Int(GgufType::kUint8, v); }
  static GgufValue Int8(int8_t v) { return Int(GgufType::kInt8, v); }
  static GgufValue Uint16(uint16_t v) { return Int(GgufType::kUint16, v); }
  static GgufValue Int16(int16_t v) { return Int(GgufType::kInt16, v); }
  static GgufValue Uint32(uint32_t v) { return Int(GgufType::kUint32, v); }
  static GgufValue Int32(int32_t v) { return Int(GgufType::kInt32, v); }
  static GgufValue Uint64(uint64_t v) {
    return Int(GgufType::kUint64, static_cast<int64_t>(v));
  }
  static GgufValue Int64(int64_t v) { return Int(GgufType::kInt64, v); }
  static GgufValue Float32(float v);
  static GgufValue Float64(double v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue StringArray(std::vector<std::string> v);
  static GgufValue Int32Array(absl::Span<const int32_t> v);
  static GgufValue Float32Array(absl::Span<const float> v);
  // An array of integers stored as `element_type` (an integer type).
  static GgufValue IntArray(GgufType element_type, absl::Span<const int64_t> v);
  // An array of arrays (or of any values of one type).
  static GgufValue ValueArray(GgufType element_type, std::vector<GgufValue> v);

  GgufType type() const { return type_; }
  bool is_array() const { return type_ == GgufType::kArray; }
  // Element type and length of an array (kUint8 / 0 for non-arrays).
  GgufType array_type() const { return array_type_; }
  size_t array_size() const;

  // Scalar accessors: InvalidArgument when the value has another kind. AsInt
  // accepts any integer type and bool; AsFloat accepts floats and integers.
  absl::StatusOr<int64_t> AsInt() const;
  absl::StatusOr<double> AsFloat() const;
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<std::string> AsString() const;
  // Array accessors: InvalidArgument when the value is not an array of that
  // kind (integer arrays convert between integer types when the values fit).
  absl::StatusOr<std::vector<std::string>> AsStringArray() const;
  absl::StatusOr<std::vector<int32_t>> AsInt32Array() const;
  absl::StatusOr<std::vector<int64_t>> AsInt64Array() const;
  absl::StatusOr<std::vector<float>> AsFloat32Array() const;

  // Borrowing accessors (no copy) for the common big arrays.
  const std::vector<std::string>& strings() const { return strings_; }
  const std::vector<int64_t>& ints() const { return ints_; }
  const std::vector<double>& floats() const { return floats_; }
  const std::vector<GgufValue>& values() const { return values_; }

  // The raw integer (bit pattern for uint64) and float payloads of a scalar.
  int64_t raw_int() const { return i_; }
  double raw_float() const { return f_; }

  // Short human-readable form ("uint32 5", "array<string>[32000]").
  std::string DebugString() const;

 private:
  friend struct GgufValueAccess;  // The parser fills values in place.
  static GgufValue Int(GgufType t, int64_t v) {
    GgufValue x;
    x.type_ = t;
    x.i_ = v;
    return x;
  }

  GgufType type_ = GgufType::kUint8;
  GgufType array_type_ = GgufType::kUint8;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  // Arrays: exactly one of these holds the elements, by element type.
  std::vector<std::string> strings_;
  std::vector<int64_t> ints_;  // Integer and bool elements.
  std::vector<double> floats_;
  std::vector<GgufValue> values_;  // Arrays of arrays.
};

// One tensor as described by the file.
struct GgufTensorInfo {
  std::string name;
  // ggml order: ne[0] is the innermost (contiguous) dimension.
  std::vector<int64_t> ne;
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // From the start of the data section.
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // Inside the mapping.

  // Row-major shape (ne reversed), as tessera's Tensor uses.
  Shape RowMajorShape() const;
};

// A parsed GGUF file. Cheap to share; tensor views keep the mapping alive.
class GgufFile {
 public:
  // Maps and parses `path`. NotFound if missing; InvalidArgument / DataLoss
  // naming the file and the offending key or tensor if malformed.
  static absl::StatusOr<std::shared_ptr<GgufFile>> Open(
      const std::string& path);
  // Parses bytes already in memory (fuzzing, tests). `keep_alive` owns them;
  // `name` is used in messages.
  static absl::StatusOr<std::shared_ptr<GgufFile>> Parse(
      absl::Span<const uint8_t> bytes, std::string name,
      std::shared_ptr<const void> keep_alive);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Start of the tensor data section (file offset).
  uint64_t data_offset() const { return data_offset_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const {
    return metadata_;
  }
  // The value of `key`, or null.
  const GgufValue* Find(std::string_view key) const;
  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  // Typed lookups: NotFound naming the key and file when absent,
  // InvalidArgument when the value has the wrong type.
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(
      std::string_view key) const;
  absl::StatusOr<std::vector<int32_t>> GetInt32Array(
      std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloat32Array(
      std::string_view key) const;
  // Lookups with a default for optional keys (a present key of the wrong type
  // is still an error).
  absl::StatusOr<int64_t> GetIntOr(std::string_view key, int64_t dflt) const;
  absl::StatusOr<double> GetFloatOr(std::string_view key, double dflt) const;
  absl::StatusOr<bool> GetBoolOr(std::string_view key, bool dflt) const;
  absl::StatusOr<std::string> GetStringOr(std::string_view key,
                                          std::string dflt) const;

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // The tensor named `name`, or null.
  const GgufTensorInfo* FindTensor(std::string_view name) const;
  // A zero-copy view of tensor `name` with its row-major shape. NotFound if
  // absent; InvalidArgument if its type has no DType.
  absl::StatusOr<Tensor> TensorView(std::string_view name) const;
  // Same for an info from tensors().
  absl::StatusOr<Tensor> TensorView(const GgufTensorInfo& info) const;

  // What keeps the bytes alive (the mapping).
  const std::shared_ptr<const void>& keep_alive() const { return keep_alive_; }

 private:
  GgufFile() = default;
  absl::Status ParseImpl(absl::Span<const uint8_t> bytes);

  std::string path_;
  std::shared_ptr<const void> keep_alive_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Writes a GGUF v3 file: metadata in insertion order, tensor infos in
// insertion order, each tensor's data at the next aligned offset. Tensor bytes
// are produced one tensor at a time while writing, so a large model never has
// to be in memory at once.
class GgufWriter {
 public:
  // Produces a tensor's bytes: a contiguous tensor of the declared dtype and
  // element count (its shape is not checked, only its byte size).
  using TensorSource = std::function<absl::StatusOr<Tensor>()>;

  // `alignment` must be a power of two; it is recorded as general.alignment
  // unless it is the default 32.
  explicit GgufWriter(uint64_t alignment = 32);

  // Adds (or replaces, keeping the position) a metadata key.
  void SetKv(std::string key, GgufValue value);
  // Declares a tensor with a row-major `shape` and ggml `type`; `source` is
  // called once during Write.
  absl::Status AddTensor(std::string name, GgmlType type, Shape shape,
                         TensorSource source);
  // Declares an existing tensor (its dtype must map to a ggml type).
  absl::Status AddTensor(std::string name, const Tensor& tensor);

  // Writes the file (replacing `path`).
  absl::Status Write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    GgmlType type;
    Shape shape;
    uint64_t nbytes;
    TensorSource source;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace tessera
