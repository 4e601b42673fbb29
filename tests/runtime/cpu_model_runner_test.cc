// The CPU runner against a naive, unbatched transformer written out in this
// file, and batching/paging invariants: chunked prefill, mixed batches and
// scattered KV blocks must not change any sequence's tokens.
#include "runtime/cpu_model_runner.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "base/random.h"
#include "gtest/gtest.h"
#include "runtime/generate.h"

namespace tessera {
namespace {

Tensor RandomTensor(SplitMix64& rng, Shape shape, float scale) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = rng.Normal() * scale;
  return t;
}

Tensor Ones(int64_t n) {
  Tensor t = Tensor::Empty(DType::kF32, {n});
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = 1.0f;
  return t;
}

// A small random model; `experts` > 0 makes it a top-2 MoE.
Model TinyModel(int64_t experts, bool bias_and_qk_norm, uint64_t seed = 3) {
  Model m;
  ModelConfig& c = m.config;
  c.vocab_size = 97;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 256;
  c.num_local_experts = experts;
  c.num_experts_per_tok = experts > 0 ? 2 : 0;
  c.attention_bias = bias_and_qk_norm;
  c.qk_norm = bias_and_qk_norm;
  SplitMix64 rng(seed);
  const int64_t h = c.hidden_size, q = 48, kv = 16, f = c.intermediate_size;
  m.weights.token_embedding = RandomTensor(rng, {c.vocab_size, h}, 1.0f);
  m.weights.output_norm = Ones(h);
  m.weights.lm_head = RandomTensor(rng, {c.vocab_size, h}, 0.2f);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights lw;
    lw.attn_norm = Ones(h);
    lw.ffn_norm = Ones(h);
    lw.wq = RandomTensor(rng, {q, h}, 0.2f);
    lw.wk = RandomTensor(rng, {kv, h}, 0.2f);
    lw.wv = RandomTensor(rng, {kv, h}, 0.2f);
    lw.wo = RandomTensor(rng, {h, q}, 0.2f);
    if (bias_and_qk_norm) {
      lw.bq = RandomTensor(rng, {q}, 0.1f);
      lw.bk = RandomTensor(rng, {kv}, 0.1f);
      lw.bv = RandomTensor(rng, {kv}, 0.1f);
      lw.q_norm = RandomTensor(rng, {c.head_dim}, 0.3f);
      lw.k_norm = RandomTensor(rng, {c.head_dim}, 0.3f);
    }
    if (experts > 0) {
      lw.router = RandomTensor(rng, {experts, h}, 0.5f);
      for (int64_t e = 0; e < experts; ++e) {
        lw.expert_gate.push_back(RandomTensor(rng, {f, h}, 0.2f));
        lw.expert_up.push_back(RandomTensor(rng, {f, h}, 0.2f));
        lw.expert_down.push_back(RandomTensor(rng, {h, f}, 0.2f));
      }
    } else {
      lw.w_gate = RandomTensor(rng, {f, h}, 0.2f);
      lw.w_up = RandomTensor(rng, {f, h}, 0.2f);
      lw.w_down = RandomTensor(rng, {h, f}, 0.2f);
    }
    m.weights.layers.push_back(std::move(lw));
  }
  return m;
}

// --- Naive reference: one sequence, full recomputation, double accumulation.
// -------
std::vector<double> MatVec(const Tensor& w, const std::vector<double>& x) {
  std::vector<double> y(w.dim(0));
  for (int64_t i = 0; i < w.dim(0); ++i) {
    double s = 0;
    for (int64_t j = 0; j < w.dim(1); ++j)
      s += w.data<float>()[i * w.dim(1) + j] * x[j];
    y[i] = s;
  }
  return y;
}

std::vector<double> Norm(const std::vector<double>& x, const float* w,
                         size_t off, size_t n, double eps) {
  std::vector<double> y(x);
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[off + i] * x[off + i];
  const double r = 1.0 / std::sqrt(ss / n + eps);
  for (size_t i = 0; i < n; ++i) y[off + i] = x[off + i] * r * w[i];
  return y;
}

void RopeHalf(std::vector<double>& v, int64_t heads, int64_t hd, int64_t pos,
              const std::vector<float>& inv) {
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double a = pos * static_cast<double>(inv[i]);
      double& x0 = v[h * hd + i];
      double& x1 = v[h * hd + i + hd / 2];
      const double r0 = x0 * std::cos(a) - x1 * std::sin(a);
      const double r1 = x0 * std::sin(a) + x1 * std::cos(a);
      x0 = r0;
      x1 = r1;
    }
  }
}

