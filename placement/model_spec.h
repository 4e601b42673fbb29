// The planner's view of a model: shapes and dtypes only, no weights.
//
// Read from a Hugging Face config.json (or a folder holding one) or from the
// metadata of a GGUF file. Everything the cost model needs is derived here
// (parameter counts per layer, KV bytes per token), so the arithmetic lives in
// one place and is unit-tested against hand-computed values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tessera::placement {

// Bytes per element of a weight/KV dtype name ("bf16", "fp16", "fp8", "int8",
// "int4", "fp32", GGUF "q4_k"...); InvalidArgument for an unknown name.
absl::StatusOr<double> DTypeBytesPerElement(std::string_view dtype);

// Shapes of a decoder-only transformer (Llama/Mistral/Mixtral/Qwen family).
struct ModelSpec {
  std::string name;
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_size = 0;  // dense MLP intermediate size
  int64_t vocab_size = 0;
  int64_t num_experts = 0;  // 0: dense model
  int64_t experts_per_token = 0;
  int64_t moe_ffn_size = 0;  // per-expert intermediate size
  int64_t max_context = 0;
  bool gated_mlp = true;  // SwiGLU: gate, up and down projections
  bool tie_embeddings = false;
  std::string weight_dtype = "bf16";
  std::string kv_dtype = "bf16";
  double weight_bytes = 2.0;  // per parameter
  double kv_bytes = 2.0;      // per KV element

  bool is_moe() const { return num_experts > 0; }
  // Parameters of one layer's attention (q, k, v, o projections).
  int64_t AttentionParams() const;
  // Parameters of one dense MLP (or of one expert for MoE models).
  int64_t MlpParams() const;
  int64_t ExpertParams() const;
  // Router parameters of one MoE layer (0 for dense models).
  int64_t RouterParams() const;
  // All parameters of one transformer layer (including its 2 norms).
  int64_t LayerParams() const;
  int64_t EmbeddingParams() const { return vocab_size * hidden_size; }
  int64_t LmHeadParams() const {
    return tie_embeddings ? 0 : vocab_size * hidden_size;
  }
  int64_t TotalParams() const;
  // Parameters touched per token (MoE: top-k experts only).
  int64_t ActiveParams() const;
  // KV-cache bytes one token occupies across all layers (K and V).
  double KvBytesPerToken() const;
  double WeightBytes() const {
    return static_cast<double>(TotalParams()) * weight_bytes;
  }
};

// Checks that sizes are positive and consistent (heads divide hidden...).
absl::Status ValidateModelSpec(const ModelSpec& spec);

// Parses a Hugging Face config.json text. `name` labels the model.
absl::StatusOr<ModelSpec> ParseHfConfig(std::string_view json_text,
                                        std::string_view name);

// Loads a model description from a config.json, a folder containing one, or a
// .gguf file (metadata only). NotFound when the path does not exist.
absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& path);

}  // namespace tessera::placement
