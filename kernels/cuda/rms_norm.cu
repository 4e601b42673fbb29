// RMSNorm on CUDA: out[r, :] = x[r, :] * rsqrt(mean(x[r, :]²) + eps) * weight.
// Layout: x, out row-major [rows, n] f32; weight [n].
// Tiling: one thread block of kThreads per row; each thread strides over the
// row, the sum of squares is reduced with warp shuffles then across warps in
// shared memory.
#include <cuda_runtime.h>

#include <vector>

#include "fmt/format.h"
#include "kernels/cuda_ops.h"

namespace tessera::kernels::cuda {
namespace {

struct RmsNormTraits {
  static constexpr int kThreads = 256;
  static constexpr int kWarps = kThreads / 32;
};

__global__ void RmsNormKernel(const float* __restrict__ x,
                              const float* __restrict__ w, int64_t n, float eps,
                              float* __restrict__ out) {
  __shared__ float warp_sums[RmsNormTraits::kWarps];
  const float* row = x + blockIdx.x * n;
  float* dst = out + blockIdx.x * n;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += row[i] * row[i];
  for (int offset = 16; offset > 0; offset /= 2)
    ss += __shfl_xor_sync(0xffffffffu, ss, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    ss = threadIdx.x < RmsNormTraits::kWarps ? warp_sums[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2)
      ss += __shfl_xor_sync(0xffffffffu, ss, offset);
    if (threadIdx.x == 0) warp_sums[0] = ss;
  }
  __syncthreads();
  const float scale = rsqrtf(warp_sums[0] / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    dst[i] = row[i] * scale * w[i];
}

absl::Status CudaError(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      fmt::format("{}: {}", what, cudaGetErrorString(err)));
}

}  // namespace

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // Clear the sticky "no driver" error.
    return 0;
  }
  return count;
}

absl::Status RmsNorm(const float* x, const float* weight, int64_t rows,
                     int64_t n, float eps, float* out, void* stream) {
  if (n <= 0 || rows < 0) {
    return absl::InvalidArgumentError(
        fmt::format("RmsNorm: bad shape [{}, {}]", rows, n));
  }
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<<<static_cast<unsigned>(rows), RmsNormTraits::kThreads, 0,
                  static_cast<cudaStream_t>(stream)>>>(x, weight, n, eps, out);
  return CudaError(cudaGetLastError(), "RmsNorm launch");
}

absl::Status RmsNormFromHost(const float* x, const float* weight, int64_t rows,
                             int64_t n, float eps, float* out) {
  if (DeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  const size_t bytes = static_cast<size_t>(rows * n) * sizeof(float);
  // Frees the device buffers on every return path.
  struct Buffers {
    float* x = nullptr;
    float* w = nullptr;
    float* out = nullptr;
    ~Buffers() {
      cudaFree(x);
      cudaFree(w);
      cudaFree(out);
    }
  } d;
  if (auto s = CudaError(cudaMalloc(&d.x, bytes), "cudaMalloc"); !s.ok())
    return s;
  if (auto s = CudaError(cudaMalloc(&d.w, n * sizeof(float)), "cudaMalloc");
      !s.ok())
    return s;
  if (auto s = CudaError(cudaMalloc(&d.out, bytes), "cudaMalloc"); !s.ok())
    return s;
  if (auto s = CudaError(cudaMemcpy(d.x, x, bytes, cudaMemcpyHostToDevice),
                         "copy x");
      !s.ok()) {
    return s;
  }
  if (auto s = CudaError(
          cudaMemcpy(d.w, weight, n * sizeof(float), cudaMemcpyHostToDevice),
          "copy weight");
      !s.ok()) {
    return s;
  }
  if (auto s = RmsNorm(d.x, d.w, rows, n, eps, d.out, nullptr); !s.ok())
    return s;
  return CudaError(cudaMemcpy(out, d.out, bytes, cudaMemcpyDeviceToHost),
                   "copy out");
}

}  // namespace tessera::kernels::cuda
