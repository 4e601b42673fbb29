// Single-sequence generation straight on a ModelRunner: what `tessera run` and
// `tessera bench decode` use (the serving engine batches many sequences
// instead).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/model_runner.h"
#include "runtime/sampling_params.h"

namespace tessera {

struct GenerateOptions {
  int64_t max_tokens = 128;  // Generated tokens at most.
  SamplingParams sampling;   // temperature 0 = greedy.
  std::vector<int32_t>
      stop_ids;                 // Generation ends after emitting none of these.
  int64_t prefill_chunk = 512;  // Prompt tokens per step (chunked prefill).
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double ttft_seconds =
      0;  // Prompt processing until the first token is sampled.
  double decode_seconds = 0;  // Everything after the first token.
  double prefill_tokens_per_second() const {
    return ttft_seconds > 0 ? prompt_tokens / ttft_seconds : 0;
  }
  // Tokens after the first, per second of decode.
  double decode_tokens_per_second() const {
    return decode_seconds > 0 ? (generated_tokens - 1) / decode_seconds : 0;
  }
};

// Runs the prompt then samples up to max_tokens tokens, calling `on_token` for
// each (stop ids are not passed on). Uses KV blocks 0..n-1 of the runner's
// cache. InvalidArgument for an empty prompt; ResourceExhausted when prompt +
// max_tokens does not fit the runner's KV cache.
absl::StatusOr<GenerateStats> Generate(
    ModelRunner& runner, absl::Span<const int32_t> prompt,
    const GenerateOptions& options,
    const std::function<void(int32_t)>& on_token);

}  // namespace tessera
