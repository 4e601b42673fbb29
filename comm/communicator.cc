#include "comm/communicator.h"

#include <algorithm>
#include <cstring>

#include "base/build_config.h"
#include "base/status.h"
#include "comm/internal/backend_factories.h"
#include "fmt/format.h"

namespace tessera::comm {
namespace internal {

void SumChunksInRankOrder(const float* chunks, int n, int64_t count,
                          float* out) {
  if (n == 0) return;
  std::memcpy(out, chunks, static_cast<size_t>(count) * sizeof(float));
  for (int r = 1; r < n; ++r) {
    const float* src = chunks + static_cast<int64_t>(r) * count;
    for (int64_t i = 0; i < count; ++i) out[i] += src[i];
  }
}

}  // namespace internal

namespace {

constexpr int kMaxTag = 1 << 20;

absl::Status CheckReduceType(DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(fmt::format(
        "sum reductions support f32, f16 and bf16, not {}", DTypeName(dtype)));
  }
  return absl::OkStatus();
}

void ToF32(const void* src, DType dtype, int64_t n, float* dst) {
  if (dtype == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const auto* s = static_cast<const uint16_t*>(src);
  if (dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(s[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = BF16ToFloat(s[i]);
  }
}

void FromF32(const float* src, DType dtype, int64_t n, void* dst) {
  if (dtype == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  auto* d = static_cast<uint16_t*>(dst);
  if (dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) d[i] = FloatToHalf(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = FloatToBF16(src[i]);
  }
}

absl::Status CheckBuffer(const void* p, int64_t bytes, const char* what) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(
        fmt::format("{}: negative size {}", what, bytes));
  }
  if (bytes > 0 && p == nullptr) {
    return absl::InvalidArgumentError(fmt::format("{}: null buffer", what));
  }
  return absl::OkStatus();
}

// The group of one rank: every collective is a copy.
class SelfCommunicator final : public Communicator {
 public:
  explicit SelfCommunicator(const CommOptions& options)
      : Communicator(options) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string_view backend() const override { return "self"; }

 protected:
  absl::Status AllReduceF32(float*, int64_t) override {
    return absl::OkStatus();
  }
  absl::Status ReduceScatterF32(const float* send, float* recv,
                                int64_t n) override {
    if (send != recv) std::memmove(recv, send, n * sizeof(float));
    return absl::OkStatus();
  }
  absl::Status AllGatherBytes(const void* send, void* recv,
                              int64_t bytes) override {
    if (send != recv) std::memmove(recv, send, bytes);
    return absl::OkStatus();
  }
  absl::Status AllToAllBytes(const void* send, void* recv,
                             int64_t bytes) override {
    if (send != recv) std::memmove(recv, send, bytes);
    return absl::OkStatus();
  }
  absl::Status AllToAllVBytes(const void* send, std::span<const int64_t> sb,
                              void* recv, std::span<const int64_t>) override {
    if (sb[0] > 0 && send != recv) std::memmove(recv, send, sb[0]);
    return absl::OkStatus();
  }
  absl::Status SendBytes(const void*, int64_t, int, int) override {
    return absl::InvalidArgumentError("send to self is not supported");
  }
  absl::Status RecvBytes(void*, int64_t, int, int) override {
    return absl::InvalidArgumentError("recv from self is not supported");
  }
  absl::Status BroadcastBytes(void*, int64_t, int) override {
    return absl::OkStatus();
  }
  absl::Status BarrierImpl() override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<Communicator>> SubgroupImpl(
      const std::vector<int>&) override {
    return std::unique_ptr<Communicator>(
        std::make_unique<SelfCommunicator>(options()));
  }
};

}  // namespace

absl::Status Communicator::AllReduceSum(void* data, int64_t count,
                                        DType dtype) {
  RETURN_IF_ERROR(CheckReduceType(dtype));
  RETURN_IF_ERROR(CheckBuffer(data, count, "all-reduce"));
  if (count == 0) return absl::OkStatus();
  if (device_buffers()) {
    return DeviceAllReduce(data, count, dtype);
  }
  const int n = size();
  if (options_.deterministic && n > 1) {
    // Reduce-scatter in rank order over padded chunks, then all-gather.
    const int64_t chunk = (count + n - 1) / n;
    const int64_t padded = chunk * n;
    scratch_a_.assign(static_cast<size_t>(padded), 0.0f);
    scratch_b_.resize(static_cast<size_t>(padded));
    ToF32(data, dtype, count, scratch_a_.data());
    RETURN_IF_ERROR(AllToAllBytes(scratch_a_.data(), scratch_b_.data(),
                                  chunk * static_cast<int64_t>(sizeof(float))));
    internal::SumChunksInRankOrder(scratch_b_.data(), n, chunk,
                                   scratch_a_.data());
    RETURN_IF_ERROR(
        AllGatherBytes(scratch_a_.data(), scratch_b_.data(),
                       chunk * static_cast<int64_t>(sizeof(float))));
    FromF32(scratch_b_.data(), dtype, count, data);
    return absl::OkStatus();
  }
  if (dtype == DType::kF32) {
    return AllReduceF32(static_cast<float*>(data), count);
  }
  scratch_a_.resize(static_cast<size_t>(count));
  ToF32(data, dtype, count, scratch_a_.data());
  RETURN_IF_ERROR(AllReduceF32(scratch_a_.data(), count));
  FromF32(scratch_a_.data(), dtype, count, data);
  return absl::OkStatus();
}

absl::Status Communicator::DeviceAllReduce(void*, int64_t, DType) {
  return absl::UnimplementedError("this backend has no device all-reduce");
}

absl::Status Communicator::DeviceReduceScatter(const void*, void*, int64_t,
                                               DType) {
  return absl::UnimplementedError("this backend has no device reduce-scatter");
}

absl::Status Communicator::DeterministicReduceScatter(const void* send,
                                                      void* recv,
                                                      int64_t count_per_rank,
                                                      DType dtype) {
  const int n = size();
  const int64_t total = count_per_rank * n;
  scratch_a_.resize(static_cast<size_t>(total));
  scratch_b_.resize(static_cast<size_t>(total));
  ToF32(send, dtype, total, scratch_a_.data());
  RETURN_IF_ERROR(
      AllToAllBytes(scratch_a_.data(), scratch_b_.data(),
                    count_per_rank * static_cast<int64_t>(sizeof(float))));
  internal::SumChunksInRankOrder(scratch_b_.data(), n, count_per_rank,
                                 scratch_a_.data());
  FromF32(scratch_a_.data(), dtype, count_per_rank, recv);
  return absl::OkStatus();
}

absl::Status Communicator::ReduceScatterSum(const void* send, void* recv,
                                            int64_t count_per_rank,
                                            DType dtype) {
  RETURN_IF_ERROR(CheckReduceType(dtype));
  RETURN_IF_ERROR(CheckBuffer(send, count_per_rank, "reduce-scatter send"));
  RETURN_IF_ERROR(CheckBuffer(recv, count_per_rank, "reduce-scatter recv"));
  if (count_per_rank == 0) return absl::OkStatus();
  if (device_buffers()) {
    return DeviceReduceScatter(send, recv, count_per_rank, dtype);
  }
  if (options_.deterministic) {
    return DeterministicReduceScatter(send, recv, count_per_rank, dtype);
  }
  if (dtype == DType::kF32) {
    return ReduceScatterF32(static_cast<const float*>(send),
                            static_cast<float*>(recv), count_per_rank);
  }
  const int64_t total = count_per_rank * size();
  scratch_a_.resize(static_cast<size_t>(total));
  scratch_b_.resize(static_cast<size_t>(count_per_rank));
  ToF32(send, dtype, total, scratch_a_.data());
  RETURN_IF_ERROR(
      ReduceScatterF32(scratch_a_.data(), scratch_b_.data(), count_per_rank));
  FromF32(scratch_b_.data(), dtype, count_per_rank, recv);
  return absl::OkStatus();
}

absl::Status Communicator::AllGather(const void* send, void* recv,
                                     int64_t bytes_per_rank) {
  RETURN_IF_ERROR(CheckBuffer(send, bytes_per_rank, "all-gather send"));
  RETURN_IF_ERROR(CheckBuffer(recv, bytes_per_rank, "all-gather recv"));
  if (bytes_per_rank == 0) return absl::OkStatus();
  return AllGatherBytes(send, recv, bytes_per_rank);
}

absl::Status Communicator::AllToAll(const void* send, void* recv,
                                    int64_t bytes_per_rank) {
  RETURN_IF_ERROR(CheckBuffer(send, bytes_per_rank, "all-to-all send"));
  RETURN_IF_ERROR(CheckBuffer(recv, bytes_per_rank, "all-to-all recv"));
  if (bytes_per_rank == 0) return absl::OkStatus();
  return AllToAllBytes(send, recv, bytes_per_rank);
}

absl::Status Communicator::AllToAllV(const void* send,
                                     std::span<const int64_t> send_bytes,
                                     void* recv,
                                     std::span<const int64_t> recv_bytes) {
  const size_t n = static_cast<size_t>(size());
  if (send_bytes.size() != n || recv_bytes.size() != n) {
    return absl::InvalidArgumentError(
        fmt::format("all-to-all-v needs {} send and recv sizes, got {} and {}",
                    n, send_bytes.size(), recv_bytes.size()));
  }
  int64_t st = 0, rt = 0;
  for (size_t r = 0; r < n; ++r) {
    if (send_bytes[r] < 0 || recv_bytes[r] < 0) {
      return absl::InvalidArgumentError("all-to-all-v: negative size");
    }
    st += send_bytes[r];
    rt += recv_bytes[r];
  }
  RETURN_IF_ERROR(CheckBuffer(send, st, "all-to-all-v send"));
  RETURN_IF_ERROR(CheckBuffer(recv, rt, "all-to-all-v recv"));
  return AllToAllVBytes(send, send_bytes, recv, recv_bytes);
}

absl::Status Communicator::Send(const void* data, int64_t bytes, int peer,
                                int tag) {
  RETURN_IF_ERROR(CheckBuffer(data, bytes, "send"));
  if (peer < 0 || peer >= size() || peer == rank()) {
    return absl::InvalidArgumentError(fmt::format(
        "send: bad peer {} (group of {}, I am {})", peer, size(), rank()));
  }
  if (tag < 0 || tag >= kMaxTag) {
    return absl::InvalidArgumentError(fmt::format("send: bad tag {}", tag));
  }
  return SendBytes(data, bytes, peer, tag);
}

absl::Status Communicator::Recv(void* data, int64_t bytes, int peer, int tag) {
  RETURN_IF_ERROR(CheckBuffer(data, bytes, "recv"));
  if (peer < 0 || peer >= size() || peer == rank()) {
    return absl::InvalidArgumentError(fmt::format(
        "recv: bad peer {} (group of {}, I am {})", peer, size(), rank()));
  }
  if (tag < 0 || tag >= kMaxTag) {
    return absl::InvalidArgumentError(fmt::format("recv: bad tag {}", tag));
  }
  return RecvBytes(data, bytes, peer, tag);
}

absl::Status Communicator::Broadcast(void* data, int64_t bytes, int root) {
  RETURN_IF_ERROR(CheckBuffer(data, bytes, "broadcast"));
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(
        fmt::format("broadcast: bad root {}", root));
  }
  if (bytes == 0) return absl::OkStatus();
  return BroadcastBytes(data, bytes, root);
}

absl::Status Communicator::Barrier() { return BarrierImpl(); }

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::CreateSubgroup(
    std::span<const int> ranks) {
  std::vector<int> list(ranks.begin(), ranks.end());
  if (list.empty()) {
    return absl::InvalidArgumentError("subgroup: empty rank list");
  }
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i] < 0 || list[i] >= size() || (i > 0 && list[i] <= list[i - 1])) {
      return absl::InvalidArgumentError(fmt::format(
          "subgroup: ranks must be strictly increasing in [0, {}): [{}]",
          size(), FormatRanks(list)));
    }
  }
  if (!std::binary_search(list.begin(), list.end(), rank())) {
    return absl::InvalidArgumentError(fmt::format(
        "subgroup: rank {} is not in [{}]", rank(), FormatRanks(list)));
  }
  return SubgroupImpl(list);
}

