// Helpers shared by tests: locating ../shared and the tessera binary, running
// commands.
#pragma once

#include <optional>
#include <string>

namespace tessera::testing {

// The shared/ test-data folder ($TESSERA_SHARED, else the configured default),
// or nullopt when it does not exist. Tests needing it GTEST_SKIP() with a
// message.
std::optional<std::string> SharedDir();

// Path of the built `tessera` binary ($TESSERA_BIN, else the build's own).
std::string TesseraBin();

// A fresh, empty temporary directory, removed at process exit.
std::string MakeTempDir();

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `command` through /bin/sh, capturing stdout and stderr.
CommandResult RunCommand(const std::string& command);

}  // namespace tessera::testing

// Skips the current test unless shared/ exists; binds its path to `var`.
#define TESSERA_REQUIRE_SHARED(var)                                     \
  const auto var##_opt = ::tessera::testing::SharedDir();               \
  if (!var##_opt)                                                       \
    GTEST_SKIP() << "shared/ test data not found (set TESSERA_SHARED)"; \
  const std::string var = *var##_opt
