#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddBenchDecodeCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(
      app, "decode",
      "Benchmark prefill and decode of a model against the memory roofline",
      "inference core, issue 3", exit_code);
}

}  // namespace tessera::cli
