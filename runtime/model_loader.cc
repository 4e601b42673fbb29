#include "runtime/model_loader.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <type_traits>

#include "base/host_memory.h"
#include "base/mapped_file.h"
#include "base/status.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "nlohmann/json.hpp"
#include "runtime/formats/gguf.h"
#include "runtime/formats/safetensors.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr uint32_t kLlama2cMagic = 0x616b3432;  // "ak42"

std::string ShapeString(const Shape& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// A 1-D f16/bf16 tensor converted to an owning f32 copy (norms and biases are
// tiny, and keeping them f32 spares every kernel a dtype switch).
absl::StatusOr<Tensor> ToF32(const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
  Tensor out = Tensor::Empty(DType::kF32, t.shape());
  const int64_t n = t.numel();
  float* o = out.data<float>();
  switch (t.dtype()) {
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) o[i] = HalfToFloat(t.data<uint16_t>()[i]);
      return out;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) o[i] = BF16ToFloat(t.data<uint16_t>()[i]);
      return out;
    default:
      return absl::InvalidArgumentError(fmt::format(
          "dtype {} where a float vector was expected", DTypeName(t.dtype())));
  }
}

bool IsWeightDType(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 ||
         d == DType::kQ8_0;
}

// Fetches a tensor by its file name: NotFound when absent.
using Getter = std::function<absl::StatusOr<Tensor>(const std::string&)>;

// Looks up `name`, checks its shape, and stores it in `out`. 1-D tensors are
// made f32. Missing optional tensors leave `out` undefined.
absl::Status Take(const Getter& get, const std::string& file,
                  const std::string& name, const Shape& expect, Tensor* out,
                  bool optional = false) {
  absl::StatusOr<Tensor> t = get(name);
  if (!t.ok()) {
    if (optional && absl::IsNotFound(t.status())) return absl::OkStatus();
    if (absl::IsNotFound(t.status())) {
      return absl::InvalidArgumentError(
          fmt::format("{}: missing tensor '{}'", file, name));
    }
    return t.status();
  }
  if (t->shape() != expect) {
    return absl::InvalidArgumentError(
        fmt::format("{}: tensor '{}' has shape {}, expected {} from the config",
                    file, name, ShapeString(t->shape()), ShapeString(expect)));
  }
  if (!IsWeightDType(t->dtype())) {
    return absl::InvalidArgumentError(
        fmt::format("{}: tensor '{}' has dtype {} (supported: f32, f16, bf16, "
                    "q8_0)",
                    file, name, DTypeName(t->dtype())));
  }
  if (expect.size() == 1) {
    absl::StatusOr<Tensor> f = ToF32(*t);
    if (!f.ok()) {
      return Annotate(f.status(), fmt::format("{}: tensor '{}'", file, name));
    }
    *out = *f;
  } else {
    *out = *t;
  }
  return absl::OkStatus();
}

// Shapes implied by the config.
struct Dims {
  int64_t v, h, f, q, kv, hd, e;
  explicit Dims(const ModelConfig& c)
      : v(c.vocab_size),
        h(c.hidden_size),
        f(c.intermediate_size),
        q(c.num_attention_heads * c.head_dim),
        kv(c.num_key_value_heads * c.head_dim),
        hd(c.head_dim),
        e(c.num_local_experts) {}
};

// Per-format tensor names of one layer's roles.
struct LayerNames {
  std::string attn_norm, wq, wk, wv, wo, bq, bk, bv, q_norm, k_norm, ffn_norm,
      gate, up, down, router;
};

