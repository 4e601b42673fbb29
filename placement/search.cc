#include "placement/search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <tuple>

#include "absl/status/status.h"
#include "base/status.h"
#include "fmt/format.h"
#include "placement/plan_schema.h"

namespace tessera::placement {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Prompt processing may use at most this share of an instance's time: beyond
// it M/G/1 queues (and TTFT) grow without bound.
constexpr double kMaxUtilization = 0.95;
constexpr double kMaxNumSeqs = 1024;
constexpr double kDecodeStepTokens = 1024;
// Token budget of a colocated step (decodes + prefill chunks), as vLLM's
// chunked prefill and Sarathi-Serve use: small enough that decodes are not
// stalled for a whole prompt, large enough to keep GEMMs efficient.
constexpr double kChunkTokens = 2048;

using Role = InstanceModel::Role;

std::string LayoutName(const Layout& l) {
  std::string s = fmt::format("TP{}", l.tp);
  if (l.pp > 1) s += fmt::format(" PP{}", l.pp);
  if (l.ep > 1) s += fmt::format(" EP{}", l.ep);
  return s;
}

// Workload figures the queueing model needs, computed once.
struct WorkloadStats {
  std::vector<int64_t> inputs;  // quantiles
  double in_mean = 0, in_m2 = 0, out_mean = 0, ctx_mean = 0;
  int64_t in_max = 0, out_max = 0;
  std::vector<double> outs16;  // 16 representative output lengths
  double tail = 0.1;           // 1 - percentile
  size_t p_index = 0;
};

WorkloadStats Stats(const Workload& w) {
  WorkloadStats s;
  s.inputs = w.input.Quantiles();
  for (int64_t v : s.inputs) {
    s.in_mean += static_cast<double>(v);
    s.in_m2 += static_cast<double>(v) * static_cast<double>(v);
  }
  s.in_mean /= static_cast<double>(s.inputs.size());
  s.in_m2 /= static_cast<double>(s.inputs.size());
  std::vector<int64_t> outs = w.output.Quantiles();
  for (int64_t v : outs) s.out_mean += static_cast<double>(v);
  s.out_mean /= static_cast<double>(outs.size());
  // Context of the running batch: sequences with long outputs stay longer,
  // so a step sees the length-biased mean in + E[out²] / (2 E[out]).
  double out_m2 = 0;
  for (int64_t v : outs)
    out_m2 += static_cast<double>(v) * static_cast<double>(v);
  out_m2 /= static_cast<double>(outs.size());
  s.ctx_mean = s.in_mean + out_m2 / (2 * s.out_mean);
  for (size_t i = 0; i < 16; ++i) {
    s.outs16.push_back(
        static_cast<double>(outs[i * outs.size() / 16 + outs.size() / 32]));
  }
  s.in_max = w.input.Max();
  s.out_max = w.output.Max();
  s.tail = 1 - w.slo.percentile / 100;
  s.p_index =
      std::min(s.inputs.size() - 1,
               static_cast<size_t>(w.slo.percentile / 100 * s.inputs.size()));
  return s;
}

// One instance's model and its performance at a given request rate.
struct Evaluated {
  bool feasible = false;
  std::string infeasible;  // why not
  double weights = 0, memory = 0, kv_capacity = 0, bmax = 0;
  double max_batched_tokens = 0;
  double goodput = 0;     // requests/s within the SLOs
  double throughput = 0;  // max stable requests/s
  std::string limit;
  std::vector<std::string> notes;
};

class InstanceEvaluator {
 public:
  InstanceEvaluator(const CostModel& cost, const ClusterSpec& cluster,
                    const Workload& w, const WorkloadStats& s, const Layout& l,
                    int first_device, Role role, double kv_transfer_s,
                    double chunk_tokens)
      : s_(s),
        role_(role),
        kv_transfer_s_(kv_transfer_s),
        chunk_tokens_(chunk_tokens),
        model_(cost, cluster, l, first_device, role, {}, w.expert_skew) {
    if (role != Role::kDecode) {
      double sum = 0, sum_m = 0, sum_m2 = 0;
      for (int64_t len : s.inputs) {
        const BatchShape b = BatchShape::Prefill(1, static_cast<double>(len));
        const double lat = model_.StepLatency(b);
        const double svc = l.pp > 1 ? model_.StageMax(b) : lat;
        sum += lat;
        sum_m += svc;
        sum_m2 += svc * svc;
      }
      const double n = static_cast<double>(s.inputs.size());
      prefill_mean_ = sum / n;
      service_mean_ = sum_m / n;
      service_m2_ = sum_m2 / n;
      prefill_p_ = model_.StepLatency(
          BatchShape::Prefill(1, static_cast<double>(s.inputs[s.p_index])));
    }
  }

