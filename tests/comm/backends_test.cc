#include "comm/backends.h"

#include <algorithm>

#include "base/build_config.h"
#include "gtest/gtest.h"

namespace tessera::comm {
namespace {

TEST(BackendsTest, MatchesBuildConfig) {
  const auto names = CompiledBackends();
  auto has = [&](const char* n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  EXPECT_EQ(has("mpi"), TESSERA_HAVE_MPI == 1);
  EXPECT_EQ(has("ucx"), TESSERA_HAVE_UCX == 1);
  EXPECT_EQ(has("nccl"), TESSERA_HAVE_NCCL == 1);
}

}  // namespace
}  // namespace tessera::comm
