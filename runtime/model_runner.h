// The narrow interface between the serving engine (scheduler + KV block
// manager) and whatever executes the model (one process, or an instance
// spanning several ranks).
//
// The engine owns *which* KV blocks a sequence uses (ids, ref counts, prefix
// hashes); the runner owns the KV *memory* (num_kv_blocks() blocks of
// block_size() tokens for every layer) and executes steps. A step mixes prefill
// chunks and decodes.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "runtime/model.h"
#include "runtime/sampling_params.h"

namespace tessera {

// One sequence's share of a step.
struct StepSequence {
  int64_t seq_id = 0;
  // New tokens to run: a prompt chunk, or the last sampled token when decoding.
  absl::Span<const int32_t> tokens;
  // Tokens already in the KV cache; tokens[0] sits at this position.
  int64_t num_computed = 0;
  // KV blocks covering positions [0, num_computed + tokens.size()).
  absl::Span<const int32_t> block_table;
  // Sample a next token after the last new token (false for a non-final prefill
  // chunk).
  bool sample = false;
  const SamplingParams* sampling = nullptr;  // Required when `sample`.
  // Tokens generated so far (for repetition/presence/frequency penalties).
  absl::Span<const int32_t> output_tokens;
  // Prompt tokens (repetition penalty also covers the prompt, as in vLLM/HF).
  absl::Span<const int32_t> prompt_tokens;
  // The sequence's RNG state, advanced by sampling (seeded per request).
  uint64_t* rng_state = nullptr;
};

// A sampled token, with log-probabilities when requested.
struct StepOutput {
  int64_t seq_id = 0;
  int32_t token = -1;
  float logprob = 0.0f;  // Of `token` (filled when logprobs >= 0).
  std::vector<std::pair<int32_t, float>> top_logprobs;  // Best first.
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual const ModelConfig& config() const = 0;
  // KV cache geometry: blocks allocated per layer, and tokens per block.
  virtual int64_t num_kv_blocks() const = 0;
  virtual int64_t block_size() const = 0;

  // Runs one step. Appends one StepOutput per sequence with `sample`, in batch
  // order. InvalidArgument for a malformed batch (block table too short, token
  // out of range).
  virtual absl::Status Step(absl::Span<const StepSequence> batch,
                            std::vector<StepOutput>* outputs) = 0;

  // Copies KV block `src` to `dst` in every layer (copy-on-write of shared
  // blocks).
  virtual void CopyBlock(int32_t src, int32_t dst) = 0;
};

}  // namespace tessera
