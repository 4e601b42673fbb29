#include "runtime/engine.h"

#include <algorithm>
#include <string_view>

#include "base/logging.h"
#include "base/random.h"
#include "fmt/format.h"
#include "runtime/internal/utf8_stream.h"

namespace tessera {

using Clock = std::chrono::steady_clock;

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
    case FinishReason::kNone:
      break;
  }
  return "";
}

bool RequestStream::Read(RequestUpdate* update,
                         std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return news_; })) return false;
  // Swap buffers rather than move, so both sides keep their capacity and a
  // steady stream does not allocate per token.
  update->tokens.clear();
  update->text.clear();
  std::swap(update->tokens, pending_.tokens);
  std::swap(update->text, pending_.text);
  update->finished = pending_.finished;
  update->finish_reason = pending_.finish_reason;
  update->error = pending_.error;
  update->prompt_tokens = prompt_tokens_;
  update->completion_tokens = pending_.completion_tokens;
  update->cached_tokens = pending_.cached_tokens;
  pending_.finished = false;
  pending_.finish_reason = FinishReason::kNone;
  pending_.error = absl::OkStatus();
  news_ = false;
  return true;
}

void RequestStream::Push(const TokenInfo* token, std::string_view text,
                         bool finished, FinishReason reason,
                         const absl::Status& error, int64_t completion_tokens,
                         int64_t cached_tokens) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (token != nullptr) pending_.tokens.push_back(*token);
    pending_.text.append(text);
    pending_.completion_tokens = completion_tokens;
    pending_.cached_tokens = cached_tokens;
    if (finished) {
      pending_.finished = true;
      pending_.finish_reason = reason;
      pending_.error = error;
    }
    news_ = true;
  }
  cv_.notify_one();
}

struct Engine::Request {
  Sequence seq;
  GenerateRequest params;
  std::shared_ptr<RequestStream> stream;
  int64_t max_tokens = 0;
  size_t max_stop_len = 0;
  internal::Utf8Stream utf8;
  std::string text;    // Generated text so far (valid UTF-8).
  size_t emitted = 0;  // Bytes of `text` sent to the stream.
  Clock::time_point arrival;
  Clock::time_point last_token;
  bool finished = false;
};

Engine::Engine(ModelRunner* runner, const Tokenizer* tokenizer,
               const EngineOptions& options, ServingMetrics* metrics)
    : runner_(runner),
      tokenizer_(tokenizer),
      options_(options),
      metrics_(metrics),
      max_model_len_(options.max_model_len > 0
                         ? options.max_model_len
                         : runner->config().max_position_embeddings),
      kv_({.num_blocks = runner->num_kv_blocks(),
           .block_size = runner->block_size(),
           .enable_prefix_caching = options.enable_prefix_caching},
          [runner](int32_t src, int32_t dst) { runner->CopyBlock(src, dst); }),
      scheduler_(options.scheduler, &kv_),
      rng_counter_(
          static_cast<uint64_t>(Clock::now().time_since_epoch().count())) {
  eos_ids_ = tokenizer->eos_ids();
  for (int32_t id : runner->config().eos_token_ids) {
    if (std::find(eos_ids_.begin(), eos_ids_.end(), id) == eos_ids_.end()) {
      eos_ids_.push_back(id);
    }
  }
  outputs_.reserve(static_cast<size_t>(options.scheduler.max_num_seqs));
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() { Shutdown(Clock::now()); }

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::AddRequest(
    GenerateRequest request) {
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  if (n == 0) return absl::InvalidArgumentError("the prompt is empty");
  if (n >= max_model_len_) {
    return absl::InvalidArgumentError(fmt::format(
        "This model's maximum context length is {} tokens. However, you "
        "requested {} tokens in the prompt.",
        max_model_len_, n));
  }
  const int64_t vocab = runner_->config().vocab_size;
  for (int32_t t : request.prompt) {
    if (t < 0 || (vocab > 0 && t >= vocab)) {
      return absl::InvalidArgumentError(
          fmt::format("token id {} is out of vocabulary [0, {})", t, vocab));
    }
  }
  auto r = std::make_unique<Request>();
  const int64_t room = max_model_len_ - n;
  r->max_tokens =
      request.max_tokens <= 0 ? room : std::min(request.max_tokens, room);
  for (const auto& s : request.stop) {
    r->max_stop_len = std::max(r->max_stop_len, s.size());
  }
  r->seq.tokens = request.prompt;
  r->seq.tokens.reserve(static_cast<size_t>(n + r->max_tokens));
  r->seq.num_prompt = n;
  r->seq.sampling = request.sampling;
  r->params = std::move(request);
  r->params.prompt.clear();
  r->arrival = Clock::now();

  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      return absl::UnavailableError("the server is shutting down");
    }
    if (stat_waiting_.load() + num_pending_.load() >=
        options_.max_waiting_requests) {
      return absl::ResourceExhaustedError(
          fmt::format("the waiting queue is full ({} requests)",
                      options_.max_waiting_requests));
    }
    const int64_t id = next_id_.fetch_add(1);
    r->seq.id = id;
    r->seq.rng_state = r->seq.sampling.has_seed
                           ? r->seq.sampling.seed
                           : SplitMix64(rng_counter_ + id).Next();
    stream = std::make_shared<RequestStream>(id);
    stream->prompt_tokens_ = n;
    stream->pending_.prompt_tokens = n;
    r->stream = stream;
    inbox_.push_back(std::move(r));
    num_pending_.fetch_add(1);
    stat_live_.fetch_add(1);
  }
  cv_.notify_one();
  return stream;
}

