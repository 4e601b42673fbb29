// NCCL backend on the GPU (label gpu): skipped without a CUDA device.
#include <cuda_runtime.h>

#include <vector>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "gtest/gtest.h"

namespace tessera::comm {
namespace {

TEST(NcclTest, OneRankAllReduceAndAllGatherOnDevice) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device";
  }
  auto server = StoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  WorldInfo w;
  w.master_port = (*server)->port();
  auto boot = Bootstrap::Join(w, std::chrono::seconds(5));
  ASSERT_TRUE(boot.ok()) << boot.status();
  CommOptions o;
  o.backend = "nccl";
  o.device = 0;
  auto c = CreateCommunicator(w, boot->get(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<float> host = {1, 2, 3, 4};
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, sizeof(float) * 4), cudaSuccess);
  cudaMemcpy(dev, host.data(), sizeof(float) * 4, cudaMemcpyHostToDevice);
  ASSERT_TRUE((*c)->AllReduceSum(dev, 4, DType::kF32).ok());
  std::vector<float> out(4);
  cudaMemcpy(out.data(), dev, sizeof(float) * 4, cudaMemcpyDeviceToHost);
  EXPECT_EQ(out, host);
  ASSERT_TRUE((*c)->Barrier().ok());
  cudaFree(dev);
}

}  // namespace
}  // namespace tessera::comm
