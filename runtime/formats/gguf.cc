#include "runtime/formats/gguf.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "base/status.h"
#include "fmt/format.h"
#include "runtime/formats/internal/file_sink.h"

namespace tessera {

// Lets the parser fill a GgufValue's fields in place.
struct GgufValueAccess {
  static GgufType& type(GgufValue& v) { return v.type_; }
  static GgufType& array_type(GgufValue& v) { return v.array_type_; }
  static int64_t& i(GgufValue& v) { return v.i_; }
  static double& f(GgufValue& v) { return v.f_; }
  static std::string& s(GgufValue& v) { return v.s_; }
  static std::vector<std::string>& strings(GgufValue& v) { return v.strings_; }
  static std::vector<int64_t>& ints(GgufValue& v) { return v.ints_; }
  static std::vector<double>& floats(GgufValue& v) { return v.floats_; }
  static std::vector<GgufValue>& values(GgufValue& v) { return v.values_; }
};

namespace {

using A = GgufValueAccess;

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian.
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS.
// Arrays nest at most this deep (llama.cpp allows one level; be generous).
constexpr int kMaxArrayDepth = 4;

struct TypeBlock {
  uint32_t id;
  const char* name;
  int64_t elems;
  int64_t bytes;
};

// Every ggml type with its block geometry (ggml.c's type_traits).
constexpr TypeBlock kGgmlTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},
    {2, "Q4_0", 32, 18},      {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},    {11, "Q3_K", 256, 110},
    {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},
    {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},   {23, "IQ4_XS", 256, 136},
    {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},
    {28, "F64", 1, 8},        {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},
};

const TypeBlock* FindGgmlType(uint32_t id) {
  for (const TypeBlock& t : kGgmlTypes) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

bool IsIntegerType(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsFloatType(GgufType t) {
  return t == GgufType::kFloat32 || t == GgufType::kFloat64;
}

// Size in bytes of a fixed-size scalar type; 0 for string/array/unknown.
uint64_t ScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

bool IsKnownType(uint32_t t) { return t <= 12; }

// Bounds-checked little-endian cursor over the file bytes.
class Cursor {
 public:
  Cursor(absl::Span<const uint8_t> bytes, const std::string& name)
      : bytes_(bytes), name_(name) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  absl::Status Truncated(std::string_view what) const {
    return absl::DataLossError(
        fmt::format("{}: truncated GGUF file: {} needs more than the {} "
                    "bytes left at offset {}",
                    name_, what, remaining(), pos_));
  }

  template <typename T>
  absl::Status Read(T* out, std::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what);
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status ReadString(std::string* out, std::string_view what) {
    uint64_t len = 0;
    RETURN_IF_ERROR(Read(&len, what));
    if (len > remaining()) {
      return absl::DataLossError(fmt::format(
          "{}: {}: string length {} exceeds the {} bytes left at offset {}",
          name_, what, len, remaining(), pos_));
    }
    out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_),
                static_cast<size_t>(len));
    pos_ += len;
    return absl::OkStatus();
  }

 private:
  absl::Span<const uint8_t> bytes_;
  const std::string& name_;
  uint64_t pos_ = 0;
};

absl::Status ReadValue(Cursor& c, GgufType type, int depth,
                       const std::string& file, const std::string& key,
                       GgufValue* out);

