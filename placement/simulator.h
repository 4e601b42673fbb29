// Discrete-event simulation of serving a workload with a Plan: Poisson
// arrivals (or a recorded trace), per-instance continuous batching
// (prefill-first, admission bounded by KV blocks and the step token budget),
// pipelined prefill, KV transfer to the least loaded decode instance, and
// decode iterations, all timed by the cost model. Lets users size clusters they
// do not have.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/plan.h"
#include "placement/workload.h"

namespace tessera::placement {

// One request of a recorded load (SimulationOptions::trace).
struct TraceRequest {
  double arrival_s = 0;  // from the start of the run
  int64_t input = 0;     // prompt tokens
  int64_t output = 0;    // generated tokens
};

// Figures are steady-state: over requests arriving in [0.2, 1] × duration,
// while arrivals continue afterwards so that none of them sees the drain.
// With a trace, the simulator replays exactly those requests instead and
// measures all of them, warm-up and drain included, as a benchmark run does.
struct SimulationOptions {
  double duration_s = 60;  // the measured window ends here
  uint64_t seed = 1;
  double arrival_rate = 0;  // 0: the workload's, else the plan's prediction
  // Replaces the Poisson arrivals and the workload's lengths when not empty
  // (duration_s, seed and arrival_rate are then unused).
  std::vector<TraceRequest> trace;
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};

struct SimulationResult {
  double arrival_rate = 0;
  int64_t arrived = 0;    // in the measured window
  int64_t completed = 0;  // of those
  Percentiles ttft_s;
  Percentiles tpot_s;
  double throughput_rps = 0;  // completed requests / duration
  double output_tokens_per_s = 0;
  double goodput_rps = 0;     // requests meeting both SLOs / duration
  double slo_attainment = 0;  // share of arrived requests meeting SLOs
  double mean_decode_batch = 0;
  double mean_step_s = 0;  // mean iteration time (seconds) in the window
};

// Simulates `workload` on `plan`. InvalidArgument for a bad duration/rate.
absl::StatusOr<SimulationResult> Simulate(const Plan& plan,
                                          const Workload& workload,
                                          const SimulationOptions& options);

}  // namespace tessera::placement
