#include "placement/internal/json_util.h"

#include <algorithm>

#include "fmt/format.h"

namespace tessera::placement::internal {

using json = nlohmann::json;

absl::StatusOr<json> ParseJsonObject(std::string_view text,
                                     std::string_view what) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("{}: invalid JSON: {}", std::string(what), e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: expected a JSON object", std::string(what)));
  }
  return j;
}

absl::Status CheckKeys(const json& j, std::string_view where,
                       std::initializer_list<std::string_view> allowed) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: expected a JSON object", std::string(where)));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string known;
      for (std::string_view a : allowed) {
        if (!known.empty()) known += ", ";
        known += std::string(a);
      }
      return absl::InvalidArgumentError(
          fmt::format("{}: unknown key \"{}\" (known: {})", std::string(where),
                      key, known));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> GetNumber(const json& j, std::string_view where,
                                 const char* key, double fallback,
                                 bool required, bool positive) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) {
      return absl::InvalidArgumentError(
          fmt::format("{}: missing \"{}\"", std::string(where), key));
    }
    return fallback;
  }
  if (!it->is_number()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: \"{}\" must be a number", std::string(where), key));
  }
  const double v = it->get<double>();
  if (!(v >= 0) || (positive && v == 0)) {
    return absl::InvalidArgumentError(
        fmt::format("{}: \"{}\" must be {}, got {}", std::string(where), key,
                    positive ? "positive" : "non-negative", v));
  }
  return v;
}

absl::StatusOr<int64_t> GetInt(const json& j, std::string_view where,
                               const char* key, int64_t fallback, bool required,
                               bool positive) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) {
      return absl::InvalidArgumentError(
          fmt::format("{}: missing \"{}\"", std::string(where), key));
    }
    return fallback;
  }
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: \"{}\" must be an integer", std::string(where), key));
  }
  const int64_t v = it->get<int64_t>();
  if (v < 0 || (positive && v == 0)) {
    return absl::InvalidArgumentError(
        fmt::format("{}: \"{}\" must be {}, got {}", std::string(where), key,
                    positive ? "positive" : "non-negative", v));
  }
  return v;
}

absl::StatusOr<std::string> GetString(const json& j, std::string_view where,
                                      const char* key, std::string fallback,
                                      bool required) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) {
      return absl::InvalidArgumentError(
          fmt::format("{}: missing \"{}\"", std::string(where), key));
    }
    return fallback;
  }
  if (!it->is_string()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: \"{}\" must be a string", std::string(where), key));
  }
  return it->get<std::string>();
}

}  // namespace tessera::placement::internal
