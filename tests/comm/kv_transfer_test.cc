// KV-block transfers between two processes (forked from this test, which
// serves the rendezvous store and never touches UCX itself), once per
// transport named in UCX_TLS.
#include "comm/kv_transfer.h"

#include <signal.h>
#include <stdlib.h>

#include <cstring>
#include <thread>
#include <vector>

#include "base/random.h"
#include "comm/bootstrap.h"
#include "gtest/gtest.h"
#include "spawn.h"

namespace tessera::comm {
namespace {

using std::chrono::milliseconds;
constexpr int64_t kBlockBytes = 4096;
constexpr int64_t kBlocks = 64;

// Contents of block `b` of `rank`'s pool.
void FillBlock(int rank, int64_t b, char* dst) {
  SplitMix64 rng(static_cast<uint64_t>(rank) * 1000 + static_cast<uint64_t>(b));
  for (int64_t i = 0; i < kBlockBytes; i += 8) {
    const uint64_t v = rng.Next();
    std::memcpy(dst + i, &v, 8);
  }
}

// The block list of transfer `id`: random, non-contiguous, with some
// adjacent runs, distinct destinations.
std::vector<BlockCopy> BlockList(uint64_t id) {
  SplitMix64 rng(id * 77 + 1);
  std::vector<int64_t> dst(kBlocks);
  for (int64_t i = 0; i < kBlocks; ++i) dst[i] = i;
  for (int64_t i = kBlocks - 1; i > 0; --i) {
    std::swap(dst[i], dst[rng.Next() % static_cast<uint64_t>(i + 1)]);
  }
  std::vector<BlockCopy> list;
  const int64_t n = 1 + static_cast<int64_t>(rng.Next() % 16);
  for (int64_t i = 0; i < n; ++i) {
    list.push_back({static_cast<int64_t>(rng.Next() % kBlocks), dst[i]});
  }
  list.push_back({10, 30});  // An adjacent run (coalesced into one put).
  list.push_back({11, 31});
  list.push_back({12, 32});
  // Drop duplicates of 30..32 among the random destinations.
  std::vector<BlockCopy> unique;
  std::vector<bool> seen(kBlocks);
  for (auto it = list.rbegin(); it != list.rend(); ++it) {
    if (!seen[it->dst_block]) unique.push_back(*it);
    seen[it->dst_block] = true;
  }
  return unique;
}

struct Env {
  std::unique_ptr<Store> store;
  std::unique_ptr<KvTransferEngine> engine;
  std::vector<char> pool;
};

int StartRank(int port, int rank, Env* env,
              const KvTransferOptions& options = {}) {
  auto store = ConnectStore("127.0.0.1", port, std::chrono::seconds(5));
  if (!store.ok()) return 10;
  env->store = std::move(store).value();
  auto engine = KvTransferEngine::Create(rank, env->store.get(), options);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n",
                 std::string(engine.status().message()).c_str());
    return 11;
  }
  env->engine = std::move(engine).value();
  env->pool.assign(kBlockBytes * kBlocks, 0);
  if (rank == 0) {
    for (int64_t b = 0; b < kBlocks; ++b) {
      FillBlock(0, b, env->pool.data() + b * kBlockBytes);
    }
  }
  if (!env->engine->RegisterPool(env->pool.data(), kBlockBytes, kBlocks).ok()) {
    return 12;
  }
  return 0;
}

constexpr int kTransfers = 20;

