#include "runtime/model_loader.h"

#include <cstring>
#include <filesystem>
#include <string>

#include "base/mapped_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/safetensors.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

TEST(ModelLoaderTest, LoadsStories260K) {
  TESSERA_REQUIRE_SHARED(shared);
  absl::StatusOr<Model> m = LoadModel(shared + "/models/stories260K.bin");
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(m->rope_style, RopeStyle::kPairwise);
  EXPECT_EQ(m->format, "llama2c");
  EXPECT_EQ(m->weights.lm_head.raw_data(),
            m->weights.token_embedding.raw_data());
  EXPECT_EQ(m->weights.layers[4].wk.DebugString(), "f32[32, 64]");
  // Zero-copy: the embedding starts right after the 28-byte header.
  auto file = MappedFile::Open(shared + "/models/stories260K.bin");
  EXPECT_EQ(std::memcmp(m->weights.token_embedding.raw_data(),
                        (*file)->data() + 28, 64),
            0);
  // The final norm sits before freq_cis tables; a plausible RMSNorm weight.
  EXPECT_GT(m->weights.output_norm.data<float>()[0], 0.0f);
}

TEST(ModelLoaderTest, LoadsAidreams260K) {
  TESSERA_REQUIRE_SHARED(shared);
  absl::StatusOr<Model> m = LoadModel(shared + "/models/aidreams260K.bin");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.num_hidden_layers, 4);
  EXPECT_EQ(m->config.num_key_value_heads, 4);
  EXPECT_EQ(m->config.max_position_embeddings, 128);
}

TEST(ModelLoaderTest, BenchTinyGgufAndHfHoldTheSameWeights) {
  TESSERA_REQUIRE_SHARED(shared);
  absl::StatusOr<Model> g =
      LoadModel(shared + "/models/bench-tiny/model-f16.gguf");
  ASSERT_TRUE(g.ok()) << g.status();
  absl::StatusOr<Model> h = LoadModel(shared + "/models/bench-tiny/hf");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(g->rope_style, RopeStyle::kPairwise);
  EXPECT_EQ(h->rope_style, RopeStyle::kHalf);
  EXPECT_EQ(g->format, "gguf");
  EXPECT_EQ(h->format, "hf");
  for (const ModelConfig* c : {&g->config, &h->config}) {
    EXPECT_EQ(c->architecture, "llama");
    EXPECT_EQ(c->hidden_size, 256);
    EXPECT_EQ(c->num_hidden_layers, 4);
    EXPECT_EQ(c->num_attention_heads, 8);
    EXPECT_EQ(c->num_key_value_heads, 4);
    EXPECT_EQ(c->intermediate_size, 688);
    EXPECT_EQ(c->vocab_size, 32000);
    EXPECT_EQ(c->max_position_embeddings, 512);
    EXPECT_EQ(c->head_dim, 32);
    EXPECT_FALSE(c->tie_word_embeddings);
    EXPECT_EQ(c->dtype, DType::kF16);
  }
  EXPECT_FLOAT_EQ(g->config.rms_norm_eps, h->config.rms_norm_eps);
  const ModelWeights& gw = g->weights;
  const ModelWeights& hw = h->weights;
  EXPECT_TRUE(SameBytes(gw.token_embedding, hw.token_embedding));
  EXPECT_TRUE(SameBytes(gw.lm_head, hw.lm_head));
  EXPECT_TRUE(SameBytes(gw.output_norm, hw.output_norm));
  for (int i = 0; i < 4; ++i) {
    const LayerWeights& a = gw.layers[i];
    const LayerWeights& b = hw.layers[i];
    EXPECT_TRUE(SameBytes(a.wv, b.wv));
    EXPECT_TRUE(SameBytes(a.wo, b.wo));
    EXPECT_TRUE(SameBytes(a.w_gate, b.w_gate));
    EXPECT_TRUE(SameBytes(a.w_up, b.w_up));
    EXPECT_TRUE(SameBytes(a.w_down, b.w_down));
    EXPECT_TRUE(SameBytes(a.attn_norm, b.attn_norm));
    // Q/K: HF rotate-half rows permuted to llama.cpp's pairwise order.
    EXPECT_FALSE(SameBytes(a.wq, b.wq));
    EXPECT_TRUE(SameBytes(
        a.wq, PermuteQkRows(b.wq, 8, RopeStyle::kHalf, RopeStyle::kPairwise)));
    EXPECT_TRUE(SameBytes(
        a.wk, PermuteQkRows(b.wk, 4, RopeStyle::kHalf, RopeStyle::kPairwise)));
    EXPECT_TRUE(SameBytes(
        PermuteQkRows(a.wk, 4, RopeStyle::kPairwise, RopeStyle::kHalf), b.wk));
  }
}

