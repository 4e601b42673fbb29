#include "base/tensor.h"

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(TensorTest, EmptyIsAlignedAndContiguous) {
  Tensor t = Tensor::Zeros(DType::kF32, {3, 5});
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 60);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides(), (Shape{5, 1}));
  EXPECT_EQ(t.data<float>()[14], 0.0f);
  EXPECT_EQ(t.DebugString(), "f32[3, 5]");
}

TEST(TensorTest, SliceSharesStorage) {
  Tensor t = Tensor::Zeros(DType::kF32, {4, 2});
  Tensor rows = t.Slice(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  rows.data<float>()[0] = 7.0f;
  EXPECT_EQ(t.data<float>()[2], 7.0f);
}

TEST(TensorTest, QuantizedSliceUsesBlockBytes) {
  Tensor t = Tensor::Zeros(DType::kQ8_0, {4, 64});
  EXPECT_EQ(t.nbytes(), 4 * 68);
  Tensor rows = t.Slice(2, 4);
  EXPECT_EQ(
      static_cast<char*>(rows.raw_data()) - static_cast<char*>(t.raw_data()),
      2 * 68);
}

TEST(TensorTest, BorrowKeepsOwnerAlive) {
  auto owner = std::make_shared<std::vector<float>>(6, 1.5f);
  Tensor t = Tensor::Borrow(DType::kF32, {2, 3}, owner->data(), owner);
  std::weak_ptr<std::vector<float>> weak = owner;
  owner.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(t.Reshape({3, 2}).data<float>()[5], 1.5f);
  t = Tensor();
  EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace tessera
