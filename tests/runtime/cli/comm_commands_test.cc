// `tessera worker`, `tessera bench comm` and `tessera bench kv-transfer`
// end to end, with ranks started by the test's shell on localhost.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "base/build_config.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::RunCommand;
using ::tessera::testing::TesseraBin;
using ::testing::HasSubstr;

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Runs `args` as ranks 0..n-1 (flags bootstrap) and waits for all; the
// result is rank 0's.
std::string World(int n, const std::string& args) {
  const int port = FreePort();
  std::string cmd;
  for (int r = n - 1; r >= 1; --r) {
    cmd += fmt::format(
        "{} {} --rank {} --world-size {} --master-addr "
        "127.0.0.1:{} >/dev/null 2>&1 & ",
        TesseraBin(), args, r, n, port);
  }
  cmd += fmt::format(
      "{} {} --rank 0 --world-size {} --master-addr 127.0.0.1:{}"
      "; rc=$?; wait; exit $rc",
      TesseraBin(), args, n, port);
  return "(" + cmd + ")";
}

TEST(CommCommandsTest, WorkerJoinsWorldAndRunsBarrier) {
  if (!TESSERA_HAVE_GLOO) GTEST_SKIP() << "built without Gloo";
  auto r = RunCommand(World(3, "worker --backend gloo"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("rank 0 of 3"));
  EXPECT_THAT(r.out, HasSubstr("barrier ok"));
}

TEST(CommCommandsTest, WorkerAloneUsesSelf) {
  auto r = RunCommand(TesseraBin() + " worker");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("rank 0 of 1"));
}

TEST(CommCommandsTest, WorkerMissingRankFailsNamingIt) {
  auto r = RunCommand(fmt::format(
      "{} worker --rank 0 --world-size 2 --master-addr 127.0.0.1:{} "
      "--timeout-ms 300",
      TesseraBin(), FreePort()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("tessera worker: "));
  EXPECT_THAT(r.err, HasSubstr("rank(s) 1 of 2 did not arrive"));
}

TEST(CommCommandsTest, WorkerBadFlagExits2) {
  auto r = RunCommand(TesseraBin() + " worker --backend carrier-pigeon");
  EXPECT_EQ(r.exit_code, 2);
}

TEST(CommCommandsTest, BenchCommPrintsTable) {
  if (!TESSERA_HAVE_GLOO) GTEST_SKIP() << "built without Gloo";
  for (const char* op :
       {"allreduce", "allgather", "reducescatter", "alltoall"}) {
    auto r = RunCommand(
        World(2, fmt::format("bench comm --op {} --min-bytes 64 --max-bytes 4K "
                             "--iters 2 --warmup 1 --backend gloo",
                             op)));
    EXPECT_EQ(r.exit_code, 0) << op << ": " << r.err;
    EXPECT_THAT(r.out, HasSubstr("busbw(GB/s)")) << op;
    EXPECT_THAT(r.out, HasSubstr("4096")) << op;
  }
}

TEST(CommCommandsTest, BenchKvTransferPrintsBandwidthLine) {
  if (!TESSERA_HAVE_UCX) GTEST_SKIP() << "built without UCX";
  auto r = RunCommand(TesseraBin() +
                      " bench kv-transfer --block-bytes 4K --blocks 8 "
                      "--iters 5 --warmup 1 --tls tcp --no-perftest");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("kv-transfer: "));
  EXPECT_THAT(r.out, HasSubstr("us per transfer"));
  EXPECT_THAT(r.out, HasSubstr("set-up: "));
}

// Pipelined (--window) and staged (--staged: the bounce-buffer path of CUDA
// pools, on host memory) runs of the benchmark.
TEST(CommCommandsTest, BenchKvTransferWindowAndStaged) {
  if (!TESSERA_HAVE_UCX) GTEST_SKIP() << "built without UCX";
  auto r = RunCommand(TesseraBin() +
                      " bench kv-transfer --block-bytes 4K --blocks 8 "
                      "--scatter --iters 20 --warmup 2 --window 4 --staged "
                      "--tls tcp --no-perftest");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out,
              HasSubstr("8 put(s) of 4 KiB each, 4 transfers in flight"));
  EXPECT_THAT(r.out, HasSubstr("staged (bounce buffer) pool"));
  EXPECT_THAT(r.out, HasSubstr("set-up: "));
  EXPECT_THAT(r.out, HasSubstr("first transfer to the peer"));
}

// Receive-side staging (--recv-staged), alone and with a staged sender.
TEST(CommCommandsTest, BenchKvTransferRecvStaged) {
  if (!TESSERA_HAVE_UCX) GTEST_SKIP() << "built without UCX";
  for (const char* extra : {"", " --staged"}) {
    auto r = RunCommand(TesseraBin() +
                        " bench kv-transfer --block-bytes 4K --blocks 8 "
                        "--iters 20 --warmup 2 --window 4 --recv-staged "
                        "--tls tcp --no-perftest" +
                        extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("staged receiver (landing area)")) << extra;
    EXPECT_THAT(r.out, HasSubstr("landing grants: ")) << extra;
  }
}

}  // namespace
}  // namespace tessera
