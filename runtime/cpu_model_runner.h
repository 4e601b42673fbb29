// The CPU executor: runs a whole model (one shard = the whole model for now) on
// this process's cores with the fused kernels, over a paged KV cache.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "runtime/model.h"
#include "runtime/model_runner.h"

namespace tessera {

// Sizes a runner plans for once; every step must fit them (no per-step
// allocation).
struct RunnerOptions {
  int64_t block_size = 16;    // Tokens per KV block.
  int64_t num_kv_blocks = 0;  // 0: derive from kv_cache_bytes.
  int64_t kv_cache_bytes =
      0;  // 0 with num_kv_blocks 0: enough for max_model_len x 4.
  DType kv_dtype = DType::kF32;           // f32 | f16 | bf16.
  int64_t max_num_batched_tokens = 2048;  // Tokens per step.
  int64_t max_num_seqs = 256;             // Sequences per step.
  int64_t max_model_len = 0;  // 0: the model's max_position_embeddings.
  int threads = 0;            // 0: all cores.
};

// Builds a CPU runner for `model` (which must outlive it). InvalidArgument for
// options that do not fit the model (e.g. unsupported KV dtype),
// ResourceExhausted when the KV cache cannot hold one max_model_len sequence.
absl::StatusOr<std::unique_ptr<ModelRunner>> CreateCpuModelRunner(
    const Model& model, const RunnerOptions& options);

// RoPE inverse frequencies for `config` (head_dim/2 values), with its
// rope_scaling applied.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace tessera