  const InstanceModel& model() const { return model_; }

  // TTFT at the SLO percentile and mean TPOT at `rate`; kInf if unstable.
  std::pair<double, double> At(double rate, double bmax, double* batch) const {
    double ttft = 0, tpot = 0;
    *batch = 0;
    if (role_ == Role::kPrefill) {
      // Whole prompts, M/G/1 (Pollaczek-Khinchine) mean wait with an
      // exponential tail P(W > t) ≈ ρ exp(-t ρ / E[W]).
      const double rho = rate * service_mean_;
      if (rho > kMaxUtilization) return {kInf, kInf};
      ttft = WaitAt(rate * service_m2_ / (2 * (1 - rho)), rho) + prefill_p_;
    } else if (role_ == Role::kDecode) {
      // Little's law: batch = rate × output tokens × TPOT(batch); bisection.
      auto excess = [&](double b) {
        return rate * s_.out_mean *
                   model_.DecodeIteration(std::max(b, 1.0), s_.ctx_mean) -
               b;
      };
      if (excess(bmax) > 0) return {kInf, kInf};
      double lo = 0, hi = bmax;
      for (int i = 0; i < 40; ++i) {
        const double mid = (lo + hi) / 2;
        (excess(mid) > 0 ? lo : hi) = mid;
      }
      *batch = hi;
      tpot = model_.DecodeIteration(std::max(hi, 1.0), s_.ctx_mean) +
             kv_transfer_s_ / std::max(1.0, s_.out_mean - 1);
    } else {
      // Colocated, chunked prefill with a step budget of C tokens: a mixed
      // step carries B decodes and a C - B token prompt chunk; prompts arrive
      // as rate·L_in tokens/s, so m = rate·L_in / (C - B) mixed steps per
      // second take a share f = m·t_mix of the time and pure decode steps the
      // rest. TPOT = 1 / steps per second; B = rate·L_out·TPOT (Little).
      Colocated c;
      auto excess = [&](double b) {
        c = ColocatedAt(rate, b);
        return rate * s_.out_mean * c.tpot - b;
      };
      const double b_top = std::min(bmax, chunk_tokens_ - 64);
      if (b_top < 1 || !(excess(b_top) <= 0)) return {kInf, kInf};
      double lo = 0, hi = b_top;
      for (int i = 0; i < 40; ++i) {
        const double mid = (lo + hi) / 2;
        (!(excess(mid) <= 0) ? lo : hi) = mid;
      }
      c = ColocatedAt(rate, hi);
      if (c.f > kMaxUtilization) return {kInf, kInf};
      *batch = hi;
      tpot = TpotPercentile(c, rate, hi);
      // A prompt of L tokens is served in L / chunk mixed steps; prompts
      // queue for the chunk slot (M/G/1 with utilization f).
      const double per_token = c.t_mix / c.chunk;
      const double s2 = s_.in_m2 * per_token * per_token;
      ttft = WaitAt(rate * s2 / (2 * (1 - c.f)), c.f) +
             static_cast<double>(s_.inputs[s_.p_index]) * per_token + c.tpot;
    }
    return {ttft, tpot};
  }

  struct Colocated {
    double tpot = kInf, f = 1, t_mix = 0, chunk = 1;
  };
  Colocated ColocatedAt(double rate, double b) const {
    Colocated c;
    c.chunk = chunk_tokens_ - b;
    if (c.chunk <= 0) return c;
    const double t_dec = model_.DecodeIteration(std::max(b, 1.0), s_.ctx_mean);
    c.t_mix =
        model_.Iteration(BatchShape::Decode(std::max(b, 1.0), s_.ctx_mean) +
                         BatchShape::PrefillChunk(c.chunk, s_.in_mean));
    const double mixed_per_s = rate * s_.in_mean / c.chunk;
    c.f = mixed_per_s * c.t_mix;
    if (c.f >= 1) return c;
    c.tpot = 1 / (mixed_per_s + (1 - c.f) / t_dec);
    return c;
  }