void Engine::Abort(int64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.push_back(request_id);
  }
  cv_.notify_one();
}

void Engine::Shutdown(Clock::time_point deadline) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    accepting_ = false;
    idle_cv_.wait_until(lock, deadline, [&] { return stat_live_.load() == 0; });
    abort_all_ = true;
    stop_ = true;
  }
  cv_.notify_one();
  if (!thread_.joinable()) return;
  thread_.join();
  const EngineStats st = stats();
  if (st.num_steps > 0) {
    spdlog::info(
        "engine: {} steps; per step {:.1f} us in the model, {:.1f} us "
        "elsewhere ({:.1f} us scheduling); {} preemptions",
        st.num_steps, 1e6 * st.step_seconds / st.num_steps,
        1e6 * st.scheduler_seconds / st.num_steps,
        1e6 * st.schedule_seconds / st.num_steps, st.num_preemptions);
  }
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.num_running = stat_running_.load();
  s.num_waiting = stat_waiting_.load() + num_pending_.load();
  s.kv_cache_usage = stat_kv_usage_.load();
  s.prefix_cache_queries = stat_prefix_queries_.load();
  s.prefix_cache_hits = stat_prefix_hits_.load();
  s.num_preemptions = stat_preemptions_.load();
  s.num_steps = stat_steps_.load();
  s.num_live_requests = stat_live_.load();
  s.scheduler_seconds = stat_sched_seconds_.load();
  s.step_seconds = stat_step_seconds_.load();
  s.schedule_seconds = stat_schedule_seconds_.load();
  return s;
}

void Engine::Loop() {
  std::vector<std::unique_ptr<Request>> admitted;
  std::vector<int64_t> aborted;
  while (true) {
    bool abort_all = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return !inbox_.empty() || !aborts_.empty() || !live_.empty() || stop_;
      });
      admitted.swap(inbox_);
      aborted.swap(aborts_);
      abort_all = abort_all_;
      num_pending_.fetch_sub(static_cast<int64_t>(admitted.size()));
    }
    // The iteration's time outside ModelRunner::Step is the engine's
    // overhead: admission, aborts, scheduling, outputs, stats.
    const auto iteration_start = Clock::now();
    last_model_seconds_ = -1;
    for (auto& r : admitted) Admit(std::move(r));
    admitted.clear();
    for (int64_t id : aborted) {
      auto it = live_.find(id);
      if (it != live_.end() && !it->second->finished) {
        FinishRequest(it->second.get(), FinishReason::kAbort, absl::OkStatus());
        live_.erase(it);
      }
    }
    aborted.clear();
    if (abort_all) {
      for (auto& [id, r] : live_) {
        FinishRequest(r.get(), FinishReason::kAbort, absl::OkStatus());
      }
      live_.clear();
      PublishStats();
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ && inbox_.empty()) break;
      continue;
    }
    if (!live_.empty()) RunStep();
    PublishStats();
    if (last_model_seconds_ >= 0) {
      const double overhead_s =
          std::chrono::duration<double>(Clock::now() - iteration_start)
              .count() -
          last_model_seconds_;
      stat_step_seconds_.fetch_add(last_model_seconds_);
      stat_sched_seconds_.fetch_add(overhead_s);
      if (metrics_ != nullptr) {
        metrics_->engine_steps_total->Inc();
        metrics_->model_step_seconds_total->Inc(last_model_seconds_);
        metrics_->engine_overhead_seconds_total->Inc(overhead_s);
      }
    }
  }
}

