#include <cmath>
#include <vector>

#include "base/random.h"
#include "gtest/gtest.h"
#include "kernels/cuda_ops.h"

namespace tessera::kernels::cuda {
namespace {

TEST(CudaRmsNormTest, MatchesScalarReference) {
  if (DeviceCount() == 0)
    GTEST_SKIP() << "no CUDA device (or built without CUDA): GPU test skipped";
  const int64_t rows = 37, n = 1000;
  SplitMix64 rng(1);
  std::vector<float> x(rows * n), w(n), out(rows * n);
  for (float& v : x) v = rng.Normal();
  for (float& v : w) v = rng.Normal();
  ASSERT_TRUE(
      RmsNormFromHost(x.data(), w.data(), rows, n, 1e-5f, out.data()).ok());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[r * n + i]) * x[r * n + i];
    const double scale = 1.0 / std::sqrt(ss / n + 1e-5);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_NEAR(out[r * n + i], x[r * n + i] * scale * w[i], 1e-4)
          << r << "," << i;
    }
  }
}

TEST(CudaRmsNormTest, RejectsBadShapes) {
  EXPECT_FALSE(RmsNorm(nullptr, nullptr, 1, 0, 1e-5f, nullptr).ok());
}

}  // namespace
}  // namespace tessera::kernels::cuda
