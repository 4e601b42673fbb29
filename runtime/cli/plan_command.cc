#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddPlanCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "plan",
                    "Plan the parallel layout for a model on a cluster",
                    "placement planner, issue 6", exit_code);
}

}  // namespace tessera::cli
