// KV-block transfers between processes (forked from this test, which serves
// the rendezvous store and never touches UCX itself), once per transport
// named in UCX_TLS. Rank 1 receives; ranks 0 and 2 send.
#include "comm/kv_transfer.h"

#include <signal.h>
#include <stdlib.h>

#include <cstring>
#include <functional>
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

// The options of a staged pool (host memory standing in for a CUDA pool
// without UCX CUDA support) with `slots` landing slots and `staging`
// staging blocks: small, so transfers stream through them in many chunks.
KvTransferOptions Staged(int64_t slots, int64_t staging = 3) {
  KvTransferOptions options;
  options.force_staging = true;
  options.landing_blocks = slots;
  options.staging_blocks = staging;
  return options;
}

// Connects to the store, creates the engine and registers a pool; senders'
// pools hold FillBlock(rank, b).
int StartRank(int port, int rank, Env* env,
              const KvTransferOptions& options = {}, int64_t blocks = kBlocks) {
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
  env->pool.assign(kBlockBytes * blocks, 0);
  if (rank != 1) {
    for (int64_t b = 0; b < blocks; ++b) {
      FillBlock(rank, b, env->pool.data() + b * kBlockBytes);
    }
  }
  if (!env->engine->RegisterPool(env->pool.data(), kBlockBytes, blocks).ok()) {
    return 12;
  }
  return 0;
}

constexpr int kTransfers = 20;

