#include "placement/model_spec.h"

#include <filesystem>
#include <map>
#include <optional>

#include "absl/status/status.h"
#include "base/mapped_file.h"
#include "base/status.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "placement/internal/gguf_metadata.h"

namespace tessera::placement {
namespace {

using json = nlohmann::json;

absl::StatusOr<int64_t> GetInt(const json& j, const char* key, int64_t fallback,
                               bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) {
      return absl::InvalidArgumentError(
          fmt::format("config.json: missing \"{}\"", key));
    }
    return fallback;
  }
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        fmt::format("config.json: \"{}\" must be an integer", key));
  }
  return it->get<int64_t>();
}

// GGUF general.file_type (llama_ftype) → dtype name for the bulk of weights.
std::string GgufFileTypeName(int64_t ftype) {
  switch (ftype) {
    case 0:
      return "fp32";
    case 1:
      return "fp16";
    case 7:
      return "q8_0";
    case 2:
    case 3:
      return "q4_0";
    case 8:
    case 9:
      return "q5_0";
    case 10:
      return "q2_k";
    case 11:
    case 12:
    case 13:
      return "q3_k";
    case 14:
    case 15:
      return "q4_k";
    case 16:
    case 17:
      return "q5_k";
    case 18:
      return "q6_k";
    case 32:
      return "bf16";
    default:
      return "fp16";
  }
}

absl::StatusOr<ModelSpec> LoadGguf(const std::string& path) {
  using internal::GgufValue;
  ASSIGN_OR_RETURN(auto kv, internal::ReadGgufMetadata(path));
  auto str = [&](const std::string& key) -> std::string {
    auto it = kv.find(key);
    if (it == kv.end() || it->second.kind != GgufValue::Kind::kString)
      return "";
    return it->second.s;
  };
  auto num = [&](const std::string& key) -> std::optional<int64_t> {
    auto it = kv.find(key);
    if (it == kv.end()) return std::nullopt;
    return it->second.AsInt();
  };
  ModelSpec s;
  const std::string arch = str("general.architecture");
  if (arch.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: GGUF without general.architecture", path));
  }
  s.architecture = arch;
  s.name = str("general.name");
  if (s.name.empty()) s.name = std::filesystem::path(path).stem().string();
  auto need = [&](const std::string& key) -> absl::StatusOr<int64_t> {
    auto v = num(arch + "." + key);
    if (!v) {
      return absl::InvalidArgumentError(
          fmt::format("{}: GGUF metadata lacks {}.{}", path, arch, key));
    }
    return *v;
  };
  ASSIGN_OR_RETURN(s.num_layers, need("block_count"));
  ASSIGN_OR_RETURN(s.hidden_size, need("embedding_length"));
  ASSIGN_OR_RETURN(s.num_heads, need("attention.head_count"));
  s.num_kv_heads = num(arch + ".attention.head_count_kv").value_or(s.num_heads);
  s.head_dim = num(arch + ".attention.key_length")
                   .value_or(s.num_heads > 0 ? s.hidden_size / s.num_heads : 0);
  ASSIGN_OR_RETURN(s.ffn_size, need("feed_forward_length"));
  s.vocab_size = num(arch + ".vocab_size")
                     .value_or(num("tokenizer.ggml.tokens").value_or(0));
  s.max_context = num(arch + ".context_length").value_or(4096);
  s.num_experts = num(arch + ".expert_count").value_or(0);
  s.experts_per_token = num(arch + ".expert_used_count").value_or(0);
  s.moe_ffn_size =
      num(arch + ".expert_feed_forward_length").value_or(s.ffn_size);
  s.weight_dtype = GgufFileTypeName(num("general.file_type").value_or(1));
  s.kv_dtype = "fp16";  // llama.cpp's default cache type
  ASSIGN_OR_RETURN(s.weight_bytes, DTypeBytesPerElement(s.weight_dtype));
  ASSIGN_OR_RETURN(s.kv_bytes, DTypeBytesPerElement(s.kv_dtype));
  RETURN_IF_ERROR(Annotate(ValidateModelSpec(s), path));
  return s;
}

}  // namespace

