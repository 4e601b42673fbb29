// `tessera run`: generate a continuation of one prompt, streaming text to
// stdout.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "base/status.h"
#include "fmt/format.h"
#include "runtime/cli/internal/command.h"
#include "runtime/cli/internal/model_options.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/generate.h"
#include "runtime/tokenizer.h"

namespace tessera::cli {
namespace {

struct RunOptions {
  ModelOptions model;
  std::string prompt;
  std::string prompt_ids;
  int64_t max_tokens = 128;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  float min_p = 0.0f;
  uint64_t seed = 0;
  bool print_ids = false;
  bool stats = false;
};

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find_first_of(", ", pos);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(pos, end - pos);
    if (!item.empty()) {
      int32_t id;
      if (!absl::SimpleAtoi(item, &id) || id < 0) {
        return absl::InvalidArgumentError(
            fmt::format("bad token id '{}' in --prompt-ids", item));
      }
      ids.push_back(id);
    }
    pos = end + 1;
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids has no ids");
  return ids;
}

absl::Status Run(const RunOptions& o) {
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelAndTokenizer(o.model));
  const Model& model = *loaded.model;
  std::vector<int32_t> prompt;
  if (!o.prompt_ids.empty()) {
    ASSIGN_OR_RETURN(prompt, ParseIds(o.prompt_ids));
  } else {
    if (loaded.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "this model has no tokenizer: pass --tokenizer PATH or use "
          "--prompt-ids");
    }
    ASSIGN_OR_RETURN(prompt,
                     loaded.tokenizer->Encode(o.prompt, /*add_special=*/true,
                                              /*parse_special=*/false));
  }
  const int64_t context = model.config.max_position_embeddings;
  if (static_cast<int64_t>(prompt.size()) >= context) {
    return absl::InvalidArgumentError(
        fmt::format("the prompt has {} tokens; the model's context is {}",
                    prompt.size(), context));
  }
  RunnerOptions ro;
  ro.threads = o.model.threads;
  // The last generated token needs no KV slot.
  ro.max_model_len = std::min<int64_t>(
      context, static_cast<int64_t>(prompt.size()) + o.max_tokens - 1);
  ro.num_kv_blocks = (ro.max_model_len + ro.block_size - 1) / ro.block_size;
  ro.max_num_seqs = 1;
  ro.max_num_batched_tokens =
      std::min<int64_t>(512, static_cast<int64_t>(prompt.size()));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   CreateCpuModelRunner(model, ro));

  GenerateOptions go;
  go.max_tokens = std::min<int64_t>(
      o.max_tokens, ro.max_model_len - static_cast<int64_t>(prompt.size()) + 1);
  go.prefill_chunk = ro.max_num_batched_tokens;
  go.sampling.temperature = o.temperature;
  go.sampling.top_p = o.top_p;
  go.sampling.top_k = o.top_k;
  go.sampling.min_p = o.min_p;
  go.sampling.seed = o.seed;
  go.sampling.has_seed = true;
  go.stop_ids = StopTokenIds(loaded);

  std::vector<int32_t> generated;
  std::unique_ptr<IncrementalDetokenizer> detok;
  if (!o.print_ids && loaded.tokenizer != nullptr) {
    detok = std::make_unique<IncrementalDetokenizer>(
        *loaded.tokenizer, /*skip_special=*/true, prompt);
  }
  ASSIGN_OR_RETURN(
      GenerateStats stats, Generate(*runner, prompt, go, [&](int32_t token) {
        generated.push_back(token);
        if (detok != nullptr) {
          // Ids come from the model's own vocabulary, so Push cannot fail
          // except for ids beyond the tokenizer's: print nothing for those.
          const absl::StatusOr<std::string> piece = detok->Push(token);
          if (piece.ok()) std::fwrite(piece->data(), 1, piece->size(), stdout);
          std::fflush(stdout);
        }
      }));
  if (o.print_ids || detok == nullptr) {
    std::printf("%s\n", fmt::format("{}", fmt::join(generated, " ")).c_str());
  } else {
    const std::string rest = detok->Flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
  }
  std::fflush(stdout);
  if (o.stats) {
    std::fprintf(stderr,
                 "stats: %lld prompt tokens, %lld generated; TTFT %.1f ms; "
                 "prefill %.1f tok/s; "
                 "decode %.1f tok/s (%d threads)\n",
                 static_cast<long long>(stats.prompt_tokens),
                 static_cast<long long>(stats.generated_tokens),
                 stats.ttft_seconds * 1e3, stats.prefill_tokens_per_second(),
                 stats.decode_tokens_per_second(),
                 EffectiveThreads(o.model.threads));
  }
  return absl::OkStatus();
}

}  // namespace

void AddRunCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<RunOptions>();
  CLI::App* sub =
      app.add_subcommand("run",
                         "Generate text from a prompt (the built-in demo model "
                         "unless --model is given)");
  AddModelOptions(*sub, &opts->model);
  auto* prompt = sub->add_option("--prompt", opts->prompt, "Prompt text");
  auto* ids = sub->add_option("--prompt-ids", opts->prompt_ids,
                              "Prompt as token ids: 1,2,3");
  prompt->excludes(ids);
  sub->add_option("--max-tokens", opts->max_tokens,
                  "Tokens to generate at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--temperature", opts->temperature,
                  "Sampling temperature; 0 = greedy")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--top-p", opts->top_p, "Nucleus sampling mass")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  sub->add_option("--top-k", opts->top_k,
                  "Keep the k most likely tokens (0 = off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--min-p", opts->min_p,
                  "Drop tokens below min-p x the top probability")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  sub->add_option("--seed", opts->seed, "Sampling seed")->capture_default_str();
  sub->add_flag("--print-ids", opts->print_ids,
                "Print generated token ids instead of text");
  sub->add_flag("--stats", opts->stats,
                "Print TTFT and prefill/decode tokens/s to stderr");
  sub->final_callback([opts, exit_code] {
    if (opts->prompt.empty() && opts->prompt_ids.empty()) {
      opts->prompt = "Once upon a time";
    }
    const absl::Status status = Run(*opts);
    *exit_code = status.ok()
                     ? kExitOk
                     : ReportError("run", std::string(status.message()));
  });
}

}  // namespace tessera::cli
