// safetensors (Hugging Face's weight format): a memory-mapped reader, sharded
// checkpoints (model.safetensors.index.json) and a streaming writer.
//
// Layout: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]},
//  "__metadata__": {"k": "v"}}, then the data buffer; offsets are relative to
// the end of the header. The reader checks every entry (known dtype, shape
// product matching the byte range, range inside the file, no overlaps) and
// reports bad files as InvalidArgument / DataLoss naming the file and tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
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

// One tensor entry of a safetensors header.
struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype_name;      // As written: "F16", "BF16", "F64"...
  std::optional<DType> dtype;  // Unset for dtypes tessera cannot use.
  Shape shape;
  uint64_t begin = 0;  // Byte range in the data buffer.
  uint64_t end = 0;
  const uint8_t* data = nullptr;  // Inside the mapping.
};

// The safetensors dtype name of `dtype` ("F32", "F16", "BF16", "I8", "I32",
// "I64", "U8"); InvalidArgument for Q8_0.
absl::StatusOr<std::string> SafetensorsDTypeName(DType dtype);

// One parsed .safetensors file.
class SafetensorsFile {
 public:
  // Maps and parses `path`.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(
      const std::string& path);
  // Parses bytes already in memory (fuzzing, tests); `keep_alive` owns them.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Parse(
      absl::Span<const uint8_t> bytes, std::string name,
      std::shared_ptr<const void> keep_alive);

  const std::string& path() const { return path_; }
  // `__metadata__` (string values only, as the format requires).
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // Tensors in data-offset order.
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const SafetensorsTensorInfo* Find(std::string_view name) const;
  // Zero-copy view of `name`. NotFound if absent; InvalidArgument if its dtype
  // is not supported.
  absl::StatusOr<Tensor> TensorView(std::string_view name) const;
  absl::StatusOr<Tensor> TensorView(const SafetensorsTensorInfo& info) const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseImpl(absl::Span<const uint8_t> bytes);

  std::string path_;
  std::shared_ptr<const void> keep_alive_;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

// A checkpoint made of one or more .safetensors files: a single file, a
// directory holding model.safetensors, or a directory (or index path) with
// model.safetensors.index.json naming the shard of each tensor.
class SafetensorsCheckpoint {
 public:
  // `path`: a .safetensors file, a directory, or an .index.json file.
  static absl::StatusOr<SafetensorsCheckpoint> Open(const std::string& path);

  // Every tensor name, sorted.
  std::vector<std::string> TensorNames() const;
  bool Has(std::string_view name) const;
  // The info of `name` and the file holding it, or nulls.
  const SafetensorsTensorInfo* Find(std::string_view name,
                                    const SafetensorsFile** file) const;
  // Zero-copy view of `name`; NotFound naming the checkpoint if absent.
  absl::StatusOr<Tensor> TensorView(std::string_view name) const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const {
    return files_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t, std::less<>> shard_of_;
};

// Writes one .safetensors file; tensors are laid out in insertion order and
// their bytes produced one at a time while writing.
class SafetensorsWriter {
 public:
  using TensorSource = std::function<absl::StatusOr<Tensor>()>;

  void SetMetadata(std::string key, std::string value);
  // Declares a tensor; `source` must yield a contiguous tensor of `dtype` and
  // the same element count.
  absl::Status AddTensor(std::string name, DType dtype, Shape shape,
                         TensorSource source);
  absl::Status AddTensor(std::string name, const Tensor& tensor);
  // Writes the file (replacing `path`).
  absl::Status Write(const std::string& path) const;
  // Total bytes of tensor data declared so far.
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t nbytes;
    TensorSource source;
  };
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::vector<PendingTensor> tensors_;
  uint64_t data_bytes_ = 0;
};

}  // namespace tessera