TEST(ModelLoaderTest, LoadsMoeTinyWithZeroCopyExperts) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string path = shared + "/models/moe-tiny/model-f16.gguf";
  absl::StatusOr<Model> m = LoadModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.architecture, "mixtral");
  EXPECT_EQ(c.num_local_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.intermediate_size, 384);
  const LayerWeights& l = m->weights.layers[0];
  EXPECT_FALSE(l.w_gate.defined());
  ASSERT_EQ(l.expert_gate.size(), 8u);
  EXPECT_EQ(l.router.DebugString(), "f32[8, 256]");
  EXPECT_EQ(l.expert_gate[3].DebugString(), "f16[384, 256]");
  EXPECT_EQ(l.expert_down[3].DebugString(), "f16[256, 384]");
  auto g = GgufFile::Open(path);
  const GgufTensorInfo* t = (*g)->FindTensor("blk.0.ffn_down_exps.weight");
  EXPECT_EQ(std::memcmp(l.expert_down[3].raw_data(),
                        t->data + 3 * 256 * 384 * 2, 256 * 384 * 2),
            0);
  EXPECT_EQ(static_cast<const char*>(l.expert_down[3].raw_data()) -
                static_cast<const char*>(l.expert_down[0].raw_data()),
            3 * 256 * 384 * 2);
}

TEST(ModelLoaderTest, SlicesRowsAndColumns) {
  Tensor w = Tensor::Empty(DType::kF32, {4, 6});
  for (int i = 0; i < 24; ++i) w.data<float>()[i] = static_cast<float>(i);
  absl::StatusOr<Tensor> rows = SliceRows(w, 1, 3);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->raw_data(), w.data<float>() + 6);
  EXPECT_EQ(rows->DebugString(), "f32[2, 6]");
  absl::StatusOr<Tensor> cols = SliceColumns(w, 2, 5);
  ASSERT_TRUE(cols.ok());
  EXPECT_EQ(cols->DebugString(), "f32[4, 3]");
  EXPECT_EQ(cols->data<float>()[0], 2.0f);
  EXPECT_EQ(cols->data<float>()[3], 8.0f);
  EXPECT_FALSE(SliceRows(w, 3, 5).ok());
  EXPECT_FALSE(SliceColumns(w, 4, 2).ok());
  Tensor q = Tensor::Zeros(DType::kQ8_0, {2, 64});
  EXPECT_FALSE(SliceColumns(q, 16, 64).ok());
  EXPECT_TRUE(SliceColumns(q, 32, 64).ok());
}

TEST(ModelLoaderTest, ParsesHfConfigs) {
  absl::StatusOr<ModelConfig> c = ParseHfConfig(R"({
    "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
    "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "rope_theta": 500000.0, "tie_word_embeddings": true,
    "eos_token_id": [128001, 128008, 128009], "bos_token_id": 128000,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
      "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
      "rope_type": "llama3"}, "torch_dtype": "bfloat16"})",
                                                "cfg");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.factor, 32.0f);
  EXPECT_THAT(c->eos_token_ids, ::testing::ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_TRUE(c->tie_word_embeddings);
  absl::StatusOr<ModelConfig> q = ParseHfConfig(R"({
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100})",
                                                "q");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->attention_bias);
  EXPECT_FALSE(q->qk_norm);
  EXPECT_THAT(std::string(ParseHfConfig("{\"architectures\": [\"GPT2\"]}", "x")
                              .status()
                              .message()),
              HasSubstr("unsupported architecture"));
  EXPECT_FALSE(ParseHfConfig("[", "x").ok());
  EXPECT_FALSE(ParseHfConfig(R"({"architectures": ["LlamaForCausalLM"],
    "hidden_size": "big"})",
                             "x")
                   .ok());
}

