// CPU ModelRunner. Per step:
//   x = embed(tokens)                                   [T, hidden]   (residual
//   stream) per layer: h = rmsnorm(x); q,k,v = h·Wqkvᵀ (+b); [qk-norm];
//   rope(q,k);
//              write k,v to the paged cache; a = attention(q, cache); x +=
//              a·Woᵀ; h = rmsnorm(x); x += ffn(h)   (SwiGLU, or top-k MoE of
//              SwiGLU experts)
//   logits = rmsnorm(x[last row of each sampled sequence]) · LMheadᵀ; sample.
// Every buffer is sized once from RunnerOptions; Step allocates nothing in
// steady state.
#include "runtime/cpu_model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <thread>

#include "base/logging.h"
#include "base/status.h"
#include "fmt/format.h"
#include "kernels/ops.h"
#include "kernels/sampling.h"
#include "kernels/thread_pool.h"

namespace tessera {
namespace {

class CpuModelRunner final : public ModelRunner {
 public:
  CpuModelRunner(const Model& model, const RunnerOptions& options,
                 int64_t num_blocks)
      : model_(model),
        cfg_(model.config),
        options_(options),
        num_blocks_(num_blocks),
        pool_(options.threads > 0
                  ? options.threads
                  : static_cast<int>(
                        std::max(1u, std::thread::hardware_concurrency()))),
        sampler_(static_cast<int64_t>(cfg_.vocab_size)) {
    ctx_.pool = &pool_;
    q_dim_ = cfg_.num_attention_heads * cfg_.head_dim;
    kv_dim_ = cfg_.num_key_value_heads * cfg_.head_dim;
    inv_freq_ = RopeInverseFrequencies(cfg_);
    const int64_t block_elems = options_.block_size * kv_dim_;
    for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
      k_cache_.push_back(
          Tensor::Zeros(options_.kv_dtype, {num_blocks_, block_elems}));
      v_cache_.push_back(
          Tensor::Zeros(options_.kv_dtype, {num_blocks_, block_elems}));
    }
    const int64_t t = options_.max_num_batched_tokens;
    const int64_t s = options_.max_num_seqs;
    const int64_t ffn = cfg_.intermediate_size;
    x_.resize(t * cfg_.hidden_size);
    h_.resize(t * cfg_.hidden_size);
    delta_.resize(t * cfg_.hidden_size);
    q_.resize(t * q_dim_);
    attn_.resize(t * q_dim_);
    gate_.resize(t * ffn);
    up_.resize(t * ffn);
    tokens_.reserve(t);
    positions_.resize(t);
    slots_.resize(t);
    query_start_.resize(s + 1);
    context_len_.resize(s);
    max_blocks_per_seq_ =
        (max_model_len() + options_.block_size - 1) / options_.block_size;
    block_tables_.resize(s * max_blocks_per_seq_);
    sample_rows_.reserve(s);
    history_.reserve(max_model_len());
    logits_.resize(s * cfg_.vocab_size);
    if (cfg_.is_moe()) {
      const int64_t k = cfg_.num_experts_per_tok;
      router_logits_.resize(t * cfg_.num_local_experts);
      expert_ids_.resize(t * k);
      expert_weights_.resize(t * k);
      expert_rows_.resize(t * k);
      inverse_.resize(t * k);
      expert_offsets_.resize(cfg_.num_local_experts + 1);
      cursor_.resize(cfg_.num_local_experts);
      moe_in_.resize(t * k * cfg_.hidden_size);
      moe_out_.resize(t * k * cfg_.hidden_size);
      moe_gate_.resize(t * k * ffn);
      moe_up_.resize(t * k * ffn);
    }
  }

  const ModelConfig& config() const override { return cfg_; }
  int64_t num_kv_blocks() const override { return num_blocks_; }
  int64_t block_size() const override { return options_.block_size; }

  void CopyBlock(int32_t src, int32_t dst) override {
    TESSERA_CHECK(src >= 0 && src < num_blocks_ && dst >= 0 &&
                  dst < num_blocks_);
    for (size_t l = 0; l < k_cache_.size(); ++l) {
      for (Tensor* cache : {&k_cache_[l], &v_cache_[l]}) {
        const int64_t row_bytes = cache->nbytes() / num_blocks_;
        char* base = cache->data<char>();
        std::memcpy(base + dst * row_bytes, base + src * row_bytes, row_bytes);
      }
    }
  }

