#include "runtime/cli/internal/command.h"

namespace tessera::cli {

void AddTokenizeCommand(CLI::App& app, int* exit_code) {
  AddPendingCommand(app, "tokenize",
                    "Tokenize text or detokenize ids with a model's tokenizer",
                    "tokenizers, issue 3", exit_code);
}

}  // namespace tessera::cli
