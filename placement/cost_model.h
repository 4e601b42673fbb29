// The analytical cost model: FLOPs, bytes, communication and memory of one
// forward step of one instance, per rank.
//
// Every operator's time is max(FLOPs / (peak × compute_efficiency × the
// scale for its matrices' sizes), bytes / (bandwidth × memory_efficiency))
// (a roofline; plus a share of the shorter of the two where the device
// cannot fully overlap them, DeviceProfile::SerialFraction of the op's
// compute/memory ratio), summed per layer, plus a fixed per-layer overhead;
// collectives use alpha-beta models over the link their ranks actually share
// (so a TP group that spans nodes pays the NIC's bandwidth: nothing here
// knows "TP stays in a node").
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "placement/cluster.h"
#include "placement/model_spec.h"

namespace tessera::placement {

// Parallel sizes of one instance. MoE layers shard experts over `ep` groups of
// the `tp` ranks (ep divides tp); each expert is tensor-parallel over tp / ep.
struct Layout {
  int tp = 1;
  int pp = 1;
  int ep = 1;
  int size() const { return tp * pp; }
  int etp() const { return tp / ep; }
};

// A forward step's work, aggregated over the sequences in the batch.
struct BatchShape {
  double num_seqs = 0;
  double new_tokens = 0;      // tokens computed this step
  double attn_pairs = 0;      // Σ query·key pairs (causal)
  double kv_read_tokens = 0;  // Σ cached tokens whose K/V are read
  double logit_tokens = 0;    // tokens whose logits are computed

  // `n` prompts of `len` tokens each (logits for the last token only).
  static BatchShape Prefill(double n, double len);
  // A chunk of `c` tokens of a `len`-token prompt, averaged over the chunk's
  // position (chunked prefill): its queries see (len + 1) / 2 keys on average
  // and it re-reads the prompt's earlier KV (len / 2 tokens on average).
  static BatchShape PrefillChunk(double c, double len);
  // `n` sequences decoding one token each at context `ctx`.
  static BatchShape Decode(double n, double ctx);
  BatchShape operator+(const BatchShape& o) const;
  BatchShape Scaled(double f) const;
};

// FLOPs and bytes moved by one rank for one operator.
struct OpCost {
  double flops = 0;
  double bytes = 0;
  // Compute time of work that is not FLOPs (the softmax's per-score max,
  // exp and sums). It issues on other execution ports than the products'
  // FMAs, so the compute time is the larger of the two, not their sum.
  double score_s = 0;
  // Bandwidth multiplier of the step this operator belongs to (its working
  // set may stay cached between steps; DeviceProfile::BandwidthGain).
  double bandwidth_gain = 1;
  // Fraction of the memory bandwidth this operator's reads reach; 0: the
  // device's for the weight dtype (attention's KV reads have their own).
  double memory_efficiency = 0;
  // Multiplier of the compute efficiency for the sizes of this operator's
  // matrix products (DeviceProfile::GemmSizeScale, combined over its
  // products so that their times add up).
  double compute_scale = 1;
  // The sum of two operators' work; the scales combine weighted by FLOPs.
  OpCost operator+(const OpCost& o) const;
};

// One layer's per-rank work split by operator, and its collective bytes.
struct LayerCost {
  OpCost attn_linear;           // q/k/v/o projections
  OpCost attn_core;             // scores, softmax·V, KV-cache reads/writes
  OpCost ffn;                   // dense MLP or routed experts (+ router)
  double allreduce_bytes = 0;   // per all-reduce; 2 per layer when tp > 1
  double expert_imbalance = 1;  // max/mean tokens per EP rank
  double tokens = 0;            // tokens the layer processes on this rank
  double heads = 0;             // query heads on this rank
};

// Memory of one rank (bytes).
struct RankMemory {
  double weights = 0;
  double activations = 0;
  double reserved = 0;
  double kv_per_token = 0;  // this rank's share of one token's KV cache
  double kv_capacity_tokens = 0;
};

// Communication times (seconds) under the alpha-beta model.
double RingAllReduceTime(double bytes, int p, const LinkSpec& link,
                         double efficiency);
double RingAllGatherTime(double bytes_total, int p, const LinkSpec& link,
                         double efficiency);
double AllToAllTime(double bytes_per_rank, int p, const LinkSpec& link,
                    double efficiency);
double P2pTime(double bytes, const LinkSpec& link, double efficiency);

// Per-rank costs of a model on a device kind.
class CostModel {
 public:
  CostModel(ModelSpec model, DeviceProfile device);

  const ModelSpec& model() const { return model_; }
  const DeviceProfile& device() const { return device_; }