absl::Status ReadScalarInto(Cursor& c, GgufType type, int64_t* i, double* f,
                            std::string_view what) {
  switch (type) {
    case GgufType::kUint8: {
      uint8_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kInt8: {
      int8_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kBool: {
      uint8_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = v != 0;
      return absl::OkStatus();
    }
    case GgufType::kUint16: {
      uint16_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kInt16: {
      int16_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kUint32: {
      uint32_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kInt32: {
      int32_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kUint64: {
      uint64_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = static_cast<int64_t>(v);
      return absl::OkStatus();
    }
    case GgufType::kInt64: {
      int64_t v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kFloat32: {
      float v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *f = v;
      return absl::OkStatus();
    }
    case GgufType::kFloat64: {
      double v = 0;
      RETURN_IF_ERROR(c.Read(&v, what));
      *f = v;
      return absl::OkStatus();
    }
    default:
      return absl::InternalError("not a scalar type");
  }
}

absl::Status ReadValue(Cursor& c, GgufType type, int depth,
                       const std::string& file, const std::string& key,
                       GgufValue* out) {
  const std::string what = fmt::format("value of key '{}'", key);
  A::type(*out) = type;
  if (type == GgufType::kString) return c.ReadString(&A::s(*out), what);
  if (type != GgufType::kArray) {
    return ReadScalarInto(c, type, &A::i(*out), &A::f(*out), what);
  }
  if (depth >= kMaxArrayDepth) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: key '{}': arrays nested deeper than {}", file, key, depth));
  }
  uint32_t elem_raw = 0;
  uint64_t count = 0;
  RETURN_IF_ERROR(c.Read(&elem_raw, what));
  if (!IsKnownType(elem_raw)) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: key '{}': unknown array element type {}", file, key, elem_raw));
  }
  RETURN_IF_ERROR(c.Read(&count, what));
  const GgufType elem = static_cast<GgufType>(elem_raw);
  A::array_type(*out) = elem;
  // Every element takes at least one byte (strings and arrays take 8), so a
  // count larger than what is left is a corrupt file, not a huge allocation.
  const uint64_t min_size = ScalarSize(elem) == 0 ? 8 : ScalarSize(elem);
  if (count > c.remaining() / min_size) {
    return absl::DataLossError(fmt::format(
        "{}: key '{}': array of {} {} elements does not fit in the {} bytes "
        "left",
        file, key, count, GgufTypeName(elem), c.remaining()));
  }
  const size_t n = static_cast<size_t>(count);
  if (elem == GgufType::kString) {
    A::strings(*out).resize(n);
    for (size_t k = 0; k < n; ++k) {
      RETURN_IF_ERROR(c.ReadString(&A::strings(*out)[k], what));
    }
  } else if (elem == GgufType::kArray) {
    A::values(*out).resize(n);
    for (size_t k = 0; k < n; ++k) {
      RETURN_IF_ERROR(ReadValue(c, GgufType::kArray, depth + 1, file, key,
                                &A::values(*out)[k]));
    }
  } else if (IsFloatType(elem)) {
    A::floats(*out).resize(n);
    int64_t unused = 0;
    for (size_t k = 0; k < n; ++k) {
      RETURN_IF_ERROR(
          ReadScalarInto(c, elem, &unused, &A::floats(*out)[k], what));
    }
  } else {
    A::ints(*out).resize(n);
    double unused = 0;
    for (size_t k = 0; k < n; ++k) {
      RETURN_IF_ERROR(
          ReadScalarInto(c, elem, &A::ints(*out)[k], &unused, what));
    }
  }
  return absl::OkStatus();
}

absl::Status WrongType(const GgufValue& v, std::string_view want) {
  return absl::InvalidArgumentError(
      fmt::format("expected {}, got {}", want, v.DebugString()));
}

bool FitsInt32(int64_t v) {
  return v >= std::numeric_limits<int32_t>::min() &&
         v <= std::numeric_limits<int32_t>::max();
}

}  // namespace

std::string_view GgufTypeName(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "unknown";
}

std::string GgmlTypeName(GgmlType type) {
  const TypeBlock* t = FindGgmlType(static_cast<uint32_t>(type));
  if (t == nullptr) return fmt::format("type#{}", static_cast<uint32_t>(type));
  return t->name;
}

bool GgmlTypeBlock(GgmlType type, int64_t* block_elems, int64_t* block_bytes) {
  const TypeBlock* t = FindGgmlType(static_cast<uint32_t>(type));
  if (t == nullptr) return false;
  *block_elems = t->elems;
  *block_bytes = t->bytes;
  return true;
}

absl::StatusOr<GgmlType> GgmlTypeFromDType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return GgmlType::kF32;
    case DType::kF16:
      return GgmlType::kF16;
    case DType::kBF16:
      return GgmlType::kBF16;
    case DType::kQ8_0:
      return GgmlType::kQ8_0;
    case DType::kI8:
      return GgmlType::kI8;
    case DType::kI32:
      return GgmlType::kI32;
    case DType::kI64:
      return GgmlType::kI64;
    default:
      return absl::InvalidArgumentError(
          fmt::format("dtype {} has no GGUF type", DTypeName(dtype)));
  }
}

absl::StatusOr<DType> DTypeFromGgmlType(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return DType::kF32;
    case GgmlType::kF16:
      return DType::kF16;
    case GgmlType::kBF16:
      return DType::kBF16;
    case GgmlType::kQ8_0:
      return DType::kQ8_0;
    case GgmlType::kI8:
      return DType::kI8;
    case GgmlType::kI32:
      return DType::kI32;
    case GgmlType::kI64:
      return DType::kI64;
    default:
      return absl::InvalidArgumentError(fmt::format(
          "GGML type {} is not supported (supported: F32, F16, BF16, Q8_0, "
          "I8, I32, I64)",
          GgmlTypeName(type)));
  }
}

// ---------------------------------------------------------------- GgufValue

GgufValue GgufValue::Float32(float v) {
  GgufValue x;
  x.type_ = GgufType::kFloat32;
  x.f_ = v;
  return x;
}

GgufValue GgufValue::Float64(double v) {
  GgufValue x;
  x.type_ = GgufType::kFloat64;
  x.f_ = v;
  return x;
}

GgufValue GgufValue::Bool(bool v) {
  GgufValue x;
  x.type_ = GgufType::kBool;
  x.i_ = v ? 1 : 0;
  return x;
}

GgufValue GgufValue::String(std::string v) {
  GgufValue x;
  x.type_ = GgufType::kString;
  x.s_ = std::move(v);
  return x;
}

GgufValue GgufValue::StringArray(std::vector<std::string> v) {
  GgufValue x;
  x.type_ = GgufType::kArray;
  x.array_type_ = GgufType::kString;
  x.strings_ = std::move(v);
  return x;
}

GgufValue GgufValue::Int32Array(absl::Span<const int32_t> v) {
  GgufValue x;
  x.type_ = GgufType::kArray;
  x.array_type_ = GgufType::kInt32;
  x.ints_.assign(v.begin(), v.end());
  return x;
}

GgufValue GgufValue::Float32Array(absl::Span<const float> v) {
  GgufValue x;
  x.type_ = GgufType::kArray;
  x.array_type_ = GgufType::kFloat32;
  x.floats_.assign(v.begin(), v.end());
  return x;
}

GgufValue GgufValue::IntArray(GgufType element_type,
                              absl::Span<const int64_t> v) {
  GgufValue x;
  x.type_ = GgufType::kArray;
  x.array_type_ = element_type;
  x.ints_.assign(v.begin(), v.end());
  return x;
}

GgufValue GgufValue::ValueArray(GgufType element_type,
                                std::vector<GgufValue> v) {
  GgufValue x;
  x.type_ = GgufType::kArray;
  x.array_type_ = element_type;
  if (element_type == GgufType::kString) {
    for (GgufValue& e : v) x.strings_.push_back(std::move(e.s_));
  } else if (IsFloatType(element_type)) {
    for (const GgufValue& e : v) x.floats_.push_back(e.f_);
  } else if (element_type == GgufType::kArray) {
    x.values_ = std::move(v);
  } else {
    for (const GgufValue& e : v) x.ints_.push_back(e.i_);
  }
  return x;
}

size_t GgufValue::array_size() const {
  if (!is_array()) return 0;
  return strings_.size() + ints_.size() + floats_.size() + values_.size();
}

absl::StatusOr<int64_t> GgufValue::AsInt() const {
  if (IsIntegerType(type_) || type_ == GgufType::kBool) {
    if (type_ == GgufType::kUint64 && i_ < 0) {
      return absl::InvalidArgumentError(fmt::format(
          "uint64 value {} does not fit int64", static_cast<uint64_t>(i_)));
    }
    return i_;
  }
  return WrongType(*this, "an integer");
}

absl::StatusOr<double> GgufValue::AsFloat() const {
  if (IsFloatType(type_)) return f_;
  if (IsIntegerType(type_)) {
    return type_ == GgufType::kUint64
               ? static_cast<double>(static_cast<uint64_t>(i_))
               : static_cast<double>(i_);
  }
  return WrongType(*this, "a number");
}

absl::StatusOr<bool> GgufValue::AsBool() const {
  if (type_ == GgufType::kBool) return i_ != 0;
  if (IsIntegerType(type_)) return i_ != 0;
  return WrongType(*this, "a bool");
}

absl::StatusOr<std::string> GgufValue::AsString() const {
  if (type_ == GgufType::kString) return s_;
  return WrongType(*this, "a string");
}

absl::StatusOr<std::vector<std::string>> GgufValue::AsStringArray() const {
  if (is_array() && array_type_ == GgufType::kString) return strings_;
  return WrongType(*this, "an array of strings");
}

absl::StatusOr<std::vector<int32_t>> GgufValue::AsInt32Array() const {
  if (!is_array() ||
      !(IsIntegerType(array_type_) || array_type_ == GgufType::kBool)) {
    return WrongType(*this, "an array of integers");
  }
  std::vector<int32_t> out;
  out.reserve(ints_.size());
  for (size_t k = 0; k < ints_.size(); ++k) {
    const int64_t v = ints_[k];
    if (!FitsInt32(v) || (array_type_ == GgufType::kUint64 && v < 0)) {
      return absl::InvalidArgumentError(
          fmt::format("array element {} = {} does not fit int32", k, v));
    }
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufValue::AsInt64Array() const {
  if (!is_array() ||
      !(IsIntegerType(array_type_) || array_type_ == GgufType::kBool)) {
    return WrongType(*this, "an array of integers");
  }
  return ints_;
}

absl::StatusOr<std::vector<float>> GgufValue::AsFloat32Array() const {
  if (!is_array()) return WrongType(*this, "an array of floats");
  std::vector<float> out;
  if (IsFloatType(array_type_)) {
    out.reserve(floats_.size());
    for (double f : floats_) out.push_back(static_cast<float>(f));
    return out;
  }
  if (IsIntegerType(array_type_)) {
    out.reserve(ints_.size());
    for (int64_t i : ints_) out.push_back(static_cast<float>(i));
    return out;
  }
  return WrongType(*this, "an array of floats");
}

std::string GgufValue::DebugString() const {
  if (is_array()) {
    return fmt::format("array<{}>[{}]", GgufTypeName(array_type_),
                       array_size());
  }
  if (type_ == GgufType::kString) {
    return fmt::format("string \"{}\"",
                       s_.size() > 40 ? s_.substr(0, 40) + "..." : s_);
  }
  if (IsFloatType(type_)) return fmt::format("{} {}", GgufTypeName(type_), f_);
  if (type_ == GgufType::kUint64) {
    return fmt::format("uint64 {}", static_cast<uint64_t>(i_));
  }
  if (type_ == GgufType::kBool) return i_ ? "bool true" : "bool false";
  return fmt::format("{} {}", GgufTypeName(type_), i_);
}

// ------------------------------------------------------------ GgufTensorInfo

Shape GgufTensorInfo::RowMajorShape() const {
  Shape s;
  for (auto it = ne.rbegin(); it != ne.rend(); ++it) s.push_back(*it);
  return s;
}

// ------------------------------------------------------------------ GgufFile

absl::StatusOr<std::shared_ptr<GgufFile>> GgufFile::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  const absl::Span<const uint8_t> bytes = file->bytes();
  return Parse(bytes, path, std::move(file));
}

absl::StatusOr<std::shared_ptr<GgufFile>> GgufFile::Parse(
    absl::Span<const uint8_t> bytes, std::string name,
    std::shared_ptr<const void> keep_alive) {
  std::shared_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::move(name);
  f->keep_alive_ = std::move(keep_alive);
  RETURN_IF_ERROR(f->ParseImpl(bytes));
  return f;
}

absl::Status GgufFile::ParseImpl(absl::Span<const uint8_t> bytes) {
  Cursor c(bytes, path_);
  uint32_t magic = 0;
  RETURN_IF_ERROR(c.Read(&magic, "magic"));
  if (magic != kGgufMagic) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: not a GGUF file (magic 0x{:08x}, expected 0x{:08x} \"GGUF\")",
        path_, magic, kGgufMagic));
  }
  RETURN_IF_ERROR(c.Read(&version_, "version"));
  // Version 1 used 32-bit counts and lengths; 2 and 3 share this layout (3
  // only adds big-endian files, which carry a byte-swapped version).
  if (version_ != 2 && version_ != 3) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: unsupported GGUF version {} (supported: 2, 3)", path_, version_));
  }
  uint64_t n_tensors = 0;
  uint64_t n_kv = 0;
  RETURN_IF_ERROR(c.Read(&n_tensors, "tensor count"));
  RETURN_IF_ERROR(c.Read(&n_kv, "metadata count"));
  // Each KV takes at least 12 bytes and each tensor info at least 24.
  if (n_kv > c.remaining() / 12) {
    return absl::DataLossError(fmt::format(
        "{}: metadata count {} does not fit in the file", path_, n_kv));
  }
  if (n_tensors > c.remaining() / 24) {
    return absl::DataLossError(fmt::format(
        "{}: tensor count {} does not fit in the file", path_, n_tensors));
  }

  metadata_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    RETURN_IF_ERROR(c.ReadString(&key, fmt::format("metadata key #{}", k)));
    uint32_t type_raw = 0;
    RETURN_IF_ERROR(c.Read(&type_raw, fmt::format("type of key '{}'", key)));
    if (!IsKnownType(type_raw)) {
      return absl::InvalidArgumentError(
          fmt::format("{}: key '{}': unknown metadata value type {}", path_,
                      key, type_raw));
    }
    GgufValue value;
    RETURN_IF_ERROR(
        ReadValue(c, static_cast<GgufType>(type_raw), 0, path_, key, &value));
    if (metadata_index_.count(key) != 0) {
      return absl::InvalidArgumentError(
          fmt::format("{}: duplicate metadata key '{}'", path_, key));
    }
    metadata_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue* a = Find("general.alignment")) {
    absl::StatusOr<int64_t> v = a->AsInt();
    if (!v.ok() || *v <= 0 || (*v & (*v - 1)) != 0 || *v > (1 << 30)) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: general.alignment must be a positive power of two, got {}",
          path_, a->DebugString()));
    }
    alignment_ = static_cast<uint64_t>(*v);
  } else {
    alignment_ = kDefaultAlignment;
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo info;
    RETURN_IF_ERROR(
        c.ReadString(&info.name, fmt::format("name of tensor #{}", k)));
    const std::string what = fmt::format("tensor '{}'", info.name);
    uint32_t n_dims = 0;
    RETURN_IF_ERROR(c.Read(&n_dims, what));
    if (n_dims > kMaxDims) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tensor '{}' has {} dimensions (at most {})", path_,
                      info.name, n_dims, kMaxDims));
    }
    int64_t numel = 1;
    // The product of the non-zero dimensions must fit too: a zero dimension
    // makes numel 0, but strides and partial products over the others are
    // still computed (a [2^40, 2^40, 0] tensor would overflow them).
    int64_t nonzero = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      RETURN_IF_ERROR(c.Read(&ne, what));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (ne != 0 &&
           static_cast<uint64_t>(nonzero) >
               static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) /
                   ne)) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: tensor '{}': dimensions overflow", path_, info.name));
      }
      info.ne.push_back(static_cast<int64_t>(ne));
      numel *= static_cast<int64_t>(ne);
      if (ne != 0) nonzero *= static_cast<int64_t>(ne);
    }
    uint32_t type_raw = 0;
    RETURN_IF_ERROR(c.Read(&type_raw, what));
    int64_t block_elems = 0;
    int64_t block_bytes = 0;
    if (!GgmlTypeBlock(static_cast<GgmlType>(type_raw), &block_elems,
                       &block_bytes)) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tensor '{}' has unknown ggml type {}", path_,
                      info.name, type_raw));
    }
    info.type = static_cast<GgmlType>(type_raw);
    const int64_t inner = info.ne.empty() ? 1 : info.ne[0];
    if (inner % block_elems != 0) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tensor '{}': row length {} is not a multiple of the {} block "
          "size {}",
          path_, info.name, inner, GgmlTypeName(info.type), block_elems));
    }
    // numel / block_elems * block_bytes fits: numel <= INT64_MAX and
    // block_bytes / block_elems <= 8.
    const uint64_t blocks = static_cast<uint64_t>(numel / block_elems);
    if (blocks > std::numeric_limits<uint64_t>::max() /
                     static_cast<uint64_t>(block_bytes)) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tensor '{}': size overflows", path_, info.name));
    }
    info.nbytes = blocks * static_cast<uint64_t>(block_bytes);
    RETURN_IF_ERROR(c.Read(&info.offset, what));
    if (info.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tensor '{}': data offset {} is not a multiple of the alignment "
          "{}",
          path_, info.name, info.offset, alignment_));
    }
    if (tensor_index_.count(info.name) != 0) {
      return absl::InvalidArgumentError(
          fmt::format("{}: duplicate tensor '{}'", path_, info.name));
    }
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  // The data section starts at the next aligned offset (padding may be absent
  // when the file has no tensors).
  const uint64_t pos = c.pos();
  data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t size = bytes.size();
  if (n_tensors > 0 && data_offset_ > size) {
    return absl::DataLossError(fmt::format(
        "{}: truncated GGUF file: data section at {} is past the end ({})",
        path_, data_offset_, size));
  }
  for (GgufTensorInfo& t : tensors_) {
    const uint64_t avail = size - data_offset_;
    if (t.offset > avail || t.nbytes > avail - t.offset) {
      return absl::DataLossError(fmt::format(
          "{}: tensor '{}' ({} bytes at data offset {}) extends past the end "
          "of the file (truncated?)",
          path_, t.name, t.nbytes, t.offset));
    }
    t.data = bytes.data() + data_offset_ + t.offset;
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

#define TESSERA_GGUF_GETTER(Name, Type, As)                            \
  absl::StatusOr<Type> GgufFile::Name(std::string_view key) const {    \
    const GgufValue* v = Find(key);                                    \
    if (v == nullptr) {                                                \
      return absl::NotFoundError(                                      \
          fmt::format("{}: metadata key '{}' not found", path_, key)); \
    }                                                                  \
    absl::StatusOr<Type> r = v->As();                                  \
    if (!r.ok()) {                                                     \
      return absl::InvalidArgumentError(                               \
          fmt::format("{}: metadata key '{}': {}", path_, key,         \
                      std::string(r.status().message())));             \
    }                                                                  \
    return r;                                                          \
  }

TESSERA_GGUF_GETTER(GetInt, int64_t, AsInt)
TESSERA_GGUF_GETTER(GetFloat, double, AsFloat)
TESSERA_GGUF_GETTER(GetBool, bool, AsBool)
TESSERA_GGUF_GETTER(GetString, std::string, AsString)
TESSERA_GGUF_GETTER(GetStringArray, std::vector<std::string>, AsStringArray)
TESSERA_GGUF_GETTER(GetInt32Array, std::vector<int32_t>, AsInt32Array)
TESSERA_GGUF_GETTER(GetFloat32Array, std::vector<float>, AsFloat32Array)
#undef TESSERA_GGUF_GETTER

absl::StatusOr<int64_t> GgufFile::GetIntOr(std::string_view key,
                                           int64_t dflt) const {
  if (!Has(key)) return dflt;
  return GetInt(key);
}

absl::StatusOr<double> GgufFile::GetFloatOr(std::string_view key,
                                            double dflt) const {
  if (!Has(key)) return dflt;
  return GetFloat(key);
}

absl::StatusOr<bool> GgufFile::GetBoolOr(std::string_view key,
                                         bool dflt) const {
  if (!Has(key)) return dflt;
  return GetBool(key);
}

absl::StatusOr<std::string> GgufFile::GetStringOr(std::string_view key,
                                                  std::string dflt) const {
  if (!Has(key)) return dflt;
  return GetString(key);
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<Tensor> GgufFile::TensorView(std::string_view name) const {
  const GgufTensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return absl::NotFoundError(
        fmt::format("{}: tensor '{}' not found", path_, name));
  }
  return TensorView(*info);
}

absl::StatusOr<Tensor> GgufFile::TensorView(const GgufTensorInfo& info) const {
  absl::StatusOr<DType> dtype = DTypeFromGgmlType(info.type);
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: tensor '{}': {}", path_, info.name,
                    std::string(dtype.status().message())));
  }
  return Tensor::Borrow(*dtype, info.RowMajorShape(),
                        const_cast<uint8_t*>(info.data), keep_alive_);
}