  absl::Status Step(absl::Span<const StepSequence> batch,
                    std::vector<StepOutput>* outputs) override {
    RETURN_IF_ERROR(PrepareBatch(batch));
    const int64_t t = total_tokens_;
    const int64_t hidden = cfg_.hidden_size;
    RETURN_IF_ERROR(kernels::EmbeddingLookup(model_.weights.token_embedding,
                                             tokens_.data(), t, x_.data()));
    const ModelWeights& w = model_.weights;
    for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
      const LayerWeights& lw = w.layers[l];
      if (l == 0) {
        kernels::RmsNorm(ctx_, x_.data(), lw.attn_norm.data<float>(), t, hidden,
                         cfg_.rms_norm_eps, h_.data());
      } else {
        kernels::AddRmsNorm(ctx_, x_.data(), delta_.data(),
                            lw.attn_norm.data<float>(), t, hidden,
                            cfg_.rms_norm_eps, h_.data());
      }
      RETURN_IF_ERROR(Attention(l, lw));
      kernels::AddRmsNorm(ctx_, x_.data(), delta_.data(),
                          lw.ffn_norm.data<float>(), t, hidden,
                          cfg_.rms_norm_eps, h_.data());
      if (cfg_.is_moe()) {
        RETURN_IF_ERROR(MoeFfn(lw));
      } else {
        RETURN_IF_ERROR(DenseFfn(lw));
      }
    }
    return Sample(batch, outputs);
  }

 private:
  int64_t max_model_len() const {
    return options_.max_model_len > 0 ? options_.max_model_len
                                      : cfg_.max_position_embeddings;
  }

  kernels::KvCacheView CacheView(int64_t layer) {
    return kernels::KvCacheView{
        options_.kv_dtype,          k_cache_[layer].raw_data(),
        v_cache_[layer].raw_data(), options_.block_size,
        cfg_.num_key_value_heads,   cfg_.head_dim};
  }

  // Flattens the batch into tokens, positions, KV slots and attention metadata.
  absl::Status PrepareBatch(absl::Span<const StepSequence> batch) {
    if (batch.empty()) return absl::InvalidArgumentError("empty step batch");
    if (static_cast<int64_t>(batch.size()) > options_.max_num_seqs) {
      return absl::InvalidArgumentError(
          fmt::format("step has {} sequences; the runner was sized for {}",
                      batch.size(), options_.max_num_seqs));
    }
    int64_t t = 0;
    tokens_.clear();  // Capacity reserved in the constructor.
    sample_rows_.clear();
    std::fill(block_tables_.begin(),
              block_tables_.begin() + batch.size() * max_blocks_per_seq_, 0);
    for (size_t s = 0; s < batch.size(); ++s) {
      const StepSequence& seq = batch[s];
      const int64_t n = static_cast<int64_t>(seq.tokens.size());
      const int64_t end = seq.num_computed + n;
      if (n == 0)
        return absl::InvalidArgumentError(
            fmt::format("sequence {} has no tokens", seq.seq_id));
      if (end > max_model_len()) {
        return absl::InvalidArgumentError(
            fmt::format("sequence {} reaches {} tokens; max_model_len is {}",
                        seq.seq_id, end, max_model_len()));
      }
      const int64_t blocks_needed =
          (end + options_.block_size - 1) / options_.block_size;
      if (static_cast<int64_t>(seq.block_table.size()) < blocks_needed) {
        return absl::InvalidArgumentError(fmt::format(
            "sequence {} needs {} KV blocks for {} tokens, got {}", seq.seq_id,
            blocks_needed, end, seq.block_table.size()));
      }
      if (t + n > options_.max_num_batched_tokens) {
        return absl::InvalidArgumentError(fmt::format(
            "step has more than {} tokens", options_.max_num_batched_tokens));
      }
      query_start_[s] = static_cast<int32_t>(t);
      context_len_[s] = static_cast<int32_t>(end);
      for (int64_t b = 0; b < blocks_needed; ++b) {
        const int32_t block = seq.block_table[b];
        if (block < 0 || block >= num_blocks_) {
          return absl::InvalidArgumentError(
              fmt::format("sequence {}: KV block {} out of range [0, {})",
                          seq.seq_id, block, num_blocks_));
        }
        block_tables_[s * max_blocks_per_seq_ + b] = block;
      }
      for (int64_t i = 0; i < n; ++i) {
        const int32_t token = seq.tokens[i];
        if (token < 0 || token >= cfg_.vocab_size) {
          return absl::InvalidArgumentError(
              fmt::format("sequence {}: token id {} out of range [0, {})",
                          seq.seq_id, token, cfg_.vocab_size));
        }
        const int64_t pos = seq.num_computed + i;
        tokens_.push_back(token);
        positions_[t + i] = static_cast<int32_t>(pos);
        slots_[t + i] = static_cast<int32_t>(
            seq.block_table[pos / options_.block_size] * options_.block_size +
            pos % options_.block_size);
      }
      t += n;
      if (seq.sample) {
        if (seq.sampling == nullptr) {
          return absl::InvalidArgumentError(fmt::format(
              "sequence {} samples without SamplingParams", seq.seq_id));
        }
        sample_rows_.push_back(t - 1);
      }
    }
    query_start_[batch.size()] = static_cast<int32_t>(t);
    total_tokens_ = t;
    num_seqs_ = static_cast<int64_t>(batch.size());
    return absl::OkStatus();
  }

