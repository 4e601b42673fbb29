#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddBenchServeCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "serve", "Load-test an OpenAI-compatible server",
                    "serving engine, issue 4", exit_code);
}

}  // namespace tessera::cli
