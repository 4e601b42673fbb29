// A minimal GGUF header reader: the metadata key/value section only.
//
// placement may not depend on runtime (which owns the real GGUF loader), and
// the planner needs just a dozen scalar keys, so this reads the header and the
// scalar/string values and skips arrays (tokenizer tables) without storing
// them. Tensor data is never touched.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>

#include "absl/status/statusor.h"

namespace tessera::placement::internal {

// A scalar metadata value; arrays are recorded by their length only.
struct GgufArrayInfo {
  uint64_t length = 0;
};
using GgufValue =
    std::variant<int64_t, uint64_t, double, bool, std::string, GgufArrayInfo>;

// Reads the metadata of the GGUF file at `path`. InvalidArgument for a
// malformed or truncated header, NotFound when the file is missing.
absl::StatusOr<std::map<std::string, GgufValue>> ReadGgufMetadata(
    const std::string& path);

// Parses metadata from bytes already in memory (fuzzable).
absl::StatusOr<std::map<std::string, GgufValue>> ParseGgufMetadata(
    const uint8_t* data, size_t size);

}  // namespace tessera::placement::internal
