// Collectives between the ranks of a group: the collective plane (tensor,
// pipeline and expert parallelism inside an instance).
//
// Buffers are host memory for the MPI and Gloo backends, device memory for
// NCCL. Every rank of the group calls each collective in the same order with
// matching sizes. Sums of f16/bf16 accumulate in f32.
//
// Deterministic mode (CommOptions::deterministic): all-reduce and
// reduce-scatter exchange the inputs unreduced (all-to-all of f32 chunks) and
// every element is summed on one rank in rank order 0, 1, ..., n-1 in f32,
// then rounded once to the dtype; all-reduce then all-gathers the reduced
// chunks. The result is therefore bit-identical whatever the backend,
// algorithm, chunking or launcher, and equals the serial loop
// `acc = x[0]; for r in 1..n: acc += x[r]` in f32. NCCL does the same on the
// device with its own kernels (device buffers, same bits).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "comm/bootstrap.h"

namespace tessera::comm {

// How a communicator is built.
struct CommOptions {
  // "auto" (MPI under mpirun, else Gloo; "self" for one rank), "mpi", "gloo",
  // "nccl" or "self".
  std::string backend = "auto";
  // Fixed-order reductions (see the file comment).
  bool deterministic = false;
  // Bound on every collective and on group creation; a rank that does not
  // take part in time gives DeadlineExceeded/Unavailable instead of a hang
  // (Gloo; MPI cannot bound a collective and relies on mpirun to abort).
  std::chrono::milliseconds timeout{60000};
  // Network interface host name for Gloo's TCP transport (empty: the
  // loopback-or-hostname default).
  std::string gloo_hostname;
  // CUDA device ordinal for NCCL (default: the local rank).
  int device = -1;
};

// A group of ranks that run collectives together. Not thread-safe: drive
// each communicator (and its sub-groups' collectives) from one thread at a
// time.
class Communicator {
 public:
  virtual ~Communicator() = default;

  // This process's rank in the group, and the group size.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "gloo", "nccl" or "self".
  virtual std::string_view backend() const = 0;
  bool deterministic() const { return options_.deterministic; }

  // In-place sum of `count` elements (f32, f16 or bf16) across the group.
  absl::Status AllReduceSum(void* data, int64_t count, DType dtype);
  // recv[r * bytes_per_rank ...] = rank r's `send` (bytes_per_rank bytes).
  absl::Status AllGather(const void* send, void* recv, int64_t bytes_per_rank);
  // `send` holds size() chunks of `count_per_rank` elements; rank r receives
  // the sum of chunk r over all ranks in `recv`.
  absl::Status ReduceScatterSum(const void* send, void* recv,
                                int64_t count_per_rank, DType dtype);
  // Chunk r of `send` (bytes_per_rank bytes) goes to rank r; recv chunk r
  // comes from rank r.
  absl::Status AllToAll(const void* send, void* recv, int64_t bytes_per_rank);
  // Variable all-to-all: send_bytes[r] bytes (packed in rank order) go to
  // rank r; recv_bytes[r] bytes arrive from rank r, packed in rank order.
  absl::Status AllToAllV(const void* send, std::span<const int64_t> send_bytes,
                         void* recv, std::span<const int64_t> recv_bytes);
  // Point-to-point (pipeline stages). Messages between a pair with the same
  // tag arrive in order. tag must be in [0, 2^20).
  absl::Status Send(const void* data, int64_t bytes, int peer, int tag = 0);
  absl::Status Recv(void* data, int64_t bytes, int peer, int tag = 0);
  // Copies `root`'s buffer to every rank.
  absl::Status Broadcast(void* data, int64_t bytes, int root);
  // Returns once every rank of the group has entered.
  absl::Status Barrier();
  // A communicator over `ranks` (ranks of this group, strictly increasing);
  // collective over exactly those ranks, which all pass the same list. The
  // caller's rank must be in the list; its new rank is its index there.
  absl::StatusOr<std::unique_ptr<Communicator>> CreateSubgroup(
      std::span<const int> ranks);

 protected:
  explicit Communicator(CommOptions options) : options_(std::move(options)) {}
  const CommOptions& options() const { return options_; }

  // Backend primitives; arguments are already validated and non-empty.
  virtual absl::Status AllReduceF32(float* data, int64_t count) = 0;
  virtual absl::Status ReduceScatterF32(const float* send, float* recv,
                                        int64_t count_per_rank) = 0;
  virtual absl::Status AllGatherBytes(const void* send, void* recv,
                                      int64_t bytes_per_rank) = 0;
  virtual absl::Status AllToAllBytes(const void* send, void* recv,
                                     int64_t bytes_per_rank) = 0;
  virtual absl::Status AllToAllVBytes(const void* send,
                                      std::span<const int64_t> send_bytes,
                                      void* recv,
                                      std::span<const int64_t> recv_bytes) = 0;
  virtual absl::Status SendBytes(const void* data, int64_t bytes, int peer,
                                 int tag) = 0;
  virtual absl::Status RecvBytes(void* data, int64_t bytes, int peer,
                                 int tag) = 0;
  virtual absl::Status BroadcastBytes(void* data, int64_t bytes, int root) = 0;
  virtual absl::Status BarrierImpl() = 0;
  virtual absl::StatusOr<std::unique_ptr<Communicator>> SubgroupImpl(
      const std::vector<int>& ranks) = 0;
  // True when buffers live on the device (NCCL): reductions then go to
  // DeviceAllReduce/DeviceReduceScatter in the buffer's own dtype, which
  // implement deterministic mode themselves (the host path cannot read
  // device memory).
  virtual bool device_buffers() const { return false; }
  virtual absl::Status DeviceAllReduce(void* data, int64_t count, DType dtype);
  virtual absl::Status DeviceReduceScatter(const void* send, void* recv,
                                           int64_t count_per_rank, DType dtype);

 private:
  absl::Status DeterministicReduceScatter(const void* send, void* recv,
                                          int64_t count_per_rank, DType dtype);
  CommOptions options_;
  // Conversion scratch, reused across calls (no per-call allocation once
  // sizes settle).
  std::vector<float> scratch_a_, scratch_b_;
};

// Builds the communicator of the whole world. `bootstrap` provides the
// rendezvous store (Gloo, NCCL); it may be null for MPI and self, and must
// outlive the communicator.
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    const WorldInfo& world, Bootstrap* bootstrap, const CommOptions& options);

// The backend "auto" resolves to for this world and build.
std::string ResolveBackendName(const WorldInfo& world,
                               const CommOptions& options);

}  // namespace tessera::comm