absl::Status TakeLayer(const ModelConfig& c, const Getter& get,
                       const std::string& file, const LayerNames& n,
                       LayerWeights* l) {
  const Dims d(c);
  RETURN_IF_ERROR(Take(get, file, n.attn_norm, {d.h}, &l->attn_norm));
  RETURN_IF_ERROR(Take(get, file, n.wq, {d.q, d.h}, &l->wq));
  RETURN_IF_ERROR(Take(get, file, n.wk, {d.kv, d.h}, &l->wk));
  RETURN_IF_ERROR(Take(get, file, n.wv, {d.kv, d.h}, &l->wv));
  RETURN_IF_ERROR(Take(get, file, n.wo, {d.h, d.q}, &l->wo));
  if (c.attention_bias) {
    RETURN_IF_ERROR(Take(get, file, n.bq, {d.q}, &l->bq));
    RETURN_IF_ERROR(Take(get, file, n.bk, {d.kv}, &l->bk));
    RETURN_IF_ERROR(Take(get, file, n.bv, {d.kv}, &l->bv));
  }
  if (c.qk_norm) {
    RETURN_IF_ERROR(Take(get, file, n.q_norm, {d.hd}, &l->q_norm));
    RETURN_IF_ERROR(Take(get, file, n.k_norm, {d.hd}, &l->k_norm));
  }
  RETURN_IF_ERROR(Take(get, file, n.ffn_norm, {d.h}, &l->ffn_norm));
  if (c.is_moe()) {
    RETURN_IF_ERROR(Take(get, file, n.router, {d.e, d.h}, &l->router));
  } else {
    RETURN_IF_ERROR(Take(get, file, n.gate, {d.f, d.h}, &l->w_gate));
    RETURN_IF_ERROR(Take(get, file, n.up, {d.f, d.h}, &l->w_up));
    RETURN_IF_ERROR(Take(get, file, n.down, {d.h, d.f}, &l->w_down));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------ Hugging Face

absl::StatusOr<std::string> ArchFromHf(const Json& j, const std::string& name) {
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() &&
      !j["architectures"].empty() && j["architectures"][0].is_string()) {
    arch = j["architectures"][0].get<std::string>();
  }
  std::string model_type =
      j.contains("model_type") && j["model_type"].is_string()
          ? j["model_type"].get<std::string>()
          : "";
  static const std::pair<const char*, const char*> kArchs[] = {
      {"LlamaForCausalLM", "llama"},     {"MistralForCausalLM", "mistral"},
      {"Qwen2ForCausalLM", "qwen2"},     {"Qwen3ForCausalLM", "qwen3"},
      {"MixtralForCausalLM", "mixtral"},
  };
  for (const auto& [cls, a] : kArchs) {
    if (arch == cls) return std::string(a);
  }
  for (const auto& [cls, a] : kArchs) {
    if (model_type == a) return std::string(a);
  }
  return absl::InvalidArgumentError(fmt::format(
      "{}: unsupported architecture '{}' (model_type '{}'); supported: "
      "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
      "Qwen3ForCausalLM, MixtralForCausalLM",
      name, arch, model_type));
}

Getter SafetensorsGetter(const SafetensorsCheckpoint& ck) {
  return [&ck](const std::string& n) { return ck.TensorView(n); };
}

absl::StatusOr<Model> LoadHf(const std::string& path) {
  fs::path dir(path);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) dir = dir.parent_path();
  if (dir.empty()) dir = ".";
  const std::string config_path = (dir / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(config_path));
  ASSIGN_OR_RETURN(ModelConfig config, ParseHfConfig(text, config_path));
  // A .safetensors path names the weights file; otherwise the directory.
  const bool is_file = fs::is_regular_file(path, ec) &&
                       fs::path(path).filename() != "config.json";
  ASSIGN_OR_RETURN(SafetensorsCheckpoint ck,
                   SafetensorsCheckpoint::Open(is_file ? path : dir.string()));
  // generation_config.json may list more EOS ids (Llama 3 instruct).
  const fs::path gen = dir / "generation_config.json";
  if (fs::exists(gen, ec)) {
    absl::StatusOr<std::string> g = ReadFileToString(gen.string());
    if (g.ok()) {
      Json gj = Json::parse(*g, nullptr, false);
      if (gj.is_object() && gj.contains("eos_token_id")) {
        const Json& e = gj["eos_token_id"];
        std::vector<int32_t> ids;
        if (e.is_number_integer()) ids.push_back(e.get<int32_t>());
        if (e.is_array()) {
          for (const Json& x : e) {
            if (x.is_number_integer()) ids.push_back(x.get<int32_t>());
          }
        }
        for (int32_t id : ids) {
          if (std::find(config.eos_token_ids.begin(),
                        config.eos_token_ids.end(),
                        id) == config.eos_token_ids.end()) {
            config.eos_token_ids.push_back(id);
          }
        }
      }
    }
  }

  Model model;
  model.config = config;
  model.rope_style = RopeStyle::kHalf;
  model.source = path;
  model.format = "hf";
  for (const auto& f : ck.files()) model.owners.push_back(f);
  // Messages name the weights file (or the directory, when sharded).
  const std::string file =
      ck.files().size() == 1 ? ck.files()[0]->path() : ck.path();
  const Getter get = SafetensorsGetter(ck);
  const Dims d(config);
  ModelWeights& w = model.weights;
  RETURN_IF_ERROR(Take(get, file, "model.embed_tokens.weight", {d.v, d.h},
                       &w.token_embedding));
  RETURN_IF_ERROR(Take(get, file, "model.norm.weight", {d.h}, &w.output_norm));
  RETURN_IF_ERROR(Take(get, file, "lm_head.weight", {d.v, d.h}, &w.lm_head,
                       /*optional=*/config.tie_word_embeddings));
  if (!w.lm_head.defined()) w.lm_head = w.token_embedding;
  w.layers.resize(config.num_hidden_layers);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerNames n;
    n.attn_norm = p + "input_layernorm.weight";
    n.wq = p + "self_attn.q_proj.weight";
    n.wk = p + "self_attn.k_proj.weight";
    n.wv = p + "self_attn.v_proj.weight";
    n.wo = p + "self_attn.o_proj.weight";
    n.bq = p + "self_attn.q_proj.bias";
    n.bk = p + "self_attn.k_proj.bias";
    n.bv = p + "self_attn.v_proj.bias";
    n.q_norm = p + "self_attn.q_norm.weight";
    n.k_norm = p + "self_attn.k_norm.weight";
    n.ffn_norm = p + "post_attention_layernorm.weight";
    n.gate = p + "mlp.gate_proj.weight";
    n.up = p + "mlp.up_proj.weight";
    n.down = p + "mlp.down_proj.weight";
    n.router = p + "block_sparse_moe.gate.weight";
    LayerWeights& l = w.layers[i];
    RETURN_IF_ERROR(TakeLayer(config, get, file, n, &l));
    for (int64_t e = 0; e < config.num_local_experts; ++e) {
      const std::string ep =
          fmt::format("{}block_sparse_moe.experts.{}.", p, e);
      Tensor g, u, dn;
      RETURN_IF_ERROR(Take(get, file, ep + "w1.weight", {d.f, d.h}, &g));
      RETURN_IF_ERROR(Take(get, file, ep + "w3.weight", {d.f, d.h}, &u));
      RETURN_IF_ERROR(Take(get, file, ep + "w2.weight", {d.h, d.f}, &dn));
      l.expert_gate.push_back(g);
      l.expert_up.push_back(u);
      l.expert_down.push_back(dn);
    }
  }
  model.config.dtype =
      w.layers.empty() ? w.token_embedding.dtype() : w.layers[0].wq.dtype();
  return model;
}

