// A loaded model: its configuration and its weights as typed tensor views.
//
// Every loader (HF safetensors, GGUF, llama2.c) produces this one
// representation, so the executor never knows which file format a model came
// from. Weight matrices are 2-D [out_features, in_features] row-major (how both
// HF and GGUF store them) and are normally borrowed from memory-mapped files.
// Q/K rows stay in the file's order; the `rope_style` says which RoPE pairing
// that order implies, so nothing is permuted.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/dtype.h"
#include "base/tensor.h"

namespace tessera {

// How RoPE pairs the dimensions of a head.
enum class RopeStyle : uint8_t {
  kHalf,      // Rotate-half (HF/NeoX): dim i pairs with i + head_dim/2.
  kPairwise,  // Interleaved (Meta/GGUF llama, llama2.c): dim 2i pairs with
              // 2i+1.
};

// RoPE frequency scaling (HF `rope_scaling`).
struct RopeScaling {
  enum class Type : uint8_t { kNone, kLinear, kLlama3 } type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;                     // llama3
  float high_freq_factor = 4.0f;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

// Architecture hyper-parameters, named like HF config.json.
struct ModelConfig {
  std::string architecture =
      "llama";  // llama | mistral | qwen2 | qwen3 | mixtral
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // FFN width (per expert for MoE).
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // Usually hidden_size / num_attention_heads.
  int64_t max_position_embeddings = 2048;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Q/K/V projection biases (Qwen2).
  bool qk_norm = false;  // Per-head RMSNorm of Q and K before RoPE (Qwen3).
  int64_t num_local_experts = 0;  // 0 = dense FFN.
  int64_t num_experts_per_tok = 0;
  int32_t bos_token_id = 1;
  std::vector<int32_t> eos_token_ids = {2};
  DType dtype = DType::kF32;  // Dominant weight dtype (informational).

  bool is_moe() const { return num_local_experts > 0; }
  // InvalidArgument naming the first inconsistent field (non-positive sizes,
  // heads not dividing, GQA groups not whole, top-k > experts...).
  absl::Status Validate() const;
  // Parameter count implied by the shapes (embedding and LM head counted once
  // if tied).
  int64_t ParameterCount() const;
};

// One decoder layer. Unused tensors (biases, QK norms, dense FFN in MoE layers)
// are undefined (`!tensor.defined()`).
struct LayerWeights {
  Tensor attn_norm;       // [hidden]
  Tensor wq, wk, wv, wo;  // [heads*head_dim, hidden], [kv*head_dim, hidden] x2,
                          // [hidden, heads*head_dim]
  Tensor bq, bk, bv;      // Optional biases.
  Tensor q_norm, k_norm;  // Optional [head_dim] (Qwen3).
  Tensor ffn_norm;        // [hidden]
  Tensor w_gate, w_up, w_down;  // Dense FFN: [ffn, hidden] x2, [hidden, ffn]
  Tensor router;                // MoE: [experts, hidden]
  std::vector<Tensor> expert_gate, expert_up,
      expert_down;  // MoE: one 2-D view per expert.
};

struct ModelWeights {
  Tensor token_embedding;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor output_norm;  // [hidden]
  Tensor lm_head;      // [vocab, hidden]; the embedding itself when tied.
  // Optional f32 [head_dim/2]: per-frequency divisors of the RoPE inverse
  // frequencies (GGUF `rope_freqs.weight`, how llama.cpp stores llama3
  // scaling). The loaders also set config.rope_scaling when they recognise the
  // factors, so an executor may use either.
  Tensor rope_freqs;
};

// A model ready to execute: config, weights, and whatever keeps the bytes
// alive.
struct Model {
  ModelConfig config;
  RopeStyle rope_style = RopeStyle::kHalf;
  ModelWeights weights;
  std::string source;  // Path or "builtin:demo".
  std::string format;  // "hf" | "gguf" | "llama2c" | "builtin".
  // Files or buffers the weight tensors borrow from.
  std::vector<std::shared_ptr<const void>> owners;
};

}  // namespace tessera
