// The serving engine: requests in, token/text streams out.
//
// Owns the KV block manager and the scheduler, drives an injected ModelRunner
// from one background loop thread (the instance leader's loop), and turns
// sampled tokens into per-request streams: incremental UTF-8-safe text, stop
// strings matched across token boundaries, EOS/stop-token/length limits,
// usage with cached prompt tokens, and vLLM-named metrics.
//
// Thread-safety: AddRequest, Abort, Shutdown and stats() may be called from
// any thread; RequestStream::Read from the consumer's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/metrics.h"
#include "runtime/model_runner.h"
#include "runtime/sampling_params.h"
#include "runtime/scheduler.h"
#include "runtime/tokenizer.h"

namespace tessera {

struct EngineOptions {
  SchedulerOptions scheduler;
  bool enable_prefix_caching = true;
  // Prompt + generated tokens per sequence; 0 = the model's
  // max_position_embeddings.
  int64_t max_model_len = 0;
  // AddRequest fails with ResourceExhausted beyond this many waiting requests.
  int64_t max_waiting_requests = 4096;
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
// "stop", "length", "abort", "error" (OpenAI finish_reason values first).
const char* FinishReasonName(FinishReason reason);

struct GenerateRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int64_t max_tokens = 16;              // <= 0: until max_model_len.
  std::vector<std::string> stop;        // Stop strings (excluded from text).
  std::vector<int32_t> stop_token_ids;  // Extra stop tokens.
  bool ignore_eos = false;
  bool skip_special_tokens = true;
};

// One generated token.
struct TokenInfo {
  int32_t token = -1;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

// What a request produced since the consumer's last Read.
struct RequestUpdate {
  std::vector<TokenInfo> tokens;
  std::string text;  // Text delta (whole UTF-8 characters).
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  absl::Status error;  // Set when finish_reason is kError.
  // Usage so far.
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
};

// A request's output stream (single consumer).
class RequestStream {
 public:
  explicit RequestStream(int64_t id) : id_(id) {}
  int64_t id() const { return id_; }
  // Waits up to `timeout` for news and moves it into `*update` (replacing its
  // contents). Returns false when nothing new arrived. After a Read with
  // update->finished, the stream is done.
  bool Read(RequestUpdate* update, std::chrono::milliseconds timeout);

 private:
  friend class Engine;
  void Push(const TokenInfo* token, std::string_view text, bool finished,
            FinishReason reason, const absl::Status& error,
            int64_t completion_tokens, int64_t cached_tokens);

  const int64_t id_;
  std::mutex mu_;
  std::condition_variable cv_;
  RequestUpdate pending_;
  bool news_ = false;
  int64_t prompt_tokens_ = 0;
};

// A consistent-enough snapshot for health checks and tests.
struct EngineStats {
  int64_t num_running = 0;
  int64_t num_waiting = 0;  // Including requests not yet seen by the loop.
  double kv_cache_usage = 0.0;
  int64_t prefix_cache_queries = 0;
  int64_t prefix_cache_hits = 0;
  int64_t num_preemptions = 0;
  int64_t num_steps = 0;
  int64_t num_live_requests = 0;
  // Loop time outside ModelRunner::Step (scheduling, block bookkeeping, token
  // and stream handling), the part of it spent in Scheduler::Schedule and
  // OnStepDone, and time in Step.
  double scheduler_seconds = 0.0;
  double schedule_seconds = 0.0;
  double step_seconds = 0.0;
};

class Engine {
 public:
  // `runner` and `tokenizer` must outlive the engine; `metrics` may be null.
  // Starts the loop thread.
  Engine(ModelRunner* runner, const Tokenizer* tokenizer,
         const EngineOptions& options, ServingMetrics* metrics = nullptr);
  ~Engine();  // Shutdown(now).

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request. InvalidArgument: empty prompt, token out of range,
  // prompt of max_model_len tokens or more. ResourceExhausted: waiting queue
  // full. Unavailable: shutting down.
  absl::StatusOr<std::shared_ptr<RequestStream>> AddRequest(
      GenerateRequest request);
  // Aborts a request (no-op if unknown or finished); its blocks are freed by
  // the loop at once and its stream finishes with kAbort.
  void Abort(int64_t request_id);
  // Stops accepting requests, lets in-flight ones finish until `deadline`,
  // aborts the rest and stops the loop. Idempotent.
  void Shutdown(std::chrono::steady_clock::time_point deadline);

  EngineStats stats() const;
  int64_t max_model_len() const { return max_model_len_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelConfig& model_config() const { return runner_->config(); }

 private:
  struct Request;

  void Loop();
  void Admit(std::unique_ptr<Request> request);
  void RunStep();
  // Appends one sampled token; returns true when the request finished.
  bool OnToken(Request* r, const StepOutput& out);
  void FinishRequest(Request* r, FinishReason reason,
                     const absl::Status& error);
  void PublishStats();

  ModelRunner* runner_;
  const Tokenizer* tokenizer_;
  const EngineOptions options_;
  ServingMetrics* metrics_;
  int64_t max_model_len_;
  std::vector<int32_t> eos_ids_;

  // Loop-thread state.
  KvCacheManager kv_;
  Scheduler scheduler_;
  std::unordered_map<int64_t, std::unique_ptr<Request>> live_;
  std::vector<StepOutput> outputs_;
  std::vector<Request*> finished_;
  PrefixCacheStats published_prefix_;
  uint64_t rng_counter_;

  // Shared with callers.
  mutable std::mutex mu_;
  std::condition_variable cv_;       // Wakes the loop.
  std::condition_variable idle_cv_;  // Signals "no live requests".
  std::vector<std::unique_ptr<Request>> inbox_;
  std::vector<int64_t> aborts_;
  bool accepting_ = true;
  bool abort_all_ = false;
  bool stop_ = false;
  std::atomic<int64_t> next_id_{1};
  std::atomic<int64_t> num_pending_{0};  // Queued, not yet in the scheduler.

  std::atomic<int64_t> stat_running_{0};
  std::atomic<int64_t> stat_waiting_{0};
  std::atomic<double> stat_kv_usage_{0.0};
  std::atomic<int64_t> stat_prefix_queries_{0};
  std::atomic<int64_t> stat_prefix_hits_{0};
  std::atomic<int64_t> stat_preemptions_{0};
  std::atomic<int64_t> stat_steps_{0};
  std::atomic<int64_t> stat_live_{0};
  std::atomic<double> stat_sched_seconds_{0.0};
  // Model time of this loop iteration's step (-1: no step ran).
  double last_model_seconds_ = -1;
  std::atomic<double> stat_step_seconds_{0.0};
  std::atomic<double> stat_schedule_seconds_{0.0};

  std::thread thread_;
};

}  // namespace tessera
