#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddBenchCommand(CLI::App& app, int* exit_code) {
  CLI::App* bench =
      app.add_subcommand("bench", "Benchmarks that print figures and ratios");
  bench->require_subcommand(1);
  AddBenchKernelsCommand(*bench, exit_code);
  AddBenchDecodeCommand(*bench, exit_code);
  AddBenchServeCommand(*bench, exit_code);
  AddBenchCommCommand(*bench, exit_code);
  AddBenchKvTransferCommand(*bench, exit_code);
  AddBenchCostModelCommand(*bench, exit_code);
  AddBenchSimulatorCommand(*bench, exit_code);
}

}  // namespace tessera::cli
