#include "runtime/calibration.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/logging.h"
#include "base/mapped_file.h"
#include "base/random.h"
#include "base/status.h"
#include "base/tensor.h"
#include "fmt/format.h"
#include "kernels/cpu_features.h"
#include "kernels/machine_peaks.h"
#include "kernels/ops.h"
#include "kernels/thread_pool.h"
#include "placement/cost_model.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/model_presets.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Best time of `fn` over repeats lasting at least `min_seconds` in total.
template <typename Fn>
double BestTime(double min_seconds, Fn&& fn) {
  fn();  // warm caches, page in, grow scratch
  double best = 1e30;
  const auto start = Clock::now();
  int runs = 0;
  do {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, Seconds(t0, Clock::now()));
    ++runs;
  } while (runs < 3 || Seconds(start, Clock::now()) < min_seconds);
  return best;
}

// A [rows, cols] weight of `dtype` with arbitrary finite values (the content
// does not change the time).
Tensor RandomWeight(DType dtype, int64_t rows, int64_t cols, uint64_t seed) {
  if (dtype == DType::kQ8_0) {
    Tensor t = Tensor::Empty(dtype, {rows, cols});
    SplitMix64 rng(seed);
    auto* bytes = t.data<uint8_t>();
    const int64_t n = t.nbytes();
    // 34-byte blocks: an f16 scale, then 32 int8 values.
    for (int64_t b = 0; b + 34 <= n; b += 34) {
      const uint16_t scale = FloatToHalf(0.01f);
      std::memcpy(bytes + b, &scale, 2);
      for (int i = 0; i < 32; ++i)
        bytes[b + 2 + i] = static_cast<uint8_t>(rng.Next());
    }
    return t;
  }
  TESSERA_CHECK(
      dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16,
      "unsupported calibration dtype {}", DTypeName(dtype));
  TensorSpec spec;
  spec.name = "calibration";
  spec.shape = {rows, cols};
  spec.fan_in = cols;
  return SynthesizeTensor(spec, dtype, seed);
}

// Seconds of y = x·Wᵀ for m rows.
absl::StatusOr<double> TimeLinear(const kernels::Context& ctx, const Tensor& w,
                                  int64_t m, double min_seconds) {
  const int64_t n = w.shape()[0], k = w.shape()[1];
  std::vector<float> x(m * k, 0.01f), y(m * n);
  absl::Status status;
  const double t = BestTime(min_seconds, [&] {
    absl::Status s =
        kernels::Linear(ctx, x.data(), m, k, w, nullptr, y.data(), n);
    if (!s.ok()) status = s;
  });
  RETURN_IF_ERROR(status);
  return t;
}

