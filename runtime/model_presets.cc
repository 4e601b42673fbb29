#include "runtime/model_presets.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "base/random.h"
#include "base/status.h"
#include "fmt/format.h"
#include "fmt/ranges.h"

namespace tessera {
namespace {

// Elements per independently seeded chunk: the unit of parallel filling.
constexpr int64_t kChunk = 1 << 16;

uint64_t HashName(std::string_view s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a.
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

ModelConfig Base(std::string arch, int64_t vocab, int64_t hidden,
                 int64_t layers, int64_t heads, int64_t kv, int64_t ffn) {
  ModelConfig c;
  c.architecture = std::move(arch);
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv;
  c.intermediate_size = ffn;
  c.head_dim = hidden / heads;
  c.bos_token_id = static_cast<int32_t>(vocab - 2);
  c.eos_token_ids = {static_cast<int32_t>(vocab - 1)};
  return c;
}

// Writes elements [begin, end) of `spec`'s values to out[0, end - begin).
// `begin` is a multiple of kChunk, so chunk seeds follow absolute positions.
void Fill(const TensorSpec& spec, float* out, int64_t begin, int64_t end,
          uint64_t seed) {
  using K = TensorSpec::Kind;
  if (spec.kind == K::kNorm) {
    std::fill(out, out + (end - begin), 1.0f);
    return;
  }
  // Uniform(-a, a) has variance a^2/3: a = sqrt(3 / fan_in) gives 1/fan_in.
  float a = std::sqrt(3.0f / static_cast<float>(spec.fan_in));
  if (spec.kind == K::kBias) a *= 0.1f;
  const uint64_t name_hash = HashName(spec.name);
  for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
    SplitMix64 rng(
        seed ^ name_hash ^
        (static_cast<uint64_t>(c0 / kChunk) * 0xd1b54a32d192ed03ull));
    const int64_t c1 = std::min(end, c0 + kChunk);
    for (int64_t i = c0; i < c1; ++i) {
      out[i - begin] = (2.0f * rng.Uniform() - 1.0f) * a;
    }
  }
}

}  // namespace

std::vector<std::string> ModelPresetNames() {
  return {"demo",       "tiny-llama", "tinyllama-1.1b", "llama-3.2-1b",
          "qwen2-tiny", "qwen3-tiny", "mixtral-tiny"};
}

absl::StatusOr<ModelConfig> PresetConfig(std::string_view preset) {
  ModelConfig c;
  if (preset == "demo") {
    // 256 byte tokens + BOS 256 + EOS 257.
    c = Base("llama", 258, 256, 4, 8, 4, 688);
    c.max_position_embeddings = 2048;
  } else if (preset == "tiny-llama") {
    c = Base("llama", 4096, 288, 6, 6, 6, 768);
    c.max_position_embeddings = 1024;
  } else if (preset == "tinyllama-1.1b") {
    c = Base("llama", 32000, 2048, 22, 32, 4, 5632);
    c.max_position_embeddings = 2048;
  } else if (preset == "llama-3.2-1b") {
    c = Base("llama", 128256, 2048, 16, 32, 8, 8192);
    c.max_position_embeddings = 131072;
    c.rope_theta = 500000.0f;
    c.rope_scaling.type = RopeScaling::Type::kLlama3;
    c.rope_scaling.factor = 32.0f;
    c.rope_scaling.low_freq_factor = 1.0f;
    c.rope_scaling.high_freq_factor = 4.0f;
    c.rope_scaling.original_max_position_embeddings = 8192;
    c.tie_word_embeddings = true;
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001};
  } else if (preset == "qwen2-tiny") {
    c = Base("qwen2", 4096, 256, 4, 8, 2, 704);
    c.attention_bias = true;
    c.rms_norm_eps = 1e-6f;
    c.rope_theta = 1000000.0f;
    c.max_position_embeddings = 4096;
    c.tie_word_embeddings = true;
  } else if (preset == "qwen3-tiny") {
    c = Base("qwen3", 4096, 256, 4, 8, 4, 768);
    c.head_dim = 64;  // Qwen3 decouples head_dim from hidden/heads.
    c.qk_norm = true;
    c.rms_norm_eps = 1e-6f;
    c.rope_theta = 1000000.0f;
    c.max_position_embeddings = 4096;
    c.tie_word_embeddings = true;
  } else if (preset == "mixtral-tiny") {
    c = Base("mixtral", 4096, 256, 4, 8, 4, 384);
    c.num_local_experts = 8;
    c.num_experts_per_tok = 2;
    c.rope_theta = 1000000.0f;
    c.max_position_embeddings = 4096;
  } else {
    return absl::NotFoundError(
        fmt::format("unknown preset '{}' (one of: {})", preset,
                    fmt::join(ModelPresetNames(), ", ")));
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

SpecialTokenStyle PresetTokenStyle(std::string_view preset) {
  return preset == "llama-3.2-1b" ? SpecialTokenStyle::kLlama3
                                  : SpecialTokenStyle::kLlama;
}

Tensor SynthesizeTensor(const TensorSpec& spec, DType dtype, uint64_t seed) {
  const DType d = spec.kind == TensorSpec::Kind::kWeight ? dtype : DType::kF32;
  Tensor out = Tensor::Empty(d, spec.shape);
  const int64_t n = out.numel();
  // Fills [b, e) chunk by chunk through a small f32 buffer, so a half-precision
  // tensor never needs an f32 copy of itself.
  auto fill = [&spec, &out, d, seed](int64_t b, int64_t e) {
    if (d == DType::kF32) {
      Fill(spec, out.data<float>() + b, b, e, seed);
      return;
    }
    std::vector<float> buf(kChunk);
    uint16_t* o = out.data<uint16_t>();
    for (int64_t c0 = b; c0 < e; c0 += kChunk) {
      const int64_t c1 = std::min(e, c0 + kChunk);
      Fill(spec, buf.data(), c0, c1, seed);
      for (int64_t i = c0; i < c1; ++i) {
        o[i] = d == DType::kF16 ? FloatToHalf(buf[i - c0])
                                : FloatToBF16(buf[i - c0]);
      }
    }
  };
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int threads = static_cast<int>(std::min<int64_t>(
      chunks / 4 + 1, std::max(1u, std::thread::hardware_concurrency())));
  if (threads <= 1) {
    fill(0, n);
    return out;
  }
  std::vector<std::thread> pool;
  const int64_t per = (chunks + threads - 1) / threads * kChunk;
  for (int t = 0; t < threads; ++t) {
    const int64_t b = std::min(n, t * per), e = std::min(n, b + per);
    if (b < e) pool.emplace_back([&fill, b, e] { fill(b, e); });
  }
  for (std::thread& t : pool) t.join();
  return out;
}

ModelSource SyntheticSource(const ModelConfig& config, DType dtype,
                            uint64_t seed) {
  auto specs = std::make_shared<std::vector<TensorSpec>>(HfTensorSpecs(config));
  ModelSource src;
  src.config = config;
  src.config.dtype = dtype;
  src.rope_style = RopeStyle::kHalf;
  // Q8_0 files are quantized from f32 values.
  const DType gen = dtype == DType::kQ8_0 ? DType::kF32 : dtype;
  src.tensor = [specs, gen,
                seed](const std::string& name) -> absl::StatusOr<Tensor> {
    for (const TensorSpec& s : *specs) {
      if (s.name == name) return SynthesizeTensor(s, gen, seed);
    }
    return absl::NotFoundError(fmt::format("no tensor '{}'", name));
  };
  return src;
}

absl::StatusOr<Model> SynthesizeModel(std::string_view preset, DType dtype,
                                      uint64_t seed) {
  ASSIGN_OR_RETURN(ModelConfig c, PresetConfig(preset));
  ASSIGN_OR_RETURN(Model m, SynthesizeModel(c, dtype, seed));
  m.source = fmt::format("builtin:{}", preset);
  return m;
}

absl::StatusOr<Model> SynthesizeModel(const ModelConfig& config, DType dtype,
                                      uint64_t seed) {
  RETURN_IF_ERROR(config.Validate());
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(fmt::format(
        "cannot synthesize {} weights (f32, f16 or bf16)", DTypeName(dtype)));
  }
  Model m;
  m.config = config;
  m.config.dtype = dtype;
  m.rope_style = RopeStyle::kHalf;
  m.source = "builtin:synthetic";
  m.format = "builtin";
  ModelWeights& w = m.weights;
  w.layers.resize(config.num_hidden_layers);
  for (const TensorSpec& s : HfTensorSpecs(config)) {
    Tensor t = SynthesizeTensor(s, dtype, seed);
    const std::string& n = s.name;
    if (n == "model.embed_tokens.weight") {
      w.token_embedding = t;
    } else if (n == "model.norm.weight") {
      w.output_norm = t;
    } else if (n == "lm_head.weight") {
      w.lm_head = t;
    } else {
      int layer = 0;
      int used = 0;
      std::sscanf(n.c_str(), "model.layers.%d.%n", &layer, &used);
      LayerWeights& l = w.layers[layer];
      const std::string r = n.substr(static_cast<size_t>(used));
      if (r == "input_layernorm.weight")
        l.attn_norm = t;
      else if (r == "self_attn.q_proj.weight")
        l.wq = t;
      else if (r == "self_attn.k_proj.weight")
        l.wk = t;
      else if (r == "self_attn.v_proj.weight")
        l.wv = t;
      else if (r == "self_attn.o_proj.weight")
        l.wo = t;
      else if (r == "self_attn.q_proj.bias")
        l.bq = t;
      else if (r == "self_attn.k_proj.bias")
        l.bk = t;
      else if (r == "self_attn.v_proj.bias")
        l.bv = t;
      else if (r == "self_attn.q_norm.weight")
        l.q_norm = t;
      else if (r == "self_attn.k_norm.weight")
        l.k_norm = t;
      else if (r == "post_attention_layernorm.weight")
        l.ffn_norm = t;
      else if (r == "mlp.gate_proj.weight")
        l.w_gate = t;
      else if (r == "mlp.up_proj.weight")
        l.w_up = t;
      else if (r == "mlp.down_proj.weight")
        l.w_down = t;
      else if (r == "block_sparse_moe.gate.weight")
        l.router = t;
      else if (r.find(".w1.") != std::string::npos)
        l.expert_gate.push_back(t);
      else if (r.find(".w2.") != std::string::npos)
        l.expert_down.push_back(t);
      else if (r.find(".w3.") != std::string::npos)
        l.expert_up.push_back(t);
    }
  }
  if (config.tie_word_embeddings) w.lm_head = w.token_embedding;
  RETURN_IF_ERROR(ValidateModelWeights(m));
  return m;
}

}  // namespace tessera
