// KV-block transfers between two processes whose pools are CUDA device
// memory (cudaMalloc), label gpu. The test forks both ranks itself (no
// mpirun) and serves the rendezvous store. Pools are registered directly when
// UCX supports CUDA memory, otherwise staged (device → staging buffer → the
// receiver's landing area → device); the `Staged` variant forces staging on
// both sides either way. Skipped without a CUDA device. Prints the bandwidth
// of a windowed run of 64-block transfers.
//
// CUDA is initialized only in the children: a process forked after CUDA was
// initialized cannot use it.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "base/random.h"
#include "comm/bootstrap.h"
#include "comm/kv_transfer.h"
#include "gtest/gtest.h"
#include "spawn.h"

namespace tessera::comm {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int64_t kBlockBytes = 64 * 1024;
constexpr int64_t kBlocks = 256;  // 16 MiB per pool.
constexpr int kRounds = 12;
constexpr uint64_t kWindow = 4;
constexpr int64_t kMaxPerTransfer = kBlocks / kWindow;  // Disjoint targets.
// Bandwidth phase: 64-block transfers, this many in flight, for ~1 s.
constexpr int64_t kBenchBlocks = 64;
constexpr uint64_t kBenchWindow = 8;

// Contents of block `b` of the sender's pool.
void FillBlock(int64_t b, char* dst) {
  SplitMix64 rng(static_cast<uint64_t>(b) * 7919 + 11);
  for (int64_t i = 0; i < kBlockBytes; i += 8) {
    const uint64_t v = rng.Next();
    std::memcpy(dst + i, &v, 8);
  }
}

// Transfer `t` of round `round`: a random, non-contiguous list (with some
// adjacent runs) into its own quarter of the receiver's pool.
std::vector<BlockCopy> BlockList(int round, uint64_t t) {
  SplitMix64 rng(static_cast<uint64_t>(round) * 1000 + t + 1);
  const int64_t first_dst = static_cast<int64_t>(t) * kMaxPerTransfer;
  const int64_t n = 1 + static_cast<int64_t>(rng.Next() % kMaxPerTransfer);
  std::vector<BlockCopy> list;
  for (int64_t i = 0; i < n; ++i) {
    // Every third block continues the previous source run.
    const int64_t src = (i % 3 != 0 && !list.empty())
                            ? (list.back().src_block + 1) % kBlocks
                            : static_cast<int64_t>(rng.Next() % kBlocks);
    list.push_back({src, first_dst + i});
  }
  return list;
}

std::string CudaError(cudaError_t e) { return cudaGetErrorString(e); }

// One rank: store, engine, a cudaMalloc'ed pool.
struct Rank {
  std::unique_ptr<Store> store;
  std::unique_ptr<KvTransferEngine> engine;
  char* pool = nullptr;
  ~Rank() {
    engine.reset();  // Deregisters before the memory goes.
    if (pool != nullptr) cudaFree(pool);
  }
};

int StartRank(int port, int rank, bool force_staging, Rank* r) {
  if (cudaSetDevice(0) != cudaSuccess) return 10;
  auto store = ConnectStore("127.0.0.1", port, std::chrono::seconds(10));
  if (!store.ok()) return 11;
  r->store = std::move(store).value();
  KvTransferOptions options;
  options.force_staging = force_staging;
  options.staging_blocks = 16;
  options.landing_blocks = 48;  // Smaller than one transfer: it streams.
  auto engine = KvTransferEngine::Create(rank, r->store.get(), options);
  if (!engine.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank,
                 std::string(engine.status().message()).c_str());
    return 12;
  }
  r->engine = std::move(engine).value();
  cudaError_t e = cudaMalloc(&r->pool, kBlockBytes * kBlocks);
  if (e != cudaSuccess) {
    std::fprintf(stderr, "cudaMalloc: %s\n", CudaError(e).c_str());
    return 13;
  }
  std::vector<char> host(kBlockBytes * kBlocks, 0);
  if (rank == 0) {
    for (int64_t b = 0; b < kBlocks; ++b) {
      FillBlock(b, host.data() + b * kBlockBytes);
    }
  }
  if (cudaMemcpy(r->pool, host.data(), host.size(), cudaMemcpyHostToDevice) !=
      cudaSuccess) {
    return 14;
  }
  absl::Status s =
      r->engine->RegisterPool(r->pool, kBlockBytes, kBlocks, PoolMemory::kCuda);
  if (!s.ok()) {
    std::fprintf(stderr, "rank %d: RegisterPool: %s\n", rank,
                 std::string(s.message()).c_str());
    return 15;
  }
  if (rank == 0) {
    std::fprintf(stderr, "UCX CUDA support: %s; pools %s\n",
                 r->engine->SupportsCudaMemory() ? "yes" : "no",
                 force_staging || !r->engine->SupportsCudaMemory()
                     ? "staged (host staging buffer + landing area)"
                     : "registered directly");
  }
  return 0;
}