int Receiver(int port) {
  Env env;
  if (int rc = StartRank(port, 1, &env)) return rc;
  std::vector<char> expect(kBlockBytes);
  for (int t = 0; t < kTransfers; ++t) {
    auto c = env.engine->WaitCompletion(std::chrono::seconds(10));
    if (!c.ok()) return 20;
    if (c->peer != 0 || c->request_id != static_cast<uint64_t>(100 + t)) {
      return 21;
    }
    for (const BlockCopy& b : BlockList(c->request_id)) {
      FillBlock(0, b.src_block, expect.data());
      if (std::memcmp(env.pool.data() + b.dst_block * kBlockBytes,
                      expect.data(), kBlockBytes) != 0) {
        std::fprintf(stderr, "block %ld -> %ld corrupt\n",
                     static_cast<long>(b.src_block),
                     static_cast<long>(b.dst_block));
        return 22;
      }
    }
    std::fill(env.pool.begin(), env.pool.end(), 0);
    // Tell the sender it may send the next one (control message).
    if (!env.engine->SendControl(0, "next", std::chrono::seconds(5)).ok()) {
      return 23;
    }
  }
  return 0;
}

// `options` lets the staged (bounce-buffer) path run the same checks.
int Sender(int port, const KvTransferOptions& options = {}) {
  Env env;
  if (int rc = StartRank(port, 0, &env, options)) return rc;
  for (int t = 0; t < kTransfers; ++t) {
    const uint64_t id = 100 + t;
    auto list = BlockList(id);
    absl::Status s =
        env.engine->Transfer(1, id, list, std::chrono::seconds(10));
    if (!s.ok()) {
      std::fprintf(stderr, "transfer: %s\n", std::string(s.message()).c_str());
      return 30;
    }
    auto m = env.engine->WaitControl(std::chrono::seconds(10));
    if (!m.ok() || m->payload != "next" || m->peer != 1) return 31;
  }
  // Bad block ids are rejected before anything moves.
  std::vector<BlockCopy> bad = {{0, kBlocks}};
  if (env.engine->Transfer(1, 999, bad, milliseconds(100)).code() !=
      absl::StatusCode::kInvalidArgument) {
    return 32;
  }
  if (options.force_staging) {
    // Every transfer went through the staging buffer, in several chunks
    // when it had more blocks than the buffer.
    const KvTransferStats stats = env.engine->Stats();
    if (stats.staged_chunks <= kTransfers) {
      std::fprintf(stderr, "staged chunks: %ld\n",
                   static_cast<long>(stats.staged_chunks));
      return 33;
    }
  }
  return 0;
}

// Pipelined transfers: kWindow transfers posted before any is waited for,
// each to its own destination blocks; the receiver checks every block once
// all completions arrived.
constexpr uint64_t kPipelined = 64;
constexpr uint64_t kWindow = 8;
constexpr int64_t kBlocksPerTransfer = kBlocks / 8;

std::vector<BlockCopy> PipelinedList(uint64_t t) {
  std::vector<BlockCopy> list;
  const int64_t first_dst =
      static_cast<int64_t>(t % kWindow) * kBlocksPerTransfer;
  SplitMix64 rng(t + 5);
  for (int64_t i = 0; i < kBlocksPerTransfer; ++i) {
    // Half the transfers coalesce (adjacent sources), half scatter.
    const int64_t src =
        t % 2 == 0 ? first_dst + i : static_cast<int64_t>(rng.Next() % kBlocks);
    list.push_back({src, first_dst + i});
  }
  return list;
}

int PipelinedReceiver(int port) {
  Env env;
  if (int rc = StartRank(port, 1, &env)) return rc;
  std::vector<char> expect(kBlockBytes);
  for (uint64_t round = 0; round < kPipelined / kWindow; ++round) {
    std::vector<bool> got(kWindow);
    for (uint64_t i = 0; i < kWindow; ++i) {
      auto c = env.engine->WaitCompletion(std::chrono::seconds(10));
      if (!c.ok()) return 70;
      const uint64_t t = c->request_id;
      if (t / kWindow != round || got[t % kWindow]) {
        return 71;
      }
      got[t % kWindow] = true;
    }
    for (uint64_t t = round * kWindow; t < (round + 1) * kWindow; ++t) {
      for (const BlockCopy& b : PipelinedList(t)) {
        FillBlock(0, b.src_block, expect.data());
        if (std::memcmp(env.pool.data() + b.dst_block * kBlockBytes,
                        expect.data(), kBlockBytes) != 0) {
          return 72;
        }
      }
    }
    std::fill(env.pool.begin(), env.pool.end(), 0);
    if (!env.engine->SendControl(0, "next", std::chrono::seconds(5)).ok()) {
      return 73;
    }
  }
  return 0;
}

