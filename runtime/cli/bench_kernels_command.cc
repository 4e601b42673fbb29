#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddBenchKernelsCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "kernels",
                    "Benchmark the compute kernels against the machine's peaks",
                    "CPU kernels, issue 3", exit_code);
}

}  // namespace tessera::cli
