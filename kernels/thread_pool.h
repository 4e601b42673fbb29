// A persistent pool of worker threads for data-parallel kernels.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace tessera::kernels {

// `threads` workers in all, the calling thread included (threads - 1 are
// spawned once and live until destruction). ParallelFor splits [0, n) into at
// most size() contiguous, equal chunks (a static partition: the same n always
// gives the same chunks) and returns when all are done. No allocation per
// call. Nested calls from inside a task run inline on the calling thread.
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Threads that run tasks, the caller included (>= 1).
  int size() const { return size_; }

  // Calls fn(begin, end) over a partition of [0, n) into at most size() chunks.
  void ParallelFor(int64_t n, absl::FunctionRef<void(int64_t, int64_t)> fn);

  // Like ParallelFor but with exactly `tasks` chunks of [0, n) handed out
  // dynamically (for uneven work); fn(begin, end) per chunk.
  void ParallelForChunks(int64_t n, int64_t tasks,
                         absl::FunctionRef<void(int64_t, int64_t)> fn);

 private:
  void WorkerLoop(int index);
  void RunChunks();

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  // The job being run (valid while a generation is active).
  const absl::FunctionRef<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::mutex call_mu_;  // One ParallelFor at a time per pool.
};

// Runs fn over [0, n) on `pool` (or inline when pool is null).
void ParallelFor(ThreadPool* pool, int64_t n,
                 absl::FunctionRef<void(int64_t, int64_t)> fn);

}  // namespace tessera::kernels
