// Buffered binary file writer used by the format writers: remembers the first
// error so callers check once, and tracks the write position for padding.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace tessera::formats_internal {

class FileSink {
 public:
  explicit FileSink(const std::string& path)
      : path_(path), f_(std::fopen(path.c_str(), "wb")) {
    if (f_ == nullptr) {
      const int err = errno;
      const std::string msg =
          fmt::format("cannot create {}: {}", path, std::strerror(err));
      status_ = err == ENOENT ? absl::NotFoundError(msg)
                              : absl::PermissionDeniedError(msg);
    } else {
      std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
    }
  }
  ~FileSink() {
    if (f_ != nullptr) std::fclose(f_);
  }
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  // Appends `n` bytes (no-op after an error).
  void Write(const void* p, size_t n) {
    if (!status_.ok() || n == 0) return;
    if (std::fwrite(p, 1, n, f_) != n) {
      status_ = absl::InternalError(
          fmt::format("cannot write {}: {}", path_, std::strerror(errno)));
    }
    pos_ += n;
  }
  // Appends the little-endian bytes of `v`.
  template <typename T>
  void Put(T v) {
    Write(&v, sizeof(v));
  }
  // Appends a u64 length and the bytes (GGUF strings).
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    Write(s.data(), s.size());
  }
  // Appends `fill` bytes up to the next multiple of `alignment`.
  void Pad(uint64_t alignment, char fill = '\0') {
    char buf[256];
    std::memset(buf, fill, sizeof(buf));
    while (pos_ % alignment != 0) {
      const uint64_t n =
          std::min<uint64_t>(alignment - pos_ % alignment, sizeof(buf));
      Write(buf, static_cast<size_t>(n));
    }
  }
  // Flushes and closes; the first error seen, if any.
  absl::Status Close() {
    if (f_ != nullptr) {
      if (std::fclose(f_) != 0 && status_.ok()) {
        status_ = absl::InternalError(
            fmt::format("cannot write {}: {}", path_, std::strerror(errno)));
      }
      f_ = nullptr;
    }
    return status_;
  }
  const absl::Status& status() const { return status_; }
  uint64_t pos() const { return pos_; }

 private:
  std::string path_;
  std::FILE* f_;
  absl::Status status_;
  uint64_t pos_ = 0;
};

}  // namespace tessera::formats_internal