// -------------------------------------------------------------------- GGUF

// Recognises llama3 rope factors (llama.cpp stores only the factor table) by
// trying the usual parameters.
void MatchLlama3Factors(const Tensor& freqs, ModelConfig* c) {
  if (freqs.dtype() != DType::kF32 || freqs.numel() != c->head_dim / 2) return;
  for (float factor : {8.0f, 16.0f, 32.0f, 4.0f, 2.0f, 64.0f}) {
    for (int64_t orig : {8192, 4096, 2048, 16384, 32768}) {
      ModelConfig t = *c;
      t.rope_scaling.type = RopeScaling::Type::kLlama3;
      t.rope_scaling.factor = factor;
      t.rope_scaling.low_freq_factor = 1.0f;
      t.rope_scaling.high_freq_factor = 4.0f;
      t.rope_scaling.original_max_position_embeddings = orig;
      const std::vector<float> want = Llama3RopeFreqFactors(t);
      bool same = true;
      for (size_t i = 0; i < want.size() && same; ++i) {
        same = std::fabs(want[i] - freqs.data<float>()[i]) <=
               1e-5f * std::max(1.0f, want[i]);
      }
      if (same) {
        c->rope_scaling = t.rope_scaling;
        return;
      }
    }
  }
}

absl::StatusOr<Model> LoadGguf(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<GgufFile> g, GgufFile::Open(path));
  ASSIGN_OR_RETURN(std::string arch, g->GetString("general.architecture"));
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3" &&
      arch != "mistral") {
    return absl::InvalidArgumentError(fmt::format(
        "{}: unsupported GGUF architecture '{}' (supported: llama, mistral, "
        "qwen2, qwen3)",
        path, arch));
  }
  const std::string k = arch + ".";
  ModelConfig c;
  c.architecture = arch;
  ASSIGN_OR_RETURN(c.hidden_size, g->GetInt(k + "embedding_length"));
  ASSIGN_OR_RETURN(c.num_hidden_layers, g->GetInt(k + "block_count"));
  ASSIGN_OR_RETURN(c.intermediate_size, g->GetInt(k + "feed_forward_length"));
  ASSIGN_OR_RETURN(c.num_attention_heads,
                   g->GetInt(k + "attention.head_count"));
  ASSIGN_OR_RETURN(
      c.num_key_value_heads,
      g->GetIntOr(k + "attention.head_count_kv", c.num_attention_heads));
  ASSIGN_OR_RETURN(c.max_position_embeddings,
                   g->GetIntOr(k + "context_length", 2048));
  ASSIGN_OR_RETURN(double eps,
                   g->GetFloatOr(k + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rms_norm_eps = static_cast<float>(eps);
  ASSIGN_OR_RETURN(double theta, g->GetFloatOr(k + "rope.freq_base", 10000.0));
  c.rope_theta = static_cast<float>(theta);
  const int64_t default_hd =
      c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  ASSIGN_OR_RETURN(c.head_dim,
                   g->GetIntOr(k + "attention.key_length", default_hd));
  ASSIGN_OR_RETURN(c.num_local_experts, g->GetIntOr(k + "expert_count", 0));
  ASSIGN_OR_RETURN(c.num_experts_per_tok,
                   g->GetIntOr(k + "expert_used_count", 0));
  if (c.is_moe() && arch == "llama") c.architecture = "mixtral";
  ASSIGN_OR_RETURN(std::string scaling,
                   g->GetStringOr(k + "rope.scaling.type", "none"));
  if (scaling == "linear") {
    ASSIGN_OR_RETURN(double f, g->GetFloatOr(k + "rope.scaling.factor", 1.0));
    c.rope_scaling.type = RopeScaling::Type::kLinear;
    c.rope_scaling.factor = static_cast<float>(f);
  } else if (scaling != "none") {
    return absl::InvalidArgumentError(fmt::format(
        "{}: unsupported {}rope.scaling.type '{}'", path, k, scaling));
  }
  c.qk_norm = arch == "qwen3";
  c.attention_bias = g->FindTensor("blk.0.attn_q.bias") != nullptr;
  const GgufTensorInfo* embd = g->FindTensor("token_embd.weight");
  if (embd == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("{}: missing tensor 'token_embd.weight'", path));
  }
  const int64_t embd_rows = embd->ne.size() == 2 ? embd->ne[1] : 0;
  ASSIGN_OR_RETURN(c.vocab_size, g->GetIntOr(k + "vocab_size", embd_rows));
  ASSIGN_OR_RETURN(int64_t bos, g->GetIntOr("tokenizer.ggml.bos_token_id", 1));
  ASSIGN_OR_RETURN(int64_t eos, g->GetIntOr("tokenizer.ggml.eos_token_id", 2));
  c.bos_token_id = static_cast<int32_t>(bos);
  c.eos_token_ids = {static_cast<int32_t>(eos)};
  ASSIGN_OR_RETURN(int64_t eot, g->GetIntOr("tokenizer.ggml.eot_token_id", -1));
  if (eot >= 0 && eot != eos)
    c.eos_token_ids.push_back(static_cast<int32_t>(eot));
  c.tie_word_embeddings = g->FindTensor("output.weight") == nullptr;
  RETURN_IF_ERROR(Annotate(c.Validate(), path));

  Model model;
  model.source = path;
  model.owners.push_back(g);
  model.format = "gguf";
  // llama.cpp's converter permutes llama-family Q/K rows to the pairwise
  // order its RoPE uses; Qwen files keep the HF order (NeoX RoPE).
  model.rope_style = arch == "qwen2" || arch == "qwen3" ? RopeStyle::kHalf
                                                        : RopeStyle::kPairwise;
  const Getter get = [&g](const std::string& n) { return g->TensorView(n); };
  const Dims d(c);
  ModelWeights& w = model.weights;
  RETURN_IF_ERROR(
      Take(get, path, "token_embd.weight", {d.v, d.h}, &w.token_embedding));
  RETURN_IF_ERROR(Take(get, path, "output_norm.weight", {d.h}, &w.output_norm));
  RETURN_IF_ERROR(Take(get, path, "output.weight", {d.v, d.h}, &w.lm_head,
                       /*optional=*/true));
  if (!w.lm_head.defined()) w.lm_head = w.token_embedding;
  if (const GgufTensorInfo* rf = g->FindTensor("rope_freqs.weight")) {
    RETURN_IF_ERROR(
        Take(get, path, "rope_freqs.weight", {d.hd / 2}, &w.rope_freqs));
    if (c.rope_scaling.type == RopeScaling::Type::kNone) {
      MatchLlama3Factors(w.rope_freqs, &c);
    }
    (void)rf;
  }
  w.layers.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    LayerNames n;
    n.attn_norm = p + "attn_norm.weight";
    n.wq = p + "attn_q.weight";
    n.wk = p + "attn_k.weight";
    n.wv = p + "attn_v.weight";
    n.wo = p + "attn_output.weight";
    n.bq = p + "attn_q.bias";
    n.bk = p + "attn_k.bias";
    n.bv = p + "attn_v.bias";
    n.q_norm = p + "attn_q_norm.weight";
    n.k_norm = p + "attn_k_norm.weight";
    n.ffn_norm = p + "ffn_norm.weight";
    n.gate = p + "ffn_gate.weight";
    n.up = p + "ffn_up.weight";
    n.down = p + "ffn_down.weight";
    n.router = p + "ffn_gate_inp.weight";
    LayerWeights& l = w.layers[i];
    RETURN_IF_ERROR(TakeLayer(c, get, path, n, &l));
    if (!c.is_moe()) continue;
    if (g->FindTensor(p + "ffn_gate_exps.weight") != nullptr) {
      // Stacked [experts, rows, cols] tensors: one zero-copy view per expert.
      Tensor gs, us, ds;
      RETURN_IF_ERROR(
          Take(get, path, p + "ffn_gate_exps.weight", {d.e, d.f, d.h}, &gs));
      RETURN_IF_ERROR(
          Take(get, path, p + "ffn_up_exps.weight", {d.e, d.f, d.h}, &us));
      RETURN_IF_ERROR(
          Take(get, path, p + "ffn_down_exps.weight", {d.e, d.h, d.f}, &ds));
      for (int64_t e = 0; e < c.num_local_experts; ++e) {
        l.expert_gate.push_back(gs.Slice(e, e + 1).Reshape({d.f, d.h}));
        l.expert_up.push_back(us.Slice(e, e + 1).Reshape({d.f, d.h}));
        l.expert_down.push_back(ds.Slice(e, e + 1).Reshape({d.h, d.f}));
      }
    } else {
      // Older llama.cpp files: one tensor per expert.
      for (int64_t e = 0; e < c.num_local_experts; ++e) {
        Tensor gt, ut, dt;
        RETURN_IF_ERROR(Take(get, path,
                             fmt::format("{}ffn_gate.{}.weight", p, e),
                             {d.f, d.h}, &gt));
        RETURN_IF_ERROR(Take(get, path, fmt::format("{}ffn_up.{}.weight", p, e),
                             {d.f, d.h}, &ut));
        RETURN_IF_ERROR(Take(get, path,
                             fmt::format("{}ffn_down.{}.weight", p, e),
                             {d.h, d.f}, &dt));
        l.expert_gate.push_back(gt);
        l.expert_up.push_back(ut);
        l.expert_down.push_back(dt);
      }
    }
  }
  c.dtype =
      w.layers.empty() ? w.token_embedding.dtype() : w.layers[0].wq.dtype();
  model.config = c;
  return model;
}