  absl::Status Attention(int64_t layer, const LayerWeights& lw) {
    const int64_t t = total_tokens_;
    const int64_t hidden = cfg_.hidden_size;
    const int64_t hd = cfg_.head_dim;
    // Fused: q/k/v projections, QK-norm, RoPE and the paged KV-cache write
    // (one parallel pass over heads when decoding).
    kernels::QkvProjection proj;
    proj.wq = &lw.wq;
    proj.wk = &lw.wk;
    proj.wv = &lw.wv;
    proj.bq = lw.bq.defined() ? lw.bq.data<float>() : nullptr;
    proj.bk = lw.bk.defined() ? lw.bk.data<float>() : nullptr;
    proj.bv = lw.bv.defined() ? lw.bv.data<float>() : nullptr;
    if (cfg_.qk_norm) {
      proj.q_norm = lw.q_norm.data<float>();
      proj.k_norm = lw.k_norm.data<float>();
    }
    proj.norm_eps = cfg_.rms_norm_eps;
    const kernels::KvCacheView cache = CacheView(layer);
    RETURN_IF_ERROR(kernels::QkvRopeKvWrite(
        ctx_, h_.data(), t, hidden, proj, cfg_.num_attention_heads,
        positions_.data(), inv_freq_.data(),
        model_.rope_style == RopeStyle::kPairwise, cache, slots_.data(),
        q_.data(), q_dim_));
    const kernels::AttentionBatch ab{num_seqs_, query_start_.data(),
                                     context_len_.data(), block_tables_.data(),
                                     max_blocks_per_seq_};
    RETURN_IF_ERROR(kernels::PagedAttention(
        ctx_, q_.data(), q_dim_, cache, ab, cfg_.num_attention_heads,
        1.0f / std::sqrt(static_cast<float>(hd)), attn_.data(), q_dim_));
    return kernels::Linear(ctx_, attn_.data(), t, q_dim_, lw.wo, nullptr,
                           delta_.data(), hidden);
  }

  absl::Status DenseFfn(const LayerWeights& lw) {
    const int64_t t = total_tokens_;
    const int64_t hidden = cfg_.hidden_size;
    const int64_t ffn = cfg_.intermediate_size;
    RETURN_IF_ERROR(kernels::Linear(ctx_, h_.data(), t, hidden, lw.w_gate,
                                    nullptr, gate_.data(), ffn));
    RETURN_IF_ERROR(kernels::Linear(ctx_, h_.data(), t, hidden, lw.w_up,
                                    nullptr, up_.data(), ffn));
    kernels::SiluMul(ctx_, gate_.data(), up_.data(), t * ffn, gate_.data());
    return kernels::Linear(ctx_, gate_.data(), t, ffn, lw.w_down, nullptr,
                           delta_.data(), hidden);
  }