// Seconds of one attention call of `seqs` sequences at context `context`,
// each with its last `q_len` tokens as queries (q_len = context: a causal
// prompt; 1: decode), `heads` query heads over `heads / 2` KV heads, all of
// the context in the paged cache. With `groups` > 1 the calls rotate over
// that many sequence groups with their own blocks (the time is per call), so
// that a set larger than the caches is read cold, as in a decode step, where
// the weights stream through the caches between layers.
absl::StatusOr<double> TimeAttention(const kernels::Context& ctx, int64_t seqs,
                                     int64_t q_len, int64_t context,
                                     int64_t heads, int64_t head_dim,
                                     int64_t groups, double min_seconds) {
  constexpr int64_t kBlock = 16;
  const int64_t kv_heads = std::max<int64_t>(1, heads / 2);
  const int64_t blocks_per_seq = (context + kBlock - 1) / kBlock;
  const int64_t group_blocks = seqs * blocks_per_seq;
  std::vector<float> k(groups * group_blocks * kBlock * kv_heads * head_dim,
                       0.02f);
  std::vector<float> v(k.size(), 0.5f);
  std::vector<float> q(seqs * q_len * heads * head_dim, 0.01f), out(q.size());
  std::vector<int32_t> table(groups * group_blocks);
  for (size_t b = 0; b < table.size(); ++b) table[b] = static_cast<int32_t>(b);
  std::vector<int32_t> query_start(seqs + 1);
  for (int64_t s = 0; s <= seqs; ++s)
    query_start[s] = static_cast<int32_t>(s * q_len);
  const std::vector<int32_t> context_len(seqs, static_cast<int32_t>(context));
  kernels::KvCacheView cache;
  cache.k = k.data();
  cache.v = v.data();
  cache.block_size = kBlock;
  cache.num_kv_heads = kv_heads;
  cache.head_dim = head_dim;
  kernels::AttentionBatch batch;
  batch.num_seqs = seqs;
  batch.query_start = query_start.data();
  batch.context_len = context_len.data();
  batch.max_blocks_per_seq = blocks_per_seq;
  absl::Status status;
  const double t = BestTime(min_seconds, [&] {
    for (int64_t g = 0; g < groups; ++g) {
      batch.block_tables = table.data() + g * group_blocks;
      absl::Status s = kernels::PagedAttention(
          ctx, q.data(), heads * head_dim, cache, batch, heads,
          1.0f / std::sqrt(static_cast<float>(head_dim)), out.data(),
          heads * head_dim);
      if (!s.ok()) status = s;
    }
  });
  RETURN_IF_ERROR(status);
  return t / static_cast<double>(groups);
}

// One-directional copy between two buffers (what a shared-memory transport
// between CPU ranks does) and the one-way hand-off latency of a flag between
// two threads.
std::pair<double, double> MeasureCopyLink(double seconds) {
  const size_t bytes = size_t{64} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const double copy_s =
      BestTime(seconds, [&] { std::memcpy(dst.data(), src.data(), bytes); });
  std::atomic<int> flag{0};
  constexpr int kRounds = 20000;
  std::thread peer([&] {
    for (int i = 0; i < kRounds; ++i) {
      while (flag.load(std::memory_order_acquire) != 2 * i + 1) {
      }
      flag.store(2 * i + 2, std::memory_order_release);
    }
  });
  const auto t0 = Clock::now();
  for (int i = 0; i < kRounds; ++i) {
    flag.store(2 * i + 1, std::memory_order_release);
    while (flag.load(std::memory_order_acquire) != 2 * i + 2) {
    }
  }
  const double latency = Seconds(t0, Clock::now()) / kRounds / 2;
  peer.join();
  return {static_cast<double>(bytes) / copy_s, latency};
}

// A model so small that its weights and KV stay in cache: its step time is
// almost all fixed costs (norms, rotary, attention set-up, thread hand-offs,
// sampling), which calibration splits into per-layer and per-token parts.
absl::StatusOr<Model> TinyModel(int64_t layers, int64_t heads = 4) {
  ModelConfig c;
  c.architecture = "llama";
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = heads / 2;
  c.head_dim = 64 / heads;
  c.max_position_embeddings = 256;
  return SynthesizeModel(c, DType::kF32, 7);
}

constexpr int64_t kTinyContext = 64;

// Best time of a decode step of `batch` sequences at kTinyContext.
absl::StatusOr<double> TimeTinyDecode(const Model& model, int threads,
                                      int64_t batch, double seconds) {
  RunnerOptions ro;
  ro.threads = threads;
  ro.max_model_len = 256;
  const int64_t per_seq = 256 / ro.block_size;
  ro.num_kv_blocks = per_seq * batch;
  ro.max_num_seqs = batch;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   CreateCpuModelRunner(model, ro));
  std::vector<std::vector<int32_t>> tables(batch);
  for (int64_t s = 0; s < batch; ++s) {
    for (int64_t b = 0; b < per_seq; ++b)
      tables[s].push_back(static_cast<int32_t>(s * per_seq + b));
  }
  SamplingParams greedy;
  greedy.temperature = 0;
  std::vector<uint64_t> rng(batch, 1);
  const int32_t token = 5;
  std::vector<StepSequence> seqs(batch);
  for (int64_t s = 0; s < batch; ++s) {
    seqs[s].seq_id = s;
    seqs[s].tokens = absl::MakeConstSpan(&token, 1);
    seqs[s].num_computed = kTinyContext;
    seqs[s].block_table = tables[s];
    seqs[s].sample = true;
    seqs[s].sampling = &greedy;
    seqs[s].rng_state = &rng[s];
  }
  std::vector<StepOutput> out;
  absl::Status status;
  const double t = BestTime(seconds, [&] {
    out.clear();
    absl::Status st = runner->Step(seqs, &out);
    if (!st.ok()) status = st;
  });
  RETURN_IF_ERROR(status);
  return t;
}

