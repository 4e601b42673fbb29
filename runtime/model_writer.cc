#include "runtime/model_writer.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "base/mapped_file.h"
#include "base/status.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "runtime/formats/gguf.h"
#include "runtime/formats/safetensors.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using OJson = nlohmann::ordered_json;

float LoadFloat(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32:
      return t.data<float>()[i];
    case DType::kF16:
      return HalfToFloat(t.data<uint16_t>()[i]);
    case DType::kBF16:
      return BF16ToFloat(t.data<uint16_t>()[i]);
    default:
      return 0.0f;
  }
}

bool LlamaFamily(const ModelConfig& c) {
  return c.architecture != "qwen2" && c.architecture != "qwen3";
}

std::string GgufArch(const ModelConfig& c) {
  return LlamaFamily(c) ? "llama" : c.architecture;
}

std::string HfClass(const std::string& arch) {
  if (arch == "mistral") return "MistralForCausalLM";
  if (arch == "qwen2") return "Qwen2ForCausalLM";
  if (arch == "qwen3") return "Qwen3ForCausalLM";
  if (arch == "mixtral") return "MixtralForCausalLM";
  return "LlamaForCausalLM";
}

std::string TorchDType(DType d) {
  switch (d) {
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
    default:
      return "float32";
  }
}

// The config.json of `c` as HF transformers writes it.
std::string HfConfigJson(const ModelConfig& c, DType dtype) {
  OJson j;
  j["architectures"] = {HfClass(c.architecture)};
  j["model_type"] = c.architecture;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = static_cast<double>(c.rms_norm_eps);
  j["rope_theta"] = static_cast<double>(c.rope_theta);
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", static_cast<double>(c.rope_scaling.factor)},
                         {"low_freq_factor",
                          static_cast<double>(c.rope_scaling.low_freq_factor)},
                         {"high_freq_factor",
                          static_cast<double>(c.rope_scaling.high_freq_factor)},
                         {"original_max_position_embeddings",
                          c.rope_scaling.original_max_position_embeddings}};
  } else if (c.rope_scaling.type == RopeScaling::Type::kLinear) {
    j["rope_scaling"] = {
        {"rope_type", "linear"},
        {"factor", static_cast<double>(c.rope_scaling.factor)}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.architecture != "qwen2") j["attention_bias"] = c.attention_bias;
  if (c.is_moe()) {
    j["num_local_experts"] = c.num_local_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
  }
  j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["hidden_act"] = "silu";
  j["torch_dtype"] = TorchDType(dtype);
  return j.dump(2) + "\n";
}

// Maps an HF tensor name to llama.cpp's; experts map to the stacked tensor
// name with `*expert` set, other tensors leave it -1.
std::string GgufName(const std::string& hf, int* expert) {
  *expert = -1;
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight"},
  };
  int layer = -1;
  int consumed = 0;
  if (std::sscanf(hf.c_str(), "model.layers.%d.%n", &layer, &consumed) != 1 ||
      consumed == 0) {
    return "";
  }
  const std::string rest = hf.substr(static_cast<size_t>(consumed));
  for (const auto& [h, g] : kLayer) {
    if (rest == h) return fmt::format("blk.{}.{}", layer, g);
  }
  int e = -1;
  char w[4] = {};
  if (std::sscanf(rest.c_str(), "block_sparse_moe.experts.%d.w%1[123].weight",
                  &e, w) == 2) {
    *expert = e;
    const char* g = w[0] == '1'   ? "ffn_gate_exps"
                    : w[0] == '2' ? "ffn_down_exps"
                                  : "ffn_up_exps";
    return fmt::format("blk.{}.{}.weight", layer, g);
  }
  return "";
}

bool IsQk(const std::string& hf) {
  return hf.find("self_attn.q_proj.") != std::string::npos ||
         hf.find("self_attn.k_proj.") != std::string::npos;
}

int64_t QkHeads(const std::string& hf, const ModelConfig& c) {
  return hf.find("q_proj") != std::string::npos ? c.num_attention_heads
                                                : c.num_key_value_heads;
}

DType StoredDType(const TensorSpec& s, DType weight_dtype) {
  if (s.kind != TensorSpec::Kind::kWeight) return DType::kF32;
  // Like llama.cpp's converter: rows that are not whole Q8_0 blocks stay f16.
  if (weight_dtype == DType::kQ8_0 && s.shape.back() % 32 != 0) {
    return DType::kF16;
  }
  return weight_dtype;
}