// ---------------------------------------------------------------- llama2.c

absl::StatusOr<Model> LoadLlama2c(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  const uint8_t* base = file->data();
  const uint64_t size = file->size();
  uint32_t magic = 0;
  if (size >= 4) std::memcpy(&magic, base, 4);
  int32_t hdr[7];
  uint64_t offset = 0;
  bool shared_classifier = true;
  bool legacy = true;
  if (magic == kLlama2cMagic) {
    // export.py version 1: magic, i32 version, 7 i32 params, u8 shared
    // classifier flag, zero-padded to 256 bytes; then fp32 weights.
    if (size < 256) {
      return absl::DataLossError(
          fmt::format("{}: truncated llama2.c header", path));
    }
    int32_t version = 0;
    std::memcpy(&version, base + 4, 4);
    if (version != 1) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: llama2.c export version {} is not supported (only version 1, "
          "fp32, and the legacy format)",
          path, version));
    }
    std::memcpy(hdr, base + 8, sizeof(hdr));
    shared_classifier = base[8 + sizeof(hdr)] != 0;
    offset = 256;
    legacy = false;
  } else {
    if (size < sizeof(hdr)) {
      return absl::DataLossError(
          fmt::format("{}: truncated llama2.c header ({} bytes)", path, size));
    }
    std::memcpy(hdr, base, sizeof(hdr));
    offset = sizeof(hdr);
    // A negative vocab size marks an unshared classifier.
    if (hdr[5] < 0) {
      shared_classifier = false;
      hdr[5] = -hdr[5];
    }
  }
  const char* kNames[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                           "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    if (hdr[i] <= 0 || hdr[i] > (1 << 24)) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: llama2.c header field {} = {} is out of range (not a llama2.c "
          "checkpoint?)",
          path, kNames[i], hdr[i]));
    }
  }
  ModelConfig c;
  c.architecture = "llama";
  c.hidden_size = hdr[0];
  c.intermediate_size = hdr[1];
  c.num_hidden_layers = hdr[2];
  c.num_attention_heads = hdr[3];
  c.num_key_value_heads = hdr[4];
  c.vocab_size = hdr[5];
  c.max_position_embeddings = hdr[6];
  c.head_dim =
      c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0
          ? c.hidden_size / c.num_attention_heads
          : 0;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tie_word_embeddings = shared_classifier;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.dtype = DType::kF32;
  RETURN_IF_ERROR(Annotate(c.Validate(), path));

  const int64_t dim = c.hidden_size, hid = c.intermediate_size,
                L = c.num_hidden_layers, V = c.vocab_size;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  // Lay out the regions in file order, in floats.
  struct Region {
    const char* name;
    int64_t floats;
    int64_t start = 0;
  };
  std::vector<Region> regions;
  // Sizes come from an untrusted header: multiply with overflow checks.
  bool overflow = false;
  auto mul = [&overflow](std::initializer_list<int64_t> xs) {
    int64_t r = 1;
    for (int64_t x : xs) overflow |= __builtin_mul_overflow(r, x, &r);
    return r;
  };
  auto add = [&](const char* name, int64_t n) { regions.push_back({name, n}); };
  if (legacy) {
    add("token_embedding_table", mul({V, dim}));
    add("rms_att_weight", mul({L, dim}));
    add("wq", mul({L, q_dim, dim}));
    add("wk", mul({L, kv_dim, dim}));
    add("wv", mul({L, kv_dim, dim}));
    add("wo", mul({L, dim, q_dim}));
    add("rms_ffn_weight", mul({L, dim}));
    add("w1", mul({L, hid, dim}));
    add("w2", mul({L, dim, hid}));
    add("w3", mul({L, hid, dim}));
    add("rms_final_weight", dim);
    // RoPE tables of the original export, unused (RoPE is computed).
    add("freq_cis_real", mul({c.max_position_embeddings, c.head_dim / 2}));
    add("freq_cis_imag", mul({c.max_position_embeddings, c.head_dim / 2}));
  } else {
    add("rms_att_weight", mul({L, dim}));
    add("rms_ffn_weight", mul({L, dim}));
    add("rms_final_weight", dim);
    add("token_embedding_table", mul({V, dim}));
    add("wq", mul({L, q_dim, dim}));
    add("wk", mul({L, kv_dim, dim}));
    add("wv", mul({L, kv_dim, dim}));
    add("wo", mul({L, dim, q_dim}));
    add("w1", mul({L, hid, dim}));
    add("w2", mul({L, dim, hid}));
    add("w3", mul({L, hid, dim}));
  }
  if (!shared_classifier) add("wcls", mul({V, dim}));
  int64_t total = 0;
  for (Region& r : regions) {
    r.start = total;
    overflow |= __builtin_add_overflow(total, r.floats, &total);
  }
  if (overflow || total > static_cast<int64_t>(size / 4)) {
    return absl::DataLossError(fmt::format(
        "{}: llama2.c header (dim {}, hidden {}, layers {}, vocab {}) implies "
        "more weights than the file's {} bytes (truncated or not a llama2.c "
        "checkpoint)",
        path, dim, hid, L, V, size));
  }
  const uint64_t want = offset + static_cast<uint64_t>(total) * 4;
  if (size < want) {
    return absl::DataLossError(fmt::format(
        "{}: truncated llama2.c checkpoint: {} bytes, the header implies {}",
        path, size, want));
  }
  if (size > want) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: llama2.c checkpoint has {} bytes, the header implies {} (wrong "
        "format?)",
        path, size, want));
  }
  auto region = [&](std::string_view name) -> const Region& {
    for (const Region& r : regions) {
      if (name == r.name) return r;
    }
    return regions.front();  // Unreachable: names are fixed above.
  };
  std::shared_ptr<const void> keep = file;
  auto view = [&](std::string_view name, int64_t index, Shape shape) {
    const Region& r = region(name);
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    const uint8_t* p = base + offset + (r.start + index * n) * 4;
    return Tensor::Borrow(DType::kF32, std::move(shape),
                          const_cast<uint8_t*>(p), keep);
  };
  Model model;
  model.config = c;
  model.rope_style = RopeStyle::kPairwise;
  model.source = path;
  model.format = "llama2c";
  model.owners.push_back(file);
  ModelWeights& w = model.weights;
  w.token_embedding = view("token_embedding_table", 0, {V, dim});
  w.output_norm = view("rms_final_weight", 0, {dim});
  w.lm_head = shared_classifier ? w.token_embedding : view("wcls", 0, {V, dim});
  w.layers.resize(L);
  for (int64_t i = 0; i < L; ++i) {
    LayerWeights& l = w.layers[i];
    l.attn_norm = view("rms_att_weight", i, {dim});
    l.wq = view("wq", i, {q_dim, dim});
    l.wk = view("wk", i, {kv_dim, dim});
    l.wv = view("wv", i, {kv_dim, dim});
    l.wo = view("wo", i, {dim, q_dim});
    l.ffn_norm = view("rms_ffn_weight", i, {dim});
    l.w_gate = view("w1", i, {hid, dim});
    l.w_down = view("w2", i, {dim, hid});
    l.w_up = view("w3", i, {hid, dim});
  }
  return model;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