TEST(ModelLoaderTest, CorruptLlama2cIsAnError) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string bytes =
      *ReadFileToString(shared + "/models/stories260K.bin");
  const std::string dir = testing::MakeTempDir();
  for (size_t cut : {0ul, 3ul, 27ul, 28ul, 1000ul, bytes.size() - 1}) {
    ASSERT_TRUE(WriteStringToFile(dir + "/m.bin",
                                  std::string_view(bytes).substr(0, cut))
                    .ok());
    absl::Status s = LoadModel(dir + "/m.bin").status();
    EXPECT_FALSE(s.ok()) << cut;
    EXPECT_THAT(std::string(s.message()), HasSubstr("m.bin")) << cut;
  }
  std::string bad = bytes;
  const int32_t neg = -7;
  std::memcpy(&bad[0], &neg, 4);
  ASSERT_TRUE(WriteStringToFile(dir + "/m.bin", bad).ok());
  EXPECT_THAT(std::string(LoadModel(dir + "/m.bin").status().message()),
              HasSubstr("dim"));
}

// Copies bench-tiny's HF directory with one tensor dropped or reshaped.
TEST(ModelLoaderTest, HfMissingTensorAndShapeMismatchAreErrors) {
  TESSERA_REQUIRE_SHARED(shared);
  auto ck = SafetensorsCheckpoint::Open(shared + "/models/bench-tiny/hf");
  ASSERT_TRUE(ck.ok());
  const std::string config =
      *ReadFileToString(shared + "/models/bench-tiny/hf/config.json");
  auto write = [&](const std::string& skip, const std::string& reshape) {
    const std::string dir = testing::MakeTempDir();
    EXPECT_TRUE(WriteStringToFile(dir + "/config.json", config).ok());
    SafetensorsWriter w;
    for (const std::string& n : ck->TensorNames()) {
      if (n == skip) continue;
      Tensor t = *ck->TensorView(n);
      if (n == reshape) t = t.Reshape({t.dim(1), t.dim(0)});
      EXPECT_TRUE(w.AddTensor(n, t).ok());
    }
    EXPECT_TRUE(w.Write(dir + "/model.safetensors").ok());
    return LoadModel(dir).status();
  };
  absl::Status s = write("model.layers.2.mlp.up_proj.weight", "");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("missing tensor 'model.layers.2.mlp.up_proj.weight'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
  s = write("", "model.layers.1.mlp.down_proj.weight");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("'model.layers.1.mlp.down_proj.weight' has shape "
                        "[688, 256], expected [256, 688]"));
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// Re-exports stories260K in llama2.c's versioned format (export.py
// version 1: 256-byte header, norms first) and checks the weights match.
TEST(ModelLoaderTest, LoadsLlama2cVersion1Export) {
  TESSERA_REQUIRE_SHARED(shared);
  absl::StatusOr<Model> legacy = LoadModel(shared + "/models/stories260K.bin");
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  const ModelConfig& c = legacy->config;
  const ModelWeights& w = legacy->weights;
  std::string out(256, '\0');
  const uint32_t magic = 0x616b3432;
  const int32_t version = 1;
  const int32_t hdr[7] = {static_cast<int32_t>(c.hidden_size),
                          static_cast<int32_t>(c.intermediate_size),
                          static_cast<int32_t>(c.num_hidden_layers),
                          static_cast<int32_t>(c.num_attention_heads),
                          static_cast<int32_t>(c.num_key_value_heads),
                          static_cast<int32_t>(c.vocab_size),
                          static_cast<int32_t>(c.max_position_embeddings)};
  std::memcpy(&out[0], &magic, 4);
  std::memcpy(&out[4], &version, 4);
  std::memcpy(&out[8], hdr, sizeof(hdr));
  out[8 + sizeof(hdr)] = 1;  // Shared classifier.
  auto put = [&](const Tensor& t) {
    out.append(static_cast<const char*>(t.raw_data()), t.nbytes());
  };
  for (const LayerWeights& l : w.layers) put(l.attn_norm);
  for (const LayerWeights& l : w.layers) put(l.ffn_norm);
  put(w.output_norm);
  put(w.token_embedding);
  for (const LayerWeights& l : w.layers) put(l.wq);
  for (const LayerWeights& l : w.layers) put(l.wk);
  for (const LayerWeights& l : w.layers) put(l.wv);
  for (const LayerWeights& l : w.layers) put(l.wo);
  for (const LayerWeights& l : w.layers) put(l.w_gate);
  for (const LayerWeights& l : w.layers) put(l.w_down);
  for (const LayerWeights& l : w.layers) put(l.w_up);
  const std::string path = testing::MakeTempDir() + "/v1.bin";
  ASSERT_TRUE(WriteStringToFile(path, out).ok());
  absl::StatusOr<Model> v1 = LoadModel(path);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->config.num_key_value_heads, 4);
  EXPECT_EQ(v1->rope_style, RopeStyle::kPairwise);
  EXPECT_TRUE(SameBytes(v1->weights.token_embedding, w.token_embedding));
  EXPECT_TRUE(SameBytes(v1->weights.output_norm, w.output_norm));
  for (size_t i = 0; i < w.layers.size(); ++i) {
    EXPECT_TRUE(SameBytes(v1->weights.layers[i].wk, w.layers[i].wk));
    EXPECT_TRUE(SameBytes(v1->weights.layers[i].w_up, w.layers[i].w_up));
    EXPECT_TRUE(
        SameBytes(v1->weights.layers[i].ffn_norm, w.layers[i].ffn_norm));
  }
  // Version 2 (int8) is refused with a clear message.
  const int32_t v2 = 2;
  std::memcpy(&out[4], &v2, 4);
  ASSERT_TRUE(WriteStringToFile(path, out).ok());
  EXPECT_THAT(std::string(LoadModel(path).status().message()),
              HasSubstr("version 2"));
}