// ---------------------------------------------------------------- GgufWriter

namespace {

using formats_internal::FileSink;

void WriteScalar(FileSink& s, GgufType t, int64_t i, double f) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      s.Put<uint8_t>(static_cast<uint8_t>(i));
      break;
    case GgufType::kUint16:
    case GgufType::kInt16:
      s.Put<uint16_t>(static_cast<uint16_t>(i));
      break;
    case GgufType::kUint32:
    case GgufType::kInt32:
      s.Put<uint32_t>(static_cast<uint32_t>(i));
      break;
    case GgufType::kUint64:
    case GgufType::kInt64:
      s.Put<uint64_t>(static_cast<uint64_t>(i));
      break;
    case GgufType::kFloat32:
      s.Put<float>(static_cast<float>(f));
      break;
    case GgufType::kFloat64:
      s.Put<double>(f);
      break;
    default:
      break;
  }
}

void WriteValue(FileSink& s, const GgufValue& v) {
  if (v.type() == GgufType::kString) {
    s.PutString(*v.AsString());
    return;
  }
  if (!v.is_array()) {
    WriteScalar(s, v.type(), v.raw_int(), v.raw_float());
    return;
  }
  s.Put<uint32_t>(static_cast<uint32_t>(v.array_type()));
  s.Put<uint64_t>(v.array_size());
  if (v.array_type() == GgufType::kString) {
    for (const std::string& e : v.strings()) s.PutString(e);
  } else if (v.array_type() == GgufType::kArray) {
    for (const GgufValue& e : v.values()) WriteValue(s, e);
  } else if (IsFloatType(v.array_type())) {
    for (double e : v.floats()) WriteScalar(s, v.array_type(), 0, e);
  } else {
    for (int64_t e : v.ints()) WriteScalar(s, v.array_type(), e, 0);
  }
}

}  // namespace

