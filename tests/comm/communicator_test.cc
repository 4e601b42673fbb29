#include "comm/communicator.h"

#include <vector>

#include "base/build_config.h"
#include "gtest/gtest.h"

namespace tessera::comm {
namespace {

std::unique_ptr<Communicator> Self(bool det = false) {
  CommOptions o;
  o.deterministic = det;
  auto c = CreateCommunicator(WorldInfo{}, nullptr, o);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(c).value();
}

TEST(CommunicatorTest, AutoPicksSelfForOneRankAndMpiUnderMpirun) {
  EXPECT_EQ(ResolveBackendName(WorldInfo{}, {}), "self");
  WorldInfo w;
  w.world_size = 2;
  w.source = "openmpi";
  EXPECT_EQ(ResolveBackendName(w, {}),
            TESSERA_HAVE_MPI ? "mpi" : (TESSERA_HAVE_GLOO ? "gloo" : "none"));
  w.source = "lws";
  EXPECT_EQ(ResolveBackendName(w, {}),
            TESSERA_HAVE_GLOO ? "gloo" : (TESSERA_HAVE_MPI ? "mpi" : "none"));
}

TEST(CommunicatorTest, SelfCollectivesAreCopies) {
  for (bool det : {false, true}) {
    auto c = Self(det);
    EXPECT_EQ(c->size(), 1);
    std::vector<float> x = {1.5f, -2.0f, 3.25f};
    ASSERT_TRUE(c->AllReduceSum(x.data(), 3, DType::kF32).ok());
    EXPECT_EQ(x, (std::vector<float>{1.5f, -2.0f, 3.25f}));
    std::vector<uint16_t> h = {FloatToBF16(1.0f), FloatToBF16(2.0f)};
    ASSERT_TRUE(c->AllReduceSum(h.data(), 2, DType::kBF16).ok());
    EXPECT_EQ(BF16ToFloat(h[1]), 2.0f);
    std::vector<float> out(3);
    ASSERT_TRUE(c->ReduceScatterSum(x.data(), out.data(), 3, DType::kF32).ok());
    EXPECT_EQ(out, x);
    std::vector<char> g(4);
    ASSERT_TRUE(c->AllGather("abcd", g.data(), 4).ok());
    EXPECT_EQ(std::string(g.begin(), g.end()), "abcd");
    ASSERT_TRUE(c->Barrier().ok());
    auto sub = c->CreateSubgroup(std::vector<int>{0});
    ASSERT_TRUE(sub.ok());
    EXPECT_EQ((*sub)->size(), 1);
  }
}

TEST(CommunicatorTest, ValidatesArguments) {
  auto c = Self();
  std::vector<int32_t> ints(4);
  EXPECT_EQ(c->AllReduceSum(ints.data(), 4, DType::kI32).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->AllReduceSum(nullptr, 4, DType::kF32).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(c->AllReduceSum(nullptr, 0, DType::kF32).ok());
  EXPECT_EQ(c->Send(ints.data(), 4, 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Broadcast(ints.data(), 4, 3).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<int64_t> sizes = {1, 2};
  EXPECT_EQ(c->AllToAllV(ints.data(), sizes, ints.data(), sizes).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->CreateSubgroup(std::vector<int>{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->CreateSubgroup(std::vector<int>{0, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CommunicatorTest, UnknownBackendAndMissingStore) {
  CommOptions o;
  o.backend = "carrier-pigeon";
  EXPECT_EQ(CreateCommunicator(WorldInfo{}, nullptr, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  WorldInfo w;
  w.world_size = 2;
  o.backend = "gloo";
  EXPECT_FALSE(CreateCommunicator(w, nullptr, o).ok());
}

}  // namespace
}  // namespace tessera::comm
