#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddMakeModelCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "make-model",
                    "Write a seeded random model in HF or GGUF format",
                    "model writers", exit_code);
}

}  // namespace tessera::cli
