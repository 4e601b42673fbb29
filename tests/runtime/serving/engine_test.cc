#include "runtime/engine.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/internal/utf8_stream.h"
#include "tests/runtime/serving/fakes.h"

namespace tessera {
namespace {

using namespace std::chrono_literals;
using testing::FakeRunner;
using testing::FakeRunnerOptions;
using testing::FakeTokenizer;

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason reason = FinishReason::kNone;
  absl::Status error;
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  int updates = 0;
};

Collected Drain(RequestStream& s) {
  Collected c;
  RequestUpdate u;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!s.Read(&u, 100ms)) continue;
    ++c.updates;
    for (const auto& t : u.tokens) c.tokens.push_back(t.token);
    c.text += u.text;
    c.prompt_tokens = u.prompt_tokens;
    c.completion_tokens = u.completion_tokens;
    c.cached_tokens = u.cached_tokens;
    if (u.finished) {
      c.reason = u.finish_reason;
      c.error = u.error;
      return c;
    }
  }
  ADD_FAILURE() << "stream did not finish";
  return c;
}

std::vector<int32_t> Prompt(const std::string& s) {
  std::vector<int32_t> p;
  for (unsigned char c : s) p.push_back(FakeTokenizer::kOffset + c);
  return p;
}

GenerateRequest Greedy(const std::string& prompt, int64_t max_tokens) {
  GenerateRequest r;
  r.prompt = Prompt(prompt);
  r.sampling.temperature = 0;
  r.max_tokens = max_tokens;
  return r;
}

void WaitIdle(Engine& e) {
  for (int i = 0; i < 2000 && e.stats().num_live_requests > 0; ++i) {
    std::this_thread::sleep_for(1ms);
  }
  std::this_thread::sleep_for(5ms);  // Let the loop publish stats.
}

TEST(EngineTest, StreamsTokensAndText) {
  FakeRunner runner;
  FakeTokenizer tok;
  MetricsRegistry registry;
  ServingMetrics metrics(&registry, "m");
  Engine engine(&runner, &tok, {}, &metrics);
  auto s = engine.AddRequest(Greedy("hello world", 12));
  ASSERT_TRUE(s.ok());
  const Collected c = Drain(**s);
  EXPECT_EQ(c.reason, FinishReason::kLength);
  EXPECT_EQ(c.tokens.size(), 12u);
  EXPECT_EQ(c.text.size(), 12u);
  EXPECT_EQ(c.prompt_tokens, 11);
  EXPECT_EQ(c.completion_tokens, 12);
  EXPECT_EQ(*tok.Decode(c.tokens, true), c.text);
  WaitIdle(engine);
  EXPECT_DOUBLE_EQ(engine.stats().kv_cache_usage, 0.0);
  EXPECT_EQ(metrics.generation_tokens_total->value(), 12);
  EXPECT_EQ(metrics.prompt_tokens_total->value(), 11);
  EXPECT_EQ(metrics.request_success_length->value(), 1);
  EXPECT_EQ(metrics.time_to_first_token_seconds->count(), 1u);
  EXPECT_EQ(metrics.inter_token_latency_seconds->count(), 11u);
}

TEST(EngineTest, ConcurrentRequestsMatchSequentialAndPreemption) {
  FakeTokenizer tok;
  std::vector<std::string> prompts;
  for (int i = 0; i < 8; ++i)
    prompts.push_back("prompt number " + std::to_string(i * 37));
  std::vector<std::string> ref;
  {
    FakeRunner runner({.num_blocks = 512, .block_size = 4});
    Engine engine(&runner, &tok, {});
    for (const auto& p : prompts) {
      auto s = engine.AddRequest(Greedy(p, 30));
      ASSERT_TRUE(s.ok());
      ref.push_back(Drain(**s).text);
    }
  }
  FakeRunner runner({.num_blocks = 40, .block_size = 4});
  EngineOptions opts;
  opts.scheduler.max_num_batched_tokens = 32;
  Engine engine(&runner, &tok, opts);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) {
    auto s = engine.AddRequest(Greedy(p, 30));
    ASSERT_TRUE(s.ok());
    streams.push_back(*s);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    EXPECT_EQ(Drain(*streams[i]).text, ref[i]) << i;
  }
  WaitIdle(engine);
  EXPECT_GT(engine.stats().num_preemptions, 0);
  EXPECT_DOUBLE_EQ(engine.stats().kv_cache_usage, 0.0);
}