GgufWriter::GgufWriter(uint64_t alignment) : alignment_(alignment) {
  if (alignment_ != kDefaultAlignment) {
    SetKv("general.alignment",
          GgufValue::Uint32(static_cast<uint32_t>(alignment_)));
  }
}

void GgufWriter::SetKv(std::string key, GgufValue value) {
  for (auto& kv : metadata_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

absl::Status GgufWriter::AddTensor(std::string name, GgmlType type, Shape shape,
                                   TensorSource source) {
  int64_t block_elems = 0;
  int64_t block_bytes = 0;
  if (!GgmlTypeBlock(type, &block_elems, &block_bytes)) {
    return absl::InvalidArgumentError(
        fmt::format("tensor '{}': unknown ggml type", name));
  }
  if (shape.empty() || shape.size() > kMaxDims) {
    return absl::InvalidArgumentError(fmt::format(
        "tensor '{}': rank {} not in [1, {}]", name, shape.size(), kMaxDims));
  }
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          fmt::format("tensor '{}': negative dimension", name));
    }
    numel *= d;
  }
  if (shape.back() % block_elems != 0) {
    return absl::InvalidArgumentError(
        fmt::format("tensor '{}': row length {} not a multiple of {}", name,
                    shape.back(), block_elems));
  }
  for (const PendingTensor& t : tensors_) {
    if (t.name == name) {
      return absl::InvalidArgumentError(
          fmt::format("duplicate tensor '{}'", name));
    }
  }
  const uint64_t nbytes =
      static_cast<uint64_t>(numel / block_elems * block_bytes);
  tensors_.push_back(
      {std::move(name), type, std::move(shape), nbytes, std::move(source)});
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(std::string name, const Tensor& tensor) {
  ASSIGN_OR_RETURN(GgmlType type, GgmlTypeFromDType(tensor.dtype()));
  if (!tensor.is_contiguous()) {
    return absl::InvalidArgumentError(
        fmt::format("tensor '{}' is not contiguous", name));
  }
  return AddTensor(std::move(name), type, tensor.shape(),
                   [tensor]() -> absl::StatusOr<Tensor> { return tensor; });
}