// Sets p's step, layer, token and head overheads from decode steps of the
// tiny model at 2 and 8 layers (batch 1), 8 layers at batch 16, and the same
// 8 layers with twice the heads (half the head dim, same weights' shapes) at
// batch 1 and 16: what the cost model (with no overheads) does not explain,
// split into a per-step constant, a per-layer constant and a per-token-per-
// layer part, of which a share grows with the query heads.
absl::Status FitOverheads(int threads, double seconds,
                          placement::DeviceProfile* p) {
  constexpr int64_t kFewLayers = 2, kLayers = 8, kBatch = 16, kHeads = 4,
                    kWideHeads = 8;
  ASSIGN_OR_RETURN(Model few, TinyModel(kFewLayers));
  ASSIGN_OR_RETURN(Model tiny, TinyModel(kLayers));
  ASSIGN_OR_RETURN(Model wide, TinyModel(kLayers, kWideHeads));
  ASSIGN_OR_RETURN(double t_few, TimeTinyDecode(few, threads, 1, seconds));
  ASSIGN_OR_RETURN(double t1, TimeTinyDecode(tiny, threads, 1, seconds));
  ASSIGN_OR_RETURN(double tb, TimeTinyDecode(tiny, threads, kBatch, seconds));
  ASSIGN_OR_RETURN(double tw1, TimeTinyDecode(wide, threads, 1, seconds));
  ASSIGN_OR_RETURN(double twb, TimeTinyDecode(wide, threads, kBatch, seconds));
  p->layer_overhead_s = 0;
  p->token_overhead_s = 0;
  p->head_overhead_s = 0;
  p->step_overhead_s = 0;
  placement::ClusterSpec cluster;
  cluster.hosts = {"localhost"};
  cluster.devices_per_node = 1;
  cluster.device = *p;
  // Time the cost model does not explain, for `model` at `batch`.
  auto residual = [&](const Model& model, int64_t batch, double measured) {
    const placement::CostModel cost(ModelSpecFor(model, DType::kF32), *p);
    const placement::InstanceModel instance(
        cost, cluster, placement::Layout{}, 0,
        placement::InstanceModel::Role::kBoth);
    return std::max(0.0,
                    measured - instance.Iteration(placement::BatchShape::Decode(
                                   batch, kTinyContext)));
  };
  const double r_few = residual(few, 1, t_few);
  const double r1 = residual(tiny, 1, t1);
  const double rb = residual(tiny, kBatch, tb);
  const double rw1 = residual(wide, 1, tw1);
  const double rwb = residual(wide, kBatch, twb);
  const double per_layer =
      std::max(0.0, (r1 - r_few) / static_cast<double>(kLayers - kFewLayers));
  const double tokens = static_cast<double>((kBatch - 1) * kLayers);
  const double per_token = std::max(0.0, (rb - r1) / tokens);
  const double per_token_wide = std::max(0.0, (rwb - rw1) / tokens);
  p->head_overhead_s =
      std::max(0.0, (per_token_wide - per_token) / (kWideHeads - kHeads));
  p->token_overhead_s = std::max(0.0, per_token - p->head_overhead_s * kHeads);
  p->layer_overhead_s = std::max(0.0, per_layer - per_token);
  p->step_overhead_s =
      std::max(0.0, r1 - static_cast<double>(kLayers) * per_layer);
  return absl::OkStatus();
}

}  // namespace