// Logits of the last token of `tokens`.
std::vector<double> NaiveLogits(const Model& m,
                                const std::vector<int32_t>& tokens) {
  const ModelConfig& c = m.config;
  const int64_t h = c.hidden_size, hd = c.head_dim, nh = c.num_attention_heads,
                nkv = c.num_key_value_heads;
  const std::vector<float> inv = RopeInverseFrequencies(c);
  const int64_t t = static_cast<int64_t>(tokens.size());
  std::vector<std::vector<double>> x(t, std::vector<double>(h));
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < h; ++j)
      x[i][j] = m.weights.token_embedding.data<float>()[tokens[i] * h + j];
  }
  for (const LayerWeights& lw : m.weights.layers) {
    std::vector<std::vector<double>> q(t), k(t), v(t);
    for (int64_t i = 0; i < t; ++i) {
      auto xn = Norm(x[i], lw.attn_norm.data<float>(), 0, h, c.rms_norm_eps);
      q[i] = MatVec(lw.wq, xn);
      k[i] = MatVec(lw.wk, xn);
      v[i] = MatVec(lw.wv, xn);
      if (lw.bq.defined()) {
        for (size_t j = 0; j < q[i].size(); ++j)
          q[i][j] += lw.bq.data<float>()[j];
        for (size_t j = 0; j < k[i].size(); ++j)
          k[i][j] += lw.bk.data<float>()[j];
        for (size_t j = 0; j < v[i].size(); ++j)
          v[i][j] += lw.bv.data<float>()[j];
      }
      if (c.qk_norm) {
        for (int64_t hh = 0; hh < nh; ++hh)
          q[i] =
              Norm(q[i], lw.q_norm.data<float>(), hh * hd, hd, c.rms_norm_eps);
        for (int64_t hh = 0; hh < nkv; ++hh)
          k[i] =
              Norm(k[i], lw.k_norm.data<float>(), hh * hd, hd, c.rms_norm_eps);
      }
      RopeHalf(q[i], nh, hd, i, inv);
      RopeHalf(k[i], nkv, hd, i, inv);
    }
    for (int64_t i = 0; i < t; ++i) {
      std::vector<double> attn(nh * hd, 0.0);
      for (int64_t hh = 0; hh < nh; ++hh) {
        const int64_t kvh = hh / (nh / nkv);
        std::vector<double> s(i + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int64_t e = 0; e < hd; ++e)
            d += q[i][hh * hd + e] * k[j][kvh * hd + e];
          s[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (auto& sj : s) z += (sj = std::exp(sj - mx));
        for (int64_t j = 0; j <= i; ++j) {
          for (int64_t e = 0; e < hd; ++e)
            attn[hh * hd + e] += s[j] / z * v[j][kvh * hd + e];
        }
      }
      const auto o = MatVec(lw.wo, attn);
      for (int64_t j = 0; j < h; ++j) x[i][j] += o[j];
    }
    for (int64_t i = 0; i < t; ++i) {
      auto xn = Norm(x[i], lw.ffn_norm.data<float>(), 0, h, c.rms_norm_eps);
      std::vector<double> out(h, 0.0);
      auto swiglu = [&](const Tensor& g, const Tensor& u, const Tensor& d,
                        double weight) {
        auto gv = MatVec(g, xn), uv = MatVec(u, xn);
        for (size_t j = 0; j < gv.size(); ++j)
          gv[j] = gv[j] / (1 + std::exp(-gv[j])) * uv[j];
        const auto dv = MatVec(d, gv);
        for (int64_t j = 0; j < h; ++j) out[j] += weight * dv[j];
      };
      if (c.is_moe()) {
        auto logits = MatVec(lw.router, xn);
        std::vector<int> order(logits.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int a, int b) { return logits[a] > logits[b]; });
        const double w0 = 1.0,
                     w1 = std::exp(logits[order[1]] - logits[order[0]]);
        swiglu(lw.expert_gate[order[0]], lw.expert_up[order[0]],
               lw.expert_down[order[0]], w0 / (w0 + w1));
        swiglu(lw.expert_gate[order[1]], lw.expert_up[order[1]],
               lw.expert_down[order[1]], w1 / (w0 + w1));
      } else {
        swiglu(lw.w_gate, lw.w_up, lw.w_down, 1.0);
      }
      for (int64_t j = 0; j < h; ++j) x[i][j] += out[j];
    }
  }
  const auto xn =
      Norm(x[t - 1], m.weights.output_norm.data<float>(), 0, h, c.rms_norm_eps);
  return MatVec(m.weights.lm_head, xn);
}