// -------------------------------------------------------------- public API

absl::StatusOr<ModelConfig> ParseHfConfig(std::string_view json,
                                          const std::string& name) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: not a JSON object", name));
  }
  ModelConfig c;
  ASSIGN_OR_RETURN(c.architecture, ArchFromHf(j, name));
  // Reads an optional field, turning JSON type errors into statuses.
  auto num = [&](const char* key, auto* out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    using T = std::remove_pointer_t<decltype(out)>;
    const bool ok =
        std::is_integral_v<T> ? j[key].is_number_integer() : j[key].is_number();
    if (!ok) {
      return absl::InvalidArgumentError(
          fmt::format("{}: \"{}\" is not {}", name, key,
                      std::is_integral_v<T> ? "an integer" : "a number"));
    }
    *out = j[key].get<std::remove_pointer_t<decltype(out)>>();
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(num("vocab_size", &c.vocab_size));
  RETURN_IF_ERROR(num("hidden_size", &c.hidden_size));
  RETURN_IF_ERROR(num("intermediate_size", &c.intermediate_size));
  RETURN_IF_ERROR(num("num_hidden_layers", &c.num_hidden_layers));
  RETURN_IF_ERROR(num("num_attention_heads", &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(num("num_key_value_heads", &c.num_key_value_heads));
  c.head_dim =
      c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  RETURN_IF_ERROR(num("head_dim", &c.head_dim));
  RETURN_IF_ERROR(num("max_position_embeddings", &c.max_position_embeddings));
  c.rms_norm_eps =
      c.architecture == "qwen2" || c.architecture == "qwen3" ? 1e-6f : 1e-5f;
  RETURN_IF_ERROR(num("rms_norm_eps", &c.rms_norm_eps));
  RETURN_IF_ERROR(num("rope_theta", &c.rope_theta));
  RETURN_IF_ERROR(num("num_local_experts", &c.num_local_experts));
  RETURN_IF_ERROR(num("num_experts_per_tok", &c.num_experts_per_tok));
  if (j.contains("tie_word_embeddings") &&
      j["tie_word_embeddings"].is_boolean())
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  // Qwen2 always has Q/K/V biases; Llama-family configs may say so.
  c.attention_bias = c.architecture == "qwen2";
  if (j.contains("attention_bias") && j["attention_bias"].is_boolean())
    c.attention_bias = j["attention_bias"].get<bool>();
  c.qk_norm = c.architecture == "qwen3";
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_token_id = j["bos_token_id"].get<int32_t>();
  if (j.contains("eos_token_id")) {
    const Json& e = j["eos_token_id"];
    if (e.is_number_integer()) c.eos_token_ids = {e.get<int32_t>()};
    if (e.is_array()) {
      c.eos_token_ids.clear();
      for (const Json& x : e) {
        if (x.is_number_integer()) c.eos_token_ids.push_back(x.get<int32_t>());
      }
    }
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    absl::StatusOr<DType> d = ParseDType(j["torch_dtype"].get<std::string>());
    if (d.ok()) c.dtype = *d;
  }
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const Json& r = j["rope_scaling"];
    std::string type = r.value("rope_type", r.value("type", std::string()));
    auto getf = [&](const char* key, float dflt) {
      return r.contains(key) && r[key].is_number() ? r[key].get<float>() : dflt;
    };
    if (type == "llama3") {
      c.rope_scaling.type = RopeScaling::Type::kLlama3;
      c.rope_scaling.factor = getf("factor", 8.0f);
      c.rope_scaling.low_freq_factor = getf("low_freq_factor", 1.0f);
      c.rope_scaling.high_freq_factor = getf("high_freq_factor", 4.0f);
      c.rope_scaling.original_max_position_embeddings = static_cast<int64_t>(
          getf("original_max_position_embeddings", 8192.0f));
    } else if (type == "linear") {
      c.rope_scaling.type = RopeScaling::Type::kLinear;
      c.rope_scaling.factor = getf("factor", 1.0f);
    } else if (type != "default" && !type.empty()) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: unsupported rope_scaling type '{}' (supported: llama3, linear)",
          name, type));
    }
  }
  RETURN_IF_ERROR(Annotate(c.Validate(), name));
  return c;
}

