// Constructors of the optional backends, each defined in its own sub-target
// (tessera_comm_mpi, tessera_comm_gloo, tessera_comm_nccl) and only called
// when the matching TESSERA_HAVE_* is set.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"

namespace tessera::comm::internal {

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator(
    const WorldInfo& world, const CommOptions& options);
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const WorldInfo& world, Store& store, const CommOptions& options);
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const WorldInfo& world, Store& store, const CommOptions& options);

// Sums `n` chunks laid out as chunks[r * count + i] in rank order into
// out[i] (the one fixed reduction order every backend shares).
void SumChunksInRankOrder(const float* chunks, int n, int64_t count,
                          float* out);

}  // namespace tessera::comm::internal
