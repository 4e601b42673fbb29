// Strict JSON field access for the planner's own input formats: unknown keys,
// wrong types and out-of-range numbers become InvalidArgument errors naming
// the offending field.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera::placement::internal {

// Parses `text`; InvalidArgument (prefixed with `what`) on a syntax error.
absl::StatusOr<nlohmann::json> ParseJsonObject(std::string_view text,
                                               std::string_view what);

// InvalidArgument naming the first key of `j` not in `allowed`.
absl::Status CheckKeys(const nlohmann::json& j, std::string_view where,
                       std::initializer_list<std::string_view> allowed);

// A number at `key` (or `fallback` when absent); errors if not a number,
// negative, or (when `positive`) zero.
absl::StatusOr<double> GetNumber(const nlohmann::json& j,
                                 std::string_view where, const char* key,
                                 double fallback, bool required, bool positive);
absl::StatusOr<int64_t> GetInt(const nlohmann::json& j, std::string_view where,
                               const char* key, int64_t fallback, bool required,
                               bool positive);
absl::StatusOr<std::string> GetString(const nlohmann::json& j,
                                      std::string_view where, const char* key,
                                      std::string fallback, bool required);

}  // namespace tessera::placement::internal
