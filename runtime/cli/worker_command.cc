#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddWorkerCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "worker", "Run one rank of a multi-process deployment",
                    "communication layer, issue 5", exit_code);
}

}  // namespace tessera::cli
