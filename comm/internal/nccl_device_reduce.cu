// Deterministic reduction helpers for device buffers (NCCL backend).
//
// Math: the host path reduces in f32, chunk by chunk in rank order:
//   out[i] = (((c0[i] + c1[i]) + c2[i]) + ... + c_{n-1}[i]),
// then rounds to the buffer's dtype with round-to-nearest-even. These kernels
// do exactly that, one element per thread, with the scalar conversions of
// base/dtype.h compiled for the device (no fused multiply-add can arise: only
// additions), so results are bit-identical to MPI and Gloo.
// Layout: `chunks` is n back-to-back arrays of `count` floats.
// Tiling: a 1-D grid of kThreads-thread blocks, grid-stride loop; the work is
// bandwidth-bound and tiny next to the network transfer around it.
#include <cuda_runtime.h>

#include "base/dtype.h"
#include "comm/internal/nccl_device_reduce.h"

namespace tessera::comm::internal {
namespace {

struct ReduceTraits {
  static constexpr int kThreads = 256;
  static constexpr int64_t kMaxBlocks = 4096;
};

int64_t Blocks(int64_t n) {
  const int64_t b = (n + ReduceTraits::kThreads - 1) / ReduceTraits::kThreads;
  return b < ReduceTraits::kMaxBlocks ? (b > 0 ? b : 1)
                                      : ReduceTraits::kMaxBlocks;
}

__global__ void ToF32Kernel(const uint16_t* src, bool bf16, int64_t n,
                            float* dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = bf16 ? BF16ToFloat(src[i]) : HalfToFloat(src[i]);
  }
}

__global__ void FromF32Kernel(const float* src, bool bf16, int64_t n,
                              uint16_t* dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = bf16 ? FloatToBF16(src[i]) : FloatToHalf(src[i]);
  }
}

__global__ void SumChunksKernel(const float* chunks, int n, int64_t count,
                                float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < count; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = chunks[i];
    for (int r = 1; r < n; ++r) acc = __fadd_rn(acc, chunks[r * count + i]);
    out[i] = acc;
  }
}

}  // namespace

cudaError_t DeviceToF32(const void* src, DeviceFloat type, int64_t n,
                        float* dst, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (type == DeviceFloat::kF32) {
    return cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float),
                           cudaMemcpyDeviceToDevice, stream);
  }
  ToF32Kernel<<<static_cast<unsigned>(Blocks(n)), ReduceTraits::kThreads, 0,
                stream>>>(static_cast<const uint16_t*>(src),
                          type == DeviceFloat::kBF16, n, dst);
  return cudaGetLastError();
}

cudaError_t DeviceFromF32(const float* src, DeviceFloat type, int64_t n,
                          void* dst, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (type == DeviceFloat::kF32) {
    return cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float),
                           cudaMemcpyDeviceToDevice, stream);
  }
  FromF32Kernel<<<static_cast<unsigned>(Blocks(n)), ReduceTraits::kThreads, 0,
                  stream>>>(src, type == DeviceFloat::kBF16, n,
                            static_cast<uint16_t*>(dst));
  return cudaGetLastError();
}

cudaError_t DeviceSumChunksInRankOrder(const float* chunks, int n,
                                       int64_t count, float* out,
                                       cudaStream_t stream) {
  if (count <= 0 || n <= 0) return cudaSuccess;
  SumChunksKernel<<<static_cast<unsigned>(Blocks(count)),
                    ReduceTraits::kThreads, 0, stream>>>(chunks, n, count, out);
  return cudaGetLastError();
}

}  // namespace tessera::comm::internal
