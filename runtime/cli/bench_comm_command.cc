// `tessera bench comm`: collective time and bus bandwidth per message size,
// in the style of nccl-tests. Run it on every rank (under mpirun, or with
// --rank/--world-size/--master-addr or LWS env for the Gloo backend).
//
// Sizes are the nccl-tests ones: all-reduce and all-to-all move `size` bytes
// per rank, all-gather `size` bytes in total (size/n per rank), reduce-scatter
// `size` bytes of input per rank. Bus bandwidth = algbw x 2(n-1)/n for
// all-reduce and x (n-1)/n for the others.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "runtime/cli/internal/byte_size.h"
#include "runtime/cli/internal/comm_flags.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

struct BenchCommFlags {
  CommFlags comm;
  std::string op = "allreduce";
  std::string min_bytes = "8";
  std::string max_bytes = "64M";
  int factor = 2;
  int iters = 20;
  int warmup = 5;
  std::string dtype = "f32";
};

absl::Status RunBenchComm(const BenchCommFlags& f) {
  ASSIGN_OR_RETURN(int64_t min_bytes, ParseByteSize(f.min_bytes));
  ASSIGN_OR_RETURN(int64_t max_bytes, ParseByteSize(f.max_bytes));
  if (min_bytes <= 0 || max_bytes < min_bytes) {
    return absl::InvalidArgumentError("need 0 < --min-bytes <= --max-bytes");
  }
  ASSIGN_OR_RETURN(DType dtype, ParseDType(f.dtype));
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError("--dtype must be f32, f16 or bf16");
  }
  ASSIGN_OR_RETURN(JoinedWorld j, JoinWorld(f.comm));
  comm::Communicator& c = *j.comm;
  const int n = c.size();
  const int64_t elem = DTypeBytes(dtype, 1);
  const bool root = c.rank() == 0;
  if (root) {
    std::printf("# tessera bench comm: %s, %d ranks, backend %s%s, dtype %s\n",
                f.op.c_str(), n, std::string(c.backend()).c_str(),
                c.deterministic() ? " (deterministic)" : "",
                std::string(DTypeName(dtype)).c_str());
    std::printf("# %12s %12s %6s %12s %12s %12s\n", "size(B)", "count", "type",
                "time(us)", "algbw(GB/s)", "busbw(GB/s)");
  }
  std::vector<char> send, recv;
  for (int64_t size = min_bytes; size <= max_bytes;
       size = std::max(size * f.factor, size + 1)) {
    // Elements per rank-chunk, rounded so every rank gets whole elements.
    int64_t count = size / elem;
    double bus_factor = static_cast<double>(n - 1) / n;
    std::function<absl::Status()> run;
    if (f.op == "allreduce") {
      bus_factor = 2.0 * (n - 1) / n;
      send.assign(count * elem, 0);
      run = [&] { return c.AllReduceSum(send.data(), count, dtype); };
    } else if (f.op == "allgather") {
      count = size / elem / n;
      send.assign(count * elem, 0);
      recv.assign(count * elem * n, 0);
      run = [&] { return c.AllGather(send.data(), recv.data(), count * elem); };
    } else if (f.op == "reducescatter") {
      count = size / elem / n;
      send.assign(count * elem * n, 0);
      recv.assign(count * elem, 0);
      run = [&] {
        return c.ReduceScatterSum(send.data(), recv.data(), count, dtype);
      };
    } else {  // alltoall
      count = size / elem / n;
      send.assign(count * elem * n, 0);
      recv.assign(count * elem * n, 0);
      run = [&] { return c.AllToAll(send.data(), recv.data(), count * elem); };
    }
    if (count == 0) continue;
    for (int i = 0; i < f.warmup; ++i) RETURN_IF_ERROR(run());
    RETURN_IF_ERROR(c.Barrier());
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < f.iters; ++i) RETURN_IF_ERROR(run());
    const double us = std::chrono::duration<double, std::micro>(
                          std::chrono::steady_clock::now() - start)
                          .count() /
                      f.iters;
    // The slowest rank's time, as nccl-tests reports.
    std::vector<double> times(n);
    RETURN_IF_ERROR(c.AllGather(&us, times.data(), sizeof(double)));
    const double t = *std::max_element(times.begin(), times.end());
    const int64_t bytes = (f.op == "allreduce" ? count : count * n) * elem;
    const double algbw = static_cast<double>(bytes) / (t * 1e3);
    if (root) {
      std::printf("  %12ld %12ld %6s %12.1f %12.3f %12.3f\n",
                  static_cast<long>(bytes), static_cast<long>(count),
                  std::string(DTypeName(dtype)).c_str(), t, algbw,
                  algbw * bus_factor);
      std::fflush(stdout);
    }
  }
  return c.Barrier();
}

}  // namespace

void AddBenchCommCommand(CLI::App& app, int* exit_code) {
  CLI::App* sub =
      app.add_subcommand("comm", "Benchmark collectives (nccl-tests style)");
  auto f = std::make_shared<BenchCommFlags>();
  sub->add_option("--op", f->op, "Collective to time")
      ->check(CLI::IsMember(
          {"allreduce", "allgather", "reducescatter", "alltoall"}));
  sub->add_option("--min-bytes", f->min_bytes, "Smallest size (e.g. 8, 64K)");
  sub->add_option("--max-bytes", f->max_bytes, "Largest size (e.g. 64M)");
  sub->add_option("--step-factor", f->factor, "Size multiplier per row")
      ->check(CLI::Range(2, 1024));
  sub->add_option("--iters", f->iters, "Timed iterations per size")
      ->check(CLI::Range(1, 1000000));
  sub->add_option("--warmup", f->warmup, "Untimed iterations per size")
      ->check(CLI::Range(0, 1000000));
  sub->add_option("--dtype", f->dtype, "f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  AddCommFlags(sub, &f->comm);
  sub->final_callback([f, exit_code] {
    absl::Status s = RunBenchComm(*f);
    *exit_code =
        s.ok() ? kExitOk : ReportError("bench comm", std::string(s.message()));
  });
}

}  // namespace tessera::cli
