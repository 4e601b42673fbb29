// Read-only memory-mapped files: model weights are used in place, never copied.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera {

class MappedFile {
 public:
  // Maps `path` read-only. NotFound / PermissionDenied / Internal on failure,
  // with the path.
  static absl::StatusOr<std::shared_ptr<MappedFile>> Open(
      const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, uint64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  uint64_t size_;
};

// Reads a whole (small) file into a string.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Writes `contents` to `path`, replacing it.
absl::Status WriteStringToFile(const std::string& path,
                               std::string_view contents);

}  // namespace tessera
