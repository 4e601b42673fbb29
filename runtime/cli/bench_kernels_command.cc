// `tessera bench kernels`: kernel throughput against the machine's measured
// peaks and OpenBLAS (the benchmark itself lives in kernels/bench/).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "kernels/bench/kernels_bench.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

// OpenBLAS's worker threads busy-wait ~2^28 cycles after each call before
// sleeping; alternating with our kernels on few cores, they take the core our
// pool's worker needs, and the comparison measures that, not the GEMMs. The
// timeout is read when the library loads, so it is set and the process
// re-executed (once; OPENBLAS_THREAD_TIMEOUT given by the user is kept).
void ReexecWithShortOpenBlasSpin() {
  if (std::getenv("OPENBLAS_THREAD_TIMEOUT") != nullptr) return;
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string cmdline((std::istreambuf_iterator<char>(in)),
                            std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t pos = 0; pos < cmdline.size();) {
    const size_t end = cmdline.find('\0', pos);
    args.push_back(cmdline.substr(pos, end - pos));
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  if (args.empty()) return;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
  std::fflush(stdout);
  ::execv("/proc/self/exe", argv.data());
  // Still here: run with OpenBLAS's default spin (noted in the README).
}

}  // namespace

void AddBenchKernelsCommand(CLI::App& app, int* exit_code) {
  struct Flags {
    int threads = 0;
    double min_seconds = 0.3;
    bool quick = false;
    bool cpu_clock = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand(
      "kernels",
      "Benchmark the compute kernels against the machine's measured peaks "
      "(read bandwidth, f32 FMA, bf16 dot product) and OpenBLAS sgemm");
  cmd->add_option("--threads", flags->threads,
                  "Threads (default: all hardware threads)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--min-seconds", flags->min_seconds,
                  "Time per measurement (best of repeated runs)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--quick", flags->quick, "One shape per benchmark");
  cmd->add_flag("--cpu-clock", flags->cpu_clock,
                "With --threads 1: measure thread CPU time instead of wall "
                "time (for machines shared with other work)");
  cmd->callback([flags, exit_code] {
    ReexecWithShortOpenBlasSpin();
    kernels::bench::KernelsBenchOptions options;
    options.threads = flags->threads;
    options.min_seconds = flags->min_seconds;
    options.quick = flags->quick;
    options.cpu_clock = flags->cpu_clock;
    *exit_code = kernels::bench::RunKernelsBench(options, stdout);
  });
}

}  // namespace tessera::cli
