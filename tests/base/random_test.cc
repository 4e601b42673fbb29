#include "base/random.h"

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(RandomTest, SequenceIsFixed) {
  SplitMix64 a(42), b(42);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.Next(), b.Next());
  SplitMix64 c(0);
  EXPECT_EQ(c.Next(),
            0xe220a8397b1dcdafull);  // Published SplitMix64 value for seed 0.
}

TEST(RandomTest, NormalHasUnitMoments) {
  SplitMix64 r(7);
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = r.Normal();
    sum += x;
    sq += x * x;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0, 0.02);
}

}  // namespace
}  // namespace tessera
