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

// Work (in FLOPs or bytes touched, whichever dominates) below which a task is
// not worth handing to another thread: waking a worker costs microseconds
// when it spins and tens of microseconds to milliseconds when it sleeps or
// its core is busy with another process. At 128 Ki a 256-wide model's
// 352 KB decode GEMVs split in two (27% faster decode of such a model); at
// 64 Ki a 128 KB one split too, and a 64-wide model decoded slower (README).
inline constexpr int64_t kMinTaskWork = 128 * 1024;

// `threads` workers in all, the calling thread included (threads - 1 are
// spawned once and live until destruction). ParallelFor splits [0, n) into at
// most size() contiguous, equal chunks (a static partition: the same n always
// gives the same chunks) and returns when all are done. No allocation per
// call. Nested calls from inside a task run inline on the calling thread.
//
// Chunks are claimed dynamically, the caller included, and the caller waits
// only for chunks a worker has claimed: a worker that is asleep or
// descheduled (an oversubscribed machine) never delays a call, the caller
// just runs its chunks itself.
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
  void WorkerLoop();
  // Claims and runs chunks of generation `gen` until none is left.
  void RunChunks(uint32_t gen);

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  // (generation << 32) | next unclaimed chunk. A chunk is claimed by a CAS
  // that also checks the generation, so a late worker can never run a chunk
  // of a finished job.
  std::atomic<uint64_t> state_{0};
  // The job of the current generation (written before it is published, left
  // alone until all its chunks are done).
  std::atomic<const absl::FunctionRef<void(int64_t, int64_t)>*> job_{nullptr};
  std::atomic<int64_t> job_n_{0};
  std::atomic<int64_t> job_tasks_{0};
  std::atomic<int64_t> done_{0};  // Chunks of this generation finished.
  std::atomic<int> sleepers_{0};  // Workers blocked on cv_.
  std::atomic<bool> stop_{false};
  std::mutex call_mu_;  // One ParallelFor at a time per pool.
};

// Runs fn over [0, n) on `pool` (or inline when pool is null).
void ParallelFor(ThreadPool* pool, int64_t n,
                 absl::FunctionRef<void(int64_t, int64_t)> fn);

// Like the above, with `work_per_item` (FLOPs or bytes, an estimate) per
// index: uses at most one chunk per kMinTaskWork of total work (and at most 4
// per thread, claimed dynamically, so a slow thread takes fewer), and runs
// inline when there is not enough work for two. The partition stays a
// function of n, the work and the pool size only.
void ParallelFor(ThreadPool* pool, int64_t n, int64_t work_per_item,
                 absl::FunctionRef<void(int64_t, int64_t)> fn);

}  // namespace tessera::kernels
