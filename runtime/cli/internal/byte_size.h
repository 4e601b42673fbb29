// Parsing of byte sizes with K/M/G suffixes (powers of 1024) for bench flags.
#pragma once

#include <cctype>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "fmt/format.h"

namespace tessera::cli {

// "4096", "64K", "1M", "2G" (case-insensitive, optional trailing "B").
inline absl::StatusOr<int64_t> ParseByteSize(std::string text) {
  if (!text.empty() && (text.back() == 'B' || text.back() == 'b')) {
    text.pop_back();
  }
  int64_t mult = 1;
  if (!text.empty() && std::isalpha(static_cast<unsigned char>(text.back()))) {
    switch (std::toupper(static_cast<unsigned char>(text.back()))) {
      case 'K':
        mult = int64_t{1} << 10;
        break;
      case 'M':
        mult = int64_t{1} << 20;
        break;
      case 'G':
        mult = int64_t{1} << 30;
        break;
      default:
        return absl::InvalidArgumentError(
            fmt::format("bad size '{}': suffix must be K, M or G", text));
    }
    text.pop_back();
  }
  if (text.empty() || text.size() > 12 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(fmt::format("bad size '{}'", text));
  }
  return std::stoll(text) * mult;
}

}  // namespace tessera::cli
