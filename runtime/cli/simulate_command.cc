#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddSimulateCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "simulate", "Simulate serving a workload with a plan",
                    "placement planner, issue 6", exit_code);
}

}  // namespace tessera::cli
