// `tessera calibrate`: measures this machine with simple loops (FMA peak,
// streaming memory bandwidth, shared-memory copy bandwidth and hand-off
// latency) and writes a `cpu-local` device profile for the planner.
//
// Deliberately independent of the kernels library's GEMMs (which may be
// faster): the profile's compute_efficiency is the fraction of this FMA peak a
// good GEMM reaches, to be refined once the executor can be timed.
#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/mapped_file.h"
#include "fmt/format.h"
#include "kernels/cpu_features.h"
#include "placement/cluster.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Ten independent 8-wide FMA chains hide the FMA latency.
__attribute__((target("avx2,fma"))) double FmaLoopAvx2(int64_t iters,
                                                       float seed) {
  __m256 acc[10];
  for (int i = 0; i < 10; ++i)
    acc[i] = _mm256_set1_ps(seed + static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < 10; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 10; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

double FmaLoopGeneric(int64_t iters, float seed) {
  float acc[32];
  for (int i = 0; i < 32; ++i) acc[i] = seed + static_cast<float>(i);
  for (int64_t it = 0; it < iters; ++it) {
    for (float& x : acc) x = x * 0.999999f + 1e-7f;
  }
  float s = 0;
  for (float x : acc) s += x;
  return s;
}

// FLOP/s over all threads.
double MeasureFlops(int threads, double seconds) {
  const bool avx2 =
      kernels::GetCpuFeatures().avx2 && kernels::GetCpuFeatures().fma;
  const int64_t flops_per_iter = avx2 ? 10 * 8 * 2 : 32 * 2;
  // Calibrate the iteration count on one thread, then run all at once.
  int64_t iters = 1 << 16;
  while (true) {
    const auto t0 = Clock::now();
    volatile double sink =
        avx2 ? FmaLoopAvx2(iters, 1.0f) : FmaLoopGeneric(iters, 1.0f);
    (void)sink;
    if (Seconds(t0, Clock::now()) > seconds / 4 || iters > (int64_t{1} << 40))
      break;
    iters *= 2;
  }
  std::vector<std::thread> pool;
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      volatile double sink = avx2
                                 ? FmaLoopAvx2(iters, static_cast<float>(t))
                                 : FmaLoopGeneric(iters, static_cast<float>(t));
      (void)sink;
    });
  }
  for (auto& th : pool) th.join();
  return static_cast<double>(iters * flops_per_iter) * threads /
         Seconds(t0, Clock::now());
}

// STREAM-style triad a = b + s·c: 3 floats moved per element.
double MeasureBandwidth(int threads, double seconds) {
  const size_t n = size_t{16} << 20;  // 3 × 64 MiB: far beyond caches
  std::vector<float> a(n, 0.f), b(n, 1.f), c(n, 2.f);
  auto pass = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) a[i] = b[i] + 0.5f * c[i];
  };
  int passes = 0;
  const auto t0 = Clock::now();
  do {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back(pass, n * t / threads, n * (t + 1) / threads);
    }
    for (auto& th : pool) th.join();
    ++passes;
  } while (Seconds(t0, Clock::now()) < seconds);
  return 3.0 * sizeof(float) * static_cast<double>(n) * passes /
         Seconds(t0, Clock::now());
}

// One-directional copy between two buffers (what a shared-memory transport
// between CPU ranks does) and the round trip of a flag between two threads.
std::pair<double, double> MeasureCopyLink(double seconds) {
  const size_t bytes = size_t{64} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  int copies = 0;
  auto t0 = Clock::now();
  do {
    std::memcpy(dst.data(), src.data(), bytes);
    ++copies;
  } while (Seconds(t0, Clock::now()) < seconds);
  const double bw =
      static_cast<double>(bytes) * copies / Seconds(t0, Clock::now());
  std::atomic<int> flag{0};
  constexpr int kRounds = 20000;
  std::thread peer([&] {
    for (int i = 0; i < kRounds; ++i) {
      while (flag.load(std::memory_order_acquire) != 2 * i + 1) {
      }
      flag.store(2 * i + 2, std::memory_order_release);
    }
  });
  t0 = Clock::now();
  for (int i = 0; i < kRounds; ++i) {
    flag.store(2 * i + 1, std::memory_order_release);
    while (flag.load(std::memory_order_acquire) != 2 * i + 2) {
    }
  }
  const double latency = Seconds(t0, Clock::now()) / kRounds / 2;
  peer.join();
  return {bw, latency};
}