absl::StatusOr<ModelFormat> DetectModelFormat(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(fmt::format("model not found: {}", path));
  }
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / "config.json", ec)) return ModelFormat::kHf;
    return absl::NotFoundError(fmt::format(
        "{}: directory has no config.json (expected a Hugging Face model "
        "directory)",
        path));
  }
  if (EndsWith(path, "config.json") || EndsWith(path, ".safetensors") ||
      EndsWith(path, ".index.json")) {
    return ModelFormat::kHf;
  }
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> f, MappedFile::Open(path));
  if (f->size() >= 4 && std::memcmp(f->data(), "GGUF", 4) == 0) {
    return ModelFormat::kGguf;
  }
  return ModelFormat::kLlama2c;
}

absl::StatusOr<Model> LoadModel(const std::string& path) {
  ASSIGN_OR_RETURN(ModelFormat format, DetectModelFormat(path));
  absl::StatusOr<Model> model;
  switch (format) {
    case ModelFormat::kHf:
      model = LoadHf(path);
      break;
    case ModelFormat::kGguf:
      model = LoadGguf(path);
      break;
    case ModelFormat::kLlama2c:
      model = LoadLlama2c(path);
      break;
  }
  if (!model.ok()) return model.status();
  RETURN_IF_ERROR(Annotate(ValidateModelWeights(*model), path));
  spdlog::debug("loaded {}: {} layers, hidden {}, vocab {}", path,
                model->config.num_hidden_layers, model->config.hidden_size,
                model->config.vocab_size);
  return model;
}