void Engine::Admit(std::unique_ptr<Request> r) {
  r->seq.owner = r.get();
  scheduler_.AddSequence(&r->seq);
  const int64_t id = r->seq.id;
  live_.emplace(id, std::move(r));
}

void Engine::RunStep() {
  const auto t0 = Clock::now();
  if (!scheduler_.Schedule()) {
    // Nothing fits: with no running sequence, the head of the queue needs more
    // blocks than the whole pool has.
    Sequence* head = scheduler_.waiting_front();
    if (scheduler_.num_running() == 0 && head != nullptr) {
      Request* r = static_cast<Request*>(head->owner);
      FinishRequest(r, FinishReason::kError,
                    absl::ResourceExhaustedError(fmt::format(
                        "the prompt needs more KV cache blocks than the pool "
                        "has ({} blocks of {} tokens)",
                        kv_.num_blocks(), kv_.block_size())));
      live_.erase(head->id);
    }
    return;
  }
  outputs_.clear();
  const auto t1 = Clock::now();
  const absl::Status st = runner_->Step(scheduler_.batch(), &outputs_);
  const auto t2 = Clock::now();
  stat_steps_.fetch_add(1);
  if (!st.ok()) {
    spdlog::error("model step failed: {}", std::string(st.message()));
    finished_.clear();
    for (Sequence* seq : scheduler_.scheduled()) {
      finished_.push_back(static_cast<Request*>(seq->owner));
    }
    for (Request* r : finished_) {
      FinishRequest(r, FinishReason::kError,
                    absl::InternalError(fmt::format(
                        "model step failed: {}", std::string(st.message()))));
      live_.erase(r->seq.id);
    }
    return;
  }
  scheduler_.OnStepDone();
  stat_schedule_seconds_.fetch_add(
      std::chrono::duration<double>((t1 - t0) + (Clock::now() - t2)).count());
  const ScheduleStats& ss = scheduler_.stats();
  if (metrics_ != nullptr) {
    metrics_->num_preemptions_total->Inc(static_cast<double>(ss.num_preempted));
    metrics_->iteration_tokens_total->Observe(
        static_cast<double>(ss.num_prompt_tokens + ss.num_decode_tokens));
  }
  stat_preemptions_.fetch_add(ss.num_preempted);

  finished_.clear();
  size_t o = 0;
  const auto batch = scheduler_.batch();
  const auto scheduled = scheduler_.scheduled();
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!batch[i].sample) continue;
    if (o >= outputs_.size() || outputs_[o].seq_id != batch[i].seq_id) {
      spdlog::error("model step returned outputs out of batch order");
      finished_.push_back(static_cast<Request*>(scheduled[i]->owner));
      continue;
    }
    Request* r = static_cast<Request*>(scheduled[i]->owner);
    if (OnToken(r, outputs_[o++])) finished_.push_back(r);
  }
  for (Request* r : finished_) {
    if (!r->finished) {
      FinishRequest(r, FinishReason::kError,
                    absl::InternalError("bad model step output"));
    }
    live_.erase(r->seq.id);
  }
  last_model_seconds_ = std::chrono::duration<double>(t2 - t1).count();
}

