// Token sampling from logits: greedy, temperature, top-k, top-p, min-p,
// repetition / presence / frequency penalties, log-probabilities, seeded.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace tessera::kernels {

// What to do with one sequence's logits (OpenAI / vLLM semantics).
struct SamplingOptions {
  float temperature = 0.0f;  // <= 0: greedy (argmax, lowest id on ties).
  int32_t top_k = 0;         // Keep the k most likely tokens; <= 0: all.
  float top_p = 1.0f;        // Keep the smallest set with mass >= top_p.
  float min_p = 0.0f;        // Drop tokens with p < min_p * p_max.
  // HF repetition penalty over `history` (prompt + output): positive logits
  // are divided by it, negative ones multiplied. 1: off.
  float repetition_penalty = 1.0f;
  // OpenAI penalties over `output` tokens: logit -= presence * [count > 0] +
  // frequency * count. 0: off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  bool logprobs = false;     // Report the chosen token's log-probability.
  int32_t top_logprobs = 0;  // And this many best (clamped to the max).
};

// A token and its log-probability.
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// One sampling step's outcome. `top` points into the Sampler's buffers and is
// valid until its next Sample call.
struct SampleResult {
  int32_t token = 0;
  float logprob = 0.0f;  // log-softmax of the processed logits (0 if not
                         // requested).
  absl::Span<const TokenLogprob> top;  // Best first, ties by lower id.
};

// Owns the scratch for one vocabulary size (allocated once); Sample allocates
// nothing. Not thread-safe: use one per thread (or per sequence).
//
// Processing order: penalties -> (greedy: argmax) | temperature -> min-p ->
// top-k -> top-p -> draw. Log-probabilities are log-softmax of the logits
// after penalties and temperature (before truncation); for greedy, after
// penalties only. With no penalties, greedy is exactly argmax of the raw
// logits.
class Sampler {
 public:
  explicit Sampler(int64_t vocab_size, int32_t max_top_logprobs = 20);

  int64_t vocab_size() const { return vocab_size_; }

  // Picks a token from `logits` (vocab_size values, not modified).
  // `rng_state` is the sequence's generator state: one uniform draw advances
  // it by one SplitMix64 step, so a seed reproduces the same tokens. `history`
  // feeds the repetition penalty, `output` the presence/frequency penalties;
  // ids outside the vocabulary are ignored.
  SampleResult Sample(const float* logits, const SamplingOptions& options,
                      absl::Span<const int32_t> history,
                      absl::Span<const int32_t> output, uint64_t* rng_state);

 private:
  int64_t vocab_size_;
  int32_t max_top_logprobs_;
  std::vector<float> work_;        // Processed logits.
  std::vector<int32_t> order_;     // Candidate ids.
  std::vector<float> probs_;       // Candidate probabilities (sorted order).
  std::vector<int32_t> counts_;    // Output token counts (zeroed after use).
  std::vector<uint8_t> seen_;      // History membership (zeroed after use).
  std::vector<TokenLogprob> top_;  // top_logprobs results.
};

}  // namespace tessera::kernels
