#include "kernels/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tessera::kernels {
namespace {

// Set while a thread runs pool tasks, so nested ParallelFor calls run inline.
thread_local bool tls_in_pool_task = false;

// Spins this many iterations (~0.1 ms) before sleeping: decode issues
// hundreds of short ParallelFor calls per token back to back, and a
// condition-variable wake-up costs tens of microseconds; but a spinning worker
// takes a core from the caller on an oversubscribed machine (20k spins, ~1 ms,
// halved a tiny model's decode speed at 2 threads).
constexpr int kSpinIterations = 2000;

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// See ParallelFor(pool, n, work_per_item, fn).
constexpr int64_t kChunksPerThread = 4;

inline uint32_t GenOf(uint64_t state) {
  return static_cast<uint32_t>(state >> 32);
}

// Chunk index that no job reaches (tasks <= 0x7fffffff): a state with it
// has nothing left to claim.
constexpr uint64_t kClosed = 0xffffffffu;

}  // namespace

ThreadPool::ThreadPool(int threads) : size_(std::max(1, threads)) {
  workers_.reserve(size_ - 1);
  for (int i = 1; i < size_; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    state_.fetch_add(uint64_t{1} << 32);
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunChunks(uint32_t gen) {
  const bool was_in_task = tls_in_pool_task;
  tls_in_pool_task = true;
  uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    if (GenOf(s) != gen) break;
    // Read before the claim; only used if the claim below succeeds. The next
    // call closes state_ before it rewrites these (and they are acquire
    // loads of release stores), so a claim that succeeds read this job's.
    const auto* job = job_.load(std::memory_order_acquire);
    const int64_t n = job_n_.load(std::memory_order_acquire);
    const int64_t tasks = job_tasks_.load(std::memory_order_acquire);
    const int64_t t = static_cast<int64_t>(s & 0xffffffffu);
    if (t >= tasks) break;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;
    }
    const int64_t begin = n * t / tasks;
    const int64_t end = n * (t + 1) / tasks;
    if (begin < end) (*job)(begin, end);
    done_.fetch_add(1, std::memory_order_acq_rel);
    s = state_.load(std::memory_order_acquire);
  }
  tls_in_pool_task = was_in_task;
}

void ThreadPool::WorkerLoop() {
  // Generation 0 is the constructor's: a worker that starts late runs into
  // the newer generations (finished ones have no chunk left to claim).
  uint32_t seen = 0;
  for (;;) {
    uint32_t gen = GenOf(state_.load(std::memory_order_acquire));
    for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
      CpuRelax();
      gen = GenOf(state_.load(std::memory_order_acquire));
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);
      cv_.wait(lock,
               [&] { return GenOf(state_.load()) != seen || stop_.load(); });
      sleepers_.fetch_sub(1);
      gen = GenOf(state_.load());
    }
    seen = gen;
    if (stop_.load()) return;
    RunChunks(gen);
  }
}

void ThreadPool::ParallelForChunks(
    int64_t n, int64_t tasks, absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  tasks = std::clamp<int64_t>(tasks, 1, std::min<int64_t>(n, 0x7fffffff));
  if (size_ == 1 || tasks == 1 || tls_in_pool_task) {
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t begin = n * t / tasks;
      const int64_t end = n * (t + 1) / tasks;
      if (begin < end) fn(begin, end);
    }
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  // All chunks of the previous job are done (we waited for them), but a
  // worker may still be in its RunChunks, holding the finished state
  // (gen, tasks): were the new job's fields written while state_ still held
  // it, that worker could read the new (larger) task count and win its claim
  // with the old state, running a chunk twice and counting it in the new
  // job's done_ (the caller then waited forever; seen as a hang in decode).
  // Close the state first: any claim from now on fails or finds nothing.
  const uint32_t prev = GenOf(state_.load(std::memory_order_relaxed));
  state_.store((static_cast<uint64_t>(prev) << 32) | kClosed);
  job_.store(&fn, std::memory_order_release);
  job_n_.store(n, std::memory_order_release);
  job_tasks_.store(tasks, std::memory_order_release);
  done_.store(0, std::memory_order_relaxed);
  const uint32_t gen = prev + 1;
  state_.store(static_cast<uint64_t>(gen) << 32);  // seq_cst: see below.
  // A worker going to sleep increments sleepers_ and then re-checks state_
  // (both seq_cst) under mu_: either it sees the new generation, or we see
  // it sleeping and wake it (taking mu_ first so it is already waiting).
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_.notify_all();
  }
  RunChunks(gen);
  // Only chunks a worker has already claimed remain: wait for those.
  for (int spin = 0; done_.load(std::memory_order_acquire) != tasks; ++spin) {
    if (spin < kSpinIterations) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::ParallelFor(int64_t n,
                             absl::FunctionRef<void(int64_t, int64_t)> fn) {
  ParallelForChunks(n, std::min<int64_t>(n, size_), fn);
}

void ParallelFor(ThreadPool* pool, int64_t n,
                 absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  if (pool == nullptr) {
    fn(0, n);
    return;
  }
  pool->ParallelFor(n, fn);
}

void ParallelFor(ThreadPool* pool, int64_t n, int64_t work_per_item,
                 absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  const int64_t total = n * std::max<int64_t>(work_per_item, 1);
  const int64_t max_tasks = total / kMinTaskWork;
  if (pool == nullptr || max_tasks < 2) {
    fn(0, n);
    return;
  }
  // Up to kChunksPerThread chunks per thread, claimed dynamically: a thread
  // that runs slow (its core shared with another process) takes fewer, instead
  // of the whole call waiting for its one equal share.
  pool->ParallelForChunks(
      n, std::min<int64_t>({n, max_tasks, kChunksPerThread * pool->size()}),
      fn);
}

}  // namespace tessera::kernels
