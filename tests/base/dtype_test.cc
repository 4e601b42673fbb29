#include "base/dtype.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(DTypeTest, NamesRoundTrip) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0,
                  DType::kI8, DType::kI32, DType::kI64, DType::kU8}) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok()) << DTypeName(d);
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(*ParseDType("BFloat16"), DType::kBF16);
  EXPECT_EQ(ParseDType("f8").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DTypeTest, Sizes) {
  EXPECT_EQ(DTypeBytes(DType::kF32, 10), 40);
  EXPECT_EQ(DTypeBytes(DType::kBF16, 10), 20);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, 64), 68);
  EXPECT_EQ(DTypeBlockSize(DType::kQ8_0), 32);
}

// Every half-precision bit pattern converts to float and back unchanged (NaNs
// stay NaN).
TEST(DTypeTest, HalfRoundTripsAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
      continue;
    }
    EXPECT_EQ(FloatToHalf(f), h) << h;
  }
}

TEST(DTypeTest, HalfRoundsToNearestEven) {
  EXPECT_EQ(HalfToFloat(FloatToHalf(1.0f + 1.0f / 2048)),
            1.0f);  // Tie -> even.
  EXPECT_EQ(HalfToFloat(FloatToHalf(1.0f + 3.0f / 2048)), 1.0f + 2.0f / 1024);
  EXPECT_EQ(HalfToFloat(FloatToHalf(65520.0f)),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(FloatToHalf(5.96046448e-08f)),
            5.96046448e-08f);  // Min subnormal.
}

TEST(DTypeTest, BF16RoundTripsAndRounds) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = BF16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToBF16(f), b);
  }
  EXPECT_EQ(BF16ToFloat(FloatToBF16(1.0f + 1.0f / 256)), 1.0f);  // Tie -> even.
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::nanf("")))));
}

}  // namespace
}  // namespace tessera
