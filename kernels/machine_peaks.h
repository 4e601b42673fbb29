// Measures what this machine can do, as baselines that benchmarks quote ratios
// to: streaming read bandwidth, f32 FMA peak and bf16 dot-product peak, on all
// threads.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/thread_pool.h"

namespace tessera::kernels {

struct MachinePeaks {
  // Streaming read bandwidth, GB/s (512 MiB buffer).
  double read_gbs = 0;
  // Register-only FMA loop, GFLOP/s (0 without AVX2/AVX-512).
  double f32_gflops = 0;
  // vdpbf16ps loop, GFLOP/s (0 without AVX-512-BF16).
  double bf16_gflops = 0;
};

// One pass of each baseline loop on every pool thread; timing is the caller's
// (so a benchmark can alternate a baseline pass with the kernel it compares
// to).
class PeakProbe {
 public:
  // Allocates and touches the 512 MiB bandwidth buffer.
  explicit PeakProbe(ThreadPool& pool);
  ~PeakProbe();
  PeakProbe(const PeakProbe&) = delete;
  PeakProbe& operator=(const PeakProbe&) = delete;

  // Streams the buffer once (read_bytes() bytes).
  void ReadPass();
  // Register-only FMA loops (f32_flops() flops; no-op without AVX2/AVX-512).
  void F32Pass();
  // vdpbf16ps loops (bf16_flops() flops; no-op without AVX-512-BF16).
  void Bf16Pass();

  double read_bytes() const;
  double f32_flops() const;
  double bf16_flops() const;
  bool has_f32() const;
  bool has_bf16() const;

 private:
  ThreadPool& pool_;
  int64_t buffer_bytes_ = 0;
  // Huge-page backed like the weights it is compared with (base/host_memory).
  std::shared_ptr<void> storage_;
  uint8_t* buffer() const { return static_cast<uint8_t*>(storage_.get()); }
  int64_t chunk_ = 0;
  std::vector<uint64_t> int_sinks_;
  std::vector<float> float_sinks_;
};

// Best of repeated passes lasting at least `min_seconds` each, on every pool
// thread.
double MeasureReadBandwidthGBs(ThreadPool& pool, double min_seconds);
double MeasureF32PeakGFlops(ThreadPool& pool, double min_seconds);
double MeasureBf16PeakGFlops(ThreadPool& pool, double min_seconds);
// All three.
MachinePeaks MeasureMachinePeaks(ThreadPool& pool, double min_seconds);

}  // namespace tessera::kernels