// Receives kTransfers transfers from `sender` (completions from other ranks
// are skipped) and checks every block of each. `expect_revoked`: some
// landing grants must have been revoked (or released) on the way.
int Receiver(int port, const KvTransferOptions& options = {}, int sender = 0,
             bool expect_revoked = false) {
  Env env;
  if (int rc = StartRank(port, 1, &env, options)) return rc;
  std::vector<char> expect(kBlockBytes);
  for (int t = 0; t < kTransfers; ++t) {
    auto c = env.engine->WaitCompletion(std::chrono::seconds(20));
    if (!c.ok()) return 20;
    if (c->peer != sender) {
      --t;
      continue;
    }
    if (c->request_id != static_cast<uint64_t>(100 + t)) return 21;
    for (const BlockCopy& b : BlockList(c->request_id)) {
      FillBlock(sender, b.src_block, expect.data());
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
    if (!env.engine->SendControl(sender, "next", std::chrono::seconds(5))
             .ok()) {
      return 23;
    }
  }
  if (options.force_staging) {
    // Every transfer streamed through the landing area, in several chunks
    // (more blocks than a grant).
    const KvTransferStats stats = env.engine->Stats();
    std::fprintf(stderr, "receiver: %ld chunks landed, %ld grants revoked\n",
                 static_cast<long>(stats.landed_chunks),
                 static_cast<long>(stats.revoked_grants));
    if (stats.landed_chunks <= kTransfers) return 24;
    if (expect_revoked && stats.revoked_grants == 0) return 25;
  }
  return 0;
}

// `options` lets the staged (bounce-buffer) path run the same checks.
// `ready_key`: wait for it in the store before sending.
int Sender(int port, const KvTransferOptions& options = {}, int rank = 0,
           const char* ready_key = nullptr) {
  Env env;
  if (int rc = StartRank(port, rank, &env, options)) return rc;
  if (ready_key != nullptr &&
      !env.store->Get(ready_key, std::chrono::seconds(20)).ok()) {
    return 34;
  }
  for (int t = 0; t < kTransfers; ++t) {
    const uint64_t id = 100 + t;
    auto list = BlockList(id);
    absl::Status s =
        env.engine->Transfer(1, id, list, std::chrono::seconds(10));
    if (!s.ok()) {
      std::fprintf(stderr, "transfer: %s\n", std::string(s.message()).c_str());
      return 30;
    }
    auto m = env.engine->WaitControl(std::chrono::seconds(20));
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

// Two senders (ranks 0 and 2) into one receiver at once: per round each
// posts kTwoWindow transfers of kTwoBlocks scattered blocks into its own
// half of the receiver's pool, all in flight together; the receiver checks
// every block once all 2 x kTwoWindow completions arrived.
constexpr uint64_t kTwoRounds = 6;
constexpr uint64_t kTwoWindow = 4;
constexpr int64_t kTwoBlocks = kBlocks / 2 / kTwoWindow;

std::vector<BlockCopy> TwoSenderList(int rank, uint64_t t) {
  const int64_t first_dst = (rank == 0 ? 0 : kBlocks / 2) +
                            static_cast<int64_t>(t % kTwoWindow) * kTwoBlocks;
  SplitMix64 rng(t * 31 + static_cast<uint64_t>(rank));
  std::vector<BlockCopy> list;
  for (int64_t i = 0; i < kTwoBlocks; ++i) {
    // Every other transfer coalesces; the rest scatter.
    const int64_t src = t % 2 == 0 ? first_dst % kBlocks + i
                                   : static_cast<int64_t>(rng.Next() % kBlocks);
    list.push_back({src, first_dst + i});
  }
  return list;
}

int TwoSenderReceiver(int port, const KvTransferOptions& options) {
  Env env;
  if (int rc = StartRank(port, 1, &env, options)) return rc;
  std::vector<char> expect(kBlockBytes);
  for (uint64_t round = 0; round < kTwoRounds; ++round) {
    for (uint64_t i = 0; i < 2 * kTwoWindow; ++i) {
      auto c = env.engine->WaitCompletion(std::chrono::seconds(20));
      if (!c.ok()) return 100;
      if (c->request_id / kTwoWindow != round) return 101;
    }
    for (int rank : {0, 2}) {
      for (uint64_t t = round * kTwoWindow; t < (round + 1) * kTwoWindow; ++t) {
        for (const BlockCopy& b : TwoSenderList(rank, t)) {
          FillBlock(rank, b.src_block, expect.data());
          if (std::memcmp(env.pool.data() + b.dst_block * kBlockBytes,
                          expect.data(), kBlockBytes) != 0) {
            std::fprintf(stderr, "rank %d transfer %lu: block %ld corrupt\n",
                         rank, static_cast<unsigned long>(t),
                         static_cast<long>(b.dst_block));
            return 102;
          }
        }
      }
    }
    std::fill(env.pool.begin(), env.pool.end(), 0);
    for (int rank : {0, 2}) {
      if (!env.engine->SendControl(rank, "next", std::chrono::seconds(5))
               .ok()) {
        return 103;
      }
    }
  }
  return 0;
}

int TwoSenderSender(int port, int rank, const KvTransferOptions& options) {
  Env env;
  if (int rc = StartRank(port, rank, &env, options)) return rc;
  for (uint64_t round = 0; round < kTwoRounds; ++round) {
    for (uint64_t t = round * kTwoWindow; t < (round + 1) * kTwoWindow; ++t) {
      if (!env.engine
               ->PostTransfer(1, t, TwoSenderList(rank, t),
                              std::chrono::seconds(20))
               .ok()) {
        return 110;
      }
    }
    for (uint64_t t = round * kTwoWindow; t < (round + 1) * kTwoWindow; ++t) {
      absl::Status s = env.engine->WaitTransfer(t);
      if (!s.ok()) {
        std::fprintf(stderr, "rank %d transfer %lu: %s\n", rank,
                     static_cast<unsigned long>(t),
                     std::string(s.message()).c_str());
        return 111;
      }
    }
    auto m = env.engine->WaitControl(std::chrono::seconds(20));
    if (!m.ok() || m->payload != "next") return 112;
  }
  return 0;
}

// Whether `pid` stopped (state T in /proc) within `timeout`.
bool WaitStopped(pid_t pid, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  while (std::chrono::steady_clock::now() < deadline) {
    if (FILE* f = std::fopen(path.c_str(), "r")) {
      char state = 0;
      const int n = std::fscanf(f, "%*d (%*[^)]) %c", &state);
      std::fclose(f);
      if (n == 1 && state == 'T') return true;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  return false;
}

class KvTransferTest : public ::testing::TestWithParam<const char*> {
 protected:
  // Children are forked while this process has no threads (a fork taken
  // while another thread holds an allocator lock deadlocks the child, e.g.
  // under ASan), so the store server starts only after the forks: call
  // Fork for every rank, then StartServer.
  void SetUp() override {
    ::setenv("UCX_TLS", GetParam(), 1);
    port_ = testing::FreePort();
  }
  void TearDown() override { ::unsetenv("UCX_TLS"); }

  // Forks a rank running `fn(port)`.
  pid_t Fork(const std::function<int(int)>& fn) {
    const int port = port_;
    return testing::ForkChild([fn, port] { return fn(port); });
  }
  void StartServer() {
    auto server = StoreServer::Start("127.0.0.1", port_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }
  // A store client for the test itself (to synchronize with the ranks).
  std::unique_ptr<Store> Client() {
    auto client = ConnectStore("127.0.0.1", port_, std::chrono::seconds(5));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(client).value() : nullptr;
  }
  // Runs every rank to completion; each must exit 0.
  void RunRanks(const std::vector<std::function<int(int)>>& ranks,
                std::chrono::seconds timeout = std::chrono::seconds(60)) {
    std::vector<pid_t> pids;
    for (const auto& fn : ranks) pids.push_back(Fork(fn));
    StartServer();
    for (size_t i = 0; i < pids.size(); ++i) {
      EXPECT_EQ(testing::WaitChild(pids[i], timeout), 0) << "rank fn " << i;
    }
  }

  // A sender transfers in a loop into `rx_options`' pool; the test SIGKILLs
  // the receiver. With `depth` == 1, each transfer is waited for at once,
  // else `depth` are kept in flight. Every transfer must resolve (OK before
  // the kill, Unavailable after) within its timeout, and the sender must
  // exit cleanly (no request or slot left behind, no hang at shutdown).
  void KillReceiverMidStream(const KvTransferOptions& rx_options,
                             uint64_t depth);
  // A receiver that stops responding (SIGSTOP): Cancel makes the transfer
  // return Cancelled at once instead of waiting for the timeout.
  void CancelTransferToStoppedReceiver(const KvTransferOptions& rx_options);

  int port_ = 0;
  std::unique_ptr<StoreServer> server_;
};

TEST_P(KvTransferTest, RandomNonContiguousBlocksArriveIntact) {
  RunRanks({[](int port) { return Receiver(port); },
            [](int port) { return Sender(port); }});
}

TEST_P(KvTransferTest, PipelinedTransfersArriveIntact) {
  RunRanks({[](int port) { return PipelinedReceiver(port); },
            [](int port) { return PipelinedSender(port); }});
}

// The staging path of CUDA pools without UCX CUDA support, with host memory
// standing in: a 3-block staging buffer splits runs across chunks.
TEST_P(KvTransferTest, StagedSenderDeliversIntact) {
  RunRanks({[](int port) { return Receiver(port); },
            [](int port) { return Sender(port, Staged(8)); }});
}

// Receive-side staging: the receiver's pool is staged, so blocks land in a
// 5-slot landing area (grants of at most 2 slots: every transfer streams
// in several chunks) and are copied into the pool before the completion.
TEST_P(KvTransferTest, StagedReceiverGetsBlocksIntact) {
  RunRanks({[](int port) { return Receiver(port, Staged(5)); },
            [](int port) { return Sender(port); }});
}

// Both pools staged: staging buffer → landing area → pool, with a landing
// area (4 slots) smaller than the sender's largest grant would be.
TEST_P(KvTransferTest, BothStagedDeliverIntact) {
  RunRanks({[](int port) { return Receiver(port, Staged(4)); },
            [](int port) { return Sender(port, Staged(8, 3)); }});
}

// Two senders at once into a staged receiver whose landing area (6 slots)
// is far smaller than what is in flight (2 x 4 transfers x 8 blocks): the
// slots are shared round robin and no transfer overwrites another's.
TEST_P(KvTransferTest, TwoSendersIntoStagedReceiver) {
  RunRanks({[](int port) { return TwoSenderReceiver(port, Staged(6)); },
            [](int port) { return TwoSenderSender(port, 0, {}); },
            [](int port) { return TwoSenderSender(port, 2, Staged(8, 3)); }});
}

// The same two senders into a directly registered pool.
TEST_P(KvTransferTest, TwoSendersIntoDirectReceiver) {
  RunRanks({[](int port) { return TwoSenderReceiver(port, {}); },
            [](int port) { return TwoSenderSender(port, 0, {}); },
            [](int port) { return TwoSenderSender(port, 2, {}); }});
}

// A sender killed while it holds landing slots: the receiver revokes its
// grants after its timeout (plus a quarantine) and a second sender, which
// needs every slot, still gets all its transfers through intact.
TEST_P(KvTransferTest, KilledSenderLandingSlotsAreReclaimed) {
  pid_t rx = Fork([](int port) {
    return Receiver(port, Staged(4), 2, /*expect_revoked=*/true);
  });
  pid_t victim = Fork([](int port) {
    // 8192 blocks (into the receiver's 64, each 128 times) through 2-slot
    // grants: it holds slots for a long while. It freezes as soon as it
    // holds some; the test then kills it.
    constexpr int64_t kMany = 8192;
    Env env;
    if (int rc = StartRank(port, 0, &env, {}, kMany)) return rc;
    std::vector<BlockCopy> all;
    for (int64_t b = 0; b < kMany; ++b) all.push_back({b, b % kBlocks});
    (void)env.engine->PostTransfer(1, 1, all, milliseconds(400));
    while (env.engine->Stats().grants == 0) {
    }
    ::raise(SIGSTOP);
    return 0;
  });
  pid_t tx = Fork([](int port) { return Sender(port, {}, 2, "victim-dead"); });
  StartServer();
  auto client = Client();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(WaitStopped(victim, std::chrono::seconds(20)));
  ::kill(victim, SIGKILL);
  EXPECT_EQ(testing::WaitChild(victim, std::chrono::seconds(5)), 128 + SIGKILL);
  ASSERT_TRUE(client->Set("victim-dead", "").ok());
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(60)), 0);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(60)), 0);
}

void KvTransferTest::KillReceiverMidStream(const KvTransferOptions& rx_options,
                                           uint64_t depth) {
  pid_t rx = Fork([rx_options](int port) {
    Env env;
    if (int rc = StartRank(port, 1, &env, rx_options)) return rc;
    while (true) {
      (void)env.engine->WaitCompletion(std::chrono::seconds(1));
    }
  });
  pid_t tx = Fork([depth](int port) {
    Env env;
    if (int rc = StartRank(port, 0, &env)) return rc;
    std::vector<BlockCopy> all;
    for (int64_t b = 0; b < kBlocks; ++b) all.push_back({b, b});
    constexpr auto kTimeout = milliseconds(1500);
    for (uint64_t id = 1;; ++id) {
      if (id == 2 * depth + 2) (void)env.store->Set("started", "");
      if (!env.engine->PostTransfer(1, id, all, kTimeout).ok()) return 43;
      if (id < depth) continue;
      const auto start = std::chrono::steady_clock::now();
      absl::Status s = env.engine->WaitTransfer(id + 1 - depth);
      if (s.ok()) continue;
      std::fprintf(stderr, "after kill: %s\n",
                   std::string(s.message()).c_str());
      if (s.code() != absl::StatusCode::kUnavailable) return 40;
      // The rest fail too, each within its own timeout.
      for (uint64_t rest = id + 2 - depth; rest <= id; ++rest) {
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
  auto client = Client();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Get("started", std::chrono::seconds(20)).ok());
  std::this_thread::sleep_for(milliseconds(50));
  ::kill(rx, SIGKILL);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(5)), 128 + SIGKILL);
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(10)), 0);
}

TEST_P(KvTransferTest, KilledReceiverGivesUnavailableWithinTimeout) {
  KillReceiverMidStream({}, 1);
}

TEST_P(KvTransferTest, KilledReceiverFailsEveryPipelinedTransfer) {
  KillReceiverMidStream({}, 8);
}

TEST_P(KvTransferTest, KilledStagedReceiverFailsEveryPipelinedTransfer) {
  KillReceiverMidStream(Staged(16), 4);
}

void KvTransferTest::CancelTransferToStoppedReceiver(
    const KvTransferOptions& rx_options) {
  pid_t rx = Fork([rx_options](int port) {
    Env env;
    if (int rc = StartRank(port, 1, &env, rx_options)) return rc;
    (void)env.store->Set("rx-ready", "");
    while (true) std::this_thread::sleep_for(std::chrono::seconds(1));
  });
  pid_t tx = Fork([](int port) {
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
  auto client = Client();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Get("rx-ready", std::chrono::seconds(10)).ok());
  ::kill(rx, SIGSTOP);
  ASSERT_TRUE(client->Set("rx-stopped", "").ok());
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(15)), 0);
  ::kill(rx, SIGKILL);
  testing::WaitChild(rx, std::chrono::seconds(5));
}

