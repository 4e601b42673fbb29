#include "kernels/sampling.h"

#include <cmath>
#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace tessera::kernels {
namespace {

std::vector<float> Logits() {  // p ∝ e^logit: token 3 best, then 1, 4, 0, 2.
  return {1.0f, 3.0f, -2.0f, 4.0f, 2.0f, -5.0f};
}

TEST(SamplerTest, GreedyIsArgmaxLowestIdOnTies) {
  Sampler sampler(6);
  uint64_t state = 1;
  std::vector<float> l = Logits();
  EXPECT_EQ(sampler.Sample(l.data(), {}, {}, {}, &state).token, 3);
  l[1] = 4.0f;  // Tie between 1 and 3.
  EXPECT_EQ(sampler.Sample(l.data(), {}, {}, {}, &state).token, 1);
  EXPECT_EQ(state, 1u);  // Greedy draws nothing.
}

TEST(SamplerTest, SeededSamplingIsReproducible) {
  Sampler a(6), b(6);
  SamplingOptions o;
  o.temperature = 1.5f;
  const std::vector<float> l = Logits();
  uint64_t sa = 42, sb = 42;
  std::vector<int32_t> ta, tb;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.Sample(l.data(), o, {}, {}, &sa).token);
    tb.push_back(b.Sample(l.data(), o, {}, {}, &sb).token);
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(sa, 42u);
  uint64_t sc = 43;
  std::vector<int32_t> tc;
  for (int i = 0; i < 50; ++i)
    tc.push_back(a.Sample(l.data(), o, {}, {}, &sc).token);
  EXPECT_NE(ta, tc);
}

std::map<int32_t, int> Histogram(const SamplingOptions& o,
                                 const std::vector<float>& l, int draws) {
  Sampler s(static_cast<int64_t>(l.size()));
  uint64_t state = 7;
  std::map<int32_t, int> h;
  for (int i = 0; i < draws; ++i)
    ++h[s.Sample(l.data(), o, {}, {}, &state).token];
  return h;
}

TEST(SamplerTest, TopKKeepsOnlyKBest) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_k = 2;
  const auto h = Histogram(o, Logits(), 2000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(3) && h.count(1));
  // p(3)/p(1) = e: expect ~73% for token 3.
  EXPECT_NEAR(h.at(3) / 2000.0, std::exp(1.0) / (1 + std::exp(1.0)), 0.04);
}

TEST(SamplerTest, TopPKeepsSmallestSetReachingP) {
  // Probabilities of the sorted tokens 3, 1, 4: 0.64, 0.23, 0.087...
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_p = 0.8f;  // 0.64 < 0.8 <= 0.87: tokens {3, 1}.
  auto h = Histogram(o, Logits(), 1000);
  EXPECT_EQ(h.size(), 2u);
  o.top_p = 0.5f;  // Token 3 alone.
  h = Histogram(o, Logits(), 200);
  EXPECT_EQ(h.size(), 1u);
  EXPECT_TRUE(h.count(3));
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.min_p = 0.3f;  // p/p_max: 1 (3), e^-1=0.37 (1), e^-2=0.14 (4): {3, 1}.
  const auto h = Histogram(o, Logits(), 1000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(3) && h.count(1));
}

TEST(SamplerTest, RepetitionPenaltyFollowsHf) {
  Sampler s(6);
  uint64_t state = 0;
  SamplingOptions o;
  o.repetition_penalty = 2.0f;
  o.logprobs = true;
  const std::vector<float> l = Logits();
  // 3 -> 4/2 = 2 (< token 1's 3): greedy now picks 1.
  const int32_t history[] = {3, 3, 2};
  SampleResult r = s.Sample(l.data(), o, history, {}, &state);
  EXPECT_EQ(r.token, 1);
  // Negative logits are multiplied: token 2 -> -4; check via logprobs.
  o.top_logprobs = 6;
  r = s.Sample(l.data(), o, history, {}, &state);
  ASSERT_EQ(r.top.size(), 6u);
  float lp2 = 0, lp1 = 0;
  for (const TokenLogprob& t : r.top) {
    if (t.token == 2) lp2 = t.logprob;
    if (t.token == 1) lp1 = t.logprob;
  }
  EXPECT_NEAR(lp1 - lp2, 3.0f - (-4.0f), 1e-5f);
}

TEST(SamplerTest, PresenceAndFrequencyPenalties) {
  Sampler s(6);
  uint64_t state = 0;
  SamplingOptions o;
  o.presence_penalty = 0.5f;
  o.frequency_penalty = 0.4f;
  o.top_logprobs = 6;
  const std::vector<float> l = Logits();
  const int32_t output[] = {3, 3};  // 4 - 0.5 - 0.8 = 2.7 < 3.
  const SampleResult r = s.Sample(l.data(), o, {}, output, &state);
  EXPECT_EQ(r.token, 1);
  float lp3 = 0, lp1 = 0;
  for (const TokenLogprob& t : r.top) {
    if (t.token == 3) lp3 = t.logprob;
    if (t.token == 1) lp1 = t.logprob;
  }
  EXPECT_NEAR(lp1 - lp3, 0.3f, 1e-5f);
  // The scratch counts are reset: without output there is no penalty.
  EXPECT_EQ(s.Sample(l.data(), o, {}, {}, &state).token, 3);
}

TEST(SamplerTest, LogprobsAreLogSoftmax) {
  Sampler s(6);
  uint64_t state = 0;
  SamplingOptions o;
  o.logprobs = true;
  o.top_logprobs = 3;
  const std::vector<float> l = Logits();
  const SampleResult r = s.Sample(l.data(), o, {}, {}, &state);
  double z = 0;
  for (float v : l) z += std::exp(v);
  EXPECT_NEAR(r.logprob, 4.0 - std::log(z), 1e-5);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 3);
  EXPECT_EQ(r.top[1].token, 1);
  EXPECT_EQ(r.top[2].token, 4);
  double total = 0;
  for (float v : l) total += std::exp(v - std::log(z));
  EXPECT_NEAR(total, 1.0, 1e-6);
}

TEST(SamplerTest, TemperatureSharpens) {
  SamplingOptions o;
  o.temperature = 0.05f;
  const auto h = Histogram(o, Logits(), 300);
  EXPECT_EQ(h.size(), 1u);
}

TEST(SamplerTest, LargeVocabTopP) {
  const int64_t v = 50000;
  std::vector<float> l(v);
  for (int64_t i = 0; i < v; ++i)
    l[i] = static_cast<float>((i * 7919) % 1000) / 100.0f;
  Sampler s(v);
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_p = 0.9f;
  uint64_t state = 3;
  for (int i = 0; i < 20; ++i) {
    const int32_t t = s.Sample(l.data(), o, {}, {}, &state).token;
    ASSERT_GE(t, 0);
    ASSERT_LT(t, v);
    EXPECT_GT(l[t], 7.5f);  // 90% of the mass has logits above ~7.7.
  }
}

}  // namespace
}  // namespace tessera::kernels
