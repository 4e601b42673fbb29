// Flags shared by the commands that join a multi-process world (worker,
// bench comm, bench kv-transfer): --rank, --world-size, --local-rank,
// --master-addr, --backend, --timeout-ms.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "base/status.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"

namespace tessera::cli {

struct CommFlags {
  int rank = -1;
  int world_size = -1;
  int local_rank = -1;
  std::string master_addr;
  std::string backend = "auto";
  int timeout_ms = 60000;
  bool deterministic = false;
};

// Registers the flags on `sub`.
inline void AddCommFlags(CLI::App* sub, CommFlags* f) {
  sub->add_option("--rank", f->rank,
                  "This process's rank (else OMPI_COMM_WORLD_RANK, "
                  "SLURM_PROCID or LWS_WORKER_INDEX)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--world-size", f->world_size,
                  "Number of ranks (with --rank)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--local-rank", f->local_rank, "Rank on this host")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--master-addr", f->master_addr,
                  "HOST:PORT of rank 0's rendezvous store (else "
                  "TESSERA_MASTER_ADDR, LWS_LEADER_ADDRESS with "
                  "TESSERA_MASTER_PORT, default port 29500)");
  sub->add_option("--backend", f->backend,
                  "Collectives backend: auto (MPI under mpirun, else Gloo), "
                  "mpi, gloo, self")
      ->check(CLI::IsMember({"auto", "mpi", "gloo", "nccl", "self"}));
  sub->add_option("--timeout-ms", f->timeout_ms,
                  "Deadline for joining the world and for each collective")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--deterministic", f->deterministic,
                "Fixed-order reductions (bit-identical across backends)");
}

// Resolves the world from the flags and the environment.
inline absl::StatusOr<comm::WorldInfo> ResolveWorldFromFlags(
    const CommFlags& f) {
  comm::BootstrapFlags b;
  if (f.rank >= 0) b.rank = f.rank;
  if (f.world_size > 0) b.world_size = f.world_size;
  if (f.local_rank >= 0) b.local_rank = f.local_rank;
  b.master_addr = f.master_addr;
  return comm::ResolveWorld(b, comm::ProcessEnv());
}

// Joins the world: the bootstrap store (unless MPI alone suffices) and the
// world communicator.
struct JoinedWorld {
  comm::WorldInfo world;
  std::unique_ptr<comm::Bootstrap> bootstrap;  // Null for MPI and self.
  std::unique_ptr<comm::Communicator> comm;
};

inline absl::StatusOr<JoinedWorld> JoinWorld(const CommFlags& f) {
  JoinedWorld j;
  ASSIGN_OR_RETURN(j.world, ResolveWorldFromFlags(f));
  comm::CommOptions opts;
  opts.backend = f.backend;
  opts.deterministic = f.deterministic;
  opts.timeout = std::chrono::milliseconds(f.timeout_ms);
  const std::string backend = comm::ResolveBackendName(j.world, opts);
  if (backend != "mpi" && backend != "self") {
    ASSIGN_OR_RETURN(j.bootstrap, comm::Bootstrap::Join(j.world, opts.timeout));
  }
  ASSIGN_OR_RETURN(j.comm,
                   comm::CreateCommunicator(j.world, j.bootstrap.get(), opts));
  return j;
}

}  // namespace tessera::cli