  // A request's TPOT averages its L_out - 1 steps, a share q of which carry a
  // prompt chunk (t_mix) and the rest are pure decode (t_dec): per request
  // TPOT ≈ Normal(tpot, q(1-q)(t_mix - t_dec)² / n). The SLO percentile over
  // requests (mixing output lengths) is found by bisection.
  double TpotPercentile(const Colocated& c, double rate, double b) const {
    const double t_dec = model_.DecodeIteration(std::max(b, 1.0), s_.ctx_mean);
    const double q = std::clamp(rate * s_.in_mean / c.chunk * c.tpot, 0.0, 1.0);
    const double sd_step =
        std::sqrt(q * (1 - q)) * std::max(0.0, c.t_mix - t_dec);
    if (sd_step <= 0) return c.tpot;
    auto exceed = [&](double x) {
      double f = 0;
      for (double n : s_.outs16) {
        const double sd = sd_step / std::sqrt(std::max(1.0, n - 1));
        f += 0.5 * std::erfc((x - c.tpot) / (sd * std::sqrt(2.0)));
      }
      return f / static_cast<double>(s_.outs16.size());
    };
    double lo = c.tpot, hi = c.tpot + 10 * sd_step;
    for (int i = 0; i < 30; ++i) {
      const double mid = (lo + hi) / 2;
      (exceed(mid) > s_.tail ? lo : hi) = mid;
    }
    return hi;
  }

  // Percentile wait of an M/G/1 queue with mean wait `mean` at utilization
  // `rho`, from the exponential tail P(W > t) ≈ ρ exp(-t ρ / E[W]).
  double WaitAt(double mean, double rho) const {
    if (rho <= s_.tail || mean <= 0) return 0;
    return mean / rho * std::log(rho / s_.tail);
  }

  // Largest rate satisfying `ok`.
  template <typename Ok>
  double MaxRate(double bmax, Ok ok) const {
    double hi = 1;
    double batch;
    while (hi < 1e7 && ok(At(hi, bmax, &batch))) hi *= 2;
    double lo = 0;
    for (int i = 0; i < 40; ++i) {
      const double mid = (lo + hi) / 2;
      (ok(At(mid, bmax, &batch)) ? lo : hi) = mid;
    }
    return lo;
  }

  double prefill_mean() const { return prefill_mean_; }
  double prefill_p() const { return prefill_p_; }
  double service_mean() const { return service_mean_; }

 private:
  const WorkloadStats& s_;
  Role role_;
  double kv_transfer_s_;
  double chunk_tokens_;
  InstanceModel model_;
  double prefill_mean_ = 0, service_mean_ = 0, service_m2_ = 0, prefill_p_ = 0;
};

class Searcher {
 public:
  Searcher(const ModelSpec& m, const ClusterSpec& c, const Workload& w)
      : cost_(m, c.device), cluster_(c), w_(w), s_(Stats(w)) {}

  // tp and pp are powers of two (as vLLM and TensorRT-LLM deploy them: head
  // counts and layer counts split evenly) and ep divides tp and the expert
  // count. This bounds the search at O(log² N) layouts per pool; where the
  // layouts land on nodes is left to the cost model.
  std::vector<Layout> Layouts() const {
    std::vector<Layout> out;
    const ModelSpec& m = cost_.model();
    const int n = cluster_.num_devices();
    for (int tp = 1; tp <= n; tp *= 2) {
      if (m.num_heads % tp != 0) continue;
      for (int pp = 1; tp * pp <= n && pp <= m.num_layers; pp *= 2) {
        for (int ep = 1; ep <= tp; ep *= 2) {
          if (ep > 1 && (!m.is_moe() || m.num_experts % ep != 0)) continue;
          out.push_back({tp, pp, ep});
        }
      }
    }
    return out;
  }

  double MaxBatchedTokens(Role role) const {
    if (role == Role::kDecode) return kDecodeStepTokens;
    if (role == Role::kBoth) return kChunkTokens;
    return std::clamp<double>(static_cast<double>(s_.in_max), 2048, 16384);
  }

