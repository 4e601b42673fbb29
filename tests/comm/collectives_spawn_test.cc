// Collectives with no mpirun: the ranks are child processes started with
// LeaderWorkerSet-style environment variables on localhost (Gloo backend).
#include <string>
#include <vector>

#include "base/build_config.h"
#include "gtest/gtest.h"
#include "spawn.h"

namespace tessera::comm {
namespace {

void RunWorld(int n, const std::string& backend) {
  const int port = testing::FreePort();
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    pids.push_back(
        testing::SpawnProgram({TESSERA_COLLECTIVES_CHECK, "--backend", backend},
                              {{"LWS_LEADER_ADDRESS", "127.0.0.1"},
                               {"LWS_GROUP_SIZE", std::to_string(n)},
                               {"LWS_WORKER_INDEX", std::to_string(r)},
                               {"TESSERA_MASTER_PORT", std::to_string(port)}}));
  }
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(testing::WaitChild(pids[r], std::chrono::seconds(60)), 0)
        << "rank " << r << " of " << n;
  }
}

TEST(CollectivesSpawnTest, GlooTwoRanksLwsEnv) {
  if (!TESSERA_HAVE_GLOO) GTEST_SKIP() << "built without Gloo";
  RunWorld(2, "gloo");
}

TEST(CollectivesSpawnTest, GlooFourRanksLwsEnv) {
  if (!TESSERA_HAVE_GLOO) GTEST_SKIP() << "built without Gloo";
  RunWorld(4, "gloo");
}

}  // namespace
}  // namespace tessera::comm
