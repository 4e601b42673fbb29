// NCCL backend on the GPU (label gpu): skipped without a CUDA device.
//
// NCCL refuses two ranks of one communicator on the same device, so a
// one-GPU machine can only run a one-rank world. These tests still drive
// every collective through NCCL with device buffers (dtype mapping, stream
// ordering, sub-communicators, zero-length calls); the multi-rank arithmetic
// is covered by the MPI and Gloo backends sharing the same front end.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "base/dtype.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/internal/backend_factories.h"
#include "comm/internal/nccl_device_reduce.h"
#include "gtest/gtest.h"
#include "tests/comm/spawn.h"

namespace tessera::comm {
namespace {

// Device buffer freed at scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&ptr_, bytes == 0 ? 1 : bytes) != cudaSuccess) {
      ptr_ = nullptr;
    }
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  void* get() const { return ptr_; }
  void Upload(const void* src) const {
    cudaMemcpy(ptr_, src, bytes_, cudaMemcpyHostToDevice);
  }
  template <typename T>
  std::vector<T> Download() const {
    std::vector<T> out(bytes_ / sizeof(T));
    cudaMemcpy(out.data(), ptr_, bytes_, cudaMemcpyDeviceToHost);
    return out;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      GTEST_SKIP() << "no CUDA device: the NCCL backend needs a GPU";
    }
    WorldInfo w;
    w.master_port = testing::FreePort();
    auto boot = Bootstrap::Join(w, std::chrono::seconds(5));
    ASSERT_TRUE(boot.ok()) << boot.status();
    boot_ = *std::move(boot);
    CommOptions o;
    o.backend = "nccl";
    o.device = 0;
    auto c = CreateCommunicator(w, boot_.get(), o);
    ASSERT_TRUE(c.ok()) << c.status();
    comm_ = *std::move(c);
  }

  std::unique_ptr<Bootstrap> boot_;
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclTest, ReportsBackendAndDeviceBuffers) {
  EXPECT_EQ(comm_->backend(), "nccl");
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
}

TEST_F(NcclTest, AllReduceEveryDtypeOnDevice) {
  // An odd count so no dtype lands on a vector-width boundary.
  constexpr int64_t kCount = 1001;
  std::vector<float> f32(kCount);
  std::vector<uint16_t> f16(kCount), bf16(kCount);
  for (int64_t i = 0; i < kCount; ++i) {
    f32[i] = static_cast<float>(i % 37) - 18.5f;
    f16[i] = FloatToHalf(f32[i]);
    bf16[i] = FloatToBF16(f32[i]);
  }
  DeviceBuffer a(kCount * 4), b(kCount * 2), c(kCount * 2);
  a.Upload(f32.data());
  b.Upload(f16.data());
  c.Upload(bf16.data());
  ASSERT_TRUE(comm_->AllReduceSum(a.get(), kCount, DType::kF32).ok());
  ASSERT_TRUE(comm_->AllReduceSum(b.get(), kCount, DType::kF16).ok());
  ASSERT_TRUE(comm_->AllReduceSum(c.get(), kCount, DType::kBF16).ok());
  // One rank: the sum is the input, bit for bit.
  EXPECT_EQ(a.Download<float>(), f32);
  EXPECT_EQ(b.Download<uint16_t>(), f16);
  EXPECT_EQ(c.Download<uint16_t>(), bf16);
  // Zero-length calls are accepted and touch nothing.
  EXPECT_TRUE(comm_->AllReduceSum(a.get(), 0, DType::kF32).ok());
}

TEST_F(NcclTest, GatherScatterAllToAllAndBroadcast) {
  constexpr int64_t kBytes = 4099;  // Odd: byte collectives use ncclUint8.
  std::vector<uint8_t> src(kBytes);
  for (int64_t i = 0; i < kBytes; ++i) src[i] = static_cast<uint8_t>(i * 7);
  DeviceBuffer send(kBytes), recv(kBytes);
  send.Upload(src.data());

  ASSERT_TRUE(comm_->AllGather(send.get(), recv.get(), kBytes).ok());
  EXPECT_EQ(recv.Download<uint8_t>(), src);

  cudaMemset(recv.get(), 0, kBytes);
  ASSERT_TRUE(comm_->AllToAll(send.get(), recv.get(), kBytes).ok());
  EXPECT_EQ(recv.Download<uint8_t>(), src);

  cudaMemset(recv.get(), 0, kBytes);
  const std::vector<int64_t> sizes = {kBytes};
  ASSERT_TRUE(comm_->AllToAllV(send.get(), sizes, recv.get(), sizes).ok());
  EXPECT_EQ(recv.Download<uint8_t>(), src);

  ASSERT_TRUE(comm_->Broadcast(send.get(), kBytes, 0).ok());
  EXPECT_EQ(send.Download<uint8_t>(), src);

  constexpr int64_t kCount = 513;
  std::vector<float> f(kCount);
  for (int64_t i = 0; i < kCount; ++i) f[i] = 0.25f * static_cast<float>(i);
  DeviceBuffer fs(kCount * 4), fr(kCount * 4);
  fs.Upload(f.data());
  ASSERT_TRUE(
      comm_->ReduceScatterSum(fs.get(), fr.get(), kCount, DType::kF32).ok());
  EXPECT_EQ(fr.Download<float>(), f);
  ASSERT_TRUE(comm_->Barrier().ok());
}