  // KV-transfer time of one mean prompt from a prefill to a decode instance
  // of `decode_size` ranks over `link` (every rank moves its shard at once).
  double KvTransfer(const Layout& d, bool inter_node) const {
    const LinkSpec& link =
        inter_node ? cluster_.device.inter_node : cluster_.device.intra_node;
    const double bytes = s_.in_mean * cost_.model().KvBytesPerToken();
    return P2pTime(bytes / d.size(), link, cluster_.device.link_efficiency);
  }

  const Evaluated& Evaluate(const Layout& l, int first, Role role,
                            bool inter_kv) {
    auto key = std::make_tuple(l.tp, l.pp, l.ep, first, static_cast<int>(role),
                               inter_kv);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    Evaluated& e = cache_[key];
    const double kv_s = role == Role::kDecode ? KvTransfer(l, inter_kv) : 0;
    InstanceEvaluator ev(cost_, cluster_, w_, s_, l, first, role, kv_s,
                         MaxBatchedTokens(role));
    const InstanceModel& im = ev.model();
    e.max_batched_tokens = MaxBatchedTokens(role);
    const RankMemory mem = im.Memory(e.max_batched_tokens,
                                     role == Role::kPrefill ? 16 : kMaxNumSeqs);
    e.weights = mem.weights;
    e.kv_capacity = mem.kv_capacity_tokens;
    const double usable = cluster_.device.memory_bytes - mem.reserved;
    const double need_one = static_cast<double>(
        role == Role::kPrefill ? s_.in_max : s_.in_max + s_.out_max);
    if (mem.weights + mem.activations > usable) {
      e.infeasible = fmt::format(
          "weights {:.1f} GB + activations {:.1f} GB exceed the {:.1f} GB "
          "usable per device",
          mem.weights / 1e9, mem.activations / 1e9, usable / 1e9);
      return e;
    }
    if (mem.kv_capacity_tokens < need_one) {
      e.infeasible = fmt::format(
          "KV cache holds {:.0f} tokens per instance; one {}-token request "
          "does not fit",
          mem.kv_capacity_tokens, static_cast<int64_t>(need_one));
      return e;
    }
    e.feasible = true;
    // Sequences reserve KV for their whole prompt and output (no preemption),
    // with 10% headroom for the spread of lengths around the mean.
    const double footprint =
        role == Role::kPrefill ? s_.in_mean : (s_.in_mean + s_.out_mean) / 0.9;
    e.bmax = std::clamp(std::floor(mem.kv_capacity_tokens / footprint), 1.0,
                        kMaxNumSeqs);
    e.memory = usable;  // the KV cache takes what is left
    auto stable = [&](std::pair<double, double> m) {
      return std::isfinite(m.first) && std::isfinite(m.second);
    };
    // Throughput: the largest stable rate (prompt-processing utilization at
    // most kMaxUtilization, so queues stay finite; decode batch within KV).
    e.throughput = ev.MaxRate(e.bmax, stable);
    const Slo& slo = w_.slo;
    auto meets = [&](std::pair<double, double> m) {
      if (!stable(m)) return false;
      if (role != Role::kDecode && slo.ttft_s > 0 && m.first > slo.ttft_s)
        return false;
      if (role != Role::kPrefill && slo.tpot_s > 0 && m.second > slo.tpot_s)
        return false;
      return true;
    };
    e.goodput = std::min(e.throughput, ev.MaxRate(e.bmax, meets));
    // What binds: the SLO whose bound is reached first, or capacity.
    double batch;
    const auto at_edge = ev.At(e.goodput * 1.02 + 1e-6, e.bmax, &batch);
    if (e.goodput <= 1e-9) {
      double b0;
      const auto idle = ev.At(1e-6, e.bmax, &b0);
      if (role != Role::kDecode && slo.ttft_s > 0 && idle.first > slo.ttft_s) {
        e.limit = fmt::format(
            "TTFT SLO unreachable: a p{:g} prompt alone takes {:.0f} ms",
            w_.slo.percentile, idle.first * 1e3);
      } else {
        e.limit = fmt::format(
            "TPOT SLO unreachable: a lone decode step takes {:.1f} ms",
            idle.second * 1e3);
      }
    } else if (e.goodput >= e.throughput * 0.999) {
      // At the throughput edge: either the decode batch filled the KV cache
      // or prompt processing reached its utilization cap.
      double edge_batch = 0;
      ev.At(e.throughput * 0.999, e.bmax, &edge_batch);
      e.limit = role != Role::kPrefill && edge_batch >= e.bmax * 0.95
                    ? fmt::format("KV capacity ({:.0f} sequences)", e.bmax)
                    : "prefill saturation";
    } else if (role != Role::kDecode && slo.ttft_s > 0 &&
               at_edge.first > slo.ttft_s) {
      e.limit = "TTFT SLO";
    } else {
      e.limit = "TPOT SLO";
    }
    if (im.tp_spans_nodes()) {
      e.notes.push_back(
          fmt::format("TP all-reduce crosses nodes ({:.0f} GB/s NIC)",
                      cluster_.device.inter_node.bandwidth_bytes_per_s / 1e9));
    }
    if (l.pp > 1) {
      e.notes.push_back(
          role == Role::kDecode
              ? fmt::format("PP{}: tokens wait for {} micro-batches", l.pp,
                            l.pp)
              : fmt::format("PP{}: TTFT pays every stage", l.pp));
    }
    const double comm = im.CommFraction(
        BatchShape::Decode(std::max(1.0, e.bmax / 4), s_.ctx_mean));
    if (comm > 0.25) {
      e.notes.push_back(
          fmt::format("collectives {:.0f}% of a decode step", comm * 100));
    }
    return e;
  }

