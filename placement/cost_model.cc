#include "placement/cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/logging.h"

namespace tessera::placement {

BatchShape BatchShape::Prefill(double n, double len) {
  BatchShape b;
  b.num_seqs = n;
  b.new_tokens = n * len;
  // Token i of a prompt attends to i + 1 keys: Σ = len (len + 1) / 2.
  b.attn_pairs = n * len * (len + 1) / 2;
  b.kv_read_tokens = 0;  // keys come from the step's own K/V
  b.logit_tokens = n;
  return b;
}

BatchShape BatchShape::PrefillChunk(double c, double len) {
  BatchShape b;
  b.num_seqs = 1;
  b.new_tokens = c;
  b.attn_pairs = c * (len + 1) / 2;
  b.kv_read_tokens = len / 2;
  b.logit_tokens = c / len;  // the prompt's last chunk samples a token
  return b;
}

BatchShape BatchShape::Decode(double n, double ctx) {
  BatchShape b;
  b.num_seqs = n;
  b.new_tokens = n;
  b.attn_pairs = n * (ctx + 1);
  b.kv_read_tokens = n * ctx;
  b.logit_tokens = n;
  return b;
}

BatchShape BatchShape::operator+(const BatchShape& o) const {
  return {num_seqs + o.num_seqs, new_tokens + o.new_tokens,
          attn_pairs + o.attn_pairs, kv_read_tokens + o.kv_read_tokens,
          logit_tokens + o.logit_tokens};
}

OpCost OpCost::operator+(const OpCost& o) const {
  OpCost sum{flops + o.flops, bytes + o.bytes,   score_s + o.score_s,
             bandwidth_gain,  memory_efficiency, compute_scale};
  // Times add: Σf / scale = f1 / s1 + f2 / s2.
  const double slow = flops / compute_scale + o.flops / o.compute_scale;
  if (sum.flops > 0 && slow > 0) sum.compute_scale = sum.flops / slow;
  return sum;
}

BatchShape BatchShape::Scaled(double f) const {
  return {num_seqs * f, new_tokens * f, attn_pairs * f, kv_read_tokens * f,
          logit_tokens * f};
}

double RingAllReduceTime(double bytes, int p, const LinkSpec& link,
                         double efficiency) {
  if (p <= 1 || bytes <= 0) return 0;
  // Reduce-scatter + all-gather: 2 (p-1) steps of bytes / p each.
  const double steps = 2.0 * (p - 1);
  return steps * link.latency_s +
         steps / p * bytes / (link.bandwidth_bytes_per_s * efficiency);
}

double RingAllGatherTime(double bytes_total, int p, const LinkSpec& link,
                         double efficiency) {
  if (p <= 1 || bytes_total <= 0) return 0;
  const double steps = p - 1.0;
  return steps * link.latency_s +
         steps / p * bytes_total / (link.bandwidth_bytes_per_s * efficiency);
}

double AllToAllTime(double bytes_per_rank, int p, const LinkSpec& link,
                    double efficiency) {
  if (p <= 1 || bytes_per_rank <= 0) return 0;
  // Each rank keeps 1/p and sends the rest, p-1 messages in flight.
  return (p - 1.0) * link.latency_s +
         bytes_per_rank * (p - 1.0) / p /
             (link.bandwidth_bytes_per_s * efficiency);
}

double P2pTime(double bytes, const LinkSpec& link, double efficiency) {
  if (bytes <= 0) return 0;
  return link.latency_s + bytes / (link.bandwidth_bytes_per_s * efficiency);
}

CostModel::CostModel(ModelSpec model, DeviceProfile device)
    : model_(std::move(model)), device_(std::move(device)) {}

int64_t CostModel::KvHeadsPerRank(const Layout& l) const {
  // With more TP ranks than KV heads, each rank keeps a copy of its group's
  // KV head (as vLLM does).
  return std::max<int64_t>(1, model_.num_kv_heads / l.tp);
}

double CostModel::KvBytesPerTokenPerLayerPerRank(const Layout& l) const {
  return 2.0 * static_cast<double>(KvHeadsPerRank(l) * model_.head_dim) *
         model_.kv_bytes;
}

double CostModel::LayerWeightBytesPerRank(const Layout& l) const {
  const ModelSpec& m = model_;
  const double h = static_cast<double>(m.hidden_size);
  const double hd = static_cast<double>(m.head_dim);
  const double heads_rank = static_cast<double>(m.num_heads) / l.tp;
  const double attn = h * hd * (2 * heads_rank + 2.0 * KvHeadsPerRank(l));
  double ffn;
  if (m.is_moe()) {
    ffn = static_cast<double>(m.num_experts) / l.ep *
              static_cast<double>(m.ExpertParams()) / l.etp() +
          static_cast<double>(m.RouterParams());
  } else {
    ffn = static_cast<double>(m.MlpParams()) / l.tp;
  }
  return (attn + ffn + 2 * h) * m.weight_bytes;
}

double CostModel::StepWorkingSetBytes(const BatchShape& b,
                                      const Layout& l) const {
  const double layers = static_cast<double>(model_.num_layers) / l.pp;
  const double lm_head = static_cast<double>(model_.hidden_size) *
                         static_cast<double>(model_.vocab_size) / l.tp *
                         model_.weight_bytes;
  return layers * (LayerWeightBytesPerRank(l) +
                   b.kv_read_tokens * KvBytesPerTokenPerLayerPerRank(l)) +
         lm_head;
}

LayerCost CostModel::Layer(const BatchShape& b, const Layout& l,
                           double skew) const {
  const ModelSpec& m = model_;
  const double wb = m.weight_bytes, ab = act_bytes_, kvb = m.kv_bytes;
  const double h = static_cast<double>(m.hidden_size);
  const double hd = static_cast<double>(m.head_dim);
  const double heads_rank = static_cast<double>(m.num_heads) / l.tp;
  const double kv_rank = static_cast<double>(KvHeadsPerRank(l));
  const double t = b.new_tokens;
  LayerCost c;

  // q, k, v, o projections: 2 FLOPs per weight per token.
  const double attn_params = h * hd * (2 * heads_rank + 2 * kv_rank);
  c.attn_linear.flops = 2 * t * attn_params;
  const double q_params = h * hd * heads_rank, kv_params = h * hd * kv_rank;
  c.attn_linear.compute_scale =
      GemmScale({{2 * q_params, q_params}, {2 * kv_params, kv_params}});
  c.attn_linear.bytes =
      attn_params * wb +
      t * (2 * h + 2 * heads_rank * hd + 2 * kv_rank * hd) * ab;

  // QK^T and PV: 2 × 2 FLOPs per (query, key) pair per head dimension.
  c.attn_core.flops = 4 * heads_rank * hd * b.attn_pairs;
  c.attn_core.score_s =
      heads_rank * b.attn_pairs * device_.softmax_seconds_per_score;
  c.attn_core.memory_efficiency = device_.attention_memory_efficiency;
  c.attn_core.bytes = b.kv_read_tokens * 2 * kv_rank * hd * kvb +  // KV reads
                      t * 2 * kv_rank * hd * kvb +                 // KV writes
                      t * 2 * heads_rank * hd * ab;  // Q in, O out

  const double mats = m.gated_mlp ? 3 : 2;
  if (!m.is_moe()) {
    const double p = static_cast<double>(m.MlpParams()) / l.tp;
    c.ffn.flops = 2 * t * p;
    c.ffn.compute_scale = GemmScale({{p, p / mats}});
    c.ffn.bytes = p * wb + t * (2 * h + mats * m.ffn_size / l.tp) * ab;
  } else {
    const double e = static_cast<double>(m.num_experts);
    const double k = static_cast<double>(m.experts_per_token);
    // Router (replicated): logits for every expert.
    c.ffn.flops = 2 * t * h * e;
    c.ffn.bytes = h * e * wb;
    // Random routing: the busiest of ep ranks sees ≈ mean + sqrt(2 ln ep) σ
    // of the t·k assignments (binomial), capped by everything on one rank.
    double imbalance = 1;
    if (l.ep > 1 && t > 0) {
      const double ep = l.ep;
      imbalance = 1 + std::sqrt(2 * std::log(ep) * (ep - 1) / (t * k));
      imbalance = std::min(imbalance * skew, ep);
    }
    c.expert_imbalance = imbalance;
    const double tokens_rank = t * k / l.ep * imbalance;
    const double expert_rank = static_cast<double>(m.ExpertParams()) / l.etp();
    const double router_flops = c.ffn.flops;
    c.ffn.flops += 2 * tokens_rank * expert_rank;
    c.ffn.compute_scale =
        GemmScale({{router_flops, h * e},
                   {2 * tokens_rank * expert_rank, expert_rank / mats}});
    // Distinct local experts touched by t tokens (each picks k of e).
    const double local = e / l.ep;
    const double touched =
        std::min(local * (1 - std::pow(1 - k / e, t)), tokens_rank);
    c.ffn.bytes += touched * expert_rank * wb +
                   tokens_rank * (2 * h + mats * m.moe_ffn_size / l.etp()) * ab;
  }
  c.allreduce_bytes = l.tp > 1 ? t * h * ab : 0;
  c.tokens = t;
  c.heads = heads_rank;
  const double gain = device_.BandwidthGain(StepWorkingSetBytes(b, l));
  c.attn_linear.bandwidth_gain = c.attn_core.bandwidth_gain =
      c.ffn.bandwidth_gain = gain;
  return c;
}

OpCost CostModel::Embedding(const BatchShape& b, const Layout& l) const {
  (void)l;
  const double h = static_cast<double>(model_.hidden_size);
  return {0, b.new_tokens * h * (model_.weight_bytes + act_bytes_)};
}

OpCost CostModel::LmHead(const BatchShape& b, const Layout& l) const {
  const double h = static_cast<double>(model_.hidden_size);
  const double v = static_cast<double>(model_.vocab_size) / l.tp;
  OpCost c{2 * b.logit_tokens * h * v,
           // fp32 logits are written, then read again by the sampler.
           h * v * model_.weight_bytes +
               b.logit_tokens * (h * act_bytes_ + 2 * v * 4),
           0, device_.BandwidthGain(StepWorkingSetBytes(b, l))};
  c.compute_scale = device_.GemmSizeScale(h * v);
  return c;
}

double CostModel::GemmScale(
    std::initializer_list<std::pair<double, double>> products) const {
  double flops = 0, slow = 0;
  for (const auto& [f, weights] : products) {
    flops += f;
    slow += f / device_.GemmSizeScale(weights);
  }
  return flops > 0 && slow > 0 ? flops / slow : 1.0;
}

double CostModel::OpTime(const OpCost& c) const {
  return OpTime(c, device_.ComputeEfficiency(model_.weight_dtype));
}

double CostModel::OpTime(const OpCost& c, double compute_efficiency) const {
  const std::string& d = model_.weight_dtype;
  const double efficiency = std::min(1.0, compute_efficiency * c.compute_scale);
  const double compute =
      std::max(c.flops / (device_.PeakFlops(d) * efficiency), c.score_s);
  const double memory_efficiency = c.memory_efficiency > 0
                                       ? c.memory_efficiency
                                       : device_.MemoryEfficiency(d);
  const double memory = c.bytes / (device_.memory_bandwidth_bytes_per_s *
                                   memory_efficiency * c.bandwidth_gain);
  const double ratio = memory > 0 ? compute / memory : 0;
  return std::max(compute, memory) +
         device_.SerialFraction(ratio) * std::min(compute, memory);
}

double CostModel::LayerComputeTime(const LayerCost& c) const {
  const double attention_efficiency =
      device_.attention_efficiency > 0
          ? device_.attention_efficiency
          : device_.ComputeEfficiency(model_.weight_dtype);
  return OpTime(c.attn_linear) + OpTime(c.attn_core, attention_efficiency) +
         OpTime(c.ffn) + device_.layer_overhead_s +
         (device_.token_overhead_s + device_.head_overhead_s * c.heads) *
             c.tokens;
}

double CostModel::ActivationBytes(const Layout& l, double max_tokens,
                                  double max_seqs) const {
  const ModelSpec& m = model_;
  const double h = static_cast<double>(m.hidden_size);
  const double hd = static_cast<double>(m.head_dim);
  const double mats = m.gated_mlp ? 3 : 2;
  const double ffn_rank =
      m.is_moe()
          ? static_cast<double>(m.experts_per_token * m.moe_ffn_size) / l.etp()
          : static_cast<double>(m.ffn_size) / l.tp;
  const double qkv =
      (static_cast<double>(m.num_heads) / l.tp + 2.0 * KvHeadsPerRank(l)) * hd;
  return max_tokens * (4 * h + qkv + mats * ffn_rank) * act_bytes_ +
         max_seqs * static_cast<double>(m.vocab_size) * 4;
}

std::vector<StageRange> BalanceStages(int num_layers, int pp, double layer_time,
                                      double first_extra, double last_extra) {
  TESSERA_CHECK(pp >= 1 && pp <= num_layers, "pp {} for {} layers", pp,
                num_layers);
  std::vector<StageRange> out(pp);
  if (pp == 1) {
    out[0] = {0, num_layers};
    return out;
  }
  std::vector<double> extra(pp, 0);
  extra[0] += first_extra;
  extra[pp - 1] += last_extra;
  const double c = std::max(layer_time, 1e-12);
  // Smallest bound T such that stages fit ≥ num_layers layers (≥ 1 each).
  auto capacity = [&](double bound, std::vector<int>* n) {
    int total = 0;
    for (int s = 0; s < pp; ++s) {
      int k = static_cast<int>(std::floor((bound - extra[s]) / c + 1e-9));
      k = std::clamp(k, 1, num_layers);
      if (n) (*n)[s] = k;
      total += k;
    }
    return total;
  };
  std::vector<double> bounds;
  for (int s = 0; s < pp; ++s) {
    for (int k = 1; k <= num_layers; ++k) bounds.push_back(extra[s] + k * c);
  }
  std::sort(bounds.begin(), bounds.end());
  std::vector<int> n(pp, 1);
  for (double bound : bounds) {
    if (capacity(bound, nullptr) >= num_layers) {
      capacity(bound, &n);
      break;
    }
  }
  // Remove surplus layers from the most loaded stages.
  int total = 0;
  for (int k : n) total += k;
  while (total > num_layers) {
    int worst = -1;
    for (int s = 0; s < pp; ++s) {
      if (n[s] > 1 &&
          (worst < 0 || extra[s] + n[s] * c > extra[worst] + n[worst] * c)) {
        worst = s;
      }
    }
    --n[worst];
    --total;
  }
  int begin = 0;
  for (int s = 0; s < pp; ++s) {
    out[s] = {begin, begin + n[s]};
    begin += n[s];
  }
  return out;
}

InstanceModel::InstanceModel(const CostModel& cost, const ClusterSpec& cluster,
                             const Layout& layout, int first_device, Role role,
                             std::vector<StageRange> stages, double skew)
    : cost_(&cost),
      layout_(layout),
      first_device_(first_device),
      skew_(skew),
      stages_(std::move(stages)) {
  const int tp = layout_.tp, pp = layout_.pp;
  for (int s = 0; s < pp; ++s) {
    const int a = first_device_ + s * tp, z = a + tp - 1;
    const bool spans = cluster.NodeOf(a) != cluster.NodeOf(z);
    tp_spans_nodes_ = tp_spans_nodes_ || spans;
    tp_link_.push_back(spans ? cluster.device.inter_node
                             : cluster.device.intra_node);
    const int next = (s + 1) % pp;
    bool cross = false;
    for (int j = 0; j < tp; ++j) {
      cross = cross || cluster.NodeOf(a + j) !=
                           cluster.NodeOf(first_device_ + next * tp + j);
    }
    if (s + 1 < pp) pp_spans_nodes_ = pp_spans_nodes_ || cross;
    pp_link_.push_back(cross ? cluster.device.inter_node
                             : cluster.device.intra_node);
  }
  if (stages_.empty()) {
    BatchShape rep;
    if (role != Role::kDecode) rep = rep + BatchShape::Prefill(1, 2048);
    if (role != Role::kPrefill) rep = rep + BatchShape::Decode(64, 2048);
    const double layer = cost.LayerComputeTime(cost.Layer(rep, layout_, skew_));
    const double first = cost.OpTime(cost.Embedding(rep, layout_));
    const double last = cost.OpTime(cost.LmHead(rep, layout_));
    stages_ = BalanceStages(static_cast<int>(cost.model().num_layers), pp,
                            layer, first, last);
  }
}

double InstanceModel::StageTime(int s, const BatchShape& b) const {
  const CostModel& c = *cost_;
  const double eff = c.device().link_efficiency;
  const int tp = layout_.tp;
  const LayerCost lc = c.Layer(b, layout_, skew_);
  const double ar = RingAllReduceTime(lc.allreduce_bytes, tp, tp_link_[s], eff);
  double t = stages_[s].size() * (c.LayerComputeTime(lc) + 2 * ar) +
             c.device().step_overhead_s;
  if (s == 0) {
    t += c.OpTime(c.Embedding(b, layout_)) + ar;
  }
  if (s == layout_.pp - 1) {
    t += c.OpTime(c.LmHead(b, layout_)) +
         RingAllGatherTime(b.logit_tokens * c.model().vocab_size * 4.0, tp,
                           tp_link_[s], eff);
  }
  return t;
}

double InstanceModel::StepLatency(const BatchShape& b) const {
  const double eff = cost_->device().link_efficiency;
  const double act =
      b.new_tokens * cost_->model().hidden_size * 2.0 / layout_.tp;
  double t = 0;
  for (int s = 0; s < layout_.pp; ++s) {
    t += StageTime(s, b);
    if (s + 1 < layout_.pp) t += P2pTime(act, pp_link_[s], eff);
  }
  return t;
}

double InstanceModel::StageMax(const BatchShape& b) const {
  double t = 0;
  for (int s = 0; s < layout_.pp; ++s) t = std::max(t, StageTime(s, b));
  return t;
}

double InstanceModel::Iteration(const BatchShape& b) const {
  if (layout_.pp == 1) return StepLatency(b);
  // Up to pp micro-batches circulate; each sequence advances once per cycle.
  const double micro_count =
      std::clamp(b.num_seqs, 1.0, static_cast<double>(layout_.pp));
  const BatchShape micro = b.Scaled(1 / micro_count);
  const double wrap = P2pTime(micro.logit_tokens * 8, pp_link_.back(),
                              cost_->device().link_efficiency);
  return std::max(StepLatency(micro) + wrap, micro_count * StageMax(micro));
}

double InstanceModel::DecodeIteration(double batch, double ctx) const {
  return Iteration(BatchShape::Decode(batch, ctx));
}

double InstanceModel::CommFraction(const BatchShape& b) const {
  const double total = StepLatency(b);
  const CostModel& c = *cost_;
  double compute = 0;
  const LayerCost lc = c.Layer(b, layout_, skew_);
  for (int s = 0; s < layout_.pp; ++s) {
    compute += stages_[s].size() * c.LayerComputeTime(lc);
  }
  compute += c.OpTime(c.Embedding(b, layout_)) + c.OpTime(c.LmHead(b, layout_));
  return total > 0 ? std::max(0.0, 1 - compute / total) : 0;
}

double InstanceModel::StageWeightBytes(int s) const {
  const CostModel& c = *cost_;
  const ModelSpec& m = c.model();
  const double hv =
      static_cast<double>(m.hidden_size) * m.vocab_size / layout_.tp;
  double w = stages_[s].size() * c.LayerWeightBytesPerRank(layout_);
  if (s == 0) w += hv * m.weight_bytes;
  if (s == layout_.pp - 1) {
    // A tied LM head shares the embedding only when both sit on one stage.
    const bool shared = m.tie_embeddings && layout_.pp == 1;
    w += (shared ? 0 : hv * m.weight_bytes) + m.hidden_size * m.weight_bytes;
  }
  return w;
}

double InstanceModel::MaxWeightBytesPerRank() const {
  double w = 0;
  for (int s = 0; s < layout_.pp; ++s) w = std::max(w, StageWeightBytes(s));
  return w;
}

RankMemory InstanceModel::Memory(double max_tokens, double max_seqs) const {
  const CostModel& c = *cost_;
  const DeviceProfile& d = c.device();
  RankMemory best;
  best.kv_capacity_tokens = std::numeric_limits<double>::infinity();
  for (int s = 0; s < layout_.pp; ++s) {
    RankMemory r;
    r.weights = StageWeightBytes(s);
    r.activations = c.ActivationBytes(layout_, max_tokens, max_seqs);
    r.reserved =
        d.reserved_memory_bytes + d.memory_bytes * (1 - d.memory_utilization);
    r.kv_per_token =
        stages_[s].size() * c.KvBytesPerTokenPerLayerPerRank(layout_);
    r.kv_capacity_tokens =
        std::max(0.0, d.memory_bytes - r.reserved - r.weights - r.activations) /
        r.kv_per_token;
    if (r.kv_capacity_tokens < best.kv_capacity_tokens) best = r;
  }
  return best;
}

}  // namespace tessera::placement
