// Builds without the CUDA backend: no devices, every kernel Unimplemented.
#include "kernels/cuda_ops.h"

namespace tessera::kernels::cuda {

int DeviceCount() { return 0; }

absl::Status RmsNorm(const float*, const float*, int64_t, int64_t, float,
                     float*, void*) {
  return absl::UnimplementedError("tessera was built without the CUDA backend");
}

absl::Status RmsNormFromHost(const float*, const float*, int64_t, int64_t,
                             float, float*) {
  return absl::UnimplementedError("tessera was built without the CUDA backend");
}

}  // namespace tessera::kernels::cuda
