#include "placement/model_spec.h"

#include <string>

#include "gtest/gtest.h"
#include "placement/internal/gguf_metadata.h"
#include "tests/util/test_util.h"

namespace tessera::placement {
namespace {

const std::string kData = TESSERA_PLACEMENT_TESTDATA;

ModelSpec Load(const std::string& name) {
  auto m = LoadModelSpec(kData + "/" + name);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return *m;
}

// Llama-2-7B: h 4096, 32 layers, 32 heads (MHA), ffn 11008, vocab 32000.
// attn = 4·4096² = 67,108,864; mlp = 3·4096·11008 = 135,266,304;
// norms 2·4096 → layer 202,383,360; ×32 = 6,476,267,520;
// embedding + LM head 2·32000·4096 = 262,144,000; final norm 4096
// → 6,738,415,616 (the published 6.74B).
TEST(ModelSpecTest, Llama2_7bParams) {
  const ModelSpec m = Load("llama-2-7b");
  EXPECT_EQ(m.AttentionParams(), 67108864);
  EXPECT_EQ(m.MlpParams(), 135266304);
  EXPECT_EQ(m.LayerParams(), 202383360);
  EXPECT_EQ(m.TotalParams(), 6738415616);
  // KV: 2 (K,V) · 32 layers · 32 heads · 128 · 2 bytes = 524,288 bytes.
  EXPECT_DOUBLE_EQ(m.KvBytesPerToken(), 524288.0);
  EXPECT_DOUBLE_EQ(m.WeightBytes(), 6738415616.0 * 2);
}

// Llama-2-70B: h 8192, 80 layers, 64 heads, 8 KV heads (GQA), ffn 28672.
// attn = 8192·8192 (q) + 2·8192·1024 (k,v) + 8192·8192 (o) = 150,994,944;
// mlp = 3·8192·28672 = 704,643,072; norms 16,384 → layer 855,654,400;
// ×80 = 68,452,352,000; + 2·32000·8192 = 524,288,000; + 8192
// → 68,976,648,192 (the published 68.98B).
TEST(ModelSpecTest, Llama2_70bParams) {
  const ModelSpec m = Load("llama-2-70b");
  EXPECT_EQ(m.AttentionParams(), 150994944);
  EXPECT_EQ(m.LayerParams(), 855654400);
  EXPECT_EQ(m.TotalParams(), 68976648192);
  // KV: 2 · 80 · 8 · 128 · 2 = 327,680 bytes per token.
  EXPECT_DOUBLE_EQ(m.KvBytesPerToken(), 327680.0);
}

// Llama-3-8B: h 4096, 32 layers, 32 heads, 8 KV heads, ffn 14336,
// vocab 128256. attn = 2·4096² + 2·4096·1024 = 41,943,040;
// mlp = 3·4096·14336 = 176,160,768; layer = 218,112,000; ×32 =
// 6,979,584,000; + 2·128256·4096 = 1,050,673,152; + 4096 → 8,030,261,248.
TEST(ModelSpecTest, Llama3_8bParams) {
  const ModelSpec m = Load("llama-3-8b");
  EXPECT_EQ(m.AttentionParams(), 41943040);
  EXPECT_EQ(m.MlpParams(), 176160768);
  EXPECT_EQ(m.TotalParams(), 8030261248);
  EXPECT_DOUBLE_EQ(m.KvBytesPerToken(), 131072.0);  // 2·32·8·128·2
  EXPECT_EQ(m.weight_dtype, "bfloat16");
}

// Mixtral-8x7B: Llama-3-8B-like attention (h 4096, 8 KV heads), 8 experts of
// 3·4096·14336 = 176,160,768, top-2, router 4096·8 = 32,768.
// layer = 41,943,040 + 8·176,160,768 + 32,768 + 8,192 = 1,451,270,144;
// ×32 = 46,440,644,608; + 2·32000·4096 + 4096 → 46,702,792,704 (46.7B).
// Active: 41,943,040 + 2·176,160,768 + 32,768 + 8,192 = 394,305,536; ×32 +
// 262,148,096 → 12,879,925,248 (12.9B).
TEST(ModelSpecTest, Mixtral8x7bParams) {
  const ModelSpec m = Load("mixtral-8x7b");
  ASSERT_TRUE(m.is_moe());
  EXPECT_EQ(m.num_experts, 8);
  EXPECT_EQ(m.experts_per_token, 2);
  EXPECT_EQ(m.LayerParams(), 1451270144);
  EXPECT_EQ(m.TotalParams(), 46702792704);
  EXPECT_EQ(m.ActiveParams(), 12879925248);
}

TEST(ModelSpecTest, RejectsBadConfigs) {
  auto neg = ParseHfConfig(
      R"({"num_hidden_layers": 2, "hidden_size": -4096, "num_attention_heads": 32,
          "intermediate_size": 11008, "vocab_size": 32000})",
      "bad");
  ASSERT_FALSE(neg.ok());
  EXPECT_EQ(neg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(neg.status().message()).find("hidden_size"),
            std::string::npos);
  auto missing = ParseHfConfig(R"({"hidden_size": 64})", "bad");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  auto gqa = ParseHfConfig(
      R"({"num_hidden_layers": 2, "hidden_size": 96, "num_attention_heads": 3,
          "num_key_value_heads": 2, "intermediate_size": 8, "vocab_size": 8})",
      "bad");
  EXPECT_EQ(gqa.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseHfConfig("{not json", "bad").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadModelSpec("/nonexistent/model").status().code(),
            absl::StatusCode::kNotFound);
}

// Quantized checkpoints: bits 8 → int8, anything else → int4. A huge float
// for bits used to go through json's get<int> (undefined behaviour).
TEST(ModelSpecTest, QuantizationBits) {
  auto with_bits = [](const std::string& bits) {
    return ParseHfConfig(
        R"({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 128, "vocab_size": 32,
            "quantization_config": {"quant_method": "awq", "bits": )" +
            bits + "}}",
        "q");
  };
  for (const char* eight : {"8", "8.0"}) {
    auto m = with_bits(eight);
    ASSERT_TRUE(m.ok()) << eight << ": " << m.status();
    EXPECT_EQ(m->weight_dtype, "int8") << eight;
  }
  for (const char* other : {"4", "1e25", "\"8\""}) {
    auto m = with_bits(other);
    ASSERT_TRUE(m.ok()) << other << ": " << m.status();
    EXPECT_EQ(m->weight_dtype, "int4") << other;
  }
}

TEST(ModelSpecTest, ReadsGgufMetadata) {
  TESSERA_REQUIRE_SHARED(shared);
  auto m = LoadModelSpec(shared + "/models/moe-tiny/model-f16.gguf");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->num_layers, 4);
  EXPECT_EQ(m->hidden_size, 256);
  EXPECT_EQ(m->num_kv_heads, 4);
  EXPECT_EQ(m->num_experts, 8);
  EXPECT_EQ(m->experts_per_token, 2);
  EXPECT_EQ(m->weight_dtype, "fp16");
}

TEST(ModelSpecTest, GgufTruncatedIsInvalid) {
  const uint8_t bytes[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 1, 0};
  auto r = internal::ParseGgufMetadata(bytes, sizeof(bytes));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  const uint8_t bad_magic[] = {'G', 'G', 'M', 'L', 3, 0, 0, 0};
  EXPECT_FALSE(internal::ParseGgufMetadata(bad_magic, sizeof(bad_magic)).ok());
  EXPECT_FALSE(DTypeBytesPerElement("q9_z").ok());
}

}  // namespace
}  // namespace tessera::placement
