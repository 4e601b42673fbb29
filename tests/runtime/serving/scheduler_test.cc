#include "runtime/scheduler.h"

#include <map>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/runtime/serving/fakes.h"

namespace tessera {
namespace {

using testing::FakeRunner;
using testing::FakeRunnerOptions;

struct Result {
  std::map<int64_t, std::vector<int32_t>> outputs;
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t max_step_tokens = 0;
};

// Drives the scheduler the way the engine does, to completion.
Result RunAll(FakeRunner& runner, const SchedulerOptions& options,
              const std::vector<std::vector<int32_t>>& prompts,
              int64_t max_tokens, bool prefix_caching = true) {
  KvCacheManager kv({.num_blocks = runner.num_kv_blocks(),
                     .block_size = runner.block_size(),
                     .enable_prefix_caching = prefix_caching},
                    [&](int32_t s, int32_t d) { runner.CopyBlock(s, d); });
  Scheduler sched(options, &kv);
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto s = std::make_unique<Sequence>();
    s->id = static_cast<int64_t>(i);
    s->tokens = prompts[i];
    s->num_prompt = static_cast<int64_t>(prompts[i].size());
    s->sampling.temperature = 0;
    sched.AddSequence(s.get());
    seqs.push_back(std::move(s));
  }
  Result r;
  std::vector<StepOutput> outs;
  while (sched.Schedule()) {
    int64_t tokens = 0;
    for (const auto& b : sched.batch()) tokens += b.tokens.size();
    EXPECT_LE(tokens, options.max_num_batched_tokens);
    EXPECT_LE(static_cast<int64_t>(sched.batch().size()), options.max_num_seqs);
    r.max_step_tokens = std::max(r.max_step_tokens, tokens);
    r.preemptions += sched.stats().num_preempted;
    outs.clear();
    EXPECT_TRUE(runner.Step(sched.batch(), &outs).ok());
    sched.OnStepDone();
    size_t o = 0;
    std::vector<Sequence*> done;
    for (size_t i = 0; i < sched.batch().size(); ++i) {
      if (!sched.batch()[i].sample) continue;
      Sequence* seq = sched.scheduled()[i];
      EXPECT_EQ(outs[o].seq_id, seq->id);
      seq->tokens.push_back(outs[o++].token);
      if (seq->num_output() >= max_tokens) done.push_back(seq);
    }
    for (Sequence* seq : done) sched.Finish(seq);
    ++r.steps;
    EXPECT_LT(r.steps, 10000);
    if (r.steps >= 10000) break;
  }
  EXPECT_TRUE(sched.empty());
  EXPECT_DOUBLE_EQ(kv.usage(), 0.0);
  for (auto& s : seqs)
    r.outputs[s->id] = {s->output().begin(), s->output().end()};
  return r;
}

std::vector<std::vector<int32_t>> Prompts(int n, int len) {
  std::vector<std::vector<int32_t>> p(n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < len + i; ++j)
      p[i].push_back(3 + (i * 31 + j * 7) % 200);
  }
  return p;
}

TEST(SchedulerTest, RespectsTokenBudgetWithChunkedPrefill) {
  FakeRunner runner({.num_blocks = 256, .block_size = 4});
  const auto r =
      RunAll(runner, {.max_num_batched_tokens = 16, .max_num_seqs = 8},
             Prompts(6, 40), 5);
  EXPECT_EQ(r.max_step_tokens, 16);
  for (const auto& [id, out] : r.outputs) EXPECT_EQ(out.size(), 5u);
}

TEST(SchedulerTest, ChunkingDoesNotChangeOutputs) {
  FakeRunner a({.num_blocks = 256, .block_size = 4});
  FakeRunner b({.num_blocks = 256, .block_size = 4});
  const auto prompts = Prompts(5, 23);
  const auto big = RunAll(a, {.max_num_batched_tokens = 4096}, prompts, 7);
  const auto small = RunAll(b, {.max_num_batched_tokens = 5}, prompts, 7);
  EXPECT_EQ(big.outputs, small.outputs);
  EXPECT_GT(small.steps, big.steps);
}

TEST(SchedulerTest, MaxNumSeqsLimitsRunning) {
  FakeRunner runner({.num_blocks = 256, .block_size = 4});
  const auto r =
      RunAll(runner, {.max_num_batched_tokens = 4096, .max_num_seqs = 2},
             Prompts(5, 8), 3);
  EXPECT_EQ(r.outputs.size(), 5u);
}