bool Engine::OnToken(Request* r, const StepOutput& out) {
  const auto now = Clock::now();
  Sequence& seq = r->seq;
  seq.tokens.push_back(out.token);
  if (metrics_ != nullptr) {
    metrics_->generation_tokens_total->Inc();
    if (seq.num_output() == 1) {
      metrics_->time_to_first_token_seconds->Observe(
          std::chrono::duration<double>(now - r->arrival).count());
      // vLLM counts prompt tokens once per request (not recomputation).
      metrics_->prompt_tokens_total->Inc(static_cast<double>(seq.num_prompt));
    } else {
      metrics_->inter_token_latency_seconds->Observe(
          std::chrono::duration<double>(now - r->last_token).count());
    }
  }
  r->last_token = now;

  TokenInfo info;
  info.token = out.token;
  info.logprob = out.logprob;
  if (seq.sampling.logprobs >= 0) info.top_logprobs = out.top_logprobs;

  FinishReason reason = FinishReason::kNone;
  const bool is_eos =
      !r->params.ignore_eos &&
      std::find(eos_ids_.begin(), eos_ids_.end(), out.token) != eos_ids_.end();
  const bool is_stop_token =
      std::find(r->params.stop_token_ids.begin(),
                r->params.stop_token_ids.end(),
                out.token) != r->params.stop_token_ids.end();
  bool stop_string_hit = false;
  if (is_eos || is_stop_token) {
    reason = FinishReason::kStop;
  } else {
    if (!(r->params.skip_special_tokens && tokenizer_->IsSpecial(out.token))) {
      const size_t before = r->text.size();
      r->utf8.Append(tokenizer_->TokenBytes(out.token), &r->text);
      if (r->max_stop_len > 0 && r->text.size() > before) {
        // A stop string ending in the new text starts at most
        // max_stop_len - 1 bytes before it.
        const size_t from =
            before >= r->max_stop_len - 1 ? before - (r->max_stop_len - 1) : 0;
        size_t best = std::string::npos;
        for (const auto& s : r->params.stop) {
          if (s.empty()) continue;
          const size_t p = r->text.find(s, from);
          if (p != std::string::npos && p < best) best = p;
        }
        if (best != std::string::npos) {
          r->text.resize(std::max(best, r->emitted));
          stop_string_hit = true;
          reason = FinishReason::kStop;
        }
      }
    }
    if (reason == FinishReason::kNone && (seq.num_output() >= r->max_tokens ||
                                          seq.num_tokens() >= max_model_len_)) {
      reason = FinishReason::kLength;
    }
  }
  const bool finished = reason != FinishReason::kNone;
  size_t end = r->text.size();
  if (finished) {
    if (!stop_string_hit) {
      r->utf8.Flush(&r->text);
      end = r->text.size();
    }
  } else if (r->max_stop_len > 1) {
    // Hold back text that could be the start of a stop string.
    end = end > r->max_stop_len - 1 ? end - (r->max_stop_len - 1) : 0;
    end = internal::Utf8BoundaryAtOrBefore(r->text, end);
  }
  std::string_view delta;
  if (end > r->emitted) {
    delta = std::string_view(r->text).substr(r->emitted, end - r->emitted);
    r->emitted = end;
  }
  if (finished) {
    r->stream->Push(&info, delta, false, FinishReason::kNone, absl::OkStatus(),
                    seq.num_output(),
                    std::max<int64_t>(0, seq.num_cached_prompt));
    FinishRequest(r, reason, absl::OkStatus());
  } else {
    r->stream->Push(&info, delta, false, FinishReason::kNone, absl::OkStatus(),
                    seq.num_output(),
                    std::max<int64_t>(0, seq.num_cached_prompt));
  }
  return finished;
}

void Engine::FinishRequest(Request* r, FinishReason reason,
                           const absl::Status& error) {
  if (r->finished) return;
  r->finished = true;
  scheduler_.Finish(&r->seq);
  const auto now = Clock::now();
  if (metrics_ != nullptr) {
    if (reason == FinishReason::kStop) {
      metrics_->request_success_stop->Inc();
    } else if (reason == FinishReason::kLength) {
      metrics_->request_success_length->Inc();
    } else if (reason == FinishReason::kAbort) {
      metrics_->request_success_abort->Inc();
    }
    if (reason == FinishReason::kStop || reason == FinishReason::kLength) {
      metrics_->e2e_request_latency_seconds->Observe(
          std::chrono::duration<double>(now - r->arrival).count());
      if (r->seq.was_scheduled) {
        metrics_->request_queue_time_seconds->Observe(
            std::chrono::duration<double>(r->seq.first_scheduled - r->arrival)
                .count());
      }
      metrics_->request_prompt_tokens->Observe(
          static_cast<double>(r->seq.num_prompt));
      metrics_->request_generation_tokens->Observe(
          static_cast<double>(r->seq.num_output()));
    }
  }
  r->stream->Push(nullptr, {}, true, reason, error, r->seq.num_output(),
                  std::max<int64_t>(0, r->seq.num_cached_prompt));
  if (stat_live_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_cv_.notify_all();
  }
}

void Engine::PublishStats() {
  stat_running_.store(scheduler_.num_running());
  stat_waiting_.store(scheduler_.num_waiting());
  stat_kv_usage_.store(kv_.usage());
  const PrefixCacheStats& p = kv_.prefix_stats();
  stat_prefix_queries_.store(p.queries);
  stat_prefix_hits_.store(p.hits);
  if (metrics_ != nullptr) {
    metrics_->num_requests_running->Set(
        static_cast<double>(scheduler_.num_running()));
    metrics_->num_requests_waiting->Set(
        static_cast<double>(scheduler_.num_waiting() + num_pending_.load()));
    metrics_->kv_cache_usage_perc->Set(kv_.usage());
    metrics_->prefix_cache_queries_total->Inc(
        static_cast<double>(p.queries - published_prefix_.queries));
    metrics_->prefix_cache_hits_total->Inc(
        static_cast<double>(p.hits - published_prefix_.hits));
  }
  published_prefix_ = p;
}

}  // namespace tessera
