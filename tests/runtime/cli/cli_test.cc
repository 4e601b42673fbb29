// The `tessera` binary's command-line contract: --help everywhere, exit 2 with
// a one-line message on bad usage.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::RunCommand;
using ::tessera::testing::TesseraBin;
using ::testing::HasSubstr;

const std::vector<std::string>& AllSubcommands() {
  static const auto* kAll = new std::vector<std::string>{
      "run",         "serve",      "tokenize",         "make-model",
      "plan",        "simulate",   "calibrate",        "worker",
      "version",     "bench",      "bench kernels",    "bench decode",
      "bench serve", "bench comm", "bench kv-transfer"};
  return *kAll;
}

TEST(CliTest, TopLevelHelpListsSubcommands) {
  auto r = RunCommand(TesseraBin() + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* sub : {"run", "serve", "tokenize", "make-model", "plan",
                          "bench", "worker", "version"}) {
    EXPECT_THAT(r.out, HasSubstr(sub));
  }
}

TEST(CliTest, EverySubcommandHasHelp) {
  for (const std::string& sub : AllSubcommands()) {
    auto r = RunCommand(TesseraBin() + " " + sub + " --help");
    EXPECT_EQ(r.exit_code, 0) << sub << ": " << r.err;
    EXPECT_THAT(r.out, HasSubstr("Usage")) << sub;
  }
}

TEST(CliTest, UnknownSubcommandExits2WithOneLine) {
  auto r = RunCommand(TesseraBin() + " frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("frobnicate"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(CliTest, NoSubcommandExits2) {
  auto r = RunCommand(TesseraBin());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_FALSE(r.err.empty());
}

TEST(CliTest, UnknownFlagExits2WithOneLine) {
  for (const char* sub : {"version", ""}) {
    auto r =
        RunCommand(TesseraBin() + " " + std::string(sub) + " --no-such-flag");
    EXPECT_EQ(r.exit_code, 2) << sub;
    EXPECT_THAT(r.err, HasSubstr("--no-such-flag"));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST(CliTest, VersionReportsBackendsAndCpu) {
  auto r = RunCommand(TesseraBin() + " version");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tessera "));
  EXPECT_THAT(r.out, HasSubstr("commit: "));
  EXPECT_THAT(r.out, HasSubstr("backends: cpu"));
  EXPECT_THAT(r.out, HasSubstr("cpu features: "));
}

}  // namespace
}  // namespace tessera