// Fetches `spec` from the source, permutes Q/K rows to `style` and converts.
absl::StatusOr<Tensor> Fetch(const ModelSource& src, const TensorSpec& spec,
                             RopeStyle style, DType dtype) {
  ASSIGN_OR_RETURN(Tensor t, src.tensor(spec.name));
  if (t.shape() != spec.shape) {
    return absl::InvalidArgumentError(
        fmt::format("tensor '{}' is {}, expected [{}]", spec.name,
                    t.DebugString(), fmt::join(spec.shape, ", ")));
  }
  if (IsQk(spec.name) && style != src.rope_style) {
    t = PermuteQkRows(t, QkHeads(spec.name, src.config), src.rope_style, style);
  }
  return ConvertTensor(t, dtype);
}

absl::Status WriteHf(const ModelSource& src, const WriteModelOptions& o,
                     const fs::path& dir) {
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  for (const TensorSpec& spec : HfTensorSpecs(src.config)) {
    const DType d = StoredDType(spec, o.dtype);
    RETURN_IF_ERROR(w.AddTensor(spec.name, d, spec.shape, [&src, spec, d] {
      return Fetch(src, spec, RopeStyle::kHalf, d);
    }));
  }
  RETURN_IF_ERROR(w.Write((dir / "model.safetensors").string()));
  ModelConfig c = src.config;
  RETURN_IF_ERROR(WriteStringToFile((dir / "config.json").string(),
                                    HfConfigJson(c, o.dtype)));
  OJson gen;
  gen["bos_token_id"] = c.bos_token_id;
  gen["eos_token_id"] = c.eos_token_ids.size() == 1 ? OJson(c.eos_token_ids[0])
                                                    : OJson(c.eos_token_ids);
  RETURN_IF_ERROR(WriteStringToFile((dir / "generation_config.json").string(),
                                    gen.dump(2) + "\n"));
  if (o.vocab != nullptr) {
    RETURN_IF_ERROR(WriteStringToFile((dir / "tokenizer.json").string(),
                                      TokenizerJson(*o.vocab)));
    OJson tc;
    tc["tokenizer_class"] = "PreTrainedTokenizerFast";
    tc["bos_token"] = o.vocab->tokens[o.vocab->bos_id];
    tc["eos_token"] = o.vocab->tokens[o.vocab->eos_id];
    tc["add_bos_token"] = true;
    tc["add_eos_token"] = false;
    tc["model_max_length"] = c.max_position_embeddings;
    tc["clean_up_tokenization_spaces"] = false;
    RETURN_IF_ERROR(WriteStringToFile((dir / "tokenizer_config.json").string(),
                                      tc.dump(2) + "\n"));
  }
  return absl::OkStatus();
}

uint32_t FileType(DType d) {
  switch (d) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kQ8_0:
      return 7;
    case DType::kBF16:
      return 32;
    default:
      return 0;
  }
}