std::string PlannerDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "fp32";
    case DType::kF16:
      return "fp16";
    case DType::kBF16:
      return "bf16";
    default:
      return std::string(DTypeName(dtype));
  }
}

absl::StatusOr<placement::DeviceProfile> CalibrateCpu(
    const CalibrationOptions& o) {
  const int threads =
      o.threads > 0
          ? o.threads
          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  kernels::ThreadPool pool(threads);
  const kernels::MachinePeaks peaks =
      kernels::MeasureMachinePeaks(pool, o.seconds);
  if (peaks.read_gbs <= 0 || peaks.f32_gflops <= 0) {
    return absl::FailedPreconditionError(
        "calibration needs AVX2+FMA or AVX-512 (no FMA peak measured)");
  }
  kernels::Context ctx;
  ctx.pool = &pool;

  placement::DeviceProfile p;
  p.kind = "cpu-local";
  const double mem = static_cast<double>(sysconf(_SC_PHYS_PAGES)) *
                     static_cast<double>(sysconf(_SC_PAGESIZE));
  p.memory_bytes = mem;
  p.memory_bandwidth_bytes_per_s = peaks.read_gbs * 1e9;
  // The math each weight dtype runs in: f16 and q8_0 weights are widened to
  // f32 and multiplied with FMAs; bf16 uses vdpbf16ps where the CPU has it.
  const double f32_peak = peaks.f32_gflops * 1e9;
  const double bf16_peak =
      peaks.bf16_gflops > 0 ? peaks.bf16_gflops * 1e9 : f32_peak;
  p.peak_flops = {{"fp32", f32_peak},
                  {"fp16", f32_peak},
                  {"bf16", bf16_peak},
                  {"q8_0", f32_peak}};

  // GEMM efficiency on a prefill shape (256 tokens through a 2048² matrix,
  // 4-8 MB of weights: compute-bound), per weight dtype.
  constexpr int64_t kGemmRows = 256, kGemmDim = 2048;
  std::string gemm_note;
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    const Tensor w = RandomWeight(d, kGemmDim, kGemmDim, 11);
    ASSIGN_OR_RETURN(double t, TimeLinear(ctx, w, kGemmRows, o.seconds));
    const std::string name = PlannerDTypeName(d);
    const double flops = 2.0 * kGemmRows * kGemmDim * kGemmDim;
    const double eff = std::min(1.0, flops / t / p.peak_flops[name]);
    p.compute_efficiency_by_dtype[name] = eff;
    gemm_note +=
        fmt::format("{}{} {:.2f}", gemm_note.empty() ? "" : ", ", name, eff);
  }
  p.compute_efficiency = p.compute_efficiency_by_dtype["fp32"];

  // GEMM efficiency by matrix size, relative to the 2048² product above (f16
  // weights, the same 256 rows): a small model's projections (or a large
  // one's at high tensor parallelism) split into fewer tiles per thread and
  // pay the per-call packing and hand-off that a large product hides. The
  // smallest shape is a grouped-query k/v projection of a 256-wide model.
  {
    constexpr int64_t kShapes[][2] = {
        {128, 256}, {256, 256}, {512, 512}, {1024, 1024}};
    const double base = p.compute_efficiency_by_dtype["fp16"] *
                        p.peak_flops["fp16"];  // FLOP/s at 2048²
    std::string curve;
    for (const auto& [n, k] : kShapes) {
      const Tensor w = RandomWeight(DType::kF16, n, k, 12);
      ASSIGN_OR_RETURN(double t, TimeLinear(ctx, w, kGemmRows, o.seconds));
      const double rate = 2.0 * static_cast<double>(kGemmRows * n * k) / t;
      p.gemm_size_efficiency.emplace_back(static_cast<double>(n * k),
                                          rate / base);
      curve += fmt::format(" {:.2f}@{}x{}", rate / base, n, k);
    }
    p.gemm_size_efficiency.emplace_back(
        static_cast<double>(kGemmDim * kGemmDim), 1.0);
    gemm_note +=
        fmt::format(" (by size, f16:{} 1@{}x{})", curve, kGemmDim, kGemmDim);
  }

  // GEMV (single-token decode) efficiency: 256 MB of weights (4x the
  // last-level cache where that is larger, so that no part of the set stays
  // cached between passes), as matrices of 4096 x 2048 run back to back the
  // way a decode step runs a model's layers, so the per-call costs (thread
  // wake-up, ramp-up of the prefetch streams) are in the figure. When a GEMV
  // streams
  // faster than the probe (whose access pattern the prefetchers may favour
  // less), the machine's bandwidth is the faster of the two and the
  // efficiencies are relative to it.
  constexpr int64_t kGemvRows = 4096, kGemvCols = 2048;
  std::map<std::string, double> gemv_rate;
  const int64_t gemv_set_bytes = kernels::MemoryProbeBytes(int64_t{256} << 20);
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    const int64_t matrix_bytes = DTypeBytes(d, kGemvRows * kGemvCols);
    const int count =
        static_cast<int>((gemv_set_bytes + matrix_bytes - 1) / matrix_bytes);
    std::vector<Tensor> ws;
    for (int i = 0; i < count; ++i)
      ws.push_back(RandomWeight(d, kGemvRows, kGemvCols, 13 + i));
    std::vector<float> x(kGemvCols, 0.01f), y(kGemvRows);
    absl::Status status;
    const double t = BestTime(o.seconds, [&] {
      for (const Tensor& w : ws) {
        absl::Status st = kernels::Linear(ctx, x.data(), 1, kGemvCols, w,
                                          nullptr, y.data(), kGemvRows);
        if (!st.ok()) status = st;
      }
    });
    RETURN_IF_ERROR(status);
    const std::string name = PlannerDTypeName(d);
    gemv_rate[name] = static_cast<double>(ws[0].nbytes()) * count / t;
    p.memory_bandwidth_bytes_per_s =
        std::max(p.memory_bandwidth_bytes_per_s, gemv_rate[name]);
  }
  std::string gemv_note;
  for (const auto& [name, rate] : gemv_rate) {
    const double eff = rate / p.memory_bandwidth_bytes_per_s;
    p.memory_efficiency_by_dtype[name] = eff;
    gemv_note +=
        fmt::format("{}{} {:.2f}", gemv_note.empty() ? "" : ", ", name, eff);
  }
  p.memory_efficiency = p.memory_efficiency_by_dtype["fp16"];

  // Cache-resident working sets: the same f16 GEMVs over S bytes of 1 MB
  // matrices, repeated, stream faster than DRAM once S fits the caches (a
  // small model's decode step re-reads all its weights every step). The gain
  // is relative to the 256 MB rate above; the curve stops where it is gone.
  std::string cache_note;
  {
    constexpr int64_t kRows = 256;  // 256 x 2048 f16 = 1 MiB per matrix.
    std::vector<Tensor> ws;
    std::vector<float> x(kGemvCols, 0.01f), y(kRows);
    for (int mib = 1; int64_t{mib} << 20 <= gemv_set_bytes;
         mib = mib < 16 ? mib * 2 : mib * 3 / 2) {
      while (static_cast<int>(ws.size()) < mib) {
        ws.push_back(RandomWeight(DType::kF16, kRows, kGemvCols,
                                  101 + static_cast<uint64_t>(ws.size())));
      }
      absl::Status status;
      const double t = BestTime(o.seconds / 2, [&] {
        for (const Tensor& w : ws) {
          absl::Status st = kernels::Linear(ctx, x.data(), 1, kGemvCols, w,
                                            nullptr, y.data(), kRows);
          if (!st.ok()) status = st;
        }
      });
      RETURN_IF_ERROR(status);
      const double bytes = static_cast<double>(ws[0].nbytes()) * mib;
      const double gain = std::max(1.0, bytes / t / gemv_rate["fp16"]);
      // Below 5% the gain is noise: close the curve at this size.
      p.cached_bandwidth_gain.emplace_back(bytes, gain < 1.05 ? 1.0 : gain);
      if (gain < 1.05) break;
    }
    // Caches only lose effect as the working set grows: keep the curve
    // non-increasing, so one noisy point cannot invent a bump.
    for (size_t i = 1; i < p.cached_bandwidth_gain.size(); ++i) {
      p.cached_bandwidth_gain[i].second =
          std::min(p.cached_bandwidth_gain[i].second,
                   p.cached_bandwidth_gain[i - 1].second);
    }
    if (p.cached_bandwidth_gain.size() < 2) {
      p.cached_bandwidth_gain.clear();  // No measurable gain at all.
    } else {
      cache_note =
          fmt::format(", {:.1f}x when {:.0f} MB stay cached, 1x from {:.0f} MB",
                      p.cached_bandwidth_gain.front().second,
                      p.cached_bandwidth_gain.front().first / 1e6,
                      p.cached_bandwidth_gain.back().first / 1e6);
    }
  }

  // How much of compute and memory time overlap: the f16 GEMV matrix again
  // with as many rows as make its compute time equal its streaming time, where
  // the roofline max(c, m) is most optimistic.
  std::string overlap_note;
  {
    const Tensor w =
        RandomWeight(DType::kF16, 8 * kGemvRows, 2 * kGemvCols, 13);
    const double memory_s =
        static_cast<double>(w.nbytes()) /
        (p.memory_bandwidth_bytes_per_s * p.memory_efficiency);
    const double flops_per_row = 2.0 * static_cast<double>(w.numel());
    const double row_s =
        flops_per_row /
        (p.peak_flops["fp16"] * p.compute_efficiency_by_dtype["fp16"]);
    // The share at a compute/memory ratio of about `ratio` (m rounded).
    auto measure =
        [&](double ratio) -> absl::StatusOr<std::pair<double, double>> {
      const int64_t m = std::clamp<int64_t>(
          static_cast<int64_t>(std::lround(ratio * memory_s / row_s)), 1, 64);
      ASSIGN_OR_RETURN(double t, TimeLinear(ctx, w, m, o.seconds));
      const double compute_s = row_s * static_cast<double>(m);
      return std::pair<double, double>{
          compute_s / memory_s, std::clamp((t - std::max(compute_s, memory_s)) /
                                               std::min(compute_s, memory_s),
                                           0.0, 1.0)};
    };
    // How much shows depends on the balance: a GEMV-like product hides its
    // FLOPs under the stream, a compute-bound one its stream only in part.
    // Points at ratios 1/4 to 4 (the range where max(c, m) and c + m differ
    // by more than 20%).
    for (double ratio : {0.25, 0.5, 1.0, 2.0, 4.0}) {
      ASSIGN_OR_RETURN(auto point, measure(ratio));
      if (!p.serial_fraction_curve.empty() &&
          !(point.first > p.serial_fraction_curve.back().first)) {
        continue;  // m rounded to the previous point's
      }
      p.serial_fraction_curve.push_back(point);
    }
    // The scalar (for tools that read one number) is the curve at balance,
    // whichever points survived the rounding of m.
    p.serial_fraction = p.SerialFraction(1.0);
    std::string curve;
    for (const auto& [ratio, f] : p.serial_fraction_curve) {
      curve +=
          fmt::format("{}{:.2f}@{:.2g}", curve.empty() ? "" : " ", f, ratio);
    }
    overlap_note =
        fmt::format("serial fraction {:.2f} (f16; by compute/memory ratio {})",
                    p.serial_fraction, curve);
  }

  // Attention: per score (query, key, head) it costs 4·head_dim FLOPs of
  // matrix products and softmax work (max, exp, sums) that does not depend
  // on head_dim; the two overlap, so a small head dim times the per-score
  // work and a large one the products.
  std::string attention_note;
  {
    constexpr int64_t kTokens = 512, kHeads = 8, kSmallDim = 16,
                      kLargeDim = 128;
    ASSIGN_OR_RETURN(double t_small,
                     TimeAttention(ctx, 1, kTokens, kTokens, kHeads, kSmallDim,
                                   1, o.seconds));
    ASSIGN_OR_RETURN(double t_large,
                     TimeAttention(ctx, 1, kTokens, kTokens, kHeads, kLargeDim,
                                   1, o.seconds));
    const double scores = kHeads * kTokens * (kTokens + 1) / 2.0;
    p.softmax_seconds_per_score = t_small / scores;
    p.attention_efficiency = std::clamp(
        scores * 4.0 * kLargeDim / (t_large * p.peak_flops["fp32"]), 0.01, 1.0);
    // KV-cache reads of decode: rows of one head, scattered over blocks, not
    // cached. Their bandwidth is what the measured time leaves after the
    // compute the two figures above predict (OpTime's roofline, solved for
    // the memory time).
    constexpr int64_t kDecodeSeqs = 16, kDecodeContext = 512, kDecodeDim = 64;
    const double kv_bytes =
        2.0 * kDecodeSeqs * kDecodeContext * (kHeads / 2) * kDecodeDim * 4;
    const int64_t set_bytes = std::min(
        kernels::MemoryProbeBytes(int64_t{256} << 20), int64_t{512} << 20);
    const int64_t groups = std::max<int64_t>(
        2, static_cast<int64_t>(std::ceil(set_bytes / kv_bytes)));
    ASSIGN_OR_RETURN(double t_cold,
                     TimeAttention(ctx, kDecodeSeqs, 1, kDecodeContext, kHeads,
                                   kDecodeDim, groups, o.seconds));
    const double decode_scores =
        static_cast<double>(kHeads * kDecodeSeqs * kDecodeContext);
    const double compute =
        std::max(decode_scores * 4.0 * kDecodeDim /
                     (p.attention_efficiency * p.peak_flops["fp32"]),
                 decode_scores * p.softmax_seconds_per_score);
    const double f = p.serial_fraction;
    double memory = t_cold - f * compute;
    if (memory < compute) memory = f > 0 ? (t_cold - compute) / f : 0;
    p.attention_memory_efficiency =
        memory > 0
            ? std::clamp(kv_bytes / memory / p.memory_bandwidth_bytes_per_s,
                         0.02, 1.0)
            : 0;
    attention_note = fmt::format(
        "attention {:.2f} of peak or {:.2f} ns per score, KV reads {:.2f} of "
        "bandwidth",
        p.attention_efficiency, p.softmax_seconds_per_score * 1e9,
        p.attention_memory_efficiency);
  }

  p.link_efficiency = 1.0;
  p.reserved_memory_bytes = std::min(2e9, mem * 0.1);
  p.memory_utilization = 0.8;
  const auto [copy_bw, latency] = threads > 1 ? MeasureCopyLink(o.seconds)
                                              : std::pair<double, double>{0, 0};
  p.intra_node.bandwidth_bytes_per_s =
      copy_bw > 0 ? copy_bw : p.memory_bandwidth_bytes_per_s / 3;
  p.intra_node.latency_s = latency > 0 ? latency : 1e-6;
  // Between machines nothing is measured here: 10 GbE is assumed.
  p.inter_node.bandwidth_bytes_per_s = 1.25e9;
  p.inter_node.latency_s = 50e-6;
  RETURN_IF_ERROR(FitOverheads(threads, o.seconds, &p));
  p.source = fmt::format(
      "tessera calibrate ({} threads): read {:.1f} GB/s (probe {:.1f}); FMA "
      "peak {:.1f} "
      "GFLOP/s; bf16 peak {:.1f} GFLOP/s; GEMM {}x{}x{} efficiency {}; GEMV "
      "{} MB efficiency {}{}; {}; {}; overhead {:.1f} us per layer + {:.2f} "
      "us per token + {:.3f} us per token-head + {:.1f} us per step; memcpy "
      "{:.1f} GB/s, thread hand-off {:.2f} us; inter-node link assumed (10 "
      "GbE)",
      threads, p.memory_bandwidth_bytes_per_s / 1e9, peaks.read_gbs,
      peaks.f32_gflops, peaks.bf16_gflops, kGemmRows, kGemmDim, kGemmDim,
      gemm_note, gemv_set_bytes >> 20, gemv_note, cache_note, overlap_note,
      attention_note, p.layer_overhead_s * 1e6, p.token_overhead_s * 1e6,
      p.head_overhead_s * 1e6, p.step_overhead_s * 1e6,
      p.intra_node.bandwidth_bytes_per_s / 1e9, p.intra_node.latency_s * 1e6);
  RETURN_IF_ERROR(placement::ValidateDeviceProfile(p));
  return p;
}

