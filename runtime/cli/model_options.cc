#include "runtime/cli/internal/model_options.h"

#include <algorithm>
#include <string>
#include <thread>

#include "base/host_memory.h"
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
  sub.add_option("--weights-memory", options->weights_memory,
                 "Where weights live: huge-pages (copied out of the file into "
                 "2 MiB pages: fewer TLB misses, faster decode), mapped (used "
                 "in place from the page cache: no copy, shared between "
                 "processes), auto (huge-pages when they fit in memory)")
      ->check(CLI::IsMember({"auto", "mapped", "huge-pages"}))
      ->capture_default_str();
}

namespace {

// Applies --weights-memory to a model loaded from files.
absl::Status PlaceWeights(const std::string& mode, Model& model) {
  if (mode == "mapped") return absl::OkStatus();
  const std::string thp = TransparentHugePageMode();
  if (mode == "auto") {
    if (thp == "never") {
      spdlog::info("weights stay mapped: transparent huge pages are off");
      return absl::OkStatus();
    }
    const int64_t need = WeightBytes(model);
    const int64_t avail = AvailableHostMemoryBytes();
    if (avail >= 0 && need > avail / 10 * 8) {
      spdlog::info(
          "weights stay mapped: {:.1f} GiB would not fit in 80% of the "
          "{:.1f} GiB available",
          need / 1073741824.0, avail / 1073741824.0);
      return absl::OkStatus();
    }
  }
  absl::StatusOr<WeightCopyStats> copied = CopyWeightsToHostMemory(model);
  if (!copied.ok()) {
    if (mode != "auto") return copied.status();
    // The model is unchanged on failure: serve it from the mapping.
    spdlog::warn("weights stay mapped: {}",
                 std::string(copied.status().message()));
    return absl::OkStatus();
  }
  const WeightCopyStats& stats = *copied;
  spdlog::info(
      "weights: {} tensors, {:.1f} MiB copied into huge-page memory in "
      "{:.2f} s (THP mode {}; {:.1f} MiB of this process in huge pages)",
      stats.tensors, stats.bytes / 1048576.0, stats.seconds, thp,
      AnonHugePageBytes() / 1048576.0);
  return absl::OkStatus();
}

}  // namespace

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
    RETURN_IF_ERROR(PlaceWeights(options.weights_memory, model));
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
