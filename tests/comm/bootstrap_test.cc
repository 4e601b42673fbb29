#include "comm/bootstrap.h"

#include <map>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spawn.h"

namespace tessera::comm {
namespace {

using ::testing::HasSubstr;

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ResolveWorldTest, FlagsWinOverEnvironment) {
  BootstrapFlags f;
  f.rank = 2;
  f.world_size = 4;
  f.master_addr = "10.0.0.1:1234";
  auto w = ResolveWorld(f, FakeEnv({{"OMPI_COMM_WORLD_RANK", "0"},
                                    {"OMPI_COMM_WORLD_SIZE", "8"}}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->rank, 2);
  EXPECT_EQ(w->world_size, 4);
  EXPECT_EQ(w->master_host, "10.0.0.1");
  EXPECT_EQ(w->master_port, 1234);
  EXPECT_EQ(w->source, "flags");
}

TEST(ResolveWorldTest, OpenMpiThenSlurmThenLws) {
  auto ompi = ResolveWorld({}, FakeEnv({{"OMPI_COMM_WORLD_RANK", "3"},
                                        {"OMPI_COMM_WORLD_SIZE", "4"},
                                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                        {"SLURM_PROCID", "0"},
                                        {"SLURM_NTASKS", "2"}}));
  ASSERT_TRUE(ompi.ok());
  EXPECT_EQ(ompi->source, "openmpi");
  EXPECT_EQ(ompi->rank, 3);
  EXPECT_EQ(ompi->local_rank, 1);

  auto slurm = ResolveWorld({}, FakeEnv({{"SLURM_PROCID", "1"},
                                         {"SLURM_NTASKS", "2"},
                                         {"SLURM_LOCALID", "1"},
                                         {"LWS_WORKER_INDEX", "0"}}));
  ASSERT_TRUE(slurm.ok());
  EXPECT_EQ(slurm->source, "slurm");
  EXPECT_EQ(slurm->world_size, 2);

  auto lws = ResolveWorld(
      {}, FakeEnv({{"LWS_WORKER_INDEX", "2"},
                   {"LWS_GROUP_SIZE", "3"},
                   {"LWS_LEADER_ADDRESS", "leader.svc.cluster.local"},
                   {"TESSERA_MASTER_PORT", "4000"}}));
  ASSERT_TRUE(lws.ok()) << lws.status();
  EXPECT_EQ(lws->source, "lws");
  EXPECT_EQ(lws->rank, 2);
  EXPECT_EQ(lws->local_rank, 0);
  EXPECT_EQ(lws->master_host, "leader.svc.cluster.local");
  EXPECT_EQ(lws->master_port, 4000);

  auto lws_default = ResolveWorld({}, FakeEnv({{"LWS_WORKER_INDEX", "0"},
                                               {"LWS_GROUP_SIZE", "2"},
                                               {"LWS_LEADER_ADDRESS", "h"}}));
  ASSERT_TRUE(lws_default.ok());
  EXPECT_EQ(lws_default->master_port, kDefaultMasterPort);
}

TEST(ResolveWorldTest, RejectsBadInput) {
  BootstrapFlags f;
  f.rank = 4;
  f.world_size = 4;
  EXPECT_EQ(ResolveWorld(f, FakeEnv({})).status().code(),
            absl::StatusCode::kInvalidArgument);
  BootstrapFlags only_rank;
  only_rank.rank = 0;
  EXPECT_FALSE(ResolveWorld(only_rank, FakeEnv({})).ok());
  EXPECT_FALSE(
      ResolveWorld({}, FakeEnv({{"SLURM_PROCID", "x"}, {"SLURM_NTASKS", "2"}}))
          .ok());
  EXPECT_FALSE(ResolveWorld({}, FakeEnv({{"LWS_WORKER_INDEX", "1"},
                                         {"LWS_GROUP_SIZE", "2"}}))
                   .ok());
  auto single = ResolveWorld({}, FakeEnv({}));
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single->world_size, 1);
}

TEST(ParseHostPortTest, Forms) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(ParseHostPort("a.b:99", &host, &port).ok());
  EXPECT_EQ(host, "a.b");
  EXPECT_EQ(port, 99);
  ASSERT_TRUE(ParseHostPort("[::1]:7", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 7);
  ASSERT_TRUE(ParseHostPort("host", &host, &port).ok());
  EXPECT_EQ(port, kDefaultMasterPort);
  EXPECT_FALSE(ParseHostPort("host:0", &host, &port).ok());
  EXPECT_FALSE(ParseHostPort("host:99999", &host, &port).ok());
  EXPECT_FALSE(ParseHostPort(":5", &host, &port).ok());
  EXPECT_FALSE(ParseHostPort("host:", &host, &port).ok());
}

TEST(StoreTest, SetGetWaitAdd) {
  auto server = StoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  auto a =
      ConnectStore("127.0.0.1", (*server)->port(), std::chrono::seconds(2));
  auto b =
      ConnectStore("127.0.0.1", (*server)->port(), std::chrono::seconds(2));
  ASSERT_TRUE(a.ok() && b.ok());
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE((*b)->Set("k", std::string("v\0w", 3)).ok());
  });
  auto v = (*a)->Get("k", std::chrono::seconds(2));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, std::string("v\0w", 3));
  EXPECT_EQ(*(*a)->Add("n", 2), 2);
  EXPECT_EQ(*(*b)->Add("n", 3), 5);
  std::vector<std::string> missing;
  auto s =
      (*a)->Wait({"k", "x", "y"}, std::chrono::milliseconds(100), &missing);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(missing, ::testing::ElementsAre("x", "y"));
  EXPECT_EQ((*a)->Get("nope", std::chrono::milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ((*a)->Set(std::string(kMaxStoreKeyBytes + 1, 'k'), "").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(StoreTest, UnreachableServerTimesOut) {
  const int port = testing::FreePort();
  auto s = ConnectStore("127.0.0.1", port, std::chrono::milliseconds(200));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("rank 0"));
}

TEST(BootstrapTest, AllRanksJoin) {
  const int port = testing::FreePort();
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(3);
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      WorldInfo w;
      w.rank = r;
      w.world_size = 3;
      w.master_port = port;
      auto b = Bootstrap::Join(w, std::chrono::seconds(5));
      results[r] = b.status();
      if (b.ok()) results[r] = (*b)->Barrier("after", std::chrono::seconds(5));
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(results[r].ok()) << results[r];
}

TEST(BootstrapTest, MissingRankTimesOutNamingIt) {
  const int port = testing::FreePort();
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(2);
  for (int r = 0; r < 2; ++r) {  // Ranks 0 and 1 of 4: 2 and 3 never come.
    threads.emplace_back([&, r] {
      WorldInfo w;
      w.rank = r;
      w.world_size = 4;
      w.master_port = port;
      results[r] = Bootstrap::Join(w, std::chrono::milliseconds(300)).status();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(std::string(results[r].message()),
                HasSubstr("rank(s) 2, 3 of 4 did not arrive"));
  }
}

}  // namespace
}  // namespace tessera::comm