absl::StatusOr<placement::DeviceProfile> LoadProfileOrCalibrate(
    const std::string& path, int threads) {
  if (path.empty()) {
    std::fprintf(stderr, "no --profile: calibrating this machine first...\n");
    CalibrationOptions options;
    options.threads = threads;
    return CalibrateCpu(options);
  }
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  absl::StatusOr<placement::DeviceProfile> profile =
      placement::ParseDeviceProfile(text);
  if (!profile.ok()) return Annotate(profile.status(), path);
  return profile;
}

placement::ModelSpec ModelSpecFor(const Model& model, DType kv_dtype) {
  const ModelConfig& c = model.config;
  placement::ModelSpec s;
  s.name = model.source;
  s.architecture = c.architecture;
  s.num_layers = c.num_hidden_layers;
  s.hidden_size = c.hidden_size;
  s.num_heads = c.num_attention_heads;
  s.num_kv_heads = c.num_key_value_heads;
  s.head_dim = c.head_dim;
  s.vocab_size = c.vocab_size;
  s.max_context = c.max_position_embeddings;
  s.tie_embeddings = c.tie_word_embeddings;
  s.gated_mlp = true;
  if (c.is_moe()) {
    s.num_experts = c.num_local_experts;
    s.experts_per_token = c.num_experts_per_tok;
    s.moe_ffn_size = c.intermediate_size;
    s.ffn_size = c.intermediate_size;
  } else {
    s.ffn_size = c.intermediate_size;
  }
  // Bytes per parameter over the 2-D weights actually loaded.
  double bytes = 0, params = 0;
  auto add = [&](const Tensor& t) {
    if (!t.defined() || t.rank() != 2) return;
    bytes += static_cast<double>(t.nbytes());
    params += static_cast<double>(t.shape()[0] * t.shape()[1]);
  };
  add(model.weights.token_embedding);
  if (!c.tie_word_embeddings) add(model.weights.lm_head);
  DType dominant = c.dtype;
  for (const LayerWeights& l : model.weights.layers) {
    for (const Tensor* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up,
                            &l.w_down, &l.router}) {
      add(*t);
    }
    for (const auto* list : {&l.expert_gate, &l.expert_up, &l.expert_down}) {
      for (const Tensor& t : *list) add(t);
    }
    if (l.wq.defined()) dominant = l.wq.dtype();
  }
  s.weight_dtype = PlannerDTypeName(dominant);
  s.weight_bytes =
      params > 0 ? bytes / params : static_cast<double>(DTypeBytes(c.dtype, 1));
  s.kv_dtype = PlannerDTypeName(kv_dtype);
  s.kv_bytes = static_cast<double>(DTypeBytes(kv_dtype, 1));
  return s;
}

}  // namespace tessera
