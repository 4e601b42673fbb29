// Methodology (honest numbers):
// - Bandwidth: every thread streams its share of a 512 MiB buffer with
//   512-bit loads (8 independent XOR chains), best of several passes.
// - Peaks: register-only loops of independent FMAs / vdpbf16ps on all threads
//   (a 16-lane FMA = 32 flop, a 16-lane vdpbf16ps = 64 flop).
// - GEMV: y = x·Wᵀ with m = 1, cycling over enough copies of W (>= 256 MiB
//   and >= 4x the last-level cache)
//   that no copy is in cache; GB/s counts weight bytes only.
// - GEMM: the same shapes through Linear and through OpenBLAS cblas_sgemm
//   (row-major x, W transposed), both with the same thread count.
#include "kernels/bench/kernels_bench.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/dtype.h"
#include "base/random.h"
#include "base/tensor.h"
#include "kernels/cpu_features.h"
#include "kernels/machine_peaks.h"
#include "kernels/ops.h"
#include "kernels/thread_pool.h"

namespace tessera::kernels::bench {
namespace {

// Seconds on the wall clock, or (--cpu-clock, one thread) on this thread's
// CPU-time clock, which does not advance while the OS runs other processes on
// the core: the figure a shared, overloaded machine can still measure.
bool g_cpu_clock = false;

double Now() {
  timespec ts;
  clock_gettime(g_cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// Best wall time (seconds) of fn() over repetitions lasting >= min_seconds.
template <class Fn>
double BestTime(double min_seconds, Fn&& fn) {
  fn();  // Warm-up.
  double best = 1e30;
  const double start = Now();
  int reps = 0;
  while (reps < 3 || Now() - start < min_seconds) {
    const double t0 = Now();
    fn();
    best = std::min(best, Now() - t0);
    ++reps;
  }
  return best;
}

// Best wall times of a() and b(), measured alternately so both see the same
// machine load (this benchmark often shares its cores with other work).
template <class A, class B>
std::pair<double, double> BestTimePair(double min_seconds, A&& a, B&& b) {
  a();
  b();
  double best_a = 1e30, best_b = 1e30;
  const double start = Now();
  int reps = 0;
  while (reps < 3 || Now() - start < min_seconds) {
    double t0 = Now();
    a();
    best_a = std::min(best_a, Now() - t0);
    t0 = Now();
    b();
    best_b = std::min(best_b, Now() - t0);
    ++reps;
  }
  return {best_a, best_b};
}

Tensor RandomWeight(DType dtype, int64_t n, int64_t k, uint64_t seed) {
  Tensor w = Tensor::Empty(dtype, {n, k});
  SplitMix64 rng(seed);
  if (dtype == DType::kQ8_0) {
    uint8_t* p = w.data<uint8_t>();
    for (int64_t b = 0; b < n * k / 32; ++b) {
      const uint16_t d = FloatToHalf(0.01f);
      std::memcpy(p + b * 34, &d, 2);
      for (int j = 0; j < 32; ++j) p[b * 34 + 2 + j] = rng.Next() & 0xff;
    }
    return w;
  }
  for (int64_t i = 0; i < n * k; ++i) {
    const float v = rng.Uniform() - 0.5f;
    if (dtype == DType::kF32) w.data<float>()[i] = v;
    if (dtype == DType::kF16) w.data<uint16_t>()[i] = FloatToHalf(v);
    if (dtype == DType::kBF16) w.data<uint16_t>()[i] = FloatToBF16(v);
  }
  return w;
}

}  // namespace

int RunKernelsBench(const KernelsBenchOptions& options, std::FILE* out) {
  const int threads =
      options.threads > 0
          ? options.threads
          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_cpu_clock = options.cpu_clock && threads == 1;
  ThreadPool pool(threads);
  const CpuFeatures& f = GetCpuFeatures();
  const Isa isa = BestIsa();
  std::fprintf(out,
               "bench kernels: %d threads, isa %s, cpu %s[%s], m=1 GEMV "
               "reads W %s\n",
               threads, IsaName(isa), f.amd ? "AMD " : "", f.ToString().c_str(),
               GemvReadsRows(GemvRead::kAuto) ? "by rows" : "in tiles");
  std::fprintf(out,
               "(each ratio pairs a kernel with its baseline measured "
               "alternately in the same loop, best of each; clock: %s)\n",
               g_cpu_clock ? "thread CPU time" : "wall");
  if (options.cpu_clock && !g_cpu_clock) {
    std::fprintf(out,
                 "(--cpu-clock needs --threads 1; using the wall clock)\n");
  }
  const double min_s = options.min_seconds;

  // ---- Baselines (kernels/machine_peaks.h) ----
  PeakProbe probe(pool);
  auto read_pass = [&] { probe.ReadPass(); };
  auto fma_pass = [&] { probe.F32Pass(); };
  auto bf16_pass = [&] { probe.Bf16Pass(); };
  const int64_t kBwBytes = static_cast<int64_t>(probe.read_bytes());
  const double fma_flop = probe.f32_flops();
  const double bf16_flop = probe.bf16_flops();
  const bool has_avx512 = f.HasAvx512();
  const bool has_bf16 = probe.has_bf16();

  const double bw = kBwBytes / BestTime(min_s, read_pass) / 1e9;
  std::fprintf(out, "memory read bandwidth: %.1f GB/s (%d threads, 512 MiB)\n",
               bw, threads);
  if (has_avx512) {
    std::fprintf(out, "f32 FMA peak: %.1f GFLOP/s (avx512, all threads)\n",
                 fma_flop / BestTime(min_s, fma_pass) / 1e9);
  }
  if (has_bf16) {
    std::fprintf(out, "bf16 dot-product peak: %.1f GFLOP/s (vdpbf16ps)\n",
                 bf16_flop / BestTime(min_s, bf16_pass) / 1e9);
  }

  Context ctx{&pool, Isa::kAuto};

  // ---- GEMV (decode) ----
  struct Shape2 {
    int64_t n, k;
  };
  std::vector<Shape2> gemv_shapes = {
      {2048, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}};
  if (options.quick) gemv_shapes = {{2048, 2048}};
  std::fprintf(out,
               "GEMV m=1 (weight bytes / time, ratio to read bandwidth):\n");
  double worst_gemv = 1e9;
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kQ8_0}) {
    for (const Shape2& s : gemv_shapes) {
      const Tensor w0 = RandomWeight(dt, s.n, s.k, 1);
      const int64_t bytes = w0.nbytes();
      const int64_t set_bytes = MemoryProbeBytes(int64_t{256} << 20);
      const int64_t copies =
          std::max<int64_t>(1, (set_bytes + bytes - 1) / bytes);
      std::vector<Tensor> ws = {w0};
      for (int64_t c = 1; c < copies; ++c) {
        Tensor w = Tensor::Empty(dt, {s.n, s.k});
        std::memcpy(w.raw_data(), w0.raw_data(), bytes);
        ws.push_back(w);
      }
      std::vector<float> x(s.k, 0.5f), y(s.n);
      int64_t next = 0;
      const auto [t_bw, t] = BestTimePair(min_s, read_pass, [&] {
        (void)Linear(ctx, x.data(), 1, s.k, ws[next], nullptr, y.data(), s.n);
        next = (next + 1) % copies;
      });
      const double gbs = bytes / t / 1e9, bw_now = kBwBytes / t_bw / 1e9;
      worst_gemv = std::min(worst_gemv, gbs / bw_now);
      std::fprintf(out,
                   "  %-5s %6lldx%-5lld %8.1f us  %6.1f GB/s  bandwidth %5.1f "
                   "GB/s  %.2f\n",
                   std::string(DTypeName(dt)).c_str(),
                   static_cast<long long>(s.n), static_cast<long long>(s.k),
                   t * 1e6, gbs, bw_now, gbs / bw_now);
    }
  }