  // Predicted figures of an instance at `rate`.
  PredictedMetrics MetricsAt(const Layout& l, int first, Role role,
                             bool inter_kv, double rate) {
    const Evaluated& e = Evaluate(l, first, role, inter_kv);
    const double kv_s = role == Role::kDecode ? KvTransfer(l, inter_kv) : 0;
    InstanceEvaluator ev(cost_, cluster_, w_, s_, l, first, role, kv_s,
                         MaxBatchedTokens(role));
    PredictedMetrics m;
    m.request_rate = rate;
    double batch = 0;
    auto [ttft, tpot] = ev.At(rate, e.bmax, &batch);
    m.ttft_s = ttft;
    m.tpot_s = tpot;
    m.batch_size = batch;
    m.throughput_rps = e.throughput;
    m.goodput_rps = e.goodput;
    m.output_tokens_per_s = rate * s_.out_mean;
    m.weights_per_rank_bytes = e.weights;
    m.memory_per_rank_bytes = e.memory;
    m.kv_capacity_tokens = e.kv_capacity;
    return m;
  }

  const CostModel& cost() const { return cost_; }
  const WorkloadStats& stats() const { return s_; }
  const ClusterSpec& cluster() const { return cluster_; }

  // Whether some decode instance shares no node with any prefill instance.
  bool KvCrossesNodes(int prefill_devices, int total) const {
    if (prefill_devices == 0) return false;
    const int last_prefill_node = cluster_.NodeOf(prefill_devices - 1);
    return cluster_.NodeOf(total - 1) > last_prefill_node ||
           cluster_.NodeOf(0) != last_prefill_node;
  }

 private:
  CostModel cost_;
  const ClusterSpec& cluster_;
  const Workload& w_;
  WorkloadStats s_;
  std::map<std::tuple<int, int, int, int, int, bool>, Evaluated> cache_;
};

double Score(const Candidate& c, const Workload& w) {
  const double per_device = w.objective == Workload::Objective::kThroughput
                                ? c.metrics.throughput_rps
                                : c.metrics.goodput_per_device;
  return per_device;
}

}  // namespace

std::string Candidate::Name() const {
  if (!disaggregated)
    return fmt::format("colocated {} x ({})", num_prefill, LayoutName(prefill));
  return fmt::format("disagg {} x P({}) + {} x D({})", num_prefill,
                     LayoutName(prefill), num_decode, LayoutName(decode));
}

