// The `tessera` binary: one executable for every role and launch mode.
#include <algorithm>
#include <cstdio>
#include <string>

#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

int Main(int argc, char** argv) {
  CLI::App app{"tessera: distributed LLM inference runtime", "tessera"};
  app.require_subcommand(1);
  app.fallthrough(false);
  app.set_help_all_flag("--help-all", "Print help for every subcommand");
  int exit_code = kExitOk;
  AddRunCommand(app, &exit_code);
  AddServeCommand(app, &exit_code);
  AddTokenizeCommand(app, &exit_code);
  AddMakeModelCommand(app, &exit_code);
  AddPlanCommand(app, &exit_code);
  AddSimulateCommand(app, &exit_code);
  AddCalibrateCommand(app, &exit_code);
  AddBenchCommand(app, &exit_code);
  AddWorkerCommand(app, &exit_code);
  AddVersionCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is thrown as a "successful" parse error; App::exit prints the help
    // of the selected (sub)command.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      return app.exit(e);
    }
    std::string what = e.what();
    if (app.get_subcommands().empty() && argc > 1) {
      // CLI11 reports a missing subcommand before naming the word it did not
      // know.
      const std::string arg = argv[1];
      what =
          (arg.rfind('-', 0) == 0 ? "unknown flag '" : "unknown subcommand '") +
          arg + "'";
    }
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "tessera: %s (see 'tessera --help')\n", what.c_str());
    return kExitUsage;
  }
  return exit_code;
}

}  // namespace
}  // namespace tessera::cli

int main(int argc, char** argv) { return tessera::cli::Main(argc, argv); }