int PipelinedSender(int port) {
  Env env;
  if (int rc = StartRank(port, 0, &env)) return rc;
  for (uint64_t round = 0; round < kPipelined / kWindow; ++round) {
    for (uint64_t t = round * kWindow; t < (round + 1) * kWindow; ++t) {
      if (!env.engine
               ->PostTransfer(1, t, PipelinedList(t), std::chrono::seconds(10))
               .ok()) {
        return 80;
      }
    }
    // A duplicate id in flight is rejected before anything moves.
    const uint64_t last = (round + 1) * kWindow - 1;
    if (env.engine
            ->PostTransfer(1, last, PipelinedList(last),
                           std::chrono::seconds(10))
            .code() != absl::StatusCode::kInvalidArgument) {
      return 81;
    }
    // Wait in reverse order: results do not depend on the order of waits.
    for (uint64_t t = (round + 1) * kWindow; t-- > round * kWindow;) {
      absl::Status s = env.engine->WaitTransfer(t);
      if (!s.ok()) {
        std::fprintf(stderr, "transfer %lu: %s\n",
                     static_cast<unsigned long>(t),
                     std::string(s.message()).c_str());
        return 82;
      }
    }
    if (env.engine->WaitTransfer(round * kWindow).code() !=
        absl::StatusCode::kNotFound) {
      return 83;  // Already waited for.
    }
    auto m = env.engine->WaitControl(std::chrono::seconds(10));
    if (!m.ok() || m->payload != "next") return 84;
  }
  // Set-up accounting: one cold transfer (endpoint + rkey), the rest warm.
  const KvTransferStats stats = env.engine->Stats();
  constexpr auto kN = static_cast<int64_t>(kPipelined);
  if (stats.transfers != kN || stats.cold_transfers != 1 ||
      stats.warm_transfers != kN - 1 || stats.connects != 1 ||
      stats.puts < kN) {
    std::fprintf(stderr,
                 "stats: %ld transfers, %ld cold, %ld warm, %ld "
                 "connects, %ld puts\n",
                 static_cast<long>(stats.transfers),
                 static_cast<long>(stats.cold_transfers),
                 static_cast<long>(stats.warm_transfers),
                 static_cast<long>(stats.connects),
                 static_cast<long>(stats.puts));
    return 85;
  }
  return 0;
}

class KvTransferTest : public ::testing::TestWithParam<const char*> {
 protected:
  // Children are forked while this process has no threads (a fork taken
  // while another thread holds an allocator lock deadlocks the child, e.g.
  // under ASan), so the store server starts only after the forks.
  void SetUp() override {
    ::setenv("UCX_TLS", GetParam(), 1);
    port_ = testing::FreePort();
  }
  void StartServer() {
    auto server = StoreServer::Start("127.0.0.1", port_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }
  void TearDown() override { ::unsetenv("UCX_TLS"); }
  int port_ = 0;
  std::unique_ptr<StoreServer> server_;
};

TEST_P(KvTransferTest, RandomNonContiguousBlocksArriveIntact) {
  const int port = port_;
  pid_t rx = testing::ForkChild([port] { return Receiver(port); });
  pid_t tx = testing::ForkChild([port] { return Sender(port); });
  StartServer();
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(30)), 0);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(30)), 0);
}

TEST_P(KvTransferTest, PipelinedTransfersArriveIntact) {
  const int port = port_;
  pid_t rx = testing::ForkChild([port] { return PipelinedReceiver(port); });
  pid_t tx = testing::ForkChild([port] { return PipelinedSender(port); });
  StartServer();
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(30)), 0);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(30)), 0);
}

