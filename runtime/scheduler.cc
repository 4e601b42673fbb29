#include "runtime/scheduler.h"

#include <algorithm>

#include "base/logging.h"

namespace tessera {

Scheduler::Scheduler(const SchedulerOptions& options, KvCacheManager* kv)
    : options_(options), kv_(kv) {
  TESSERA_CHECK(options.max_num_batched_tokens > 0 && options.max_num_seqs > 0);
  running_.reserve(static_cast<size_t>(options.max_num_seqs));
  batch_.reserve(static_cast<size_t>(options.max_num_seqs));
  scheduled_.reserve(static_cast<size_t>(options.max_num_seqs));
  num_new_.reserve(static_cast<size_t>(options.max_num_seqs));
}

void Scheduler::AddSequence(Sequence* seq) {
  if (seq->num_computed > 0 && seq->num_computed == seq->num_tokens() - 1 &&
      !seq->blocks.ids.empty()) {
    seq->state = Sequence::State::kRunning;
    running_.push_back(seq);
    ++num_running_;
    return;
  }
  seq->state = Sequence::State::kWaiting;
  waiting_.push_back(seq);
}

void Scheduler::CompactRunning() {
  if (static_cast<int64_t>(running_.size()) == num_running_) return;
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr),
                 running_.end());
}

void Scheduler::Push(Sequence* seq, int64_t num_new) {
  StepSequence s;
  s.seq_id = seq->id;
  s.tokens =
      absl::MakeConstSpan(seq->tokens).subspan(seq->num_computed, num_new);
  s.num_computed = seq->num_computed;
  s.block_table = seq->blocks.ids;
  s.sample = seq->num_computed + num_new == seq->num_tokens();
  s.sampling = &seq->sampling;
  s.output_tokens = seq->output();
  s.prompt_tokens = seq->prompt();
  s.rng_state = &seq->rng_state;
  batch_.push_back(s);
  scheduled_.push_back(seq);
  num_new_.push_back(num_new);
  if (seq->num_computed >= seq->num_tokens() - 1 && num_new == 1) {
    ++stats_.num_decode_tokens;
  } else {
    stats_.num_prompt_tokens += num_new;
  }
}

void Scheduler::Preempt(Sequence* victim) {
  kv_->Free(&victim->blocks);
  victim->num_computed = 0;
  victim->state = Sequence::State::kWaiting;
  ++victim->num_preemptions;
  ++stats_.num_preempted;
  waiting_.push_front(victim);
}

bool Scheduler::Schedule() {
  batch_.clear();
  scheduled_.clear();
  num_new_.clear();
  stats_ = ScheduleStats{};
  CompactRunning();

  int64_t budget = options_.max_num_batched_tokens;
  // 1. Running sequences, oldest first.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    const int64_t num_new =
        std::min(seq->num_tokens() - seq->num_computed, budget);
    bool self_preempted = false;
    while (!kv_->Allocate(seq->num_computed, num_new, &seq->blocks).ok()) {
      // Out of blocks: preempt the newest running sequence (possibly this
      // one). Sequences before `i` are already in the batch and never chosen.
      Sequence* victim = running_.back();
      running_.pop_back();
      --num_running_;
      Preempt(victim);
      if (victim == seq) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;
    Push(seq, num_new);
    budget -= num_new;
    ++i;
  }

  // 2. Waiting sequences, FCFS, unless this step had to preempt.
  while (stats_.num_preempted == 0 && !waiting_.empty() && budget > 0 &&
         num_running_ < options_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    if (seq->num_computed == 0 && seq->blocks.ids.empty()) {
      seq->num_computed = kv_->MatchPrefix(seq->tokens, &seq->blocks);
      if (seq->num_cached_prompt < 0) {
        seq->num_cached_prompt = std::min(seq->num_computed, seq->num_prompt);
      }
    }
    const int64_t remaining = seq->num_tokens() - seq->num_computed;
    if (!options_.enable_chunked_prefill && remaining > budget) break;
    const int64_t num_new = std::min(remaining, budget);
    if (!kv_->Allocate(seq->num_computed, num_new, &seq->blocks).ok()) {
      // Give the prefix-cache references back; retried next step.
      kv_->Free(&seq->blocks);
      seq->num_computed = 0;
      break;
    }
    waiting_.pop_front();
    seq->state = Sequence::State::kRunning;
    if (!seq->was_scheduled) {
      seq->was_scheduled = true;
      seq->first_scheduled = std::chrono::steady_clock::now();
    }
    running_.push_back(seq);
    ++num_running_;
    Push(seq, num_new);
    budget -= num_new;
  }
  return !batch_.empty();
}

void Scheduler::OnStepDone() {
  for (size_t i = 0; i < scheduled_.size(); ++i) {
    Sequence* seq = scheduled_[i];
    seq->num_computed += num_new_[i];
    kv_->CommitComputed(seq->tokens, seq->num_computed, &seq->blocks);
  }
}

void Scheduler::Finish(Sequence* seq) {
  if (seq->state == Sequence::State::kRunning) {
    auto it = std::find(running_.begin(), running_.end(), seq);
    if (it != running_.end()) {
      *it = nullptr;  // Compacted at the next Schedule().
      --num_running_;
    }
  } else if (seq->state == Sequence::State::kWaiting) {
    auto it = std::find(waiting_.begin(), waiting_.end(), seq);
    if (it != waiting_.end()) waiting_.erase(it);
  }
  kv_->Free(&seq->blocks);
  seq->state = Sequence::State::kFinished;
}

}  // namespace tessera