TEST(SchedulerTest, PreemptionUnderTinyPoolGivesSameOutputs) {
  const auto prompts = Prompts(6, 10);
  FakeRunner roomy({.num_blocks = 512, .block_size = 4});
  const auto ref = RunAll(roomy, {.max_num_batched_tokens = 64}, prompts, 20);
  EXPECT_EQ(ref.preemptions, 0);
  // 6 sequences of up to 35 tokens need ~54 blocks; give 14.
  FakeRunner tiny({.num_blocks = 14, .block_size = 4});
  const auto got = RunAll(tiny, {.max_num_batched_tokens = 64}, prompts, 20);
  EXPECT_GT(got.preemptions, 0);
  EXPECT_EQ(got.outputs, ref.outputs);
  // Prefix caching off too.
  FakeRunner tiny2({.num_blocks = 14, .block_size = 4});
  const auto got2 =
      RunAll(tiny2, {.max_num_batched_tokens = 64}, prompts, 20, false);
  EXPECT_EQ(got2.outputs, ref.outputs);
}

TEST(SchedulerTest, SharedPrefixComputedOnce) {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> prefix;
  for (int j = 0; j < 32; ++j) prefix.push_back(10 + j);
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(prefix);
    prompts.back().push_back(200 + i);
  }
  // One sequence per step so each finds its predecessors' blocks.
  FakeRunner runner({.num_blocks = 64, .block_size = 4});
  const auto r = RunAll(
      runner, {.max_num_batched_tokens = 4096, .max_num_seqs = 1}, prompts, 2);
  // First: 33 prompt tokens; others: 1 token each; plus decodes.
  EXPECT_EQ(runner.tokens_computed.load(), 33 + 3 * 1 + 4 * 1);
  FakeRunner cold({.num_blocks = 64, .block_size = 4});
  const auto r2 =
      RunAll(cold, {.max_num_batched_tokens = 4096, .max_num_seqs = 1}, prompts,
             2, false);
  EXPECT_EQ(r.outputs, r2.outputs);
}

TEST(SchedulerTest, FinishWhileWaitingReleasesEverything) {
  FakeRunner runner({.num_blocks = 16, .block_size = 4});
  KvCacheManager kv({.num_blocks = 16, .block_size = 4}, nullptr);
  Scheduler sched({.max_num_batched_tokens = 8}, &kv);
  Sequence a, b;
  a.id = 1;
  a.tokens = std::vector<int32_t>(20, 5);
  a.num_prompt = 20;
  b.id = 2;
  b.tokens = std::vector<int32_t>(4, 6);
  b.num_prompt = 4;
  sched.AddSequence(&a);
  sched.AddSequence(&b);
  ASSERT_TRUE(sched.Schedule());  // a's first chunk.
  EXPECT_EQ(sched.num_running(), 1);
  EXPECT_GT(kv.usage(), 0.0);
  sched.Finish(&a);  // Abort mid-prefill.
  sched.Finish(&b);  // Abort while waiting.
  EXPECT_TRUE(sched.empty());
  EXPECT_DOUBLE_EQ(kv.usage(), 0.0);
  EXPECT_FALSE(sched.Schedule());
}

TEST(SchedulerTest, AdmitsAlreadyPrefilledSequence) {
  // Disaggregated decode: blocks allocated by the decode side, KV written by
  // a remote prefill, first token already sampled.
  FakeRunner runner({.num_blocks = 16, .block_size = 4});
  KvCacheManager kv({.num_blocks = 16, .block_size = 4}, nullptr);
  Scheduler sched({}, &kv);
  Sequence s;
  s.id = 9;
  s.tokens = {10, 11, 12, 13, 14, 15};
  s.num_prompt = 5;  // Plus the first sampled token.
  ASSERT_TRUE(kv.Allocate(0, 5, &s.blocks).ok());
  s.num_computed = 5;
  sched.AddSequence(&s);
  ASSERT_TRUE(sched.Schedule());
  ASSERT_EQ(sched.batch().size(), 1u);
  EXPECT_EQ(sched.batch()[0].tokens.size(), 1u);
  EXPECT_EQ(sched.batch()[0].num_computed, 5);
  EXPECT_TRUE(sched.batch()[0].sample);
}

}  // namespace
}  // namespace tessera
