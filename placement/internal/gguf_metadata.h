// A minimal GGUF header reader: the metadata key/value section only.
//
// placement may not depend on runtime (which owns the real GGUF loader), and
// the planner needs just a dozen scalar keys, so this reads the header and the
// scalar/string values and skips arrays (tokenizer tables) without storing
// them. Tensor data is never touched.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace tessera::placement::internal {

// A metadata value; arrays are recorded by their length only. (A plain
// struct rather than std::variant: GCC 12 reports false maybe-uninitialized
// errors for variant<std::string> under the sanitizers.)
struct GgufValue {
  enum class Kind { kInt, kUint, kFloat, kBool, kString, kArray };
  Kind kind = Kind::kInt;
  int64_t i = 0;
  uint64_t u = 0;  // also the array length
  double f = 0;
  bool b = false;
  std::string s;

  // The value as a non-negative integer (ints, uints, array lengths).
  std::optional<int64_t> AsInt() const;
};

// Reads the metadata of the GGUF file at `path`. InvalidArgument for a
// malformed or truncated header, NotFound when the file is missing.
absl::StatusOr<std::map<std::string, GgufValue>> ReadGgufMetadata(
    const std::string& path);

// Parses metadata from bytes already in memory (fuzzable).
absl::StatusOr<std::map<std::string, GgufValue>> ParseGgufMetadata(
    const uint8_t* data, size_t size);

}  // namespace tessera::placement::internal
