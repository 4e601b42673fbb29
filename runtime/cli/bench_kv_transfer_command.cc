// `tessera bench kv-transfer`: KV-block transfer bandwidth between two
// processes over the UCX engine, next to `ucx_perftest` put bandwidth for the
// same message size and transport, measured in the same run. Like with like:
// perftest's message size is our coalesced put size, its outstanding-send
// limit (-O) our window of transfers in flight.
//
// Without a world (no --rank/--world-size, no launcher env) it forks the
// receiver itself on this host; in a world of >= 2 ranks rank 0 sends to
// --peer-rank and ucx_perftest is skipped (it would need both hosts).
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include "base/random.h"
#include "comm/kv_transfer.h"
#include "fmt/format.h"
#include "runtime/cli/internal/byte_size.h"
#include "runtime/cli/internal/comm_flags.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct KvFlags {
  CommFlags comm;
  std::string block_bytes = "64K";
  int64_t blocks = 64;
  int iters = 0;  // 0: as many as fit in a second (at least 100).
  int warmup = 20;
  int window = 64;
  bool staged = false;
  bool recv_staged = false;
  int peer_rank = 1;
  std::string tls;
  bool scatter = false;
  bool perftest = true;
  bool malloc_pool = false;
};

constexpr auto kTimeout = milliseconds(10000);

// Progress-thread tuning from the environment (for experiments).
comm::KvTransferOptions EngineOptions() {
  comm::KvTransferOptions o;
  if (const char* v = std::getenv("TESSERA_KV_BUSY_POLL_US")) {
    o.busy_poll = std::chrono::microseconds(std::atoll(v));
  }
  if (const char* v = std::getenv("TESSERA_KV_NAP_MS")) o.nap_ms = std::atoi(v);
  if (const char* v = std::getenv("TESSERA_KV_STAGING_BLOCKS")) {
    o.staging_blocks = std::atoll(v);
  }
  if (const char* v = std::getenv("TESSERA_KV_LANDING_BLOCKS")) {
    o.landing_blocks = std::atoll(v);
  }
  return o;
}

std::string HumanBytes(int64_t b) {
  if (b >= (int64_t{1} << 20) && b % (int64_t{1} << 20) == 0) {
    return fmt::format("{} MiB", b >> 20);
  }
  if (b >= 1024 && b % 1024 == 0) return fmt::format("{} KiB", b >> 10);
  return fmt::format("{} B", b);
}

// Receiver: registers its pool and acknowledges transfers until "stop".
// `staged`: through the landing area (receive-side staging).
int RunReceiver(comm::Store* store, int rank, int64_t block_bytes,
                int64_t blocks, bool malloc_pool, bool staged) {
  comm::KvTransferOptions options = EngineOptions();
  options.force_staging = staged;
  auto engine = comm::KvTransferEngine::Create(rank, store, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "tessera bench kv-transfer: receiver: %s\n",
                 std::string(engine.status().message()).c_str());
    return kExitFailure;
  }
  std::vector<char> user_pool;
  if (malloc_pool || staged) {  // Staging needs a caller pool.
    user_pool.resize(static_cast<size_t>(block_bytes * blocks));
    if (!(*engine)->RegisterPool(user_pool.data(), block_bytes, blocks).ok()) {
      return kExitFailure;
    }
  } else if (!(*engine)->AllocatePool(block_bytes, blocks).ok()) {
    return kExitFailure;
  }
  while (true) {
    auto m = (*engine)->WaitControl(milliseconds(50));
    while ((*engine)->WaitCompletion(milliseconds(0)).ok()) {
    }
    if (m.ok() && m->payload == "stop") return kExitOk;
  }
}

struct SenderResult {
  double gbps = 0, us_per_transfer = 0, round_trip_us = 0;
  int64_t puts = 0;
  int iters = 0;
  comm::KvTransferStats cold;    // After the first transfer.
  comm::KvTransferStats serial;  // Before the 1-block round trips.
  comm::KvTransferStats all;     // At the end.
};