absl::StatusOr<double> DTypeBytesPerElement(std::string_view dtype) {
  // Block-quantized GGUF types include their per-block scales.
  static const std::map<std::string, double, std::less<>> kBytes = {
      {"fp32", 4.0},         {"float32", 4.0},      {"f32", 4.0},
      {"fp16", 2.0},         {"float16", 2.0},      {"f16", 2.0},
      {"bf16", 2.0},         {"bfloat16", 2.0},     {"fp8", 1.0},
      {"float8", 1.0},       {"fp8_e4m3", 1.0},     {"int8", 1.0},
      {"int4", 0.5},         {"fp4", 0.5},          {"q8_0", 34.0 / 32},
      {"q4_0", 18.0 / 32},   {"q5_0", 22.0 / 32},   {"q2_k", 84.0 / 256},
      {"q3_k", 110.0 / 256}, {"q4_k", 144.0 / 256}, {"q5_k", 176.0 / 256},
      {"q6_k", 210.0 / 256}};
  auto it = kBytes.find(dtype);
  if (it == kBytes.end()) {
    return absl::InvalidArgumentError(
        fmt::format("unknown dtype \"{}\" (known: bf16, fp16, fp32, fp8, "
                    "int8, int4, q4_k, q8_0...)",
                    std::string(dtype)));
  }
  return it->second;
}

int64_t ModelSpec::AttentionParams() const {
  const int64_t q = hidden_size * num_heads * head_dim;
  const int64_t kv = 2 * hidden_size * num_kv_heads * head_dim;
  const int64_t o = num_heads * head_dim * hidden_size;
  return q + kv + o;
}

int64_t ModelSpec::MlpParams() const {
  return (gated_mlp ? 3 : 2) * hidden_size * ffn_size;
}

int64_t ModelSpec::ExpertParams() const {
  return (gated_mlp ? 3 : 2) * hidden_size * moe_ffn_size;
}

int64_t ModelSpec::RouterParams() const {
  return is_moe() ? hidden_size * num_experts : 0;
}

int64_t ModelSpec::LayerParams() const {
  const int64_t ffn =
      is_moe() ? num_experts * ExpertParams() + RouterParams() : MlpParams();
  return AttentionParams() + ffn + 2 * hidden_size;
}

int64_t ModelSpec::TotalParams() const {
  return num_layers * LayerParams() + EmbeddingParams() + LmHeadParams() +
         hidden_size;
}

int64_t ModelSpec::ActiveParams() const {
  const int64_t ffn = is_moe()
                          ? experts_per_token * ExpertParams() + RouterParams()
                          : MlpParams();
  return num_layers * (AttentionParams() + ffn + 2 * hidden_size) +
         EmbeddingParams() + LmHeadParams() + hidden_size;
}

double ModelSpec::KvBytesPerToken() const {
  return 2.0 * static_cast<double>(num_layers * num_kv_heads * head_dim) *
         kv_bytes;
}