struct CalibrateArgs {
  std::string out;
  std::string cluster_out;
  int threads = 0;
  double seconds = 0.5;
};

int RunCalibrate(const CalibrateArgs& a) {
  const int threads = a.threads > 0
                          ? a.threads
                          : std::max(1u, std::thread::hardware_concurrency());
  std::fprintf(stderr,
               "calibrating with %d thread(s), %.2f s per measurement...\n",
               threads, a.seconds);
  const double flops = MeasureFlops(threads, a.seconds);
  const double bandwidth = MeasureBandwidth(threads, a.seconds);
  const auto [copy_bw, latency] = threads > 1 ? MeasureCopyLink(a.seconds)
                                              : std::pair<double, double>{0, 0};
  placement::DeviceProfile p;
  p.kind = "cpu-local";
  const double mem = static_cast<double>(sysconf(_SC_PHYS_PAGES)) *
                     static_cast<double>(sysconf(_SC_PAGESIZE));
  p.memory_bytes = mem;
  p.memory_bandwidth_bytes_per_s = bandwidth;
  for (const char* d : {"fp32", "bf16", "fp16"}) p.peak_flops[d] = flops;
  p.compute_efficiency = 0.7;  // a good SGEMM reaches ~70% of the FMA peak
  p.memory_efficiency = 1.0;   // the bandwidth above is already achieved
  p.link_efficiency = 1.0;
  p.layer_overhead_s = 5e-6;
  p.reserved_memory_bytes = std::min(2e9, mem * 0.1);
  p.memory_utilization = 0.8;
  p.intra_node.bandwidth_bytes_per_s = copy_bw > 0 ? copy_bw : bandwidth / 3;
  p.intra_node.latency_s = latency > 0 ? latency : 1e-6;
  // Between machines nothing is measured here: 10 GbE is assumed.
  p.inter_node.bandwidth_bytes_per_s = 1.25e9;
  p.inter_node.latency_s = 50e-6;
  p.source = fmt::format(
      "tessera calibrate: {} threads; FMA loop ({}) {:.1f} GFLOP/s; triad "
      "{:.1f} GB/s; "
      "memcpy {:.1f} GB/s, thread hand-off {:.2f} us; inter-node link assumed "
      "(10 GbE)",
      threads,
      kernels::GetCpuFeatures().avx2 && kernels::GetCpuFeatures().fma
          ? "avx2+fma"
          : "scalar",
      flops / 1e9, bandwidth / 1e9, p.intra_node.bandwidth_bytes_per_s / 1e9,
      p.intra_node.latency_s * 1e6);
  if (absl::Status st = placement::ValidateDeviceProfile(p); !st.ok()) {
    return ReportError("calibrate", std::string(st.message()));
  }
  const std::string json = placement::DeviceProfileToJson(p) + "\n";
  std::fprintf(stderr, "%s\n", p.source.c_str());
  if (a.out.empty()) {
    std::fputs(json.c_str(), stdout);
  } else if (absl::Status st = WriteStringToFile(a.out, json); !st.ok()) {
    return ReportError("calibrate", std::string(st.message()));
  }
  if (!a.cluster_out.empty()) {
    const std::string cluster = fmt::format(
        "{{\"name\": \"this machine\", \"nodes\": 1, \"devices_per_node\": 1, "
        "\"device\": {}}}\n",
        placement::DeviceProfileToJson(p));
    if (absl::Status st = WriteStringToFile(a.cluster_out, cluster); !st.ok()) {
      return ReportError("calibrate", std::string(st.message()));
    }
  }
  return kExitOk;
}

}  // namespace

void AddCalibrateCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<CalibrateArgs>();
  CLI::App* sub = app.add_subcommand(
      "calibrate", "Measure this machine and write a cluster profile");
  sub->add_option("--out", args->out,
                  "Write the cpu-local device profile here (default: stdout)");
  sub->add_option("--cluster-out", args->cluster_out,
                  "Also write a one-node cluster file using the profile");
  sub->add_option("--threads", args->threads,
                  "Threads to measure with (default: all cores)")
      ->check(CLI::Range(1, 1024));
  sub->add_option("--seconds", args->seconds, "Seconds per measurement")
      ->check(CLI::Range(0.01, 60.0));
  sub->final_callback([args, exit_code] { *exit_code = RunCalibrate(*args); });
}

}  // namespace tessera::cli