std::string ResolveBackendName(const WorldInfo& world,
                               const CommOptions& options) {
  if (options.backend != "auto") return options.backend;
  if (world.world_size == 1) return "self";
  if (world.source == "openmpi" && TESSERA_HAVE_MPI) return "mpi";
  if (TESSERA_HAVE_GLOO) return "gloo";
  if (TESSERA_HAVE_MPI) return "mpi";
  return "none";
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    const WorldInfo& world, Bootstrap* bootstrap, const CommOptions& options) {
  const std::string name = ResolveBackendName(world, options);
  if (name == "self") {
    if (world.world_size != 1) {
      return absl::InvalidArgumentError(
          "backend 'self' needs a world of one rank");
    }
    return std::unique_ptr<Communicator>(
        std::make_unique<SelfCommunicator>(options));
  }
  if (name == "mpi") {
#if TESSERA_HAVE_MPI
    return internal::CreateMpiCommunicator(world, options);
#else
    return absl::UnimplementedError("tessera was built without MPI");
#endif
  }
  if (name == "gloo" || name == "nccl") {
    if (bootstrap == nullptr) {
      return absl::InvalidArgumentError(
          fmt::format("backend '{}' needs the bootstrap store", name));
    }
#if TESSERA_HAVE_GLOO
    if (name == "gloo") {
      return internal::CreateGlooCommunicator(world, bootstrap->store(),
                                              options);
    }
#endif
#if TESSERA_HAVE_NCCL
    if (name == "nccl") {
      return internal::CreateNcclCommunicator(world, bootstrap->store(),
                                              options);
    }
#endif
    return absl::UnimplementedError(
        fmt::format("tessera was built without {}", name));
  }
  if (name == "none") {
    return absl::UnimplementedError(
        "no collective backend (MPI or Gloo) was compiled in for a multi-rank "
        "world");
  }
  return absl::InvalidArgumentError(
      fmt::format("unknown backend '{}' (auto, mpi, gloo, nccl, self)", name));
}

}  // namespace tessera::comm
