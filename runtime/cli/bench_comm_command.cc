#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddBenchCommCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "comm", "Benchmark collectives (nccl-tests style)",
                    "communication layer, issue 5", exit_code);
}

}  // namespace tessera::cli
