#include "kernels/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tessera::kernels {
namespace {

// Set while a thread runs pool tasks, so nested ParallelFor calls run inline.
thread_local bool tls_in_pool_task = false;

// Spins this many iterations before sleeping: decode issues hundreds of short
// ParallelFor calls per token, and a condition-variable wake-up costs tens of
// microseconds, but spinning forever would steal cores from other processes.
constexpr int kSpinIterations = 20000;

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) : size_(std::max(1, threads)) {
  workers_.reserve(size_ - 1);
  for (int i = 1; i < size_; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunChunks() {
  const bool was_in_task = tls_in_pool_task;
  tls_in_pool_task = true;
  const int64_t tasks = job_tasks_;
  const int64_t n = job_n_;
  for (;;) {
    const int64_t t = next_task_.fetch_add(1);
    if (t >= tasks) break;
    const int64_t begin = n * t / tasks;
    const int64_t end = n * (t + 1) / tasks;
    if (begin < end) (*job_)(begin, end);
  }
  tls_in_pool_task = was_in_task;
}

void ThreadPool::WorkerLoop(int /*index*/) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
      CpuRelax();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      gen = generation_.load();
    }
    seen = gen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    RunChunks();
    // Every worker checks out of every generation, so no worker can still be
    // reading this job's fields when the next one starts.
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::ParallelForChunks(
    int64_t n, int64_t tasks, absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  tasks = std::clamp<int64_t>(tasks, 1, n);
  if (size_ == 1 || tasks == 1 || tls_in_pool_task) {
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t begin = n * t / tasks;
      const int64_t end = n * (t + 1) / tasks;
      if (begin < end) fn(begin, end);
    }
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_n_ = n;
    job_tasks_ = tasks;
    next_task_.store(0);
    pending_.store(size_ - 1);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  RunChunks();
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < kSpinIterations) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
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

}  // namespace tessera::kernels
