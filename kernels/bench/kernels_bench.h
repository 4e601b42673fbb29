// `tessera bench kernels`: measures this machine's peaks (read bandwidth, f32
// FMA and bf16 dot-product rates) and the kernels against them and against
// OpenBLAS sgemm, in one run. Links OpenBLAS; the kernels library never does.
#pragma once

#include <cstdio>

namespace tessera::kernels::bench {

struct KernelsBenchOptions {
  int threads = 0;           // 0: all hardware threads.
  double min_seconds = 0.3;  // Per measurement (best of repeated runs).
  bool quick = false;        // Fewer shapes (for smoke tests).
  // With threads == 1: time on the thread's CPU-time clock (immune to other
  // processes time-slicing the core; DRAM contention still shows).
  bool cpu_clock = false;
};

// Runs every benchmark and prints one line per figure to `out`. Returns 0.
int RunKernelsBench(const KernelsBenchOptions& options, std::FILE* out);

}  // namespace tessera::kernels::bench