// Up to `n` transfers of `list`, at most `window` in flight (the oldest is
// waited for before the next is posted), stopping early at `until`; returns
// how many ran.
absl::StatusOr<int> RunWindow(comm::KvTransferEngine& engine, int peer,
                              std::span<const comm::BlockCopy> list, int n,
                              int window, Clock::time_point until,
                              uint64_t* next_id) {
  const uint64_t first = *next_id;
  int posted = 0;
  for (; posted < n; ++posted) {
    if (posted % 64 == 0 && posted > 0 && Clock::now() >= until) break;
    if (posted >= window) {
      RETURN_IF_ERROR(engine.WaitTransfer(first + posted - window));
    }
    RETURN_IF_ERROR(engine.PostTransfer(peer, first + posted, list, kTimeout));
  }
  for (int i = std::max(0, posted - window); i < posted; ++i) {
    RETURN_IF_ERROR(engine.WaitTransfer(first + i));
  }
  *next_id = first + posted;
  return posted;
}

absl::StatusOr<SenderResult> RunSender(comm::Store* store, int rank, int peer,
                                       int64_t block_bytes, const KvFlags& f) {
  comm::KvTransferOptions options = EngineOptions();
  options.force_staging = f.staged;
  ASSIGN_OR_RETURN(auto engine,
                   comm::KvTransferEngine::Create(rank, store, options));
  std::vector<char> user_pool;
  char* pool = nullptr;
  if (f.malloc_pool || f.staged) {  // Staging needs a caller pool.
    user_pool.resize(static_cast<size_t>(block_bytes * f.blocks));
    pool = user_pool.data();
    RETURN_IF_ERROR(engine->RegisterPool(pool, block_bytes, f.blocks));
  } else {
    ASSIGN_OR_RETURN(void* base, engine->AllocatePool(block_bytes, f.blocks));
    pool = static_cast<char*>(base);
  }
  SplitMix64 rng(1);
  for (int64_t i = 0; i < block_bytes * f.blocks; ++i) {
    pool[i] = static_cast<char>(rng.Next());
  }
  std::vector<comm::BlockCopy> list(static_cast<size_t>(f.blocks));
  for (int64_t b = 0; b < f.blocks; ++b) list[b] = {b, b};
  SenderResult r;
  r.puts = 1;
  if (f.scatter) {
    // Destinations reversed: sorted by source, no two blocks are adjacent
    // on both sides, so every block is its own put of block_bytes.
    for (int64_t b = 0; b < f.blocks; ++b) list[b].dst_block = f.blocks - 1 - b;
    r.puts = f.blocks;
  }
  const int64_t transfer_bytes = block_bytes * f.blocks;
  uint64_t id = 1;
  // The first transfer to the peer: store look-up, endpoint, rkey unpack.
  std::vector<comm::BlockCopy> one = {{0, 0}};
  RETURN_IF_ERROR(engine->Transfer(peer, id++, one, kTimeout));
  r.cold = engine->Stats();
  const auto forever = Clock::time_point::max();
  RETURN_IF_ERROR(
      RunWindow(*engine, peer, list, f.warmup, f.window, forever, &id)
          .status());
  // --iters, or as many as fit in a second (at least 100).
  auto start = Clock::now();
  const int n = f.iters > 0 ? f.iters : 1 << 30;
  ASSIGN_OR_RETURN(int done_first,
                   RunWindow(*engine, peer, list, f.iters > 0 ? n : 100,
                             f.window, forever, &id));
  r.iters = done_first;
  if (f.iters == 0) {
    ASSIGN_OR_RETURN(int more, RunWindow(*engine, peer, list, n, f.window,
                                         start + std::chrono::seconds(1), &id));
    r.iters += more;
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  r.gbps = static_cast<double>(transfer_bytes) * r.iters / secs / 1e9;
  r.us_per_transfer = secs * 1e6 / r.iters;
  // Round trip of one 1-block transfer, nothing else in flight.
  const int rounds = 200;
  for (int i = 0; i < 10; ++i) {
    RETURN_IF_ERROR(engine->Transfer(peer, id++, one, kTimeout));
  }
  // Set-up is measured here, alone: in the window a transfer also queues
  // behind the ones before it.
  r.serial = engine->Stats();
  start = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    RETURN_IF_ERROR(engine->Transfer(peer, id++, one, kTimeout));
  }
  secs = std::chrono::duration<double>(Clock::now() - start).count();
  r.round_trip_us = secs * 1e6 / rounds;
  r.all = engine->Stats();
  RETURN_IF_ERROR(engine->SendControl(peer, "stop", kTimeout));
  return r;
}