// The staging path of CUDA pools without UCX CUDA support, with host memory
// standing in: a 3-block staging buffer splits runs across chunks.
TEST_P(KvTransferTest, StagedSenderDeliversIntact) {
  const int port = port_;
  pid_t rx = testing::ForkChild([port] { return Receiver(port); });
  pid_t tx = testing::ForkChild([port] {
    KvTransferOptions options;
    options.force_staging = true;
    options.staging_blocks = 3;
    return Sender(port, options);
  });
  StartServer();
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(30)), 0);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(30)), 0);
}

// A staged pool cannot receive (no receive-side staging): senders get
// Unimplemented, not corrupt data.
TEST_P(KvTransferTest, StagedReceiverIsRejected) {
  const int port = port_;
  pid_t rx = testing::ForkChild([port] {
    Env env;
    KvTransferOptions options;
    options.force_staging = true;
    if (int rc = StartRank(port, 1, &env, options)) return rc;
    auto m = env.engine->WaitControl(std::chrono::seconds(10));
    return m.ok() ? 0 : 90;
  });
  pid_t tx = testing::ForkChild([port] {
    Env env;
    if (int rc = StartRank(port, 0, &env)) return rc;
    std::vector<BlockCopy> one = {{0, 0}};
    absl::Status s = env.engine->Transfer(1, 1, one, std::chrono::seconds(5));
    if (s.code() != absl::StatusCode::kUnimplemented) return 91;
    return env.engine->SendControl(1, "bye", std::chrono::seconds(5)).ok() ? 0
                                                                           : 92;
  });
  StartServer();
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(30)), 0);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(30)), 0);
}

// The sender transfers in a loop; the test SIGKILLs the receiver. The next
// transfer (or the one in flight) must fail with Unavailable within its
// timeout, and the sender must exit cleanly (no hang at shutdown).
TEST_P(KvTransferTest, KilledReceiverGivesUnavailableWithinTimeout) {
  const int port = port_;
  pid_t rx = testing::ForkChild([port] {
    Env env;
    if (int rc = StartRank(port, 1, &env)) return rc;
    while (true) {
      (void)env.engine->WaitCompletion(std::chrono::seconds(1));
    }
  });
  pid_t tx = testing::ForkChild([port] {
    Env env;
    if (int rc = StartRank(port, 0, &env)) return rc;
    std::vector<BlockCopy> all;
    for (int64_t b = 0; b < kBlocks; ++b) all.push_back({b, b});
    constexpr auto kTimeout = milliseconds(1500);
    for (uint64_t id = 1;; ++id) {
      if (id == 3) (void)env.store->Set("started", "");
      const auto start = std::chrono::steady_clock::now();
      absl::Status s = env.engine->Transfer(1, id, all, kTimeout);
      const auto took = std::chrono::steady_clock::now() - start;
      if (s.ok()) continue;
      std::fprintf(stderr, "after kill: %s\n",
                   std::string(s.message()).c_str());
      if (s.code() != absl::StatusCode::kUnavailable) return 40;
      if (took > kTimeout + milliseconds(500)) return 41;
      return 0;
    }
  });
  StartServer();
  auto client = ConnectStore("127.0.0.1", port, std::chrono::seconds(5));
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Get("started", std::chrono::seconds(10)).ok());
  std::this_thread::sleep_for(milliseconds(50));
  ::kill(rx, SIGKILL);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(5)), 128 + SIGKILL);
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(10)), 0);
}