TEST(ModelLoaderTest, LoadsShardedHfCheckpoint) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string src = shared + "/models/bench-tiny/hf";
  auto ck = SafetensorsCheckpoint::Open(src);
  ASSERT_TRUE(ck.ok());
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(WriteStringToFile(dir + "/config.json",
                                *ReadFileToString(src + "/config.json"))
                  .ok());
  SafetensorsWriter a, b;
  std::string map;
  for (const std::string& n : ck->TensorNames()) {
    const bool first = n.find("layers.0.") != std::string::npos ||
                       n.find("layers.1.") != std::string::npos;
    const std::string shard = first ? "model-00001-of-00002.safetensors"
                                    : "model-00002-of-00002.safetensors";
    ASSERT_TRUE((first ? a : b).AddTensor(n, *ck->TensorView(n)).ok());
    if (!map.empty()) map.append(",");
    map.append("\"").append(n).append("\": \"").append(shard).append("\"");
  }
  ASSERT_TRUE(a.Write(dir + "/model-00001-of-00002.safetensors").ok());
  ASSERT_TRUE(b.Write(dir + "/model-00002-of-00002.safetensors").ok());
  ASSERT_TRUE(WriteStringToFile(dir + "/model.safetensors.index.json",
                                "{\"weight_map\": {" + map + "}}")
                  .ok());
  absl::StatusOr<Model> sharded = LoadModel(dir);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  absl::StatusOr<Model> single = LoadModel(src);
  EXPECT_TRUE(
      SameBytes(sharded->weights.layers[3].wq, single->weights.layers[3].wq));
  EXPECT_TRUE(
      SameBytes(sharded->weights.layers[0].wq, single->weights.layers[0].wq));
  EXPECT_EQ(sharded->owners.size(), 2u);
}

}  // namespace
}  // namespace tessera
