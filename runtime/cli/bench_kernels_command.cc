// `tessera bench kernels`: kernel throughput against the machine's measured
// peaks and OpenBLAS (the benchmark itself lives in kernels/bench/).
#include <cstdio>
#include <memory>

#include "kernels/bench/kernels_bench.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {

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
    kernels::bench::KernelsBenchOptions options;
    options.threads = flags->threads;
    options.min_seconds = flags->min_seconds;
    options.quick = flags->quick;
    options.cpu_clock = flags->cpu_clock;
    *exit_code = kernels::bench::RunKernelsBench(options, stdout);
  });
}

}  // namespace tessera::cli