absl::Status GgufWriter::Write(const std::string& path) const {
  FileSink s(path);
  RETURN_IF_ERROR(s.status());
  s.Put<uint32_t>(kGgufMagic);
  s.Put<uint32_t>(3);
  s.Put<uint64_t>(tensors_.size());
  s.Put<uint64_t>(metadata_.size());
  for (const auto& [key, value] : metadata_) {
    s.PutString(key);
    s.Put<uint32_t>(static_cast<uint32_t>(value.type()));
    WriteValue(s, value);
  }
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    s.PutString(t.name);
    s.Put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) {
      s.Put<uint64_t>(static_cast<uint64_t>(*it));
    }
    s.Put<uint32_t>(static_cast<uint32_t>(t.type));
    s.Put<uint64_t>(offset);
    offset += (t.nbytes + alignment_ - 1) / alignment_ * alignment_;
  }
  s.Pad(alignment_);
  for (const PendingTensor& t : tensors_) {
    absl::StatusOr<Tensor> data = t.source();
    if (!data.ok()) {
      return Annotate(data.status(),
                      fmt::format("{}: tensor '{}'", path, t.name));
    }
    if (!data->is_contiguous() ||
        static_cast<uint64_t>(data->nbytes()) != t.nbytes) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tensor '{}': source gave {} ({} bytes), declared {} bytes", path,
          t.name, data->DebugString(), data->nbytes(), t.nbytes));
    }
    s.Write(data->raw_data(), static_cast<size_t>(t.nbytes));
    s.Pad(alignment_);
    RETURN_IF_ERROR(s.status());
  }
  return s.Close();
}

}  // namespace tessera