absl::Status ValidateModelWeights(const Model& model) {
  const ModelConfig& c = model.config;
  RETURN_IF_ERROR(c.Validate());
  const Dims d(c);
  auto check = [](const Tensor& t, const Shape& s,
                  const std::string& what) -> absl::Status {
    if (!t.defined()) {
      return absl::InvalidArgumentError(fmt::format("missing weight {}", what));
    }
    if (t.shape() != s) {
      return absl::InvalidArgumentError(
          fmt::format("weight {} has shape {}, expected {}", what,
                      ShapeString(t.shape()), ShapeString(s)));
    }
    return absl::OkStatus();
  };
  const ModelWeights& w = model.weights;
  RETURN_IF_ERROR(check(w.token_embedding, {d.v, d.h}, "token_embedding"));
  RETURN_IF_ERROR(check(w.lm_head, {d.v, d.h}, "lm_head"));
  RETURN_IF_ERROR(check(w.output_norm, {d.h}, "output_norm"));
  if (static_cast<int64_t>(w.layers.size()) != c.num_hidden_layers) {
    return absl::InvalidArgumentError(
        fmt::format("{} layers of weights, config says {}", w.layers.size(),
                    c.num_hidden_layers));
  }
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    auto n = [i](const char* f) { return fmt::format("layers[{}].{}", i, f); };
    RETURN_IF_ERROR(check(l.attn_norm, {d.h}, n("attn_norm")));
    RETURN_IF_ERROR(check(l.wq, {d.q, d.h}, n("wq")));
    RETURN_IF_ERROR(check(l.wk, {d.kv, d.h}, n("wk")));
    RETURN_IF_ERROR(check(l.wv, {d.kv, d.h}, n("wv")));
    RETURN_IF_ERROR(check(l.wo, {d.h, d.q}, n("wo")));
    if (c.attention_bias) {
      RETURN_IF_ERROR(check(l.bq, {d.q}, n("bq")));
      RETURN_IF_ERROR(check(l.bk, {d.kv}, n("bk")));
      RETURN_IF_ERROR(check(l.bv, {d.kv}, n("bv")));
    }
    if (c.qk_norm) {
      RETURN_IF_ERROR(check(l.q_norm, {d.hd}, n("q_norm")));
      RETURN_IF_ERROR(check(l.k_norm, {d.hd}, n("k_norm")));
    }
    RETURN_IF_ERROR(check(l.ffn_norm, {d.h}, n("ffn_norm")));
    if (c.is_moe()) {
      RETURN_IF_ERROR(check(l.router, {d.e, d.h}, n("router")));
      if (static_cast<int64_t>(l.expert_gate.size()) != d.e ||
          l.expert_up.size() != l.expert_gate.size() ||
          l.expert_down.size() != l.expert_gate.size()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: expected {} experts", n("experts"), d.e));
      }
      for (int64_t e = 0; e < d.e; ++e) {
        RETURN_IF_ERROR(check(l.expert_gate[e], {d.f, d.h}, n("expert_gate")));
        RETURN_IF_ERROR(check(l.expert_up[e], {d.f, d.h}, n("expert_up")));
        RETURN_IF_ERROR(check(l.expert_down[e], {d.h, d.f}, n("expert_down")));
      }
    } else {
      RETURN_IF_ERROR(check(l.w_gate, {d.f, d.h}, n("w_gate")));
      RETURN_IF_ERROR(check(l.w_up, {d.f, d.h}, n("w_up")));
      RETURN_IF_ERROR(check(l.w_down, {d.h, d.f}, n("w_down")));
    }
  }
  return absl::OkStatus();
}

namespace {

// Calls `fn(t)` on every defined weight tensor of `w` (ModelWeights, const
// or not).
template <typename W, typename Fn>
void ForEachWeight(W& w, Fn fn) {
  auto visit = [&](auto& t) {
    if (t.defined()) fn(t);
  };
  visit(w.token_embedding);
  for (auto& l : w.layers) {
    for (auto* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk,
                    &l.bv, &l.q_norm, &l.k_norm, &l.ffn_norm, &l.w_gate,
                    &l.w_up, &l.w_down, &l.router}) {
      visit(*t);
    }
    for (auto* experts : {&l.expert_gate, &l.expert_up, &l.expert_down}) {
      for (auto& t : *experts) visit(t);
    }
  }
  visit(w.output_norm);
  visit(w.lm_head);
  visit(w.rope_freqs);
}

}  // namespace

int64_t WeightBytes(const Model& model) {
  std::set<std::pair<const void*, int64_t>> seen;
  int64_t bytes = 0;
  ForEachWeight(model.weights, [&](const Tensor& t) {
    if (seen.emplace(t.raw_data(), t.nbytes()).second) bytes += t.nbytes();
  });
  return bytes;
}