absl::Status WriteGguf(const ModelSource& src, const WriteModelOptions& o,
                       const fs::path& dir) {
  const ModelConfig& c = src.config;
  const std::string arch = GgufArch(c);
  const std::string k = arch + ".";
  GgufWriter w;
  auto u32 = [](int64_t v) {
    return GgufValue::Uint32(static_cast<uint32_t>(v));
  };
  w.SetKv("general.architecture", GgufValue::String(arch));
  w.SetKv("general.name", GgufValue::String(o.name));
  w.SetKv("general.alignment", GgufValue::Uint32(32));
  w.SetKv("general.file_type", GgufValue::Uint32(FileType(o.dtype)));
  w.SetKv(k + "vocab_size", u32(c.vocab_size));
  w.SetKv(k + "context_length", u32(c.max_position_embeddings));
  w.SetKv(k + "embedding_length", u32(c.hidden_size));
  w.SetKv(k + "block_count", u32(c.num_hidden_layers));
  w.SetKv(k + "feed_forward_length", u32(c.intermediate_size));
  w.SetKv(k + "rope.dimension_count", u32(c.head_dim));
  w.SetKv(k + "attention.head_count", u32(c.num_attention_heads));
  w.SetKv(k + "attention.head_count_kv", u32(c.num_key_value_heads));
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    w.SetKv(k + "attention.key_length", u32(c.head_dim));
    w.SetKv(k + "attention.value_length", u32(c.head_dim));
  }
  w.SetKv(k + "attention.layer_norm_rms_epsilon",
          GgufValue::Float32(c.rms_norm_eps));
  w.SetKv(k + "rope.freq_base", GgufValue::Float32(c.rope_theta));
  if (c.rope_scaling.type == RopeScaling::Type::kLinear) {
    w.SetKv(k + "rope.scaling.type", GgufValue::String("linear"));
    w.SetKv(k + "rope.scaling.factor",
            GgufValue::Float32(c.rope_scaling.factor));
  }
  if (c.is_moe()) {
    w.SetKv(k + "expert_count", u32(c.num_local_experts));
    w.SetKv(k + "expert_used_count", u32(c.num_experts_per_tok));
  }
  if (o.vocab != nullptr) {
    const SyntheticVocab& v = *o.vocab;
    w.SetKv("tokenizer.ggml.model", GgufValue::String("gpt2"));
    w.SetKv("tokenizer.ggml.pre", GgufValue::String("gpt2"));
    w.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray(v.tokens));
    w.SetKv("tokenizer.ggml.token_type", GgufValue::Int32Array(v.token_types));
    w.SetKv("tokenizer.ggml.merges", GgufValue::StringArray(v.merges));
  }
  w.SetKv("tokenizer.ggml.bos_token_id", u32(c.bos_token_id));
  w.SetKv("tokenizer.ggml.eos_token_id", u32(c.eos_token_ids.at(0)));
  w.SetKv("tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
  w.SetKv("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));

  const RopeStyle style =
      LlamaFamily(c) ? RopeStyle::kPairwise : RopeStyle::kHalf;
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    // llama.cpp keeps llama3 scaling as a table of frequency divisors.
    const std::vector<float> f = Llama3RopeFreqFactors(c);
    Tensor t = Tensor::Empty(DType::kF32, {static_cast<int64_t>(f.size())});
    std::memcpy(t.raw_data(), f.data(), f.size() * sizeof(float));
    RETURN_IF_ERROR(w.AddTensor("rope_freqs.weight", t));
  }
  const std::vector<TensorSpec> specs = HfTensorSpecs(c);
  for (const TensorSpec& spec : specs) {
    int expert = -1;
    const std::string name = GgufName(spec.name, &expert);
    if (name.empty()) {
      return absl::InternalError(
          fmt::format("no GGUF name for tensor '{}'", spec.name));
    }
    const DType d = StoredDType(spec, o.dtype);
    ASSIGN_OR_RETURN(GgmlType type, GgmlTypeFromDType(d));
    if (expert < 0) {
      RETURN_IF_ERROR(w.AddTensor(
          name, type, spec.shape,
          [&src, spec, style, d] { return Fetch(src, spec, style, d); }));
      continue;
    }
    if (expert != 0) continue;  // Stacked with expert 0.
    // [experts, rows, cols]: expert e's weight is slice e.
    const int64_t n_exp = c.num_local_experts;
    Shape stacked = {n_exp, spec.shape[0], spec.shape[1]};
    const std::string e0 = "experts.0.";
    const size_t at = spec.name.find(e0);
    RETURN_IF_ERROR(w.AddTensor(
        name, type, stacked,
        [&src, spec, d, n_exp, at, e0, stacked]() -> absl::StatusOr<Tensor> {
          Tensor out = Tensor::Empty(d, stacked);
          int64_t off = 0;
          for (int64_t e = 0; e < n_exp; ++e) {
            TensorSpec s = spec;
            s.name = spec.name.substr(0, at) + fmt::format("experts.{}.", e) +
                     spec.name.substr(at + e0.size());
            ASSIGN_OR_RETURN(Tensor t, Fetch(src, s, RopeStyle::kHalf, d));
            std::memcpy(static_cast<char*>(out.raw_data()) + off, t.raw_data(),
                        static_cast<size_t>(t.nbytes()));
            off += t.nbytes();
          }
          return out;
        }));
  }
  return w.Write((dir / "model.gguf").string());
}

}  // namespace

