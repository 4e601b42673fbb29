#include "runtime/model.h"

#include "fmt/format.h"

namespace tessera {
namespace {

absl::Status Bad(std::string_view field, int64_t value, std::string_view why) {
  return absl::InvalidArgumentError(
      fmt::format("model config: {} = {} {}", field, value, why));
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  if (vocab_size <= 0) return Bad("vocab_size", vocab_size, "must be positive");
  if (hidden_size <= 0)
    return Bad("hidden_size", hidden_size, "must be positive");
  if (intermediate_size <= 0)
    return Bad("intermediate_size", intermediate_size, "must be positive");
  if (num_hidden_layers <= 0)
    return Bad("num_hidden_layers", num_hidden_layers, "must be positive");
  if (num_attention_heads <= 0) {
    return Bad("num_attention_heads", num_attention_heads, "must be positive");
  }
  if (num_key_value_heads <= 0 ||
      num_attention_heads % num_key_value_heads != 0) {
    return Bad(
        "num_key_value_heads", num_key_value_heads,
        fmt::format("must be positive and divide num_attention_heads ({})",
                    num_attention_heads));
  }
  if (head_dim <= 0 || head_dim % 2 != 0)
    return Bad("head_dim", head_dim, "must be positive and even");
  if (max_position_embeddings <= 0) {
    return Bad("max_position_embeddings", max_position_embeddings,
               "must be positive");
  }
  if (num_local_experts < 0)
    return Bad("num_local_experts", num_local_experts, "must be >= 0");
  if (num_local_experts > 0 &&
      (num_experts_per_tok <= 0 || num_experts_per_tok > num_local_experts)) {
    return Bad(
        "num_experts_per_tok", num_experts_per_tok,
        fmt::format("must be in [1, num_local_experts={}]", num_local_experts));
  }
  if (!(rms_norm_eps > 0.0f))
    return absl::InvalidArgumentError(
        "model config: rms_norm_eps must be positive");
  if (!(rope_theta > 0.0f))
    return absl::InvalidArgumentError(
        "model config: rope_theta must be positive");
  return absl::OkStatus();
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t q = num_attention_heads * head_dim;
  const int64_t kv = num_key_value_heads * head_dim;
  int64_t attn = hidden_size * (q + 2 * kv) + q * hidden_size + hidden_size;
  if (attention_bias) attn += q + 2 * kv;
  if (qk_norm) attn += 2 * head_dim;
  const int64_t ffn_one = 3 * hidden_size * intermediate_size;
  const int64_t ffn =
      is_moe() ? num_local_experts * ffn_one + num_local_experts * hidden_size
               : ffn_one;
  const int64_t per_layer = attn + ffn + hidden_size;
  const int64_t embed = vocab_size * hidden_size;
  return embed * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer +
         hidden_size;
}

}  // namespace tessera