absl::Status ValidateModelSpec(const ModelSpec& s) {
  auto positive = [&](int64_t v, const char* what) -> absl::Status {
    if (v <= 0) {
      return absl::InvalidArgumentError(fmt::format(
          "model {}: {} must be positive, got {}", s.name, what, v));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive(s.num_layers, "num_layers"));
  RETURN_IF_ERROR(positive(s.hidden_size, "hidden_size"));
  RETURN_IF_ERROR(positive(s.num_heads, "num_heads"));
  RETURN_IF_ERROR(positive(s.num_kv_heads, "num_kv_heads"));
  RETURN_IF_ERROR(positive(s.head_dim, "head_dim"));
  RETURN_IF_ERROR(positive(s.ffn_size, "ffn_size"));
  RETURN_IF_ERROR(positive(s.vocab_size, "vocab_size"));
  RETURN_IF_ERROR(positive(s.max_context, "max_context"));
  if (s.num_heads % s.num_kv_heads != 0) {
    return absl::InvalidArgumentError(fmt::format(
        "model {}: {} attention heads are not a multiple of {} KV heads",
        s.name, s.num_heads, s.num_kv_heads));
  }
  if (s.num_experts < 0 || s.experts_per_token < 0) {
    return absl::InvalidArgumentError(
        fmt::format("model {}: negative expert counts", s.name));
  }
  if (s.is_moe()) {
    RETURN_IF_ERROR(positive(s.experts_per_token, "experts_per_token"));
    RETURN_IF_ERROR(positive(s.moe_ffn_size, "moe_ffn_size"));
    if (s.experts_per_token > s.num_experts) {
      return absl::InvalidArgumentError(
          fmt::format("model {}: top-{} of {} experts", s.name,
                      s.experts_per_token, s.num_experts));
    }
  }
  if (!(s.weight_bytes > 0) || !(s.kv_bytes > 0)) {
    return absl::InvalidArgumentError(
        fmt::format("model {}: dtype sizes must be positive", s.name));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelSpec> ParseHfConfig(std::string_view json_text,
                                        std::string_view name) {
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("config.json is not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError("config.json must be a JSON object");
  }
  // Multimodal wrappers (e.g. Llama-4, Mistral-3) nest the LM config.
  if (j.contains("text_config") && j["text_config"].is_object()) {
    json merged = j["text_config"];
    for (auto& [k, v] : j.items()) {
      if (!merged.contains(k)) merged[k] = v;
    }
    j = std::move(merged);
  }
  ModelSpec s;
  s.name = std::string(name);
  if (j.contains("architectures") && j["architectures"].is_array() &&
      !j["architectures"].empty() && j["architectures"][0].is_string()) {
    s.architecture = j["architectures"][0].get<std::string>();
  } else if (j.contains("model_type") && j["model_type"].is_string()) {
    s.architecture = j["model_type"].get<std::string>();
  }
  ASSIGN_OR_RETURN(s.num_layers, GetInt(j, "num_hidden_layers", 0, true));
  ASSIGN_OR_RETURN(s.hidden_size, GetInt(j, "hidden_size", 0, true));
  ASSIGN_OR_RETURN(s.num_heads, GetInt(j, "num_attention_heads", 0, true));
  ASSIGN_OR_RETURN(s.num_kv_heads,
                   GetInt(j, "num_key_value_heads", s.num_heads, false));
  ASSIGN_OR_RETURN(
      s.head_dim,
      GetInt(j, "head_dim", s.num_heads > 0 ? s.hidden_size / s.num_heads : 0,
             false));
  ASSIGN_OR_RETURN(s.ffn_size, GetInt(j, "intermediate_size", 0, true));
  ASSIGN_OR_RETURN(s.vocab_size, GetInt(j, "vocab_size", 0, true));
  ASSIGN_OR_RETURN(s.max_context,
                   GetInt(j, "max_position_embeddings", 4096, false));
  ASSIGN_OR_RETURN(int64_t local_experts,
                   GetInt(j, "num_local_experts", 0, false));
  ASSIGN_OR_RETURN(int64_t experts,
                   GetInt(j, "num_experts", local_experts, false));
  s.num_experts = experts;
  ASSIGN_OR_RETURN(
      s.experts_per_token,
      GetInt(j, "num_experts_per_tok", s.num_experts > 0 ? 2 : 0, false));
  ASSIGN_OR_RETURN(s.moe_ffn_size,
                   GetInt(j, "moe_intermediate_size", s.ffn_size, false));
  if (j.contains("tie_word_embeddings") &&
      j["tie_word_embeddings"].is_boolean()) {
    s.tie_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  if (j.contains("hidden_act") && j["hidden_act"].is_string()) {
    const std::string act = j["hidden_act"].get<std::string>();
    s.gated_mlp = act == "silu" || act == "swiglu" ||
                  act == "gelu_pytorch_tanh" || act == "geglu";
  }
  std::string dtype = "bf16";
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    dtype = j["torch_dtype"].get<std::string>();
  }
  if (j.contains("quantization_config") &&
      j["quantization_config"].is_object()) {
    const json& q = j["quantization_config"];
    const std::string method = q.value("quant_method", std::string());
    if (method == "fp8") dtype = "fp8";
    if (method == "awq" || method == "gptq") {
      // Compared as a double: json's get<int> would cast a huge float (UB).
      const bool eight = q.contains("bits") && q["bits"].is_number() &&
                         q["bits"].get<double>() == 8;
      dtype = eight ? "int8" : "int4";
    }
  }
  s.weight_dtype = dtype;
  ASSIGN_OR_RETURN(s.weight_bytes, DTypeBytesPerElement(dtype));
  // The KV cache stays in 16 bits unless the user asks otherwise.
  s.kv_dtype = s.weight_bytes >= 2.0 && dtype != "fp32" && dtype != "float32"
                   ? dtype
                   : "bf16";
  ASSIGN_OR_RETURN(s.kv_bytes, DTypeBytesPerElement(s.kv_dtype));
  RETURN_IF_ERROR(ValidateModelSpec(s));
  return s;
}

absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(fmt::format("model {} does not exist", path));
  }
  std::string file = path;
  std::string name = fs::path(path).filename().string();
  if (fs::is_directory(path, ec)) {
    file = (fs::path(path) / "config.json").string();
    if (!fs::exists(file, ec)) {
      return absl::NotFoundError(fmt::format("{} holds no config.json", path));
    }
  } else {
    name = fs::path(path).parent_path().filename().string();
    if (fs::path(path).extension() == ".gguf") return LoadGguf(path);
  }
  if (name.empty()) name = "model";
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(file));
  auto spec = ParseHfConfig(text, name);
  if (!spec.ok()) return Annotate(spec.status(), file);
  return spec;
}

}  // namespace tessera::placement
