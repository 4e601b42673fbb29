// Per-request sampling parameters (OpenAI/vLLM semantics).
#pragma once

#include <cstdint>

namespace tessera {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy.
  int32_t top_k = 0;         // 0 or negative = off.
  float top_p = 1.0f;        // 1 = off.
  float min_p = 0.0f;        // 0 = off; keeps tokens with p >= min_p * p_max.
  float repetition_penalty =
      1.0f;                       // 1 = off (HF/vLLM: divides positive logits).
  float presence_penalty = 0.0f;  // OpenAI: subtracted once per seen token.
  float frequency_penalty = 0.0f;  // OpenAI: subtracted per occurrence.
  int32_t logprobs =
      -1;             // -1 = none; n >= 0: sampled token + n top alternatives.
  uint64_t seed = 0;  // Seeds the request's RNG when `has_seed`.
  bool has_seed = false;

  bool greedy() const { return temperature <= 0.0f; }
};

}  // namespace tessera
