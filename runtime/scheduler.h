// Iteration-level continuous batching (vLLM v1 style).
//
// Each Schedule() call builds one step: running sequences first (decodes and
// unfinished prefill chunks, in admission order), then waiting sequences FCFS,
// under a token budget (max_num_batched_tokens) and max_num_seqs. Prompts are
// chunked to fit the budget. When KV blocks run out, the most recently
// admitted running sequence is preempted by recompute: its blocks are freed
// and it goes back to the front of the waiting queue (its generated tokens are
// kept and recomputed as part of its prompt).
//
// The scheduler sees sequences, the KV manager and nothing else: it does not
// run the model (the engine passes batch() to ModelRunner::Step) and does not
// know about requests, text or streams. Not thread-safe (the engine loop
// thread owns it). Steady state allocates nothing: the batch vectors are
// reused.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <vector>

#include "absl/types/span.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/model_runner.h"
#include "runtime/sampling_params.h"

namespace tessera {

struct SchedulerOptions {
  int64_t max_num_batched_tokens = 2048;  // Token budget per step.
  int64_t max_num_seqs = 256;             // Running sequences at most.
  bool enable_chunked_prefill = true;     // Else a prompt runs in one step.
};

// A sequence being generated. Owned by the engine; the scheduler holds
// pointers between AddSequence and Finish/Abort.
struct Sequence {
  enum class State { kWaiting, kRunning, kFinished };

  int64_t id = 0;
  // Prompt followed by the generated tokens (contiguous, so a recompute after
  // preemption and the runner both see one span).
  std::vector<int32_t> tokens;
  int64_t num_prompt = 0;
  int64_t num_computed = 0;  // Tokens whose KV is in `blocks`.
  SequenceBlocks blocks;
  SamplingParams sampling;
  uint64_t rng_state = 0;
  State state = State::kWaiting;
  int64_t num_cached_prompt = -1;  // Prefix-cache hit at first admission.
  int64_t num_preemptions = 0;
  // Set by the scheduler when first admitted (for queue-time metrics).
  std::chrono::steady_clock::time_point first_scheduled;
  bool was_scheduled = false;
  void* owner = nullptr;  // The engine's request (opaque to the scheduler).

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t num_output() const { return num_tokens() - num_prompt; }
  absl::Span<const int32_t> prompt() const {
    return absl::MakeConstSpan(tokens).subspan(0, num_prompt);
  }
  absl::Span<const int32_t> output() const {
    return absl::MakeConstSpan(tokens).subspan(num_prompt);
  }
};

// Counters for one Schedule() call.
struct ScheduleStats {
  int64_t num_prompt_tokens = 0;  // Prefill tokens scheduled (incl. recompute).
  int64_t num_decode_tokens = 0;
  int64_t num_preempted = 0;
};

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, KvCacheManager* kv);

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues `seq` (FCFS). A sequence already prefilled elsewhere (disaggregated
  // serving) arrives with num_computed == num_tokens()-1 and its blocks
  // allocated; it is admitted to running directly and decodes next step.
  void AddSequence(Sequence* seq);

  // Builds the next step. Returns false when there is nothing to run.
  bool Schedule();
  // The step built by the last Schedule(): pass to ModelRunner::Step.
  absl::Span<const StepSequence> batch() const { return batch_; }
  // batch()[i] belongs to scheduled()[i].
  absl::Span<Sequence* const> scheduled() const { return scheduled_; }
  const ScheduleStats& stats() const { return stats_; }

  // Advances num_computed of every scheduled sequence and registers newly
  // full blocks in the prefix cache. Call after a successful Step, before
  // appending sampled tokens.
  void OnStepDone();

  // Removes a sequence (finished, aborted or failed) and frees its blocks at
  // once. Safe for waiting or running sequences, and after OnStepDone.
  void Finish(Sequence* seq);

  int64_t num_running() const { return num_running_; }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  bool empty() const { return num_running_ == 0 && waiting_.empty(); }
  // The waiting sequence at the head of the queue (nullptr when none).
  Sequence* waiting_front() const {
    return waiting_.empty() ? nullptr : waiting_.front();
  }
  const KvCacheManager& kv() const { return *kv_; }

 private:
  void Preempt(Sequence* victim);
  void Push(Sequence* seq, int64_t num_new);
  void CompactRunning();

  SchedulerOptions options_;
  KvCacheManager* kv_;
  std::vector<Sequence*> running_;  // Admission order; nullptr = removed.
  int64_t num_running_ = 0;
  std::deque<Sequence*> waiting_;
  std::vector<StepSequence> batch_;
  std::vector<Sequence*> scheduled_;
  std::vector<int64_t> num_new_;
  ScheduleStats stats_;
};

}  // namespace tessera