  // Top-k MoE: tokens are grouped by expert so each expert runs one GEMM over
  // its rows.
  absl::Status MoeFfn(const LayerWeights& lw) {
    const int64_t t = total_tokens_;
    const int64_t hidden = cfg_.hidden_size;
    const int64_t ffn = cfg_.intermediate_size;
    const int64_t experts = cfg_.num_local_experts;
    const int64_t k = cfg_.num_experts_per_tok;
    RETURN_IF_ERROR(kernels::Linear(ctx_, h_.data(), t, hidden, lw.router,
                                    nullptr, router_logits_.data(), experts));
    kernels::RouterTopK(router_logits_.data(), t, experts, k,
                        expert_ids_.data(), expert_weights_.data());
    // Counting sort of (token, slot) pairs by expert.
    std::fill(expert_offsets_.begin(), expert_offsets_.end(), 0);
    for (int64_t i = 0; i < t * k; ++i) ++expert_offsets_[expert_ids_[i] + 1];
    for (int64_t e = 0; e < experts; ++e)
      expert_offsets_[e + 1] += expert_offsets_[e];
    std::copy(expert_offsets_.begin(), expert_offsets_.end() - 1,
              cursor_.begin());
    for (int64_t i = 0; i < t * k; ++i)
      expert_rows_[cursor_[expert_ids_[i]]++] = static_cast<int32_t>(i);
    for (int64_t r = 0; r < t * k; ++r) {
      std::memcpy(&moe_in_[r * hidden], &h_[(expert_rows_[r] / k) * hidden],
                  hidden * sizeof(float));
    }
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t begin = expert_offsets_[e],
                    rows = expert_offsets_[e + 1] - begin;
      if (rows == 0) continue;
      const float* in = &moe_in_[begin * hidden];
      float* g = &moe_gate_[begin * ffn];
      float* u = &moe_up_[begin * ffn];
      RETURN_IF_ERROR(kernels::Linear(ctx_, in, rows, hidden, lw.expert_gate[e],
                                      nullptr, g, ffn));
      RETURN_IF_ERROR(kernels::Linear(ctx_, in, rows, hidden, lw.expert_up[e],
                                      nullptr, u, ffn));
      kernels::SiluMul(ctx_, g, u, rows * ffn, g);
      RETURN_IF_ERROR(kernels::Linear(ctx_, g, rows, ffn, lw.expert_down[e],
                                      nullptr, &moe_out_[begin * hidden],
                                      hidden));
    }
    // Weighted sum per token in slot order (fixed order: deterministic).
    std::fill(delta_.begin(), delta_.begin() + t * hidden, 0.0f);
    for (int64_t r = 0; r < t * k; ++r)
      inverse_[expert_rows_[r]] = static_cast<int32_t>(r);
    for (int64_t i = 0; i < t; ++i) {
      float* out = &delta_[i * hidden];
      for (int64_t j = 0; j < k; ++j) {
        const float wgt = expert_weights_[i * k + j];
        const float* src = &moe_out_[inverse_[i * k + j] * hidden];
        for (int64_t c = 0; c < hidden; ++c) out[c] += wgt * src[c];
      }
    }
    return absl::OkStatus();
  }

  absl::Status Sample(absl::Span<const StepSequence> batch,
                      std::vector<StepOutput>* outputs) {
    const int64_t hidden = cfg_.hidden_size;
    const int64_t n = static_cast<int64_t>(sample_rows_.size());
    if (n == 0) return absl::OkStatus();
    // Final residual add and norm only for the rows that sample.
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = sample_rows_[i];
      float* xr = &x_[row * hidden];
      const float* dr = &delta_[row * hidden];
      for (int64_t c = 0; c < hidden; ++c) h_[i * hidden + c] = xr[c] + dr[c];
    }
    kernels::RmsNorm(ctx_, h_.data(), model_.weights.output_norm.data<float>(),
                     n, hidden, cfg_.rms_norm_eps, h_.data());
    RETURN_IF_ERROR(kernels::Linear(ctx_, h_.data(), n, hidden,
                                    model_.weights.lm_head, nullptr,
                                    logits_.data(), cfg_.vocab_size));
    int64_t i = 0;
    for (const StepSequence& seq : batch) {
      if (!seq.sample) continue;
      StepOutput out;
      out.seq_id = seq.seq_id;
      RETURN_IF_ERROR(SampleOne(seq, &logits_[i * cfg_.vocab_size], &out));
      outputs->push_back(std::move(out));
      ++i;
    }
    return absl::OkStatus();
  }

  absl::Status SampleOne(const StepSequence& seq, float* logits,
                         StepOutput* out);

  const Model& model_;
  const ModelConfig& cfg_;
  RunnerOptions options_;
  int64_t num_blocks_;
  kernels::ThreadPool pool_;
  kernels::Context ctx_;
  kernels::Sampler sampler_;
  int64_t q_dim_ = 0, kv_dim_ = 0;
  int64_t max_blocks_per_seq_ = 0;
  std::vector<float> inv_freq_;
  std::vector<Tensor> k_cache_, v_cache_;
  // Step workspace.
  int64_t total_tokens_ = 0, num_seqs_ = 0;
  std::vector<int32_t> history_;
  std::vector<int32_t> tokens_, positions_, slots_, query_start_, context_len_,
      block_tables_;
  std::vector<int64_t> sample_rows_;
  std::vector<float> x_, h_, delta_, q_, attn_, gate_, up_, logits_;
  // MoE workspace.
  std::vector<float> router_logits_, expert_weights_, moe_in_, moe_out_,
      moe_gate_, moe_up_;
  std::vector<int32_t> expert_ids_, expert_rows_, inverse_;
  std::vector<int64_t> expert_offsets_, cursor_;
};