std::vector<int> PlaceExperts(int num_experts, int ep,
                              const std::vector<double>& load) {
  std::vector<int> owner(num_experts, 0);
  if (ep <= 1) return owner;
  std::vector<int> order(num_experts);
  std::iota(order.begin(), order.end(), 0);
  auto weight = [&](int e) {
    return load.size() == static_cast<size_t>(num_experts) ? load[e] : 1.0;
  };
  if (load.size() != static_cast<size_t>(num_experts)) {
    // Uniform load: contiguous blocks (rank r owns [r·E/ep, (r+1)·E/ep)).
    for (int e = 0; e < num_experts; ++e) owner[e] = e / (num_experts / ep);
    return owner;
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return weight(a) > weight(b); });
  std::vector<double> rank_load(ep, 0);
  std::vector<int> count(ep, 0);
  const int cap = num_experts / ep;
  for (int e : order) {
    int best = -1;
    for (int r = 0; r < ep; ++r) {
      if (count[r] < cap && (best < 0 || rank_load[r] < rank_load[best]))
        best = r;
    }
    owner[e] = best;
    rank_load[best] += weight(e);
    ++count[best];
  }
  return owner;
}

absl::StatusOr<SearchResult> Search(const ModelSpec& model,
                                    const ClusterSpec& cluster,
                                    const Workload& workload,
                                    const SearchOptions& options) {
  RETURN_IF_ERROR(ValidateModelSpec(model));
  if (cluster.num_devices() <= 0)
    return absl::InvalidArgumentError("cluster has no devices");
  double skew = workload.expert_skew;
  Workload w = workload;
  if (model.is_moe() && !w.expert_load.empty()) {
    if (static_cast<int64_t>(w.expert_load.size()) != model.num_experts) {
      return absl::InvalidArgumentError(
          fmt::format("workload expert_load lists {} experts; the model has {}",
                      w.expert_load.size(), model.num_experts));
    }
  }
  w.expert_skew = skew;
  Searcher s(model, cluster, w);
  const int n = cluster.num_devices();
  SearchResult result;
  std::vector<Candidate> all;
  std::string best_infeasible;
  double best_slack = -kInf;
  const std::vector<Layout> layouts = s.Layouts();

  auto note_infeasible = [&](const Evaluated& e, const Layout& l) {
    ++result.infeasible;
    const double slack = s.cluster().device.memory_bytes - e.weights;
    if (slack > best_slack) {
      best_slack = slack;
      best_infeasible = fmt::format("{} ({} devices): {}", LayoutName(l),
                                    l.size(), e.infeasible);
    }
  };
  auto finish = [&](Candidate& c, double goodput, double throughput) {
    c.metrics.goodput_rps = goodput;
    c.metrics.throughput_rps = throughput;
    // Idle devices count: a layout that strands devices is worth less.
    c.metrics.goodput_per_device = goodput / n;
    all.push_back(c);
  };

  if (options.colocated) {
    for (const Layout& l : layouts) {
      const int count = n / l.size();
      Candidate c;
      c.prefill = c.decode = l;
      c.num_prefill = count;
      c.devices_used = count * l.size();
      double good = 0, thr = 0;
      bool ok = true;
      for (int i = 0; i < count && ok; ++i) {
        const Evaluated& e = s.Evaluate(l, i * l.size(), Role::kBoth, false);
        ++result.evaluated;
        if (!e.feasible) {
          note_infeasible(e, l);
          ok = false;
          break;
        }
        good += e.goodput;
        thr += e.throughput;
        if (i == 0) {
          c.limit = e.limit;
          c.notes = e.notes;
        }
      }
      if (!ok) continue;
      const double rate =
          w.arrival_rate > 0 ? w.arrival_rate : (good > 0 ? good : thr * 0.8);
      c.metrics = s.MetricsAt(l, 0, Role::kBoth, false, rate / count);
      c.metrics.request_rate = rate;
      c.metrics.output_tokens_per_s = rate * s.stats().out_mean;
      finish(c, good, thr);
    }
  }
  if (options.disaggregated && n >= 2) {
    for (const Layout& lp : layouts) {
      for (int np = 1; np * lp.size() < n; ++np) {
        double pgood = 0, pthr = 0;
        bool ok = true;
        for (int i = 0; i < np && ok; ++i) {
          const Evaluated& e =
              s.Evaluate(lp, i * lp.size(), Role::kPrefill, false);
          ++result.evaluated;
          if (!e.feasible) {
            note_infeasible(e, lp);
            ok = false;
          }
          pgood += e.goodput;
          pthr += e.throughput;
        }
        if (!ok) break;
        const int base = np * lp.size();
        for (const Layout& ld : layouts) {
          const int nd = (n - base) / ld.size();
          if (nd < 1) continue;
          const bool inter = s.KvCrossesNodes(base, base + nd * ld.size());
          double dgood = 0, dthr = 0;
          bool dok = true;
          std::string dlimit;
          std::vector<std::string> dnotes;
          for (int j = 0; j < nd; ++j) {
            const Evaluated& e =
                s.Evaluate(ld, base + j * ld.size(), Role::kDecode, inter);
            ++result.evaluated;
            if (!e.feasible) {
              note_infeasible(e, ld);
              dok = false;
              break;
            }
            dgood += e.goodput;
            dthr += e.throughput;
            if (j == 0) {
              dlimit = e.limit;
              dnotes = e.notes;
            }
          }
          if (!dok) continue;
          Candidate c;
          c.disaggregated = true;
          c.prefill = lp;
          c.decode = ld;
          c.num_prefill = np;
          c.num_decode = nd;
          c.devices_used = base + nd * ld.size();
          const double good = std::min(pgood, dgood);
          const double thr = std::min(pthr, dthr);
          const Evaluated& pe = s.Evaluate(lp, 0, Role::kPrefill, false);
          c.limit = pgood <= dgood ? "prefill pool: " + pe.limit
                                   : "decode pool: " + dlimit;
          c.notes = pe.notes;
          for (auto& x : dnotes) c.notes.push_back("decode " + x);
          if (inter) c.notes.push_back("KV transfer over the NIC");
          const double rate = w.arrival_rate > 0
                                  ? w.arrival_rate
                                  : (good > 0 ? good : thr * 0.8);
          const PredictedMetrics pm =
              s.MetricsAt(lp, 0, Role::kPrefill, false, rate / np);
          const PredictedMetrics dm =
              s.MetricsAt(ld, base, Role::kDecode, inter, rate / nd);
          c.metrics = dm;
          c.metrics.ttft_s = pm.ttft_s;
          c.metrics.request_rate = rate;
          c.metrics.output_tokens_per_s = rate * s.stats().out_mean;
          c.metrics.weights_per_rank_bytes =
              std::max(pm.weights_per_rank_bytes, dm.weights_per_rank_bytes);
          finish(c, good, thr);
        }
      }
    }
  }
  if (all.empty()) {
    const double total = model.WeightBytes();
    const double usable =
        cluster.device.memory_bytes * cluster.device.memory_utilization -
        cluster.device.reserved_memory_bytes;
    return absl::ResourceExhaustedError(fmt::format(
        "no layout of {} on {} × {} fits: weights need {:.0f} GB per replica "
        "({}); the "
        "cluster offers {:.0f} GB usable per device, {:.0f} GB in all. "
        "Closest: {}",
        model.name, n, cluster.device.kind, total / 1e9, model.weight_dtype,
        usable / 1e9, usable * n / 1e9, best_infeasible));
  }
  std::stable_sort(all.begin(), all.end(),
                   [&](const Candidate& a, const Candidate& b) {
                     const double sa = Score(a, w), sb = Score(b, w);
                     if (std::abs(sa - sb) > 1e-9 * std::max(sa, sb))
                       return sa > sb;
                     // Ties: lower TTFT, then fewer devices per instance
                     // (simpler plan).
                     if (a.metrics.ttft_s != b.metrics.ttft_s)
                       return a.metrics.ttft_s < b.metrics.ttft_s;
                     return a.prefill.size() < b.prefill.size();
                   });
  if (static_cast<int>(all.size()) > options.max_candidates_kept) {
    all.resize(options.max_candidates_kept);
  }
  result.ranked = std::move(all);
  return result;
}

