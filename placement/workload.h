// What the cluster must serve: request length distributions, arrival rate and
// service-level objectives.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/random.h"

namespace tessera::placement {

// A distribution of token counts, clipped to [min, max].
struct LengthDistribution {
  enum class Kind { kFixed, kUniform, kExponential, kLognormal, kNormal };
  Kind kind = Kind::kFixed;
  double mean = 0;
  double stddev = 0;  // lognormal/normal
  int64_t min = 1;
  int64_t max = 0;  // 0: 8 × mean

  // One sample (deterministic given the generator's state).
  int64_t Sample(SplitMix64& rng) const;
  // 256 equally weighted representative values (sorted), for expectations
  // and percentiles in the analytical model.
  std::vector<int64_t> Quantiles() const;
  int64_t Max() const;
};

// Serving objectives (DistServe-style: a request attains the SLO when both
// its TTFT and its TPOT are within bounds; `percentile` of requests must).
struct Slo {
  double ttft_s = 0;  // 0: unconstrained
  double tpot_s = 0;  // 0: unconstrained
  double percentile = 90;
};

struct Workload {
  std::string name = "default";
  LengthDistribution input;
  LengthDistribution output;
  double arrival_rate = 0;  // requests/s; 0: as many as the plan sustains
  Slo slo;
  enum class Objective { kGoodput, kThroughput };
  Objective objective = Objective::kGoodput;
  // Skew of expert routing beyond random imbalance (1: uniform routing).
  double expert_skew = 1.0;
  // Relative routing frequency per expert, when known (empty: uniform).
  std::vector<double> expert_load;
};

// A chat-like default: lognormal inputs (mean 1024) and outputs (mean 256),
// TTFT 1 s and TPOT 50 ms at p90.
Workload DefaultWorkload();

// Parses a workload JSON; unknown keys and negative values are
// InvalidArgument. Example:
//   {"input_tokens": {"distribution": "lognormal", "mean": 1024, "stddev": 600,
//                     "max": 8192},
//    "output_tokens": {"distribution": "fixed", "mean": 256},
//    "arrival_rate": 20, "slo": {"ttft_ms": 500, "tpot_ms": 40,
//    "percentile": 90}, "objective": "goodput"}
absl::StatusOr<Workload> ParseWorkload(std::string_view json_text);
absl::StatusOr<Workload> LoadWorkload(const std::string& path);
std::string WorkloadToJson(const Workload& w);

}  // namespace tessera::placement