TEST_P(KvTransferTest, CancelStopsAWaitingTransfer) {
  CancelTransferToStoppedReceiver({});
}

TEST_P(KvTransferTest, CancelStopsATransferToAStagedReceiver) {
  CancelTransferToStoppedReceiver(Staged(4));
}

// A staged transfer the sender cancels while the receiver is alive: the
// sender releases its grants at once, so the next transfers (which need
// every landing slot) go through without waiting for a revocation.
TEST_P(KvTransferTest, CancelledStagedTransferReleasesItsSlots) {
  pid_t rx = Fork([](int port) {
    return Receiver(port, Staged(4), 0, /*expect_revoked=*/true);
  });
  pid_t tx = Fork([](int port) {
    // Cancelled once its first grant arrived (it needs 4096 of 2 slots).
    constexpr int64_t kMany = 8192;
    Env env;
    if (int rc = StartRank(port, 0, &env, {}, kMany)) return rc;
    std::vector<BlockCopy> all;
    for (int64_t b = 0; b < kMany; ++b) all.push_back({b, b % kBlocks});
    if (!env.engine->PostTransfer(1, 1, all, std::chrono::seconds(30)).ok()) {
      return 120;
    }
    const auto posted = std::chrono::steady_clock::now();
    while (env.engine->Stats().grants == 0) {
      if (std::chrono::steady_clock::now() - posted > std::chrono::seconds(10))
        return 125;
    }
    (void)env.engine->Cancel(1);
    if (env.engine->WaitTransfer(1).code() != absl::StatusCode::kCancelled) {
      return 121;
    }
    // Receiver() checks transfers 100.. (and skips no completion of ours:
    // the cancelled one is never announced to it).
    const auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < kTransfers; ++t) {
      const uint64_t id = 100 + t;
      absl::Status s =
          env.engine->Transfer(1, id, BlockList(id), std::chrono::seconds(20));
      if (!s.ok()) return 122;
      auto m = env.engine->WaitControl(std::chrono::seconds(20));
      if (!m.ok() || m->payload != "next") return 123;
    }
    // Far below the 30 s a revocation of the cancelled grants would take.
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(20)) {
      return 124;
    }
    return 0;
  });
  StartServer();
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(60)), 0);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(60)), 0);
}

// A peer that never started: Unavailable within the timeout, naming it.
TEST_P(KvTransferTest, MissingPeerIsUnavailableWithinTimeout) {
  RunRanks({[](int port) {
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
  }});
}

INSTANTIATE_TEST_SUITE_P(Transports, KvTransferTest,
                         ::testing::Values("shm", "tcp"), [](const auto& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace tessera::comm
