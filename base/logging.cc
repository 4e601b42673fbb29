#include "base/logging.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace tessera {

absl::Status InitLogging(std::string_view level) {
  spdlog::level::level_enum parsed =
      spdlog::level::from_str(std::string(level));
  // spdlog maps unknown names to "off"; only accept that when asked for.
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(
        fmt::format("unknown log level '{}' (expected trace, debug, info, "
                    "warn, error, off)",
                    level));
  }
  spdlog::set_level(parsed);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  return absl::OkStatus();
}

void CheckFailed(const char* file, int line, const char* condition,
                 std::string_view message) {
  spdlog::critical("CHECK failed at {}:{}: {} {}", file, line, condition,
                   message);
  spdlog::default_logger()->flush();
  std::fflush(stderr);
  std::abort();
}

}  // namespace tessera