absl::StatusOr<WeightCopyStats> CopyWeightsToHostMemory(Model& model) {
  const auto t0 = std::chrono::steady_clock::now();
  // Plan: one 64-byte-aligned slot per distinct (address, size); a tensor
  // seen again (tied embedding) reuses its slot.
  constexpr int64_t kSlotAlign = 64;
  std::map<std::pair<const void*, int64_t>, int64_t> slots;
  int64_t total = 0;
  bool movable = true;
  ForEachWeight(model.weights, [&](Tensor& t) {
    if (t.device().type != DeviceType::kCpu || !t.is_contiguous()) {
      movable = false;
      return;
    }
    const auto key = std::make_pair(t.raw_data(), t.nbytes());
    if (slots.emplace(key, total).second) {
      total += (t.nbytes() + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
    }
  });
  if (!movable) {
    return absl::FailedPreconditionError(
        "weights are not all contiguous host tensors; left in place");
  }
  std::shared_ptr<void> arena = AllocateHostMemory(static_cast<size_t>(total));
  if (arena == nullptr) {
    return absl::ResourceExhaustedError(fmt::format(
        "cannot allocate {:.1f} MiB of host memory for the weights of {}",
        total / 1048576.0, model.source));
  }
  char* base = static_cast<char*>(arena.get());
  for (const auto& [key, offset] : slots) {
    std::memcpy(base + offset, key.first, static_cast<size_t>(key.second));
  }
  ForEachWeight(model.weights, [&](Tensor& t) {
    const int64_t offset = slots.at(
        std::make_pair(static_cast<const void*>(t.raw_data()), t.nbytes()));
    t = Tensor::Borrow(t.dtype(), t.shape(), base + offset, arena);
  });
  // Nothing borrows from the files or conversion buffers any more.
  model.owners.assign(1, arena);
  WeightCopyStats stats;
  stats.tensors = static_cast<int64_t>(slots.size());
  stats.bytes = total;
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  return stats;
}

absl::StatusOr<Tensor> SliceRows(const Tensor& weight, int64_t begin,
                                 int64_t end) {
  if (weight.rank() != 2 || begin < 0 || begin > end || end > weight.dim(0)) {
    return absl::InvalidArgumentError(fmt::format(
        "bad row slice [{}, {}) of {}", begin, end, weight.DebugString()));
  }
  return weight.Slice(begin, end);
}

absl::StatusOr<Tensor> SliceColumns(const Tensor& weight, int64_t begin,
                                    int64_t end) {
  const int64_t block = DTypeBlockSize(weight.dtype());
  if (weight.rank() != 2 || !weight.is_contiguous() || begin < 0 ||
      begin > end || end > weight.dim(1) || begin % block != 0 ||
      end % block != 0) {
    return absl::InvalidArgumentError(fmt::format(
        "bad column slice [{}, {}) of {}", begin, end, weight.DebugString()));
  }
  const int64_t rows = weight.dim(0);
  Tensor out = Tensor::Empty(weight.dtype(), {rows, end - begin});
  const int64_t row_bytes = DTypeBytes(weight.dtype(), weight.dim(1));
  const int64_t skip = DTypeBytes(weight.dtype(), begin);
  const int64_t n = DTypeBytes(weight.dtype(), end - begin);
  const char* src = static_cast<const char*>(weight.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * n, src + r * row_bytes + skip,
                static_cast<size_t>(n));
  }
  return out;
}

Tensor PermuteQkRows(const Tensor& weight, int64_t num_heads, RopeStyle from,
                     RopeStyle to) {
  const int64_t rows = weight.dim(0);
  const int64_t row_bytes = rows == 0 ? 0 : weight.nbytes() / rows;
  Tensor out = Tensor::Empty(weight.dtype(), weight.shape());
  const int64_t hd = rows / num_heads;
  const char* src = static_cast<const char*>(weight.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (int64_t h = 0; h < num_heads; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t half = h * hd + j * (hd / 2) + i;
        const int64_t pair = h * hd + 2 * i + j;
        // Source and destination rows of this (head, pair, half).
        int64_t s = half, t = half;
        if (from == RopeStyle::kHalf && to == RopeStyle::kPairwise) t = pair;
        if (from == RopeStyle::kPairwise && to == RopeStyle::kHalf) s = pair;
        std::memcpy(dst + t * row_bytes, src + s * row_bytes,
                    static_cast<size_t>(row_bytes));
      }
    }
  }
  return out;
}

std::vector<float> Llama3RopeFreqFactors(const ModelConfig& c) {
  const RopeScaling& r = c.rope_scaling;
  const double old_ctx =
      static_cast<double>(r.original_max_position_embeddings);
  const double low_wavelen = old_ctx / r.low_freq_factor;
  const double high_wavelen = old_ctx / r.high_freq_factor;
  std::vector<float> out;
  for (int64_t i = 0; i < c.head_dim; i += 2) {
    const double freq = 1.0 / std::pow(static_cast<double>(c.rope_theta),
                                       static_cast<double>(i) /
                                           static_cast<double>(c.head_dim));
    const double wavelen = 2 * M_PI / freq;
    double f;
    if (wavelen < high_wavelen) {
      f = 1.0;
    } else if (wavelen > low_wavelen) {
      f = r.factor;
    } else {
      const double smooth = (old_ctx / wavelen - r.low_freq_factor) /
                            (r.high_freq_factor - r.low_freq_factor);
      f = 1.0 / ((1 - smooth) / r.factor + smooth);
    }
    out.push_back(static_cast<float>(f));
  }
  return out;
}

}  // namespace tessera
