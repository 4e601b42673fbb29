// Measures what this machine can do, as baselines that benchmarks quote ratios
// to: streaming read bandwidth, f32 FMA peak and bf16 dot-product peak, on all
// threads.
#pragma once

#include "kernels/thread_pool.h"

namespace tessera::kernels {

struct MachinePeaks {
  double read_gbs = 0;  // Streaming read bandwidth, GB/s (512 MiB buffer).
  double f32_gflops =
      0;  // Register-only FMA loop, GFLOP/s (0 without AVX2/AVX-512).
  double bf16_gflops = 0;  // vdpbf16ps loop, GFLOP/s (0 without AVX-512-BF16).
};

// Best of repeated passes lasting at least `min_seconds` each, on every pool
// thread.
double MeasureReadBandwidthGBs(ThreadPool& pool, double min_seconds);
double MeasureF32PeakGFlops(ThreadPool& pool, double min_seconds);
double MeasureBf16PeakGFlops(ThreadPool& pool, double min_seconds);
// All three.
MachinePeaks MeasureMachinePeaks(ThreadPool& pool, double min_seconds);

}  // namespace tessera::kernels
