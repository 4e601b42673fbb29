// The Plan: the planner's output and the single source of truth for the
// runtime (who each rank is), the launchers (mpirun, Helm) and the simulator.
// JSON layout documented in placement/README.md; version in plan_schema.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/model_spec.h"
#include "placement/workload.h"

namespace tessera::placement {

enum class InstanceRole { kPrefill, kDecode, kBoth };
const char* RoleName(InstanceRole role);

// One process: one device, with its coordinates inside its instance.
struct PlanRank {
  int rank = 0;    // global rank (mpirun world rank)
  int node = 0;    // index into the cluster's hosts
  int device = 0;  // device index within the node
  int tp_rank = 0;
  int pp_rank = 0;
  int ep_rank = 0;  // expert-parallel group of this rank (tp_rank / (tp/ep))
};

// One pipeline stage: layers [layer_begin, layer_end).
struct PlanStage {
  int layer_begin = 0;
  int layer_end = 0;
  bool has_embedding = false;
  bool has_lm_head = false;
};

struct KvCacheSettings {
  int block_size = 16;     // tokens per block
  int64_t num_blocks = 0;  // per rank
  std::string dtype = "bf16";
  int64_t max_num_seqs = 0;
  int64_t max_model_len = 0;
  int64_t max_num_batched_tokens = 0;
};

// Predicted serving figures (seconds, requests/s, bytes).
struct PredictedMetrics {
  double request_rate = 0;    // rate the figures below are predicted at
  double ttft_s = 0;          // at the workload's SLO percentile
  double tpot_s = 0;          // mean time per output token
  double throughput_rps = 0;  // max sustainable requests/s
  double output_tokens_per_s = 0;
  double goodput_rps = 0;  // max requests/s meeting the SLOs
  double goodput_per_device = 0;
  double batch_size = 0;  // mean decode batch at request_rate
  double weights_per_rank_bytes = 0;
  double memory_per_rank_bytes = 0;  // weights + activations + KV + reserve
  double kv_capacity_tokens = 0;
};

struct PlanInstance {
  int id = 0;
  InstanceRole role = InstanceRole::kBoth;
  Layout layout;
  std::vector<PlanStage> stages;       // pp entries
  std::vector<PlanRank> ranks;         // tp × pp entries, tp innermost
  std::vector<int> expert_to_ep_rank;  // MoE: owner ep_rank of each expert
  KvCacheSettings kv_cache;
  PredictedMetrics predicted;
};

struct Plan {
  int schema_version = 0;
  std::string mode;  // "colocated" or "disaggregated"
  ModelSpec model;
  ClusterSpec cluster;
  Workload workload;
  std::vector<PlanInstance> instances;
  PredictedMetrics predicted;
  std::string rationale;  // one paragraph: why this plan won

  int num_ranks() const;
};

// Structural checks: ranks unique and on existing devices, coordinates match
// layouts, stages cover all layers in order, expert map complete, sizes valid.
absl::Status ValidatePlan(const Plan& plan);

std::string PlanToJson(const Plan& plan);
// Parses and validates. Unknown keys, a different schema version or
// inconsistent layouts are InvalidArgument.
absl::StatusOr<Plan> ParsePlan(std::string_view json_text);
absl::StatusOr<Plan> LoadPlan(const std::string& path);
absl::Status WritePlan(const Plan& plan, const std::string& path);

}  // namespace tessera::placement
