// `tessera bench simulator`: serves a model in this process, drives it with
// `tessera bench serve`'s load generator (Poisson arrivals, fixed lengths),
// then replays the same requests (send times, lengths) in the planner's
// discrete-event simulator on a one-instance plan of the same engine settings
// and this machine's profile, and prints both with the relative error of each
// figure.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "placement/plan.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace tessera {

struct BenchSimulatorOptions {
  double request_rate = 2;  // Poisson arrivals, requests/s.
  int64_t num_prompts = 64;
  int64_t input_len = 128;
  int64_t output_len = 64;
  int64_t max_num_seqs = 16;
  int64_t max_num_batched_tokens = 512;
  int64_t block_size = 16;
  int threads = 0;  // 0: all cores.
  uint64_t seed = 0;
};

// One compared figure (seconds or tokens/s).
struct SimulatorRow {
  std::string name;
  double simulated = 0;
  double measured = 0;
  double error() const { return simulated / measured - 1; }
};

// The one-instance colocated plan the simulator runs for these settings.
absl::StatusOr<placement::Plan> SingleInstancePlan(
    const Model& model, const placement::DeviceProfile& profile,
    const BenchSimulatorOptions& options, int64_t num_kv_blocks);

// Runs both and prints the comparison (ending with
// `simulator: max |error| N% (TTFT and TPOT means and medians)`).
absl::StatusOr<std::vector<SimulatorRow>> RunBenchSimulator(
    const Model& model, const Tokenizer& tokenizer,
    const placement::DeviceProfile& profile,
    const BenchSimulatorOptions& options, std::FILE* out);

}  // namespace tessera