absl::Status CpuModelRunner::SampleOne(const StepSequence& seq, float* logits,
                                       StepOutput* out) {
  const SamplingParams& p = *seq.sampling;
  kernels::SamplingOptions so;
  so.temperature = p.temperature;
  so.top_k = p.top_k;
  so.top_p = p.top_p;
  so.min_p = p.min_p;
  so.repetition_penalty = p.repetition_penalty;
  so.presence_penalty = p.presence_penalty;
  so.frequency_penalty = p.frequency_penalty;
  so.logprobs = p.logprobs >= 0;
  so.top_logprobs = std::max(0, p.logprobs);
  // The repetition penalty covers prompt + output; the sampler takes one
  // history span, so the two are concatenated into reusable scratch only when
  // the penalty is on.
  absl::Span<const int32_t> history;
  if (p.repetition_penalty != 1.0f) {
    history_.clear();
    history_.insert(history_.end(), seq.prompt_tokens.begin(),
                    seq.prompt_tokens.end());
    history_.insert(history_.end(), seq.output_tokens.begin(),
                    seq.output_tokens.end());
    history = history_;
  }
  uint64_t local_state = 0;
  uint64_t* rng = seq.rng_state != nullptr ? seq.rng_state : &local_state;
  const kernels::SampleResult r =
      sampler_.Sample(logits, so, history, seq.output_tokens, rng);
  out->token = r.token;
  out->logprob = r.logprob;
  out->top_logprobs.clear();
  for (const kernels::TokenLogprob& t : r.top)
    out->top_logprobs.emplace_back(t.token, t.logprob);
  return absl::OkStatus();
}

}  // namespace

std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  const int64_t half = config.head_dim / 2;
  std::vector<float> inv(half);
  const RopeScaling& rs = config.rope_scaling;
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(static_cast<double>(config.rope_theta),
                              static_cast<double>(2 * i) /
                                  static_cast<double>(config.head_dim));
    if (rs.type == RopeScaling::Type::kLinear) {
      f /= rs.factor;
    } else if (rs.type == RopeScaling::Type::kLlama3) {
      // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend
      // between.
      const double old_ctx =
          static_cast<double>(rs.original_max_position_embeddings);
      const double low_wavelen = old_ctx / rs.low_freq_factor;
      const double high_wavelen = old_ctx / rs.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0 - smooth) * f / rs.factor + smooth * f;
      }
    }
    inv[i] = static_cast<float>(f);
  }
  return inv;
}

absl::StatusOr<std::unique_ptr<ModelRunner>> CreateCpuModelRunner(
    const Model& model, const RunnerOptions& options) {
  RETURN_IF_ERROR(model.config.Validate());
  const ModelConfig& cfg = model.config;
  if (options.kv_dtype != DType::kF32 && options.kv_dtype != DType::kF16 &&
      options.kv_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        fmt::format("KV cache dtype {} is not supported (f32, f16, bf16)",
                    DTypeName(options.kv_dtype)));
  }
  if (options.block_size <= 0 || options.max_num_batched_tokens <= 0 ||
      options.max_num_seqs <= 0) {
    return absl::InvalidArgumentError(
        "block_size, max_num_batched_tokens and max_num_seqs must be positive");
  }
  const int64_t max_len = options.max_model_len > 0
                              ? options.max_model_len
                              : cfg.max_position_embeddings;
  const int64_t blocks_per_seq =
      (max_len + options.block_size - 1) / options.block_size;
  const int64_t bytes_per_block =
      2 * cfg.num_hidden_layers *
      DTypeBytes(options.kv_dtype,
                 options.block_size * cfg.num_key_value_heads * cfg.head_dim);
  int64_t blocks = options.num_kv_blocks;
  if (blocks == 0) {
    blocks = options.kv_cache_bytes > 0
                 ? options.kv_cache_bytes / bytes_per_block
                 : 4 * blocks_per_seq;
  }
  if (blocks < blocks_per_seq && options.num_kv_blocks == 0 &&
      options.kv_cache_bytes > 0) {
    return absl::ResourceExhaustedError(
        fmt::format("a KV cache of {} bytes holds {} blocks of {} tokens; one "
                    "{}-token sequence needs {}",
                    options.kv_cache_bytes, blocks, options.block_size, max_len,
                    blocks_per_seq));
  }
  if (blocks <= 0)
    return absl::InvalidArgumentError("the KV cache needs at least one block");
  return std::unique_ptr<ModelRunner>(
      new CpuModelRunner(model, options, blocks));
}

}  // namespace tessera