std::unique_ptr<ModelRunner> MakeRunner(const Model& m, int64_t blocks,
                                        int64_t max_tokens = 64,
                                        DType kv = DType::kF32) {
  RunnerOptions ro;
  ro.block_size = 4;
  ro.num_kv_blocks = blocks;
  ro.max_num_batched_tokens = max_tokens;
  ro.max_num_seqs = 8;
  ro.max_model_len = 128;
  ro.kv_dtype = kv;
  ro.threads = 2;
  auto r = CreateCpuModelRunner(m, ro);
  EXPECT_TRUE(r.ok()) << r.status();
  return std::move(*r);
}

class RunnerVsNaiveTest
    : public ::testing::TestWithParam<std::pair<int, bool>> {};

// The log-probabilities the runner reports equal the naive model's log-softmax.
TEST_P(RunnerVsNaiveTest, FirstTokenLogprobsMatch) {
  const Model m = TinyModel(GetParam().first, GetParam().second);
  auto runner = MakeRunner(m, 32);
  const std::vector<int32_t> prompt = {5, 17, 42, 3, 88, 9, 61};
  const std::vector<int32_t> table = {7, 2, 30};  // Scattered blocks.
  SamplingParams sp;
  sp.temperature = 0;
  sp.logprobs = 5;
  StepSequence seq;
  seq.tokens = prompt;
  seq.block_table = table;
  seq.sample = true;
  seq.sampling = &sp;
  std::vector<StepOutput> out;
  ASSERT_TRUE(runner->Step({seq}, &out).ok());
  ASSERT_EQ(out.size(), 1u);
  const std::vector<double> logits = NaiveLogits(m, prompt);
  double mx = *std::max_element(logits.begin(), logits.end()), z = 0;
  for (double l : logits) z += std::exp(l - mx);
  const int64_t best =
      std::max_element(logits.begin(), logits.end()) - logits.begin();
  EXPECT_EQ(out[0].token, best);
  ASSERT_EQ(out[0].top_logprobs.size(), 5u);
  for (const auto& [token, lp] : out[0].top_logprobs) {
    EXPECT_NEAR(lp, logits[token] - mx - std::log(z), 2e-3) << token;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, RunnerVsNaiveTest,
                         ::testing::Values(std::make_pair(0, false),
                                           std::make_pair(0, true),
                                           std::make_pair(4, false)));

std::vector<int32_t> GreedyAlone(const Model& m,
                                 const std::vector<int32_t>& prompt, int n,
                                 int64_t chunk, DType kv = DType::kF32) {
  auto runner = MakeRunner(m, 40, 64, kv);
  GenerateOptions go;
  go.max_tokens = n;
  go.sampling.temperature = 0;
  go.prefill_chunk = chunk;
  std::vector<int32_t> out;
  EXPECT_TRUE(
      Generate(*runner, prompt, go, [&](int32_t t) { out.push_back(t); }).ok());
  return out;
}

TEST(CpuModelRunnerTest, ChunkedPrefillDoesNotChangeTokens) {
  const Model m = TinyModel(0, false);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  const auto whole = GreedyAlone(m, prompt, 12, 64);
  EXPECT_EQ(GreedyAlone(m, prompt, 12, 3), whole);
  EXPECT_EQ(GreedyAlone(m, prompt, 12, 1), whole);
}

// Three sequences decoded together, with interleaved block tables, give each
// the tokens it gets alone.
TEST(CpuModelRunnerTest, BatchedDecodeEqualsSingle) {
  const Model m = TinyModel(4, true);
  const std::vector<std::vector<int32_t>> prompts = {
      {3, 9, 27}, {81, 43, 2, 6, 18, 54, 70}, {11}};
  const int n = 10;
  std::vector<std::vector<int32_t>> alone;
  for (const auto& p : prompts) alone.push_back(GreedyAlone(m, p, n, 64));

  auto runner = MakeRunner(m, 40);
  // Block b of sequence s is 3 * b + s: the sequences' blocks interleave.
  std::vector<std::vector<int32_t>> tables(3), outs(3);
  for (int s = 0; s < 3; ++s) {
    for (int b = 0; b < 6; ++b) tables[s].push_back(3 * b + s);
  }
  SamplingParams sp;
  sp.temperature = 0;
  std::vector<int64_t> computed(3, 0);
  std::vector<int32_t> last(3);
  for (int step = 0; step < n; ++step) {
    std::vector<StepSequence> batch(3);
    for (int s = 0; s < 3; ++s) {
      batch[s].seq_id = s;
      batch[s].tokens = step == 0 ? absl::MakeConstSpan(prompts[s])
                                  : absl::MakeConstSpan(&last[s], 1);
      batch[s].num_computed = computed[s];
      batch[s].block_table = tables[s];
      batch[s].sample = true;
      batch[s].sampling = &sp;
    }
    std::vector<StepOutput> out;
    ASSERT_TRUE(runner->Step(batch, &out).ok());
    ASSERT_EQ(out.size(), 3u);
    for (int s = 0; s < 3; ++s) {
      computed[s] += static_cast<int64_t>(batch[s].tokens.size());
      last[s] = out[s].token;
      outs[s].push_back(out[s].token);
    }
  }
  for (int s = 0; s < 3; ++s) EXPECT_EQ(outs[s], alone[s]) << "sequence " << s;
}

TEST(CpuModelRunnerTest, HalfPrecisionKvCacheStaysClose) {
  const Model m = TinyModel(0, false);
  const std::vector<int32_t> prompt = {4, 8, 15, 16, 23, 42};
  EXPECT_EQ(GreedyAlone(m, prompt, 4, 64, DType::kBF16).size(), 4u);
  EXPECT_EQ(GreedyAlone(m, prompt, 6, 64, DType::kF16),
            GreedyAlone(m, prompt, 6, 64));
}

TEST(CpuModelRunnerTest, RejectsMalformedBatches) {
  const Model m = TinyModel(0, false);
  auto runner = MakeRunner(m, 8);
  SamplingParams sp;
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5};
  const std::vector<int32_t> short_table = {0};
  StepSequence seq;
  seq.tokens = tokens;
  seq.block_table = short_table;  // 5 tokens need 2 blocks of 4.
  std::vector<StepOutput> out;
  EXPECT_EQ(runner->Step({seq}, &out).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> bad_block = {0, 99};
  seq.block_table = bad_block;
  EXPECT_EQ(runner->Step({seq}, &out).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> table = {0, 1};
  const std::vector<int32_t> bad_token = {1, 2, 300};
  seq.block_table = table;
  seq.tokens = bad_token;
  EXPECT_EQ(runner->Step({seq}, &out).code(),
            absl::StatusCode::kInvalidArgument);
  seq.tokens = tokens;
  seq.sample = true;  // Without SamplingParams.
  EXPECT_EQ(runner->Step({seq}, &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner->Step({}, &out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CpuModelRunnerTest, CopyBlockCopiesEveryLayer) {
  const Model m = TinyModel(0, false);
  auto runner = MakeRunner(m, 8);
  SamplingParams sp;
  sp.temperature = 0;
  const std::vector<int32_t> prompt = {9, 8, 7, 6};
  const std::vector<int32_t> t1 = {1}, t2 = {5};
  StepSequence seq;
  seq.tokens = prompt;
  seq.block_table = t1;
  seq.sample = true;
  seq.sampling = &sp;
  std::vector<StepOutput> out;
  ASSERT_TRUE(runner->Step({seq}, &out).ok());
  // Decode one more token from a copy of block 1 in block 5: same result as
  // from block 1.
  runner->CopyBlock(1, 5);
  const std::vector<int32_t> next = {out[0].token};
  const std::vector<int32_t> t1b = {1, 2}, t2b = {5, 6};
  StepSequence a = seq, b = seq;
  a.tokens = next;
  a.num_computed = 4;
  a.block_table = t1b;
  b.tokens = next;
  b.num_computed = 4;
  b.block_table = t2b;
  std::vector<StepOutput> oa, ob;
  ASSERT_TRUE(runner->Step({a}, &oa).ok());
  ASSERT_TRUE(runner->Step({b}, &ob).ok());
  EXPECT_EQ(oa[0].token, ob[0].token);
}

TEST(CpuModelRunnerTest, RopeInverseFrequenciesLlama3Scaling) {
  ModelConfig c;
  c.head_dim = 64;
  c.rope_theta = 500000;
  const auto plain = RopeInverseFrequencies(c);
  EXPECT_FLOAT_EQ(plain[0], 1.0f);
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 32;
  const auto scaled = RopeInverseFrequencies(c);
  EXPECT_FLOAT_EQ(scaled[0], 1.0f);  // High frequency: unchanged.
  EXPECT_NEAR(scaled.back(), plain.back() / 32,
              1e-12);  // Low frequency: divided.
}

}  // namespace
}  // namespace tessera