// The same with a window of transfers in flight: every posted transfer
// resolves (OK before the kill, Unavailable after) within its timeout and
// the sender exits cleanly (no request or slot left behind).
TEST_P(KvTransferTest, KilledReceiverFailsEveryPipelinedTransfer) {
  const int port = port_;
  pid_t rx = testing::ForkChild([port] {
    Env env;
    if (int rc = StartRank(port, 1, &env)) return rc;
    while (true) {
      (void)env.engine->WaitCompletion(std::chrono::seconds(1));
    }
  });
  pid_t tx = testing::ForkChild([port] {
    Env env;
    if (int rc = StartRank(port, 0, &env)) return rc;
    std::vector<BlockCopy> all;
    for (int64_t b = 0; b < kBlocks; ++b) all.push_back({b, b});
    constexpr auto kTimeout = milliseconds(1500);
    constexpr uint64_t kDepth = 8;
    for (uint64_t id = 1;; ++id) {
      if (id == 20) (void)env.store->Set("started", "");
      if (!env.engine->PostTransfer(1, id, all, kTimeout).ok()) return 43;
      if (id <= kDepth) continue;
      const auto start = std::chrono::steady_clock::now();
      absl::Status s = env.engine->WaitTransfer(id - kDepth);
      if (s.ok()) continue;
      if (s.code() != absl::StatusCode::kUnavailable) return 40;
      // The rest fail too, each within its own timeout.
      for (uint64_t rest = id - kDepth + 1; rest <= id; ++rest) {
        absl::Status r = env.engine->WaitTransfer(rest);
        if (r.code() != absl::StatusCode::kUnavailable) return 42;
      }
      if (std::chrono::steady_clock::now() - start >
          kTimeout + milliseconds(500)) {
        return 41;
      }
      return 0;
    }
  });
  StartServer();
  auto client = ConnectStore("127.0.0.1", port, std::chrono::seconds(5));
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Get("started", std::chrono::seconds(10)).ok());
  std::this_thread::sleep_for(milliseconds(50));
  ::kill(rx, SIGKILL);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(5)), 128 + SIGKILL);
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(10)), 0);
}

// A receiver that stops responding (SIGSTOP): Cancel makes the transfer
// return Cancelled at once instead of waiting for the timeout.
TEST_P(KvTransferTest, CancelStopsAWaitingTransfer) {
  const int port = port_;
  pid_t rx = testing::ForkChild([port] {
    Env env;
    if (int rc = StartRank(port, 1, &env)) return rc;
    (void)env.store->Set("rx-ready", "");
    while (true) std::this_thread::sleep_for(std::chrono::seconds(1));
  });
  pid_t tx = testing::ForkChild([port] {
    Env env;
    if (int rc = StartRank(port, 0, &env)) return rc;
    if (!env.store->Get("rx-stopped", std::chrono::seconds(10)).ok()) {
      return 52;
    }
    std::vector<BlockCopy> one = {{0, 0}};
    std::thread canceller([&] {
      std::this_thread::sleep_for(milliseconds(300));
      (void)env.engine->Cancel(7);
    });
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = env.engine->Transfer(1, 7, one, std::chrono::seconds(20));
    canceller.join();
    if (s.code() != absl::StatusCode::kCancelled) return 50;
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(5)) {
      return 51;
    }
    return 0;
  });
  StartServer();
  auto client = ConnectStore("127.0.0.1", port, std::chrono::seconds(5));
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Get("rx-ready", std::chrono::seconds(10)).ok());
  ::kill(rx, SIGSTOP);
  ASSERT_TRUE((*client)->Set("rx-stopped", "").ok());
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(15)), 0);
  ::kill(rx, SIGKILL);
  testing::WaitChild(rx, std::chrono::seconds(5));
}

// A peer that never started: Unavailable within the timeout, naming it.
TEST_P(KvTransferTest, MissingPeerIsUnavailableWithinTimeout) {
  const int port = port_;
  pid_t tx = testing::ForkChild([port] {
    Env env;
    if (int rc = StartRank(port, 0, &env)) return rc;
    std::vector<BlockCopy> one = {{0, 0}};
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = env.engine->Transfer(5, 1, one, milliseconds(300));
    const auto took = std::chrono::steady_clock::now() - start;
    if (s.code() != absl::StatusCode::kUnavailable) return 60;
    if (std::string(s.message()).find("rank 5") == std::string::npos) {
      return 61;
    }
    if (took > milliseconds(1500)) return 62;
    return 0;
  });
  StartServer();
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(10)), 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, KvTransferTest,
                         ::testing::Values("shm", "tcp"), [](const auto& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace tessera::comm
