// The search: every TP × PP (× EP) layout, colocated or disaggregated, and
// every prefill:decode split, scored by goodput per device under the
// workload's SLOs with queueing (M/G/1 prefill, Little's-law decode batch).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/model_spec.h"
#include "placement/plan.h"
#include "placement/workload.h"

namespace tessera::placement {

struct SearchOptions {
  bool colocated = true;
  bool disaggregated = true;
  int max_candidates_kept = 64;
};

// One scored deployment: colocated (`num_prefill` instances of role both with
// `prefill`'s layout) or disaggregated (prefill and decode pools).
struct Candidate {
  bool disaggregated = false;
  Layout prefill;  // colocated: the instances' layout
  Layout decode;
  int num_prefill = 0;
  int num_decode = 0;
  int devices_used = 0;
  PredictedMetrics metrics;
  std::string limit;               // what bounds its goodput
  std::vector<std::string> notes;  // costs worth knowing (cross-node TP...)

  // e.g. "colocated 2 × (TP8)" or "disagg 1 × P(TP4) + 3 × D(TP4)".
  std::string Name() const;
};

struct SearchResult {
  std::vector<Candidate> ranked;  // best first
  int evaluated = 0;
  int infeasible = 0;
};

// Scores all layouts. ResourceExhausted with a plain explanation when no
// layout fits the model (e.g. "weights need 140 GB per replica; ...").
absl::StatusOr<SearchResult> Search(const ModelSpec& model,
                                    const ClusterSpec& cluster,
                                    const Workload& workload,
                                    const SearchOptions& options = {});

// Why `loser` ranks below `winner`, in one line.
std::string ExplainLoss(const Candidate& winner, const Candidate& loser,
                        const Workload& workload);

// The Plan for a candidate: ranks on devices, stage boundaries, expert map,
// KV-cache settings and predicted metrics.
absl::StatusOr<Plan> BuildPlan(const ModelSpec& model,
                               const ClusterSpec& cluster,
                               const Workload& workload,
                               const Candidate& candidate);

// Expert → ep rank with equal counts per rank, balancing `load` (uniform when
// empty) greedily: heaviest expert to the least loaded rank with room.
std::vector<int> PlaceExperts(int num_experts, int ep,
                              const std::vector<double>& load);

}  // namespace tessera::placement
