// Flags and loading shared by the subcommands that run a model (run, serve,
// bench).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/cli/internal/command.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace tessera::cli {

struct ModelOptions {
  std::string model;  // Empty: the built-in demo model.
  std::string
      tokenizer;    // Empty: the tokenizer inside/next to the model, if any.
  int threads = 0;  // 0: all cores.
  std::string log_level = "warn";
  // auto | mapped | huge-pages: where the weights live (LoadModelAndTokenizer).
  std::string weights_memory = "auto";
};

// Adds --model, --tokenizer, --threads and --log-level to `sub`.
void AddModelOptions(CLI::App& sub, ModelOptions* options);

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // Null when the model brings none.
};

// Loads the model (or synthesizes the demo model) and its tokenizer. With
// weights_memory "huge-pages" the weights are copied out of the mapped files
// into huge-page-advised memory (CopyWeightsToHostMemory); "auto" does so when
// transparent huge pages are enabled and the weights fit in 80% of the
// available memory, else leaves them mapped; "mapped" never copies.
absl::StatusOr<LoadedModel> LoadModelAndTokenizer(const ModelOptions& options);

// Token ids that end generation: the tokenizer's and config's EOS; for llama2.c
// checkpoints BOS (id 1), as llama2.c's run.c does.
std::vector<int32_t> StopTokenIds(const LoadedModel& loaded);

// The thread count a runner will use for `threads` (0 = all cores).
int EffectiveThreads(int threads);

}  // namespace tessera::cli