  // One transformer layer on one rank. `skew` ≥ 1 scales the expert load of
  // the busiest EP rank beyond random routing imbalance.
  LayerCost Layer(const BatchShape& b, const Layout& l, double skew = 1) const;
  OpCost Embedding(const BatchShape& b, const Layout& l) const;
  OpCost LmHead(const BatchShape& b, const Layout& l) const;
  // Roofline time of one operator on this device (GEMM efficiency, or the
  // given one).
  double OpTime(const OpCost& c) const;
  double OpTime(const OpCost& c, double compute_efficiency) const;
  // Compute time of one layer (sum of its operators + overhead), without
  // communication.
  double LayerComputeTime(const LayerCost& c) const;

  // Weight bytes one rank of `l` holds for one transformer layer.
  double LayerWeightBytesPerRank(const Layout& l) const;
  // This rank's KV heads (replicated when tp exceeds the KV head count).
  int64_t KvHeadsPerRank(const Layout& l) const;
  double KvBytesPerTokenPerLayerPerRank(const Layout& l) const;
  // Bytes one rank reads in a step over `b` (its weights, LM head included,
  // and the KV it attends over): what must stay cached for the next step to
  // stream faster than memory.
  double StepWorkingSetBytes(const BatchShape& b, const Layout& l) const;
  // Workspace for a step of `max_tokens` tokens and `max_seqs` logits.
  double ActivationBytes(const Layout& l, double max_tokens,
                         double max_seqs) const;

 private:
  // The compute-efficiency multiplier of a set of matrix products, each
  // (its FLOPs, or any figure proportional to them, and its weight count):
  // the FLOP-weighted harmonic mean of their GemmSizeScale, so that the
  // products' times add up.
  double GemmScale(
      std::initializer_list<std::pair<double, double>> products) const;

  ModelSpec model_;
  DeviceProfile device_;
  double act_bytes_ = 2;  // activations in 16 bits
};

// Layers [begin, end) of one pipeline stage.
struct StageRange {
  int begin = 0;
  int end = 0;
  int size() const { return end - begin; }
};

// Splits `num_layers` over `pp` stages minimizing the slowest stage, given the
// per-layer time and the extra time of the first (embedding) and last (final
// norm + LM head) stages.
std::vector<StageRange> BalanceStages(int num_layers, int pp, double layer_time,
                                      double first_extra, double last_extra);

// One instance at a concrete place in the cluster: its layout, its devices
// (global indices, tp innermost) and its stage boundaries.
class InstanceModel {
 public:
  enum class Role { kPrefill, kDecode, kBoth };
  // `first_device`: global index of the instance's rank 0. `stages` empty:
  // balance them for `role`. `skew`: expert-load skew.
  InstanceModel(const CostModel& cost, const ClusterSpec& cluster,
                const Layout& layout, int first_device, Role role,
                std::vector<StageRange> stages = {}, double skew = 1);

  const Layout& layout() const { return layout_; }
  const std::vector<StageRange>& stages() const { return stages_; }
  int first_device() const { return first_device_; }
  // Whether some TP group spans more than one node.
  bool tp_spans_nodes() const { return tp_spans_nodes_; }
  bool pp_spans_nodes() const { return pp_spans_nodes_; }

  // Time of one stage (compute + its TP collectives).
  double StageTime(int stage, const BatchShape& b) const;
  // Latency of one step through all stages (with p2p hops).
  double StepLatency(const BatchShape& b) const;
  // The slowest stage (the pipeline's throughput bound).
  double StageMax(const BatchShape& b) const;
  // One continuous-batching iteration over `b` (prefill chunks and/or
  // decodes); with pp > 1 the sequences are split into up to pp micro-batches
  // that circulate through the stages (the pipeline bubble when fewer).
  double Iteration(const BatchShape& b) const;
  // Time between two tokens of a decode batch of `batch` sequences at mean
  // context `ctx`; with pp > 1 the batch is split into pp micro-batches.
  double DecodeIteration(double batch, double ctx) const;
  // Share of a decode step spent in collectives (for explanations).
  double CommFraction(const BatchShape& b) const;

  // Memory of the fullest rank, with `max_tokens` per step and `max_seqs`.
  RankMemory Memory(double max_tokens, double max_seqs) const;
  // Largest per-rank weight bytes over stages (feasibility messages).
  double MaxWeightBytesPerRank() const;

 private:
  double StageWeightBytes(int s) const;
  const CostModel* cost_;
  Layout layout_;
  int first_device_;
  double skew_;
  std::vector<StageRange> stages_;
  std::vector<LinkSpec> tp_link_;  // per stage: slowest link in its TP group
  std::vector<LinkSpec> pp_link_;  // stage s → s+1 (last: → stage 0)
  bool tp_spans_nodes_ = false;
  bool pp_spans_nodes_ = false;
};

}  // namespace tessera::placement