int FreePort() {
  auto server = comm::StoreServer::Start("127.0.0.1", 0);
  return server.ok() ? (*server)->port() : 13337;
}

// ucx_perftest ucp_put_bw at `bytes` on loopback (server + client pair),
// at most `outstanding` puts in flight; returns GB/s (1e9 bytes/s), or an
// error when it is not installed.
absl::StatusOr<double> RunPerftest(int64_t bytes, int outstanding,
                                   int64_t total_bytes) {
  const int port = FreePort();
  // As many bytes as our run moved (at least 200 puts), a tenth of that to
  // warm up.
  const int64_t iters = std::clamp<int64_t>(total_bytes / bytes, 200, 4000000);
  const std::string common =
      fmt::format("-t ucp_put_bw -s {} -n {} -w {} -O {} -p {}", bytes, iters,
                  std::max<int64_t>(10, iters / 10), outstanding, port);
  // Built before the fork: the child may only exec (this process has
  // threads, and one may hold the allocator's lock at the fork).
  const std::string server_cmd =
      "exec ucx_perftest " + common + " >/dev/null 2>&1";
  pid_t server = ::fork();
  if (server == 0) {
    ::execl("/bin/sh", "sh", "-c", server_cmd.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::optional<double> mbps;
  for (int attempt = 0; attempt < 50 && !mbps; ++attempt) {
    std::this_thread::sleep_for(milliseconds(100));
    const std::string cmd = "ucx_perftest 127.0.0.1 " + common + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) break;
    char line[512];
    while (std::fgets(line, sizeof(line), p) != nullptr) {
      // Final: iters p50 avg overall bw_avg bw_overall msgrate_avg msgrate
      if (std::strncmp(line, "Final:", 6) == 0) {
        double v[8];
        if (std::sscanf(line + 6, "%lf %lf %lf %lf %lf %lf %lf %lf", &v[0],
                        &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
          mbps = v[5];
        }
      }
    }
    const int rc = ::pclose(p);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 127) break;  // Not installed.
  }
  ::kill(server, SIGTERM);
  ::waitpid(server, nullptr, 0);
  if (!mbps) {
    return absl::UnavailableError(
        "ucx_perftest did not run (is ucx-utils "
        "installed?)");
  }
  return *mbps * 1024.0 * 1024.0 / 1e9;  // perftest's MB is 2^20 bytes.
}

absl::Status RunBench(const KvFlags& f, int* exit_code) {
  ASSIGN_OR_RETURN(int64_t block_bytes, ParseByteSize(f.block_bytes));
  if (block_bytes <= 0 || f.blocks <= 0 ||
      block_bytes * f.blocks > (int64_t{8} << 30)) {
    return absl::InvalidArgumentError(
        "need --block-bytes > 0, --blocks > 0 and at most 8 GiB in total");
  }
  if (!f.tls.empty()) ::setenv("UCX_TLS", f.tls.c_str(), 1);
  const char* tls_env = std::getenv("UCX_TLS");
  const std::string tls = tls_env ? tls_env : "default";
  ASSIGN_OR_RETURN(comm::WorldInfo world, ResolveWorldFromFlags(f.comm));
  const auto timeout = milliseconds(f.comm.timeout_ms);

  absl::StatusOr<SenderResult> result;
  if (world.world_size == 1) {
    // Fork the receiver before this process starts any thread (the store
    // server's, UCX's): a child forked from a threaded parent can deadlock
    // on a lock another thread held at the fork (seen under ASan). The
    // store's port reaches the child through a pipe.
    int port_pipe[2];
    if (::pipe(port_pipe) != 0) {
      return absl::InternalError("bench kv-transfer: pipe() failed");
    }
    pid_t child = ::fork();
    if (child == 0) {
      ::close(port_pipe[1]);
      int port = 0;
      const ssize_t got = ::read(port_pipe[0], &port, sizeof(port));
      ::close(port_pipe[0]);
      if (got != static_cast<ssize_t>(sizeof(port)) || port <= 0) {
        ::_exit(kExitFailure);
      }
      auto store = comm::ConnectStore("127.0.0.1", port, timeout);
      ::_exit(store.ok() ? RunReceiver(store->get(), 1, block_bytes, f.blocks,
                                       f.malloc_pool, f.recv_staged)
                         : kExitFailure);
    }
    ::close(port_pipe[0]);
    auto server = comm::StoreServer::Start("127.0.0.1", 0);
    const int port = server.ok() ? (*server)->port() : 0;
    // Port 0 tells the child to give up.
    const bool sent = ::write(port_pipe[1], &port, sizeof(port)) ==
                      static_cast<ssize_t>(sizeof(port));
    ::close(port_pipe[1]);
    if (!server.ok() || !sent) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
      return server.ok() ? absl::InternalError(
                               "bench kv-transfer: cannot reach the receiver")
                         : server.status();
    }
    ASSIGN_OR_RETURN(auto store,
                     comm::ConnectStore("127.0.0.1", port, timeout));
    result = RunSender(store.get(), 0, 1, block_bytes, f);
    if (!result.ok()) ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
  } else {
    if (f.peer_rank <= 0 || f.peer_rank >= world.world_size) {
      return absl::InvalidArgumentError(
          fmt::format("--peer-rank must be in [1, {})", world.world_size));
    }
    ASSIGN_OR_RETURN(auto boot, comm::Bootstrap::Join(world, timeout));
    if (world.rank == f.peer_rank) {
      *exit_code = RunReceiver(&boot->store(), world.rank, block_bytes,
                               f.blocks, f.malloc_pool, f.recv_staged);
    } else if (world.rank == 0) {
      result = RunSender(&boot->store(), 0, f.peer_rank, block_bytes, f);
    }
    RETURN_IF_ERROR(boot->Barrier("bench-kv-done", milliseconds(600000)));
    if (world.rank != 0) return absl::OkStatus();
  }
  RETURN_IF_ERROR(result.status());
  const SenderResult& r = *result;
  // The same message size as one of our puts, the same number in flight.
  const int64_t put_bytes = block_bytes * f.blocks / r.puts;
  std::string vs;
  std::string perftest_note;
  if (f.perftest && world.world_size == 1) {
    // Like with like: as many puts outstanding as ours (window x puts per
    // transfer). ucx_perftest degrades with very deep queues on tcp, so it
    // also runs with -O 1 and the better of the two is the baseline.
    const int ours = static_cast<int>(
        std::min<int64_t>(int64_t{f.window} * r.puts, 1 << 16));
    const int64_t total = block_bytes * f.blocks * r.iters;
    absl::StatusOr<double> pt = RunPerftest(put_bytes, ours, total);
    int best_o = ours;
    if (ours > 1) {
      absl::StatusOr<double> one = RunPerftest(put_bytes, 1, total);
      if (one.ok() && (!pt.ok() || *one > *pt)) {
        perftest_note = fmt::format(
            "ucx_perftest: -O {} {:.2f} GB/s, -O 1 {:.2f} GB/s (baseline)",
            ours, pt.ok() ? *pt : 0.0, *one);
        pt = one;
        best_o = 1;
      } else if (one.ok()) {
        perftest_note = fmt::format(
            "ucx_perftest: -O {} {:.2f} GB/s (baseline), -O 1 {:.2f} GB/s",
            ours, *pt, *one);
      }
    }
    if (pt.ok()) {
      vs = fmt::format(
          " ({:.2f}x ucx_perftest ucp_put_bw {:.2f} GB/s, {}, {}, -O {})",
          r.gbps / *pt, *pt, tls, HumanBytes(put_bytes), best_o);
    } else {
      vs = fmt::format(" (ucx_perftest: {})",
                       std::string(pt.status().message()));
    }
  }

  std::printf("kv-transfer: %.2f GB/s, %.1f us per transfer%s\n", r.gbps,
              r.us_per_transfer, vs.c_str());
  std::printf(
      "  %d transfers of %ld blocks x %s, %ld put(s) of %s each, %d "
      "transfers in flight (perftest -O = in-flight puts), UCX_TLS=%s, %s "
      "pool%s\n",
      r.iters, static_cast<long>(f.blocks), HumanBytes(block_bytes).c_str(),
      static_cast<long>(r.puts), HumanBytes(put_bytes).c_str(), f.window,
      tls.c_str(),
      f.staged        ? "staged (bounce buffer)"
      : f.malloc_pool ? "malloc"
                      : "UCX-allocated",
      f.recv_staged ? ", staged receiver (landing area)" : "");
  const auto us = [](std::chrono::nanoseconds ns, int64_t n) {
    return n > 0 ? static_cast<double>(ns.count()) / 1e3 / n : 0.0;
  };
  const int64_t warm = r.all.warm_transfers - r.serial.warm_transfers;
  std::printf(
      "set-up: %.1f us per request (call to first put posted, cached "
      "endpoint + rkey, mean of %ld); first transfer to the peer %.1f us "
      "(incl. endpoint + rkey set-up %.1f us)\n",
      us(r.all.warm_setup - r.serial.warm_setup, warm), static_cast<long>(warm),
      us(r.cold.cold_setup, r.cold.cold_transfers),
      us(r.cold.connect_time, r.cold.connects));
  std::printf(
      "round trip: %.1f us (1-block transfer alone: put, flush, notify, "
      "ack)\n",
      r.round_trip_us);
  if (r.all.notifications > 0) {
    std::printf(
        "notification: %.1f transfers per completion message (batched while "
        "one is unacknowledged)\n",
        static_cast<double>(r.all.transfers) / r.all.notifications);
  }
  if (r.all.grants > 0) {
    std::printf(
        "landing grants: %ld (%.1f per transfer; the receiver grants at most "
        "half its landing area at once)\n",
        static_cast<long>(r.all.grants),
        static_cast<double>(r.all.grants) / r.all.transfers);
  }
  if (!perftest_note.empty()) std::printf("%s\n", perftest_note.c_str());
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace

void AddBenchKvTransferCommand(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand(
      "kv-transfer", "Benchmark KV-block transfer against ucx_perftest");
  auto f = std::make_shared<KvFlags>();
  sub->add_option("--block-bytes", f->block_bytes,
                  "Bytes per KV block (e.g. 64K)");
  sub->add_option("--blocks", f->blocks, "Blocks per transfer")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  sub->add_option("--iters", f->iters,
                  "Timed transfers (default: as many as fit in 1 s, at least "
                  "100)")
      ->check(CLI::Range(1, 1000000));
  sub->add_option("--window", f->window,
                  "Transfers in flight (PostTransfer/WaitTransfer); also "
                  "ucx_perftest's -O")
      ->check(CLI::Range(1, 4096));
  sub->add_option("--warmup", f->warmup, "Untimed transfers")
      ->check(CLI::Range(0, 1000000));
  sub->add_option("--peer-rank", f->peer_rank,
                  "Receiving rank when run in a world of >= 2 ranks");
  sub->add_option("--tls", f->tls,
                  "Sets UCX_TLS (e.g. shm, tcp) for both the engine and "
                  "ucx_perftest");
  sub->add_flag("--scatter", f->scatter,
                "Reverse destination blocks (no coalescing: one put per "
                "block)");
  sub->add_flag("--malloc-pool", f->malloc_pool,
                "Register malloc'ed pools (RegisterPool) instead of letting "
                "UCX allocate them (AllocatePool)");
  sub->add_flag("--staged", f->staged,
                "Send through the staging (bounce) buffer, the path of CUDA "
                "pools without UCX CUDA support");
  sub->add_flag("--recv-staged", f->recv_staged,
                "Receive through the landing area (receive-side staging), the "
                "path into CUDA pools without UCX CUDA support");
  sub->add_flag("!--no-perftest", f->perftest, "Skip the ucx_perftest run");
  AddCommFlags(sub, &f->comm);
  sub->final_callback([f, exit_code] {
    *exit_code = kExitOk;
    absl::Status s = RunBench(*f, exit_code);
    if (!s.ok()) {
      *exit_code = ReportError("bench kv-transfer", std::string(s.message()));
    }
  });
}

}  // namespace tessera::cli
