#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddBenchKvTransferCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "kv-transfer",
                    "Benchmark KV-block transfer against ucx_perftest",
                    "communication layer, issue 5", exit_code);
}

}  // namespace tessera::cli
