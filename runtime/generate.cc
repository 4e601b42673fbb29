#include "runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "base/status.h"
#include "fmt/format.h"

namespace tessera {

absl::StatusOr<GenerateStats> Generate(
    ModelRunner& runner, absl::Span<const int32_t> prompt,
    const GenerateOptions& options,
    const std::function<void(int32_t)>& on_token) {
  using Clock = std::chrono::steady_clock;
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  // The last sampled token is never fed back: it needs no KV slot or position.
  const int64_t total = static_cast<int64_t>(prompt.size()) +
                        std::max<int64_t>(options.max_tokens, 1) - 1;
  const int64_t blocks =
      (total + runner.block_size() - 1) / runner.block_size();
  if (blocks > runner.num_kv_blocks()) {
    return absl::ResourceExhaustedError(fmt::format(
        "{} prompt + {} new tokens need {} KV blocks; the cache has {}",
        prompt.size(), options.max_tokens, blocks, runner.num_kv_blocks()));
  }
  if (total > runner.config().max_position_embeddings) {
    return absl::InvalidArgumentError(fmt::format(
        "{} prompt + {} new tokens exceed the model's context of {}",
        prompt.size(), options.max_tokens,
        runner.config().max_position_embeddings));
  }
  std::vector<int32_t> block_table(blocks);
  std::iota(block_table.begin(), block_table.end(), 0);
  std::vector<int32_t> output;
  output.reserve(options.max_tokens);
  std::vector<StepOutput> step_out;
  step_out.reserve(1);
  uint64_t rng_state =
      options.sampling.has_seed ? options.sampling.seed : 0x5eed;

  GenerateStats stats;
  stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  const auto start = Clock::now();
  auto first_token_time = start;
  int64_t done = 0;
  int32_t last = -1;
  while (stats.generated_tokens < options.max_tokens) {
    StepSequence seq;
    seq.seq_id = 0;
    seq.block_table = block_table;
    seq.sampling = &options.sampling;
    seq.prompt_tokens = prompt;
    seq.output_tokens = output;
    seq.rng_state = &rng_state;
    if (done < stats.prompt_tokens) {
      const int64_t n =
          std::min(options.prefill_chunk, stats.prompt_tokens - done);
      seq.tokens = prompt.subspan(done, n);
      seq.num_computed = done;
      seq.sample = done + n == stats.prompt_tokens;
      done += n;
    } else {
      seq.tokens = absl::MakeConstSpan(&last, 1);
      seq.num_computed = done;
      seq.sample = true;
      ++done;
    }
    step_out.clear();
    RETURN_IF_ERROR(runner.Step(absl::MakeConstSpan(&seq, 1), &step_out));
    if (!seq.sample) continue;
    last = step_out.at(0).token;
    if (stats.generated_tokens == 0) first_token_time = Clock::now();
    ++stats.generated_tokens;
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), last) !=
        options.stop_ids.end()) {
      break;
    }
    output.push_back(last);
    on_token(last);
  }
  const auto end = Clock::now();
  stats.ttft_seconds =
      std::chrono::duration<double>(first_token_time - start).count();
  stats.decode_seconds =
      std::chrono::duration<double>(end - first_token_time).count();
  return stats;
}

}  // namespace tessera
