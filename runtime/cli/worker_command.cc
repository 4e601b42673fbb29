// `tessera worker`: one rank of a multi-process deployment. For now it joins
// the world (flags, mpirun, Slurm or LeaderWorkerSet), reports where it sits
// and checks the collective plane with a barrier and an all-reduce; later it
// runs its model shard from the Plan.
#include <cstdio>

#include "fmt/format.h"
#include "runtime/cli/internal/comm_flags.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

absl::Status RunWorker(const CommFlags& flags) {
  ASSIGN_OR_RETURN(JoinedWorld j, JoinWorld(flags));
  comm::Communicator& c = *j.comm;
  RETURN_IF_ERROR(c.Barrier());
  // Sum of ranks: proves every rank takes part in collectives.
  float sum = static_cast<float>(c.rank());
  RETURN_IF_ERROR(c.AllReduceSum(&sum, 1, DType::kF32));
  const float expect = static_cast<float>(c.size()) * (c.size() - 1) / 2.0f;
  if (sum != expect) {
    return absl::InternalError(
        fmt::format("all-reduce check gave {}, expected {}", sum, expect));
  }
  std::printf(
      "tessera worker: rank %d of %d (local rank %d, from %s), backend %s, "
      "barrier ok\n",
      j.world.rank, j.world.world_size, j.world.local_rank,
      j.world.source.c_str(), std::string(c.backend()).c_str());
  std::fflush(stdout);
  return c.Barrier();
}

}  // namespace

void AddWorkerCommand(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand(
      "worker", "Run one rank of a multi-process deployment");
  auto flags = std::make_shared<CommFlags>();
  AddCommFlags(sub, flags.get());
  sub->final_callback([flags, exit_code] {
    absl::Status s = RunWorker(*flags);
    *exit_code =
        s.ok() ? kExitOk : ReportError("worker", std::string(s.message()));
  });
}

}  // namespace tessera::cli
