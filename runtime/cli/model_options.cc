#include "runtime/cli/internal/model_options.h"

#include <algorithm>
#include <thread>

#include "base/logging.h"
#include "base/status.h"
#include "runtime/model_loader.h"
#include "runtime/model_presets.h"

namespace tessera::cli {

// Seed of the built-in demo model: fixed so every build prints the same noise.
constexpr uint64_t kDemoSeed = 20261125;

void AddModelOptions(CLI::App& sub, ModelOptions* options) {
  sub.add_option("--model", options->model,
                 "Model: HF directory, .gguf file or llama2.c .bin (default: "
                 "built-in demo model)");
  sub.add_option(
      "--tokenizer", options->tokenizer,
      "Tokenizer file: tokenizer.json, .gguf or llama2.c tokenizer.bin");
  sub.add_option("--threads", options->threads,
                 "Compute threads (0 = all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub.add_option("--log-level", options->log_level,
                 "trace|debug|info|warn|error|off")
      ->capture_default_str();
}

absl::StatusOr<LoadedModel> LoadModelAndTokenizer(const ModelOptions& options) {
  RETURN_IF_ERROR(InitLogging(options.log_level));
  LoadedModel loaded;
  if (options.model.empty()) {
    ASSIGN_OR_RETURN(Model demo,
                     SynthesizeModel("demo", DType::kF32, kDemoSeed));
    loaded.model = std::make_unique<Model>(std::move(demo));
    if (options.tokenizer.empty()) loaded.tokenizer = NewByteTokenizer();
  } else {
    ASSIGN_OR_RETURN(Model model, LoadModel(options.model));
    loaded.model = std::make_unique<Model>(std::move(model));
  }
  if (!options.tokenizer.empty()) {
    ASSIGN_OR_RETURN(loaded.tokenizer, LoadTokenizer(options.tokenizer));
  } else if (loaded.tokenizer == nullptr && loaded.model->format != "llama2c") {
    // GGUF files and HF directories usually carry their tokenizer.
    auto tokenizer = LoadTokenizer(options.model);
    if (tokenizer.ok()) {
      loaded.tokenizer = std::move(*tokenizer);
    } else {
      spdlog::warn("no tokenizer loaded from {}: {}", options.model,
                   std::string(tokenizer.status().message()));
    }
  }
  if (loaded.tokenizer != nullptr &&
      loaded.tokenizer->vocab_size() > loaded.model->config.vocab_size) {
    return absl::InvalidArgumentError(fmt::format(
        "the tokenizer has {} tokens but the model only {}",
        loaded.tokenizer->vocab_size(), loaded.model->config.vocab_size));
  }
  return loaded;
}

std::vector<int32_t> StopTokenIds(const LoadedModel& loaded) {
  if (loaded.model->format == "llama2c") return {1};
  std::vector<int32_t> ids = loaded.model->config.eos_token_ids;
  if (loaded.tokenizer != nullptr) {
    for (int32_t id : loaded.tokenizer->eos_ids()) {
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
  }
  return ids;
}

int EffectiveThreads(int threads) {
  return threads > 0 ? threads
                     : static_cast<int>(
                           std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace tessera::cli
