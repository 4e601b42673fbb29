// `tessera bench cost-model`: the planner's predicted prefill and decode step
// times for a model on this machine's calibrated `cpu-local` profile, next to
// the step times the CPU runner actually takes, and the relative error.
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "runtime/model.h"

namespace tessera {

struct BenchCostModelOptions {
  std::vector<int64_t> prompt_lens = {32, 128, 512};  // Single-prompt prefill.
  std::vector<int64_t> decode_batches = {1, 4, 16};   // Sequences per step.
  int64_t decode_context = 256;  // Cached tokens of each decoding sequence.
  DType kv_dtype = DType::kF32;
  int threads = 0;           // 0: all cores.
  double min_seconds = 0.5;  // Per measured shape (best of the runs).
};

// One compared shape.
struct CostModelRow {
  std::string shape;  // e.g. "prefill 1x128", "decode 16 @256"
  double predicted_s = 0;
  double measured_s = 0;
  double error() const { return predicted_s / measured_s - 1; }
};

// Measures and predicts every shape of `options`, prints a table and a
// summary line (`cost-model: max |error| N% over K shapes`) to `out`.
absl::StatusOr<std::vector<CostModelRow>> RunBenchCostModel(
    const Model& model, const placement::DeviceProfile& profile,
    const BenchCostModelOptions& options, std::FILE* out);

}  // namespace tessera
