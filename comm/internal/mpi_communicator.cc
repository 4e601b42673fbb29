// MPI backend (Open MPI, host memory): used under mpirun.
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <mutex>

#include "base/status.h"
#include "comm/internal/backend_factories.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace tessera::comm::internal {
namespace {

absl::Status MpiError(int code, const char* what) {
  if (code == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return absl::UnavailableError(
      fmt::format("MPI {} failed: {}", what, std::string(text, len)));
}

absl::Status FitsInt(int64_t v, const char* what) {
  if (v > INT_MAX) {
    return absl::InvalidArgumentError(
        fmt::format("MPI {}: {} exceeds the 2^31-1 count limit of MPI; split "
                    "the call",
                    what, v));
  }
  return absl::OkStatus();
}

void FinalizeMpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

absl::Status EnsureMpiInitialized() {
  static std::once_flag once;
  static absl::Status status;
  std::call_once(once, [] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return;
    int provided = 0;
    int rc =
        MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    status = MpiError(rc, "init");
    if (status.ok()) std::atexit(FinalizeMpi);
  });
  return status;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, const CommOptions& options)
      : Communicator(options), comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "mpi"; }

 protected:
  absl::Status AllReduceF32(float* data, int64_t count) override {
    RETURN_IF_ERROR(FitsInt(count, "all-reduce"));
    return MpiError(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count),
                                  MPI_FLOAT, MPI_SUM, comm_),
                    "all-reduce");
  }
  absl::Status ReduceScatterF32(const float* send, float* recv,
                                int64_t count_per_rank) override {
    RETURN_IF_ERROR(FitsInt(count_per_rank, "reduce-scatter"));
    return MpiError(
        MPI_Reduce_scatter_block(send, recv, static_cast<int>(count_per_rank),
                                 MPI_FLOAT, MPI_SUM, comm_),
        "reduce-scatter");
  }
  absl::Status AllGatherBytes(const void* send, void* recv,
                              int64_t bytes) override {
    RETURN_IF_ERROR(FitsInt(bytes, "all-gather"));
    const int n = static_cast<int>(bytes);
    return MpiError(MPI_Allgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_),
                    "all-gather");
  }
  absl::Status AllToAllBytes(const void* send, void* recv,
                             int64_t bytes) override {
    RETURN_IF_ERROR(FitsInt(bytes, "all-to-all"));
    const int n = static_cast<int>(bytes);
    return MpiError(MPI_Alltoall(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_),
                    "all-to-all");
  }
  absl::Status AllToAllVBytes(const void* send, std::span<const int64_t> sb,
                              void* recv,
                              std::span<const int64_t> rb) override {
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      RETURN_IF_ERROR(FitsInt(so + sb[r], "all-to-all-v"));
      RETURN_IF_ERROR(FitsInt(ro + rb[r], "all-to-all-v"));
      sc[r] = static_cast<int>(sb[r]);
      sd[r] = static_cast<int>(so);
      rc[r] = static_cast<int>(rb[r]);
      rd[r] = static_cast<int>(ro);
      so += sb[r];
      ro += rb[r];
    }
    return MpiError(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv,
                                  rc.data(), rd.data(), MPI_BYTE, comm_),
                    "all-to-all-v");
  }
  absl::Status SendBytes(const void* data, int64_t bytes, int peer,
                         int tag) override {
    RETURN_IF_ERROR(FitsInt(bytes, "send"));
    return MpiError(
        MPI_Send(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_),
        "send");
  }
  absl::Status RecvBytes(void* data, int64_t bytes, int peer,
                         int tag) override {
    RETURN_IF_ERROR(FitsInt(bytes, "recv"));
    MPI_Status st;
    RETURN_IF_ERROR(MpiError(MPI_Recv(data, static_cast<int>(bytes), MPI_BYTE,
                                      peer, tag, comm_, &st),
                             "recv"));
    int got = 0;
    MPI_Get_count(&st, MPI_BYTE, &got);
    if (got != bytes) {
      return absl::InvalidArgumentError(fmt::format(
          "recv from {}: expected {} bytes, got {}", peer, bytes, got));
    }
    return absl::OkStatus();
  }
  absl::Status BroadcastBytes(void* data, int64_t bytes, int root) override {
    RETURN_IF_ERROR(FitsInt(bytes, "broadcast"));
    return MpiError(
        MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_),
        "broadcast");
  }
  absl::Status BarrierImpl() override {
    return MpiError(MPI_Barrier(comm_), "barrier");
  }
  absl::StatusOr<std::unique_ptr<Communicator>> SubgroupImpl(
      const std::vector<int>& ranks) override {
    MPI_Group world_group, sub_group;
    MPI_Comm_group(comm_, &world_group);
    MPI_Group_incl(world_group, static_cast<int>(ranks.size()), ranks.data(),
                   &sub_group);
    MPI_Comm sub = MPI_COMM_NULL;
    const int rc = MPI_Comm_create_group(comm_, sub_group, /*tag=*/7, &sub);
    MPI_Group_free(&sub_group);
    MPI_Group_free(&world_group);
    RETURN_IF_ERROR(MpiError(rc, "subgroup creation"));
    return std::unique_ptr<Communicator>(
        std::make_unique<MpiCommunicator>(sub, options()));
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator(
    const WorldInfo& world, const CommOptions& options) {
  RETURN_IF_ERROR(EnsureMpiInitialized());
  MPI_Comm comm;
  RETURN_IF_ERROR(MpiError(MPI_Comm_dup(MPI_COMM_WORLD, &comm), "comm dup"));
  auto c = std::make_unique<MpiCommunicator>(comm, options);
  if (c->rank() != world.rank || c->size() != world.world_size) {
    spdlog::warn(
        "MPI says rank {} of {}, the bootstrap said {} of {} (from {}); "
        "using MPI's",
        c->rank(), c->size(), world.rank, world.world_size, world.source);
  }
  return std::unique_ptr<Communicator>(std::move(c));
}

}  // namespace tessera::comm::internal