  // ---- GEMM (prefill) ----
  struct Shape3 {
    int64_t m, n, k;
  };
  std::vector<Shape3> gemm_shapes = {{128, 2048, 2048}, {128, 5632, 2048},
                                     {128, 2048, 5632}, {512, 2048, 2048},
                                     {512, 5632, 2048}, {512, 2048, 5632}};
  if (options.quick) gemm_shapes = {{128, 2048, 2048}};
  openblas_set_num_threads(threads);
  std::fprintf(out, "GEMM f32 weights vs OpenBLAS cblas_sgemm (%d threads):\n",
               threads);
  double worst_gemm = 1e9, worst_bf16 = 1e9;
  for (const Shape3& s : gemm_shapes) {
    const Tensor w = RandomWeight(DType::kF32, s.n, s.k, 2);
    std::vector<float> x(s.m * s.k, 0.25f), y(s.m * s.n);
    const double flop = 2.0 * s.m * s.n * s.k;
    const auto [t_blas, t_ours] = BestTimePair(
        min_s,
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k,
                      1.0f, x.data(), s.k, w.data<float>(), s.k, 0.0f, y.data(),
                      s.n);
        },
        [&] {
          (void)Linear(ctx, x.data(), s.m, s.k, w, nullptr, y.data(), s.n);
        });
    const double ours = flop / t_ours / 1e9, blas = flop / t_blas / 1e9;
    worst_gemm = std::min(worst_gemm, ours / blas);
    std::fprintf(out,
                 "  m=%-4lld n=%-5lld k=%-5lld tessera %7.1f GFLOP/s  openblas "
                 "%7.1f GFLOP/s  %.2fx\n",
                 static_cast<long long>(s.m), static_cast<long long>(s.n),
                 static_cast<long long>(s.k), ours, blas, ours / blas);
  }
  if (!has_avx512) {
    std::fprintf(out, "(no AVX-512: peak-relative GEMM figures skipped)\n");
  }
  for (DType dt : {DType::kBF16, DType::kF16, DType::kQ8_0}) {
    if (!has_avx512) break;
    const bool bf16_dot = dt == DType::kBF16 && has_bf16;
    std::fprintf(
        out, "GEMM %s weights%s:\n", std::string(DTypeName(dt)).c_str(),
        bf16_dot ? " (vdpbf16ps; ratio to the bf16 dot-product peak)"
                 : " (dequantized per L2 block; ratio to f32 FMA peak)");
    for (const Shape3& s : gemm_shapes) {
      const Tensor w = RandomWeight(dt, s.n, s.k, 3);
      std::vector<float> x(s.m * s.k, 0.25f), y(s.m * s.n);
      const double flop = 2.0 * s.m * s.n * s.k;
      auto gemm = [&] {
        (void)Linear(ctx, x.data(), s.m, s.k, w, nullptr, y.data(), s.n);
      };
      const auto [t_peak, t] = bf16_dot ? BestTimePair(min_s, bf16_pass, gemm)
                                        : BestTimePair(min_s, fma_pass, gemm);
      const double g = flop / t / 1e9;
      const double peak = (bf16_dot ? bf16_flop : fma_flop) / t_peak / 1e9;
      if (dt == DType::kBF16) worst_bf16 = std::min(worst_bf16, g / peak);
      std::fprintf(out,
                   "  m=%-4lld n=%-5lld k=%-5lld %7.1f GFLOP/s  peak %7.1f  "
                   "%.2f\n",
                   static_cast<long long>(s.m), static_cast<long long>(s.n),
                   static_cast<long long>(s.k), g, peak, g / peak);
    }
  }
  std::fprintf(out,
               "summary: GEMV >= %.2f of read bandwidth (target 0.90); f32 "
               "GEMM >= %.2fx OpenBLAS (target 0.90); bf16 GEMM >= %.2f of "
               "bf16 peak (target 0.75)\n",
               worst_gemv, worst_gemm, worst_bf16);
  return 0;
}

}  // namespace tessera::kernels::bench
