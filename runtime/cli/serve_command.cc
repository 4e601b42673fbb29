#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddServeCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "serve", "Serve an OpenAI-compatible HTTP API",
                    "serving engine, issue 4", exit_code);
}

}  // namespace tessera::cli