std::vector<TensorSpec> HfTensorSpecs(const ModelConfig& c) {
  using K = TensorSpec::Kind;
  const int64_t h = c.hidden_size, f = c.intermediate_size,
                q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim;
  std::vector<TensorSpec> s;
  s.push_back({"model.embed_tokens.weight", {c.vocab_size, h}, K::kWeight, h});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    s.push_back({p + "input_layernorm.weight", {h}, K::kNorm, 1});
    s.push_back({p + "self_attn.q_proj.weight", {q, h}, K::kWeight, h});
    s.push_back({p + "self_attn.k_proj.weight", {kv, h}, K::kWeight, h});
    s.push_back({p + "self_attn.v_proj.weight", {kv, h}, K::kWeight, h});
    if (c.attention_bias) {
      s.push_back({p + "self_attn.q_proj.bias", {q}, K::kBias, h});
      s.push_back({p + "self_attn.k_proj.bias", {kv}, K::kBias, h});
      s.push_back({p + "self_attn.v_proj.bias", {kv}, K::kBias, h});
    }
    s.push_back({p + "self_attn.o_proj.weight", {h, q}, K::kWeight, q});
    if (c.qk_norm) {
      s.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, K::kNorm, 1});
      s.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, K::kNorm, 1});
    }
    s.push_back({p + "post_attention_layernorm.weight", {h}, K::kNorm, 1});
    if (c.is_moe()) {
      s.push_back({p + "block_sparse_moe.gate.weight",
                   {c.num_local_experts, h},
                   K::kRouter,
                   h});
      for (int64_t e = 0; e < c.num_local_experts; ++e) {
        const std::string ep =
            fmt::format("{}block_sparse_moe.experts.{}.", p, e);
        s.push_back({ep + "w1.weight", {f, h}, K::kWeight, h});
        s.push_back({ep + "w2.weight", {h, f}, K::kWeight, f});
        s.push_back({ep + "w3.weight", {f, h}, K::kWeight, h});
      }
    } else {
      s.push_back({p + "mlp.gate_proj.weight", {f, h}, K::kWeight, h});
      s.push_back({p + "mlp.up_proj.weight", {f, h}, K::kWeight, h});
      s.push_back({p + "mlp.down_proj.weight", {h, f}, K::kWeight, f});
    }
  }
  s.push_back({"model.norm.weight", {h}, K::kNorm, 1});
  if (!c.tie_word_embeddings) {
    s.push_back({"lm_head.weight", {c.vocab_size, h}, K::kWeight, h});
  }
  return s;
}

ModelSource SourceFromModel(const Model& model) {
  auto index = std::make_shared<std::map<std::string, Tensor>>();
  const ModelWeights& w = model.weights;
  (*index)["model.embed_tokens.weight"] = w.token_embedding;
  (*index)["model.norm.weight"] = w.output_norm;
  (*index)["lm_head.weight"] = w.lm_head;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string p = fmt::format("model.layers.{}.", i);
    auto& m = *index;
    m[p + "input_layernorm.weight"] = l.attn_norm;
    m[p + "self_attn.q_proj.weight"] = l.wq;
    m[p + "self_attn.k_proj.weight"] = l.wk;
    m[p + "self_attn.v_proj.weight"] = l.wv;
    m[p + "self_attn.o_proj.weight"] = l.wo;
    m[p + "self_attn.q_proj.bias"] = l.bq;
    m[p + "self_attn.k_proj.bias"] = l.bk;
    m[p + "self_attn.v_proj.bias"] = l.bv;
    m[p + "self_attn.q_norm.weight"] = l.q_norm;
    m[p + "self_attn.k_norm.weight"] = l.k_norm;
    m[p + "post_attention_layernorm.weight"] = l.ffn_norm;
    m[p + "mlp.gate_proj.weight"] = l.w_gate;
    m[p + "mlp.up_proj.weight"] = l.w_up;
    m[p + "mlp.down_proj.weight"] = l.w_down;
    m[p + "block_sparse_moe.gate.weight"] = l.router;
    for (size_t e = 0; e < l.expert_gate.size(); ++e) {
      const std::string ep =
          fmt::format("{}block_sparse_moe.experts.{}.", p, e);
      m[ep + "w1.weight"] = l.expert_gate[e];
      m[ep + "w2.weight"] = l.expert_down[e];
      m[ep + "w3.weight"] = l.expert_up[e];
    }
  }
  ModelSource src;
  src.config = model.config;
  src.rope_style = model.rope_style;
  src.tensor = [index](const std::string& name) -> absl::StatusOr<Tensor> {
    auto it = index->find(name);
    if (it == index->end() || !it->second.defined()) {
      return absl::NotFoundError(fmt::format("model has no tensor '{}'", name));
    }
    return it->second;
  };
  return src;
}

