// NCCL backend (device memory). Compiled whenever CUDA and NCCL are found;
// its tests are labelled `gpu`. Buffers are CUDA device pointers; every call
// is enqueued on the communicator's own stream and synchronized before
// returning (callers that overlap will get an async API later).
//
// f16/bf16 sums run in NCCL in the buffer's dtype (NCCL's own accumulation).
// Deterministic mode does not use NCCL's reductions (their order depends on
// the algorithm, protocol and channel count): it converts to f32 on the
// device, moves chunks with NCCL all-to-all, sums them in rank order with our
// own kernel (nccl_device_reduce.cu) and all-gathers the result: the same
// arithmetic, in the same order, as the host backends.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "comm/internal/backend_factories.h"
#include "comm/internal/nccl_device_reduce.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace tessera::comm::internal {
namespace {

absl::Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  if (r == ncclInvalidArgument || r == ncclInvalidUsage) {
    return absl::InvalidArgumentError(
        fmt::format("NCCL {}: {}", what, ncclGetErrorString(r)));
  }
  return absl::UnavailableError(
      fmt::format("NCCL {}: {}", what, ncclGetErrorString(r)));
}

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      fmt::format("CUDA {}: {}", what, cudaGetErrorString(e)));
}

absl::StatusOr<ncclDataType_t> NcclType(DType t) {
  switch (t) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF16:
      return ncclFloat16;
    case DType::kBF16:
      return ncclBfloat16;
    default:
      return absl::InvalidArgumentError("NCCL sums take f32, f16 or bf16");
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, int rank, int size,
                   int device, Store& store, std::string group_id,
                   const CommOptions& options)
      : Communicator(options),
        comm_(comm),
        stream_(stream),
        rank_(rank),
        size_(size),
        device_(device),
        store_(store),
        group_id_(std::move(group_id)) {}
  ~NcclCommunicator() override {
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
    if (scratch_ != nullptr) cudaFree(scratch_);
    cudaFree(det_a_);
    cudaFree(det_b_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "nccl"; }

  // Rank 0 publishes a unique id under `group_id`; everyone joins.
  static absl::StatusOr<std::unique_ptr<Communicator>> Connect(
      Store& store, const std::string& group_id, int rank, int size, int device,
      const CommOptions& options) {
    RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "set device"));
    const std::string key = "tessera/nccl/" + group_id + "/id";
    ncclUniqueId id;
    if (rank == 0) {
      RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), "unique id"));
      RETURN_IF_ERROR(store.Set(
          key,
          std::string_view(reinterpret_cast<const char*>(&id), sizeof(id))));
    } else {
      ASSIGN_OR_RETURN(std::string v, store.Get(key, options.timeout));
      if (v.size() != sizeof(id)) {
        return absl::InvalidArgumentError("malformed NCCL unique id");
      }
      std::memcpy(&id, v.data(), sizeof(id));
    }
    ncclComm_t comm;
    RETURN_IF_ERROR(
        NcclStatus(ncclCommInitRank(&comm, size, id, rank), "init"));
    cudaStream_t stream;
    RETURN_IF_ERROR(CudaStatus(
        cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream"));
    return std::unique_ptr<Communicator>(std::make_unique<NcclCommunicator>(
        comm, stream, rank, size, device, store, group_id, options));
  }

 protected:
  bool device_buffers() const override { return true; }

  absl::Status DeviceAllReduce(void* data, int64_t count,
                               DType dtype) override {
    if (deterministic()) return DeterministicAllReduce(data, count, dtype);
    ASSIGN_OR_RETURN(ncclDataType_t t, NcclType(dtype));
    RETURN_IF_ERROR(
        NcclStatus(ncclAllReduce(data, data, static_cast<size_t>(count), t,
                                 ncclSum, comm_, stream_),
                   "all-reduce"));
    return Sync();
  }
  absl::Status DeviceReduceScatter(const void* send, void* recv,
                                   int64_t count_per_rank,
                                   DType dtype) override {
    if (deterministic()) {
      return DeterministicReduceScatter(send, recv, count_per_rank, dtype);
    }
    ASSIGN_OR_RETURN(ncclDataType_t t, NcclType(dtype));
    RETURN_IF_ERROR(NcclStatus(
        ncclReduceScatter(send, recv, static_cast<size_t>(count_per_rank), t,
                          ncclSum, comm_, stream_),
        "reduce-scatter"));
    return Sync();
  }
  absl::Status AllReduceF32(float* data, int64_t count) override {
    return DeviceAllReduce(data, count, DType::kF32);
  }
  absl::Status ReduceScatterF32(const float* send, float* recv,
                                int64_t count_per_rank) override {
    return DeviceReduceScatter(send, recv, count_per_rank, DType::kF32);
  }
  absl::Status AllGatherBytes(const void* send, void* recv,
                              int64_t bytes) override {
    RETURN_IF_ERROR(
        NcclStatus(ncclAllGather(send, recv, static_cast<size_t>(bytes),
                                 ncclUint8, comm_, stream_),
                   "all-gather"));
    return Sync();
  }
  absl::Status AllToAllBytes(const void* send, void* recv,
                             int64_t bytes) override {
    std::vector<int64_t> sizes(size_, bytes);
    return AllToAllVBytes(send, sizes, recv, sizes);
  }
  absl::Status AllToAllVBytes(const void* send, std::span<const int64_t> sb,
                              void* recv,
                              std::span<const int64_t> rb) override {
    const char* s = static_cast<const char*>(send);
    char* r = static_cast<char*>(recv);
    RETURN_IF_ERROR(EnqueueAllToAllV(s, sb, r, rb));
    return Sync();
  }
  absl::Status SendBytes(const void* data, int64_t bytes, int peer,
                         int /*tag*/) override {
    RETURN_IF_ERROR(NcclStatus(ncclSend(data, static_cast<size_t>(bytes),
                                        ncclUint8, peer, comm_, stream_),
                               "send"));
    return Sync();
  }
  absl::Status RecvBytes(void* data, int64_t bytes, int peer,
                         int /*tag*/) override {
    RETURN_IF_ERROR(NcclStatus(ncclRecv(data, static_cast<size_t>(bytes),
                                        ncclUint8, peer, comm_, stream_),
                               "recv"));
    return Sync();
  }
  absl::Status BroadcastBytes(void* data, int64_t bytes, int root) override {
    RETURN_IF_ERROR(
        NcclStatus(ncclBroadcast(data, data, static_cast<size_t>(bytes),
                                 ncclUint8, root, comm_, stream_),
                   "broadcast"));
    return Sync();
  }
  absl::Status BarrierImpl() override {
    if (scratch_ == nullptr) {
      RETURN_IF_ERROR(
          CudaStatus(cudaMalloc(&scratch_, sizeof(float)), "barrier scratch"));
    }
    return DeviceAllReduce(scratch_, 1, DType::kF32);
  }
  absl::StatusOr<std::unique_ptr<Communicator>> SubgroupImpl(
      const std::vector<int>& ranks) override {
    const std::string list = FormatRanks(ranks);
    const int generation = generations_[list]++;
    const int new_rank = static_cast<int>(
        std::lower_bound(ranks.begin(), ranks.end(), rank_) - ranks.begin());
    return Connect(
        store_, fmt::format("{}[{}]#{}", group_id_, list, generation), new_rank,
        static_cast<int>(ranks.size()), device_, options());
  }

 private:
  absl::Status Sync() {
    return CudaStatus(cudaStreamSynchronize(stream_), "stream sync");
  }

  // Enqueues a grouped send/recv all-to-all on stream_ (no sync). Every
  // call of the group is issued even after an error, so ncclGroupEnd always
  // runs; the first error is returned.
  absl::Status EnqueueAllToAllV(const char* s, std::span<const int64_t> sb,
                                char* r, std::span<const int64_t> rb) {
    RETURN_IF_ERROR(NcclStatus(ncclGroupStart(), "group start"));
    ncclResult_t first = ncclSuccess;
    int64_t so = 0, ro = 0;
    for (int p = 0; p < size_; ++p) {
      if (sb[p] > 0) {
        const ncclResult_t e = ncclSend(s + so, static_cast<size_t>(sb[p]),
                                        ncclUint8, p, comm_, stream_);
        if (first == ncclSuccess) first = e;
      }
      if (rb[p] > 0) {
        const ncclResult_t e = ncclRecv(r + ro, static_cast<size_t>(rb[p]),
                                        ncclUint8, p, comm_, stream_);
        if (first == ncclSuccess) first = e;
      }
      so += sb[p];
      ro += rb[p];
    }
    const ncclResult_t end = ncclGroupEnd();
    RETURN_IF_ERROR(NcclStatus(first, "all-to-all send/recv"));
    return NcclStatus(end, "all-to-all-v");
  }

  // Grows the two f32 device scratch buffers to `floats` each (never
  // shrinks, so steady-state calls allocate nothing).
  absl::Status ReserveScratch(int64_t floats) {
    if (floats <= scratch_floats_) return absl::OkStatus();
    // Pending work may still read the old buffers.
    RETURN_IF_ERROR(Sync());
    cudaFree(det_a_);
    cudaFree(det_b_);
    det_a_ = det_b_ = nullptr;
    scratch_floats_ = 0;
    const size_t bytes = static_cast<size_t>(floats) * sizeof(float);
    RETURN_IF_ERROR(CudaStatus(cudaMalloc(&det_a_, bytes), "scratch"));
    RETURN_IF_ERROR(CudaStatus(cudaMalloc(&det_b_, bytes), "scratch"));
    scratch_floats_ = floats;
    return absl::OkStatus();
  }

  static DeviceFloat ToDeviceFloat(DType t) {
    return t == DType::kF16    ? DeviceFloat::kF16
           : t == DType::kBF16 ? DeviceFloat::kBF16
                               : DeviceFloat::kF32;
  }

  // The shared step of both deterministic reductions: det_a_ holds size_
  // chunks of `chunk` floats, chunk p destined for rank p; afterwards det_a_'s
  // first chunk is the sum of every rank's chunk for this rank, added in rank
  // order (det_b_ is clobbered).
  absl::Status SumChunksInRankOrder(int64_t chunk) {
    chunk_bytes_.assign(size_, chunk * static_cast<int64_t>(sizeof(float)));
    RETURN_IF_ERROR(
        EnqueueAllToAllV(reinterpret_cast<const char*>(det_a_), chunk_bytes_,
                         reinterpret_cast<char*>(det_b_), chunk_bytes_));
    return CudaStatus(
        DeviceSumChunksInRankOrder(det_b_, size_, chunk, det_a_, stream_),
        "rank-order sum");
  }

  // Rank r reduces chunk r of the zero-padded f32 copy in rank order, then
  // every rank gathers all chunks (host twin: Communicator::AllReduceSum).
  absl::Status DeterministicAllReduce(void* data, int64_t count, DType dtype) {
    ASSIGN_OR_RETURN(ncclDataType_t unused, NcclType(dtype));
    (void)unused;
    const int n = size_;
    const int64_t chunk = (count + n - 1) / n;
    const int64_t padded = chunk * n;
    RETURN_IF_ERROR(ReserveScratch(padded));
    const DeviceFloat type = ToDeviceFloat(dtype);
    RETURN_IF_ERROR(CudaStatus(
        cudaMemsetAsync(det_a_, 0, static_cast<size_t>(padded) * sizeof(float),
                        stream_),
        "scratch clear"));
    RETURN_IF_ERROR(
        CudaStatus(DeviceToF32(data, type, count, det_a_, stream_), "to f32"));
    RETURN_IF_ERROR(SumChunksInRankOrder(chunk));
    RETURN_IF_ERROR(
        NcclStatus(ncclAllGather(det_a_, det_b_, static_cast<size_t>(chunk),
                                 ncclFloat32, comm_, stream_),
                   "all-gather"));
    RETURN_IF_ERROR(CudaStatus(
        DeviceFromF32(det_b_, type, count, data, stream_), "from f32"));
    return Sync();
  }

  absl::Status DeterministicReduceScatter(const void* send, void* recv,
                                          int64_t count_per_rank, DType dtype) {
    ASSIGN_OR_RETURN(ncclDataType_t unused, NcclType(dtype));
    (void)unused;
    const int64_t total = count_per_rank * size_;
    RETURN_IF_ERROR(ReserveScratch(total));
    const DeviceFloat type = ToDeviceFloat(dtype);
    RETURN_IF_ERROR(
        CudaStatus(DeviceToF32(send, type, total, det_a_, stream_), "to f32"));
    RETURN_IF_ERROR(SumChunksInRankOrder(count_per_rank));
    RETURN_IF_ERROR(
        CudaStatus(DeviceFromF32(det_a_, type, count_per_rank, recv, stream_),
                   "from f32"));
    return Sync();
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_, size_, device_;
  Store& store_;
  std::string group_id_;
  std::map<std::string, int> generations_;
  void* scratch_ = nullptr;
  // Deterministic-mode f32 scratch (device), scratch_floats_ floats each.
  float* det_a_ = nullptr;
  float* det_b_ = nullptr;
  int64_t scratch_floats_ = 0;
  std::vector<int64_t> chunk_bytes_;  // all-to-all sizes, reused per call
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const WorldInfo& world, Store& store, const CommOptions& options) {
  const int device = options.device >= 0 ? options.device : world.local_rank;
  static std::atomic<int> generation{0};
  return NcclCommunicator::Connect(store, fmt::format("world#{}", generation++),
                                   world.rank, world.world_size, device,
                                   options);
}

}  // namespace tessera::comm::internal
