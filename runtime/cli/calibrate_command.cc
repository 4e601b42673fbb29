#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddCalibrateCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "calibrate",
                    "Measure this machine and write a cluster profile",
                    "placement planner, issue 6", exit_code);
}

}  // namespace tessera::cli
