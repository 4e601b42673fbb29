// Device-side pieces of the deterministic reduction for the NCCL backend:
// dtype conversion to and from f32 and a rank-ordered chunk sum, so device
// buffers reduce bit-identically to the host path (communicator.cc) whatever
// the backend or algorithm. Plain CUDA runtime types: no absl, no C++20, so
// the .cu compiles with nvcc's C++17.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tessera::comm::internal {

// Element type codes of the device helpers (DType is not used here so the
// header stays free of base/).
enum class DeviceFloat : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// dst[i] = float(src[i]) for i < n, on `stream` (a copy for f32).
cudaError_t DeviceToF32(const void* src, DeviceFloat type, int64_t n,
                        float* dst, cudaStream_t stream);

// dst[i] = src[i] rounded to `type` (nearest even, as base/dtype.h), on
// `stream`.
cudaError_t DeviceFromF32(const float* src, DeviceFloat type, int64_t n,
                          void* dst, cudaStream_t stream);

// out[i] = ((chunk_0[i] + chunk_1[i]) + chunk_2[i]) + ... over n chunks of
// `count` floats laid out back to back: the order SumChunksInRankOrder uses.
cudaError_t DeviceSumChunksInRankOrder(const float* chunks, int n,
                                       int64_t count, float* out,
                                       cudaStream_t stream);

}  // namespace tessera::comm::internal
