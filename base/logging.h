// Logging (spdlog) and CHECK for programmer errors.
//
// Log where an error is classified, once; pass absl::Status upward otherwise.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace tessera {

// Sets the global log level ("trace", "debug", "info", "warn", "error", "off")
// and a compact stderr format. Returns InvalidArgument for an unknown level.
absl::Status InitLogging(std::string_view level);

// Aborts the process after logging `message` with its source location.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              std::string_view message);

}  // namespace tessera

// CHECK for programmer bugs only (never for bad input, which gets a Status).
#define TESSERA_CHECK(cond, ...)                                         \
  do {                                                                   \
    if (!(cond)) [[unlikely]] {                                          \
      ::tessera::CheckFailed(__FILE__, __LINE__, #cond,                  \
                             ::fmt::format("" __VA_OPT__(__VA_ARGS__))); \
    }                                                                    \
  } while (0)