absl::StatusOr<Tensor> ConvertTensor(const Tensor& t, DType dtype) {
  if (t.dtype() == dtype && t.is_contiguous()) return t;
  if (!t.is_contiguous() || !IsFloatingPoint(t.dtype())) {
    return absl::InvalidArgumentError(fmt::format(
        "cannot convert {} to {}", t.DebugString(), DTypeName(dtype)));
  }
  const int64_t n = t.numel();
  if (dtype == DType::kQ8_0) {
    if (t.rank() == 0 || t.dim(-1) % 32 != 0) {
      return absl::InvalidArgumentError(fmt::format(
          "cannot quantize {} to q8_0: rows must be multiples of 32",
          t.DebugString()));
    }
    Tensor out = Tensor::Empty(DType::kQ8_0, t.shape());
    uint8_t* o = static_cast<uint8_t*>(out.raw_data());
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) {
        amax = std::max(amax, std::fabs(LoadFloat(t, b * 32 + i)));
      }
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const uint16_t dh = FloatToHalf(d);
      std::memcpy(o + b * 34, &dh, 2);
      for (int i = 0; i < 32; ++i) {
        const float v = std::nearbyint(LoadFloat(t, b * 32 + i) * id);
        o[b * 34 + 2 + i] = static_cast<uint8_t>(static_cast<int8_t>(v));
      }
    }
    return out;
  }
  Tensor out = Tensor::Empty(dtype, t.shape());
  switch (dtype) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) out.data<float>()[i] = LoadFloat(t, i);
      return out;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i)
        out.data<uint16_t>()[i] = FloatToHalf(LoadFloat(t, i));
      return out;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i)
        out.data<uint16_t>()[i] = FloatToBF16(LoadFloat(t, i));
      return out;
    default:
      return absl::InvalidArgumentError(
          fmt::format("cannot convert to {}", DTypeName(dtype)));
  }
}

std::string TokenizerJson(const SyntheticVocab& v) {
  OJson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  OJson added = OJson::array();
  for (int32_t id : v.special_ids) {
    added.push_back({{"id", id},
                     {"content", v.tokens[id]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  j["added_tokens"] = std::move(added);
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"},
                        {"add_prefix_space", false},
                        {"trim_offsets", true},
                        {"use_regex", true}};
  const std::string& bos = v.tokens[v.bos_id];
  OJson bos_piece = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {bos_piece,
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        bos_piece,
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens",
       {{bos, {{"id", bos}, {"ids", {v.bos_id}}, {"tokens", {bos}}}}}}};
  j["decoder"] = {{"type", "ByteLevel"},
                  {"add_prefix_space", true},
                  {"trim_offsets", true},
                  {"use_regex", true}};
  OJson vocab = OJson::object();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (std::find(v.special_ids.begin(), v.special_ids.end(),
                  static_cast<int32_t>(i)) != v.special_ids.end()) {
      continue;  // Specials live in added_tokens.
    }
    vocab[v.tokens[i]] = i;
  }
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", std::move(vocab)},
                {"merges", v.merges}};
  return j.dump(1) + "\n";
}

absl::Status WriteModel(const ModelSource& source,
                        const WriteModelOptions& options,
                        const std::string& out_dir) {
  RETURN_IF_ERROR(source.config.Validate());
  if (options.format == ModelFormat::kHf && options.dtype == DType::kQ8_0) {
    return absl::InvalidArgumentError(
        "q8_0 weights can only be written as GGUF");
  }
  if (options.dtype != DType::kF32 && options.dtype != DType::kF16 &&
      options.dtype != DType::kBF16 && options.dtype != DType::kQ8_0) {
    return absl::InvalidArgumentError(
        fmt::format("cannot write {} weights (f32, f16, bf16 or q8_0)",
                    DTypeName(options.dtype)));
  }
  if (options.vocab != nullptr &&
      static_cast<int64_t>(options.vocab->tokens.size()) !=
          source.config.vocab_size) {
    return absl::InvalidArgumentError(
        fmt::format("tokenizer has {} tokens, the model's vocab_size is {}",
                    options.vocab->tokens.size(), source.config.vocab_size));
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        fmt::format("cannot create {}: {}", out_dir, ec.message()));
  }
  switch (options.format) {
    case ModelFormat::kHf:
      return WriteHf(source, options, fs::path(out_dir));
    case ModelFormat::kGguf:
      return WriteGguf(source, options, fs::path(out_dir));
    case ModelFormat::kLlama2c:
      break;
  }
  return absl::InvalidArgumentError("can only write hf or gguf");
}

}  // namespace tessera
