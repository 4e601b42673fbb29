#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddRunCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "run",
                    "Generate text from a prompt with a model (built-in demo "
                    "model by default)",
                    "inference core, issue 3", exit_code);
}

}  // namespace tessera::cli