TEST(EngineTest, StopStringAcrossTokensIsExcluded) {
  FakeRunner runner;
  FakeTokenizer tok;
  Engine engine(&runner, &tok, {});
  auto s0 = engine.AddRequest(Greedy("abc", 40));
  ASSERT_TRUE(s0.ok());
  const std::string full = Drain(**s0).text;
  ASSERT_EQ(full.size(), 40u);
  const std::string stop = full.substr(10, 3);
  const size_t at = full.find(stop);
  auto req = Greedy("abc", 40);
  req.stop = {"zzzzzzzzzzzz", stop};
  auto s1 = engine.AddRequest(req);
  ASSERT_TRUE(s1.ok());
  const Collected c = Drain(**s1);
  EXPECT_EQ(c.reason, FinishReason::kStop);
  EXPECT_EQ(c.text, full.substr(0, at));
  EXPECT_EQ(c.completion_tokens, static_cast<int64_t>(at + 3));
}

TEST(EngineTest, EosStopsUnlessIgnored) {
  FakeRunner runner({.eos_every = 7});
  FakeTokenizer tok;
  Engine engine(&runner, &tok, {});
  auto s = engine.AddRequest(Greedy("the quick brown fox", 500));
  ASSERT_TRUE(s.ok());
  const Collected c = Drain(**s);
  EXPECT_EQ(c.reason, FinishReason::kStop);
  ASSERT_FALSE(c.tokens.empty());
  EXPECT_EQ(c.tokens.back(), 2);
  EXPECT_EQ(c.text.size(), c.tokens.size() - 1);  // EOS has no text.
  auto req = Greedy("the quick brown fox", 50);
  req.ignore_eos = true;
  auto s2 = engine.AddRequest(req);
  const Collected c2 = Drain(**s2);
  EXPECT_EQ(c2.reason, FinishReason::kLength);
  EXPECT_EQ(c2.tokens.size(), 50u);
}

