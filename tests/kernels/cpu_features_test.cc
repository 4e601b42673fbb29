#include "kernels/cpu_features.h"

#include "gtest/gtest.h"

namespace tessera::kernels {
namespace {

TEST(CpuFeaturesTest, ConsistentImplications) {
  const CpuFeatures& f = GetCpuFeatures();
  // AVX-512 BF16 and VNNI are extensions of AVX-512F.
  if (f.avx512_bf16 || f.avx512_vnni) {
    EXPECT_TRUE(f.avx512f);
  }
  EXPECT_FALSE(f.ToString().empty());
}

}  // namespace
}  // namespace tessera::kernels

namespace tessera::kernels {
namespace {

TEST(CpuFeaturesTest, MemoryProbesReachPastTheLastLevelCache) {
  const int64_t llc = LastLevelCacheBytes();
  EXPECT_GE(llc, int64_t{64} << 10) << "no machine has a smaller last cache";
  EXPECT_GE(MemoryProbeBytes(1), 4 * llc);
  EXPECT_EQ(MemoryProbeBytes(int64_t{1} << 40), int64_t{1} << 40);
}

}  // namespace
}  // namespace tessera::kernels