std::string ExplainLoss(const Candidate& winner, const Candidate& loser,
                        const Workload& w) {
  const bool thr = w.objective == Workload::Objective::kThroughput;
  const double a =
      thr ? winner.metrics.throughput_rps : winner.metrics.goodput_per_device;
  const double b =
      thr ? loser.metrics.throughput_rps : loser.metrics.goodput_per_device;
  std::string s = fmt::format(
      "{} {:.3g} vs {:.3g} req/s{} ({:+.0f}%), bound by {}",
      thr ? "throughput" : "goodput", b, a, thr ? "" : " per device",
      a > 0 ? (b / a - 1) * 100 : 0.0, loser.limit);
  for (const std::string& n : loser.notes) s += "; " + n;
  return s;
}

absl::StatusOr<Plan> BuildPlan(const ModelSpec& model,
                               const ClusterSpec& cluster,
                               const Workload& workload, const Candidate& c) {
  Plan plan;
  plan.schema_version = kPlanSchemaVersion;
  plan.mode = c.disaggregated ? "disaggregated" : "colocated";
  plan.model = model;
  plan.cluster = cluster;
  plan.workload = workload;
  plan.predicted = c.metrics;
  CostModel cost(model, cluster.device);
  Searcher s(model, cluster, workload);
  int device = 0;
  int id = 0;
  auto add = [&](const Layout& l, Role role, InstanceRole plan_role, int count,
                 bool inter_kv) {
    for (int i = 0; i < count; ++i) {
      PlanInstance in;
      in.id = id++;
      in.role = plan_role;
      in.layout = l;
      InstanceModel im(cost, cluster, l, device, role, {},
                       workload.expert_skew);
      for (int st = 0; st < l.pp; ++st) {
        in.stages.push_back({im.stages()[st].begin, im.stages()[st].end,
                             st == 0, st == l.pp - 1});
      }
      for (int r = 0; r < l.size(); ++r) {
        PlanRank pr;
        pr.rank = device + r;
        pr.node = cluster.NodeOf(device + r);
        pr.device = (device + r) % cluster.devices_per_node;
        pr.tp_rank = r % l.tp;
        pr.pp_rank = r / l.tp;
        pr.ep_rank = pr.tp_rank / l.etp();
        in.ranks.push_back(pr);
      }
      if (model.is_moe()) {
        in.expert_to_ep_rank = PlaceExperts(static_cast<int>(model.num_experts),
                                            l.ep, workload.expert_load);
      }
      const double rate =
          c.metrics.request_rate /
          (plan_role == InstanceRole::kDecode ? c.num_decode : c.num_prefill);
      in.predicted = s.MetricsAt(l, device, role, inter_kv, rate);
      in.predicted.goodput_per_device = in.predicted.goodput_rps / l.size();
      const Evaluated& e = s.Evaluate(l, device, role, inter_kv);
      in.kv_cache.block_size = 16;
      in.kv_cache.num_blocks =
          std::max<int64_t>(1, static_cast<int64_t>(e.kv_capacity / 16));
      in.kv_cache.dtype = model.kv_dtype;
      in.kv_cache.max_num_seqs =
          std::max<int64_t>(1, static_cast<int64_t>(e.bmax));
      in.kv_cache.max_model_len = std::max<int64_t>(
          1, std::min<int64_t>(model.max_context,
                               static_cast<int64_t>(e.kv_capacity)));
      in.kv_cache.max_num_batched_tokens =
          static_cast<int64_t>(e.max_batched_tokens);
      plan.instances.push_back(std::move(in));
      device += l.size();
    }
  };
  if (c.disaggregated) {
    const bool inter =
        s.KvCrossesNodes(c.num_prefill * c.prefill.size(), c.devices_used);
    add(c.prefill, Role::kPrefill, InstanceRole::kPrefill, c.num_prefill,
        false);
    add(c.decode, Role::kDecode, InstanceRole::kDecode, c.num_decode, inter);
  } else {
    add(c.prefill, Role::kBoth, InstanceRole::kBoth, c.num_prefill, false);
  }
  plan.rationale = fmt::format(
      "{}: {:.3g} req/s within SLO (TTFT p{:g} <= {:.0f} ms, TPOT <= {:.0f} "
      "ms) on {} "
      "devices = {:.3g} req/s per device; bound by {}.",
      c.Name(), c.metrics.goodput_rps, workload.slo.percentile,
      workload.slo.ttft_s * 1e3, workload.slo.tpot_s * 1e3, c.devices_used,
      c.metrics.goodput_per_device, c.limit);
  RETURN_IF_ERROR(ValidatePlan(plan));
  return plan;
}

}  // namespace tessera::placement