TEST(EngineTest, RejectsBadRequests) {
  FakeRunner runner;
  FakeTokenizer tok;
  EngineOptions opts;
  opts.max_model_len = 16;
  Engine engine(&runner, &tok, opts);
  EXPECT_EQ(engine.AddRequest(Greedy("", 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.AddRequest(Greedy(std::string(16, 'x'), 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad = Greedy("x", 4);
  bad.prompt[0] = 100000;
  EXPECT_EQ(engine.AddRequest(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  // max_tokens is capped by max_model_len.
  auto s = engine.AddRequest(Greedy(std::string(10, 'x'), 100));
  ASSERT_TRUE(s.ok());
  const Collected c = Drain(**s);
  EXPECT_EQ(c.completion_tokens, 6);
  EXPECT_EQ(c.reason, FinishReason::kLength);
}

TEST(EngineTest, QueueFullIsResourceExhausted) {
  FakeRunner runner({.step_delay = 2ms});
  FakeTokenizer tok;
  EngineOptions opts;
  opts.max_waiting_requests = 2;
  opts.scheduler.max_num_seqs = 1;
  Engine engine(&runner, &tok, opts);
  std::vector<std::shared_ptr<RequestStream>> ok;
  absl::Status last;
  for (int i = 0; i < 6; ++i) {
    auto s = engine.AddRequest(Greedy("abc", 50));
    if (s.ok()) {
      ok.push_back(*s);
    } else {
      last = s.status();
    }
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted);
  for (auto& s : ok) engine.Abort(s->id());
  for (auto& s : ok) EXPECT_EQ(Drain(*s).reason, FinishReason::kAbort);
}

TEST(EngineTest, AbortFreesBlocksAtOnce) {
  FakeRunner runner({.step_delay = 1ms});
  FakeTokenizer tok;
  Engine engine(&runner, &tok, {});
  auto s = engine.AddRequest(Greedy("a long running request", 3000));
  ASSERT_TRUE(s.ok());
  RequestUpdate u;
  while (!(*s)->Read(&u, 100ms)) {
  }
  // Stats are published after the step's tokens are pushed; wait for them.
  for (int i = 0; i < 1000 && engine.stats().kv_cache_usage == 0.0; ++i) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_GT(engine.stats().kv_cache_usage, 0.0);
  engine.Abort((*s)->id());
  EXPECT_EQ(Drain(**s).reason, FinishReason::kAbort);
  WaitIdle(engine);
  EXPECT_DOUBLE_EQ(engine.stats().kv_cache_usage, 0.0);
  EXPECT_EQ(engine.stats().num_running, 0);
}

TEST(EngineTest, ShutdownDrainsThenAborts) {
  FakeRunner runner({.step_delay = 1ms});
  FakeTokenizer tok;
  Engine engine(&runner, &tok, {});
  auto quick = engine.AddRequest(Greedy("short", 3));
  auto slow = engine.AddRequest(Greedy("long", 4000));
  ASSERT_TRUE(quick.ok() && slow.ok());
  engine.Shutdown(std::chrono::steady_clock::now() + 200ms);
  EXPECT_EQ(Drain(**quick).reason, FinishReason::kLength);
  EXPECT_EQ(Drain(**slow).reason, FinishReason::kAbort);
  EXPECT_EQ(engine.AddRequest(Greedy("x", 1)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(EngineTest, PromptLargerThanPoolFails) {
  FakeRunner runner({.num_blocks = 2, .block_size = 4});
  FakeTokenizer tok;
  Engine engine(&runner, &tok, {});
  auto s = engine.AddRequest(Greedy(std::string(20, 'q'), 2));
  ASSERT_TRUE(s.ok());
  const Collected c = Drain(**s);
  EXPECT_EQ(c.reason, FinishReason::kError);
  EXPECT_EQ(c.error.code(), absl::StatusCode::kResourceExhausted);
}

TEST(EngineTest, SharedPrefixReportsCachedTokens) {
  FakeRunner runner({.num_blocks = 128, .block_size = 4});
  FakeTokenizer tok;
  Engine engine(&runner, &tok, {});
  const std::string prefix(64, 'p');
  auto a = engine.AddRequest(Greedy(prefix + "one", 2));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(Drain(**a).cached_tokens, 0);
  const int64_t computed = runner.tokens_computed.load();
  auto b = engine.AddRequest(Greedy(prefix + "two", 2));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(Drain(**b).cached_tokens, 64);
  EXPECT_EQ(runner.tokens_computed.load() - computed, 3 + 1);
  WaitIdle(engine);
  EXPECT_EQ(engine.stats().prefix_cache_hits, 64);
}

TEST(Utf8StreamTest, NeverSplitsCharacters) {
  internal::Utf8Stream u;
  std::string out;
  const std::string euro = "\xE2\x82\xAC";
  u.Append(euro.substr(0, 1), &out);
  EXPECT_EQ(out, "");
  u.Append(euro.substr(1, 1), &out);
  EXPECT_EQ(out, "");
  u.Append(euro.substr(2) + "a", &out);
  EXPECT_EQ(out, euro + "a");
  u.Append("\xFF", &out);
  EXPECT_EQ(out, euro + "a\xEF\xBF\xBD");
  out.clear();
  u.Append("\xF0\x9F", &out);
  u.Flush(&out);
  EXPECT_EQ(out, "\xEF\xBF\xBD");
  out.clear();
  u.Append(
      "\xE2"
      "a",
      &out);  // Broken sequence, then ASCII.
  EXPECT_EQ(out,
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(internal::Utf8BoundaryAtOrBefore(euro + "b", 2), 0u);
  EXPECT_EQ(internal::Utf8BoundaryAtOrBefore(euro + "b", 3), 3u);
}

}  // namespace
}  // namespace tessera