TEST_F(NcclTest, SubgroupRunsItsOwnCollectives) {
  const std::vector<int> ranks = {0};
  auto sub = comm_->CreateSubgroup(ranks);
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ((*sub)->size(), 1);
  std::vector<float> v = {1.5f, -2.0f, 3.25f};
  DeviceBuffer d(v.size() * 4);
  d.Upload(v.data());
  ASSERT_TRUE((*sub)->AllReduceSum(d.get(), 3, DType::kF32).ok());
  EXPECT_EQ(d.Download<float>(), v);
  // A second subgroup over the same ranks gets a fresh NCCL communicator.
  auto again = comm_->CreateSubgroup(ranks);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE((*again)->Barrier().ok());
}

TEST_F(NcclTest, DeterministicModeRunsOnDeviceBuffers) {
  CommOptions o;
  o.backend = "nccl";
  o.device = 0;
  o.deterministic = true;
  auto c = CreateCommunicator(boot_->world(), boot_.get(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  constexpr int64_t kCount = 777;
  std::vector<uint16_t> bf16(kCount);
  for (int64_t i = 0; i < kCount; ++i) {
    bf16[i] = FloatToBF16(0.001f * static_cast<float>(i * i) - 3.0f);
  }
  DeviceBuffer d(kCount * 2), out(kCount * 2);
  d.Upload(bf16.data());
  ASSERT_TRUE((*c)->AllReduceSum(d.get(), kCount, DType::kBF16).ok());
  EXPECT_EQ(d.Download<uint16_t>(), bf16);
  ASSERT_TRUE(
      (*c)->ReduceScatterSum(d.get(), out.get(), kCount, DType::kBF16).ok());
  EXPECT_EQ(out.Download<uint16_t>(), bf16);
}

// The device kernels of deterministic mode against the host arithmetic they
// must reproduce bit for bit: n = 5 chunks summed in rank order, then
// rounded to each dtype. Values span magnitudes so that the order matters.
TEST(NcclDeviceReduceTest, RankOrderSumAndRoundingMatchTheHostBitForBit) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device: the device reduction kernels need a GPU";
  }
  constexpr int kRanks = 5;
  constexpr int64_t kCount = 4097;
  std::vector<float> chunks(kRanks * kCount);
  uint64_t state = 12345;
  for (float& v : chunks) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const int exponent = static_cast<int>((state >> 33) % 40) - 20;
    const float mantissa =
        static_cast<float>(static_cast<int64_t>(state >> 40) % 2001 - 1000) /
        997.0f;
    v = std::ldexp(mantissa, exponent);
  }
  std::vector<float> expected(kCount);
  internal::SumChunksInRankOrder(chunks.data(), kRanks, kCount,
                                 expected.data());
  DeviceBuffer dc(chunks.size() * 4), dsum(kCount * 4), d16(kCount * 2),
      back(kCount * 4);
  dc.Upload(chunks.data());
  ASSERT_EQ(internal::DeviceSumChunksInRankOrder(
                static_cast<const float*>(dc.get()), kRanks, kCount,
                static_cast<float*>(dsum.get()), nullptr),
            cudaSuccess);
  cudaDeviceSynchronize();
  const std::vector<float> sum = dsum.Download<float>();
  ASSERT_EQ(0, std::memcmp(sum.data(), expected.data(), kCount * 4));

  for (const auto type :
       {internal::DeviceFloat::kF16, internal::DeviceFloat::kBF16}) {
    ASSERT_EQ(internal::DeviceFromF32(static_cast<const float*>(dsum.get()),
                                      type, kCount, d16.get(), nullptr),
              cudaSuccess);
    ASSERT_EQ(internal::DeviceToF32(d16.get(), type, kCount,
                                    static_cast<float*>(back.get()), nullptr),
              cudaSuccess);
    cudaDeviceSynchronize();
    const std::vector<uint16_t> rounded = d16.Download<uint16_t>();
    const std::vector<float> widened = back.Download<float>();
    for (int64_t i = 0; i < kCount; ++i) {
      const bool bf16 = type == internal::DeviceFloat::kBF16;
      const uint16_t want =
          bf16 ? FloatToBF16(expected[i]) : FloatToHalf(expected[i]);
      ASSERT_EQ(rounded[i], want)
          << "element " << i << " of " << (bf16 ? "bf16" : "f16");
      const float w = bf16 ? BF16ToFloat(want) : HalfToFloat(want);
      ASSERT_EQ(0, std::memcmp(&widened[i], &w, 4)) << "element " << i;
    }
  }
}

}  // namespace
}  // namespace tessera::comm
