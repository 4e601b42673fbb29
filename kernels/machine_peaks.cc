// Methodology:
// - Bandwidth: every thread streams its share of a 512 MiB buffer (4x the
//   last-level cache when that is larger) with 512-bit (or 256-bit) loads as 8
//   independent XOR chains (one core needs several streams to keep enough
//   misses in flight), best of several passes.
// - Peaks: register-only loops of 16 independent FMA / vdpbf16ps chains per
// thread
//   (a 16-lane FMA = 32 flop, a 16-lane vdpbf16ps = 64 flop).
#include "kernels/machine_peaks.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "base/host_memory.h"
#include "base/logging.h"
#include "kernels/cpu_features.h"

namespace tessera::kernels {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kMinBandwidthBytes = int64_t{512} << 20;
constexpr int64_t kPeakIters = 1'000'000;

template <class Fn>
double BestSeconds(double min_seconds, Fn&& fn) {
  fn();  // Warm-up.
  double best = 1e30;
  const auto start = Clock::now();
  for (int reps = 0;
       reps < 3 || std::chrono::duration<double>(Clock::now() - start).count() <
                       min_seconds;
       ++reps) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best,
                    std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

__attribute__((target("avx512f"))) uint64_t ReadAvx512(const uint8_t* p,
                                                       int64_t bytes) {
  const int64_t part = bytes / 8 / 64 * 64;
  __m512i a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm512_setzero_si512();
  for (int64_t i = 0; i < part; i += 64) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      a[j] = _mm512_xor_si512(
          a[j], _mm512_load_si512(
                    reinterpret_cast<const __m512i*>(p + j * part + i)));
    }
  }
  for (int j = 1; j < 8; ++j) a[0] = _mm512_xor_si512(a[0], a[j]);
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(a[0]));
}

__attribute__((target("avx2"))) uint64_t ReadAvx2(const uint8_t* p,
                                                  int64_t bytes) {
  const int64_t part = bytes / 8 / 32 * 32;
  __m256i a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_si256();
  for (int64_t i = 0; i < part; i += 32) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      a[j] = _mm256_xor_si256(
          a[j], _mm256_load_si256(
                    reinterpret_cast<const __m256i*>(p + j * part + i)));
    }
  }
  for (int j = 1; j < 8; ++j) a[0] = _mm256_xor_si256(a[0], a[j]);
  return static_cast<uint64_t>(_mm256_extract_epi64(a[0], 0));
}

uint64_t ReadScalar(const uint8_t* p, int64_t bytes) {
  uint64_t acc = 0;
  for (int64_t i = 0; i + 8 <= bytes; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    acc ^= v;
  }
  return acc;
}

__attribute__((target("avx512f"))) void FmaLoopAvx512(int64_t iters,
                                                      float* sink) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.0001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  *sink += _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) void FmaLoopAvx2(int64_t iters,
                                                     float* sink) {
  __m256 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.0001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  float lanes[8];
  __m256 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_storeu_ps(lanes, s);
  for (float v : lanes) *sink += v;
}

__attribute__((target("avx512f,avx512bf16"))) void Bf16Loop(int64_t iters,
                                                            float* sink) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3c00);
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3a00);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  *sink += _mm512_reduce_add_ps(s);
}

}  // namespace

PeakProbe::PeakProbe(ThreadPool& pool)
    : pool_(pool),
      buffer_bytes_(MemoryProbeBytes(kMinBandwidthBytes) / 4096 * 4096),
      storage_(AllocateHostMemory(static_cast<size_t>(buffer_bytes_))),
      chunk_(buffer_bytes_ / pool.size() / 512 * 512),
      int_sinks_(pool.size() * 8),  // One cache line per thread.
      float_sinks_(pool.size() * 16) {
  TESSERA_CHECK(storage_ != nullptr, "out of host memory for the {} B probe",
                buffer_bytes_);
  std::memset(buffer(), 1, buffer_bytes_);
}

PeakProbe::~PeakProbe() = default;

void PeakProbe::ReadPass() {
  const CpuFeatures& f = GetCpuFeatures();
  pool_.ParallelFor(pool_.size(), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const uint8_t* p = buffer() + t * chunk_;
      int_sinks_[t * 8] += f.HasAvx512() ? ReadAvx512(p, chunk_)
                           : f.avx2      ? ReadAvx2(p, chunk_)
                                         : ReadScalar(p, chunk_);
    }
  });
}

void PeakProbe::F32Pass() {
  if (!has_f32()) return;
  const bool wide = GetCpuFeatures().HasAvx512();
  pool_.ParallelFor(pool_.size(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      wide ? FmaLoopAvx512(kPeakIters, &float_sinks_[i * 16])
           : FmaLoopAvx2(kPeakIters, &float_sinks_[i * 16]);
    }
  });
}

void PeakProbe::Bf16Pass() {
  if (!has_bf16()) return;
  pool_.ParallelFor(pool_.size(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) Bf16Loop(kPeakIters, &float_sinks_[i * 16]);
  });
}

double PeakProbe::read_bytes() const {
  return static_cast<double>(chunk_) * pool_.size();
}

double PeakProbe::f32_flops() const {
  const double lanes = GetCpuFeatures().HasAvx512() ? 16.0 : 8.0;
  return kPeakIters * 16.0 * lanes * 2.0 * pool_.size();
}

double PeakProbe::bf16_flops() const {
  return kPeakIters * 16.0 * 64.0 * pool_.size();
}

bool PeakProbe::has_f32() const {
  return GetCpuFeatures().HasAvx512() || GetCpuFeatures().HasAvx2();
}

bool PeakProbe::has_bf16() const {
  return GetCpuFeatures().HasAvx512() && GetCpuFeatures().avx512_bf16;
}

double MeasureReadBandwidthGBs(ThreadPool& pool, double min_seconds) {
  PeakProbe probe(pool);
  return probe.read_bytes() /
         BestSeconds(min_seconds, [&] { probe.ReadPass(); }) / 1e9;
}

double MeasureF32PeakGFlops(ThreadPool& pool, double min_seconds) {
  PeakProbe probe(pool);
  if (!probe.has_f32()) return 0;
  return probe.f32_flops() /
         BestSeconds(min_seconds, [&] { probe.F32Pass(); }) / 1e9;
}

double MeasureBf16PeakGFlops(ThreadPool& pool, double min_seconds) {
  PeakProbe probe(pool);
  if (!probe.has_bf16()) return 0;
  return probe.bf16_flops() /
         BestSeconds(min_seconds, [&] { probe.Bf16Pass(); }) / 1e9;
}

MachinePeaks MeasureMachinePeaks(ThreadPool& pool, double min_seconds) {
  PeakProbe probe(pool);
  MachinePeaks p;
  p.read_gbs = probe.read_bytes() /
               BestSeconds(min_seconds, [&] { probe.ReadPass(); }) / 1e9;
  if (probe.has_f32()) {
    p.f32_gflops = probe.f32_flops() /
                   BestSeconds(min_seconds, [&] { probe.F32Pass(); }) / 1e9;
  }
  if (probe.has_bf16()) {
    p.bf16_gflops = probe.bf16_flops() /
                    BestSeconds(min_seconds, [&] { probe.Bf16Pass(); }) / 1e9;
  }
  return p;
}

}  // namespace tessera::kernels