int Receiver(int port, bool force_staging) {
  Rank r;
  if (int rc = StartRank(port, 1, force_staging, &r)) return rc;
  std::vector<char> pool(kBlockBytes * kBlocks);
  std::vector<char> expect(kBlockBytes);
  for (int round = 0; round < kRounds; ++round) {
    for (uint64_t i = 0; i < kWindow; ++i) {
      auto c = r.engine->WaitCompletion(std::chrono::seconds(30));
      if (!c.ok()) return 20;
      if (c->peer != 0 ||
          c->request_id / kWindow != static_cast<uint64_t>(round)) {
        return 21;
      }
    }
    // The completion means the blocks are in device memory: read it back.
    if (cudaMemcpy(pool.data(), r.pool, pool.size(), cudaMemcpyDeviceToHost) !=
        cudaSuccess) {
      return 22;
    }
    for (uint64_t t = 0; t < kWindow; ++t) {
      for (const BlockCopy& b : BlockList(round, t)) {
        FillBlock(b.src_block, expect.data());
        if (std::memcmp(pool.data() + b.dst_block * kBlockBytes, expect.data(),
                        kBlockBytes) != 0) {
          std::fprintf(stderr, "round %d: block %ld -> %ld corrupt\n", round,
                       static_cast<long>(b.src_block),
                       static_cast<long>(b.dst_block));
          return 23;
        }
      }
    }
    if (cudaMemset(r.pool, 0, pool.size()) != cudaSuccess) return 24;
    if (!r.engine->SendControl(0, "next", std::chrono::seconds(10)).ok()) {
      return 25;
    }
  }
  // Bandwidth phase: acknowledge until told to stop.
  while (true) {
    auto m = r.engine->WaitControl(std::chrono::seconds(60));
    if (!m.ok()) return 26;
    while (r.engine->WaitCompletion(milliseconds(0)).ok()) {
    }
    if (m->payload == "stop") return 0;
  }
}

int Sender(int port, bool force_staging) {
  Rank r;
  if (int rc = StartRank(port, 0, force_staging, &r)) return rc;
  for (int round = 0; round < kRounds; ++round) {
    for (uint64_t t = 0; t < kWindow; ++t) {
      absl::Status s =
          r.engine->PostTransfer(1, round * kWindow + t, BlockList(round, t),
                                 std::chrono::seconds(30));
      if (!s.ok()) return 30;
    }
    for (uint64_t t = 0; t < kWindow; ++t) {
      absl::Status s = r.engine->WaitTransfer(round * kWindow + t);
      if (!s.ok()) {
        std::fprintf(stderr, "transfer: %s\n",
                     std::string(s.message()).c_str());
        return 31;
      }
    }
    auto m = r.engine->WaitControl(std::chrono::seconds(30));
    if (!m.ok() || m->payload != "next") return 32;
  }
  // Bandwidth: 64-block transfers (adjacent runs: few large puts), a window
  // of kBenchWindow, for about a second.
  std::vector<BlockCopy> list;
  for (int64_t b = 0; b < kBenchBlocks; ++b) list.push_back({b, b});
  const uint64_t first = kRounds * kWindow;
  const auto start = Clock::now();
  uint64_t posted = 0;
  while (posted < 64 || Clock::now() - start < std::chrono::seconds(1)) {
    if (posted >= kBenchWindow &&
        !r.engine->WaitTransfer(first + posted - kBenchWindow).ok()) {
      return 33;
    }
    if (!r.engine
             ->PostTransfer(1, first + posted, list, std::chrono::seconds(30))
             .ok()) {
      return 34;
    }
    ++posted;
  }
  for (uint64_t i = posted - kBenchWindow; i < posted; ++i) {
    if (!r.engine->WaitTransfer(first + i).ok()) return 35;
  }
  const double secs =
      std::chrono::duration<double>(Clock::now() - start).count();
  const double bytes = static_cast<double>(posted) * kBenchBlocks * kBlockBytes;
  const KvTransferStats stats = r.engine->Stats();
  std::printf(
      "kv_transfer_cuda (%s): %.2f GB/s device to device, %.1f us per "
      "transfer of %ld x %ld KiB, %lu in flight; %ld puts, %ld staged "
      "chunks, %ld landing grants\n",
      force_staging ? "forced staging" : "default", bytes / secs / 1e9,
      secs * 1e6 / static_cast<double>(posted), static_cast<long>(kBenchBlocks),
      static_cast<long>(kBlockBytes / 1024),
      static_cast<unsigned long>(kBenchWindow), static_cast<long>(stats.puts),
      static_cast<long>(stats.staged_chunks), static_cast<long>(stats.grants));
  std::fflush(stdout);
  return r.engine->SendControl(1, "stop", std::chrono::seconds(10)).ok() ? 0
                                                                         : 36;
}

// Whether a CUDA device exists, asked in a child so that this process never
// initializes CUDA (its later children could not use it).
bool HasCudaDevice() {
  pid_t pid = testing::ForkChild([] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0 ? 0 : 1;
  });
  return testing::WaitChild(pid, std::chrono::seconds(60)) == 0;
}

class KvTransferCudaTest : public ::testing::TestWithParam<bool> {};

TEST_P(KvTransferCudaTest, DeviceBlocksArriveIntact) {
  if (!HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
  const bool force_staging = GetParam();
  const int port = testing::FreePort();
  pid_t rx = testing::ForkChild(
      [port, force_staging] { return Receiver(port, force_staging); });
  pid_t tx = testing::ForkChild(
      [port, force_staging] { return Sender(port, force_staging); });
  auto server = StoreServer::Start("127.0.0.1", port);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(testing::WaitChild(tx, std::chrono::seconds(120)), 0);
  EXPECT_EQ(testing::WaitChild(rx, std::chrono::seconds(120)), 0);
}

INSTANTIATE_TEST_SUITE_P(Pools, KvTransferCudaTest, ::testing::Bool(),
                         [](const auto& info) {
                           return std::string(info.param ? "Staged"
                                                         : "Default");
                         });

}  // namespace
}  // namespace tessera::comm
