// CUDA kernels (device memory in, device memory out). This header compiles
// without nvcc; in builds without the CUDA backend every call returns
// Unimplemented and DeviceCount() is 0.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::kernels::cuda {

// Number of usable CUDA devices (0 without a driver, a device, or the CUDA
// backend).
int DeviceCount();

// out = x * rsqrt(mean(x²) + eps) * weight per row of n; all pointers are
// device pointers, `stream` a cudaStream_t (nullptr = default stream).
// InvalidArgument for n <= 0 or rows < 0.
absl::Status RmsNorm(const float* x, const float* weight, int64_t rows,
                     int64_t n, float eps, float* out, void* stream = nullptr);

// Test/benchmark convenience: copies host arrays to the device, runs RmsNorm,
// copies the result back, synchronously.
absl::Status RmsNormFromHost(const float* x, const float* weight, int64_t rows,
                             int64_t n, float eps, float* out);

}  // namespace tessera::kernels::cuda
