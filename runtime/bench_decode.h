// `tessera bench decode`: single-stream prefill and decode speed of a model,
// next to the rooflines this machine allows (memory bandwidth for decode, FMA
// peak for prefill), both measured in the same run.
#pragma once

#include <cstdint>
#include <cstdio>

#include "absl/status/status.h"
#include "runtime/model.h"

namespace tessera {

struct BenchDecodeOptions {
  int64_t prompt_tokens = 128;  // Prefill length.
  int64_t decode_tokens = 64;   // Tokens decoded after the prompt.
  int threads = 0;              // 0: all cores.
  int repeats = 3;              // Best of this many runs.
};

// Bytes one decode step must read at `context` tokens: every weight used per
// token (top-k experts only, for MoE) plus the KV cache (f32).
double DecodeBytesPerToken(const ModelConfig& config,
                           const ModelWeights& weights, int64_t context);
// FLOPs per prefill token at `context` tokens: 2 per weight multiply-add plus
// attention.
double PrefillFlopsPerToken(const ModelConfig& config, int64_t context);

// Runs the benchmark and prints its report (ending with `decode:` and
// `prefill:` lines).
absl::Status RunBenchDecode(const Model& model,
                            const BenchDecodeOptions& options, std::FILE* out);

}  // namespace tessera
