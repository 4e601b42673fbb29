#include "runtime/model_writer.h"

#include <cstring>
#include <set>
#include <string>

#include "base/mapped_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/formats/gguf.h"
#include "runtime/internal/synthetic_vocab.h"
#include "runtime/model_loader.h"
#include "runtime/model_presets.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

void ExpectSameConfig(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings,
            b.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.num_local_experts, b.num_local_experts);
  EXPECT_EQ(a.num_experts_per_tok, b.num_experts_per_tok);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.dtype, b.dtype);
}

// Writes `preset` in `format`, loads it back and compares every tensor.
void RoundTrip(const std::string& preset, ModelFormat format, DType dtype) {
  SCOPED_TRACE(preset + (format == ModelFormat::kHf ? " hf " : " gguf ") +
               std::string(DTypeName(dtype)));
  absl::StatusOr<Model> m = SynthesizeModel(preset, dtype, 7);
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<SyntheticVocab> vocab =
      BuildSyntheticVocab(m->config.vocab_size, PresetTokenStyle(preset));
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  const std::string dir = testing::MakeTempDir() + "/out";
  WriteModelOptions o;
  o.format = format;
  o.dtype = dtype;
  o.vocab = &*vocab;
  ASSERT_TRUE(WriteModel(SourceFromModel(*m), o, dir).ok());
  absl::StatusOr<Model> back =
      LoadModel(format == ModelFormat::kHf ? dir : dir + "/model.gguf");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameConfig(m->config, back->config);
  const bool pairwise = format == ModelFormat::kGguf &&
                        m->config.architecture != "qwen2" &&
                        m->config.architecture != "qwen3";
  EXPECT_EQ(back->rope_style,
            pairwise ? RopeStyle::kPairwise : RopeStyle::kHalf);
  const ModelSource a = SourceFromModel(*m);
  const ModelSource b = SourceFromModel(*back);
  for (const TensorSpec& s : HfTensorSpecs(m->config)) {
    absl::StatusOr<Tensor> ta = a.tensor(s.name);
    absl::StatusOr<Tensor> tb = b.tensor(s.name);
    ASSERT_TRUE(ta.ok() && tb.ok()) << s.name;
    Tensor want = *ta;
    const bool qk = s.name.find("q_proj") != std::string::npos ||
                    s.name.find("k_proj") != std::string::npos;
    if (pairwise && qk) {
      want = PermuteQkRows(want,
                           s.name.find("q_proj") != std::string::npos
                               ? m->config.num_attention_heads
                               : m->config.num_key_value_heads,
                           RopeStyle::kHalf, RopeStyle::kPairwise);
    }
    EXPECT_TRUE(SameBytes(want, *tb)) << s.name;
  }
  if (m->config.tie_word_embeddings) {
    EXPECT_EQ(back->weights.lm_head.raw_data(),
              back->weights.token_embedding.raw_data());
  }
}

TEST(ModelWriterTest, RoundTripsEveryTinyPresetInBothFormats) {
  for (const char* preset :
       {"demo", "tiny-llama", "qwen2-tiny", "qwen3-tiny", "mixtral-tiny"}) {
    for (ModelFormat f : {ModelFormat::kHf, ModelFormat::kGguf}) {
      RoundTrip(preset, f, DType::kF16);
    }
  }
}

TEST(ModelWriterTest, RoundTripsF32AndBF16) {
  RoundTrip("demo", ModelFormat::kGguf, DType::kF32);
  RoundTrip("demo", ModelFormat::kHf, DType::kF32);
  RoundTrip("mixtral-tiny", ModelFormat::kHf, DType::kBF16);
  RoundTrip("qwen2-tiny", ModelFormat::kGguf, DType::kBF16);
}

// A small model with Llama 3.2's RoPE: the GGUF stores only llama.cpp's
// rope_freqs table, and the loader recognises the llama3 parameters.
TEST(ModelWriterTest, Llama3RopeScalingSurvivesGguf) {
  ModelConfig c = *PresetConfig("llama-3.2-1b");
  c.vocab_size = 300;
  c.hidden_size = 256;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.intermediate_size = 64;
  c.num_hidden_layers = 1;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  absl::StatusOr<Model> m = SynthesizeModel(c, DType::kF32, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string dir = testing::MakeTempDir();
  WriteModelOptions o;
  o.format = ModelFormat::kGguf;
  o.dtype = DType::kF32;
  ASSERT_TRUE(WriteModel(SourceFromModel(*m), o, dir).ok());
  absl::StatusOr<Model> back = LoadModel(dir + "/model.gguf");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameConfig(m->config, back->config);
  ASSERT_TRUE(back->weights.rope_freqs.defined());
  EXPECT_EQ(back->weights.rope_freqs.numel(), 32);
  EXPECT_EQ(back->weights.rope_freqs.data<float>()[0], 1.0f);
  EXPECT_EQ(back->weights.rope_freqs.data<float>()[31], 32.0f);
}

TEST(ModelWriterTest, StreamedAndInMemoryModelsAreIdentical) {
  const ModelConfig c = *PresetConfig("tiny-llama");
  const std::string dir = testing::MakeTempDir();
  WriteModelOptions o;
  o.format = ModelFormat::kHf;
  o.dtype = DType::kBF16;
  ASSERT_TRUE(WriteModel(SyntheticSource(c, DType::kBF16, 3), o, dir).ok());
  absl::StatusOr<Model> a = LoadModel(dir);
  absl::StatusOr<Model> b = SynthesizeModel("tiny-llama", DType::kBF16, 3);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(
      SameBytes(a->weights.layers[5].w_down, b->weights.layers[5].w_down));
  EXPECT_TRUE(
      SameBytes(a->weights.token_embedding, b->weights.token_embedding));
  // A different seed gives different weights.
  absl::StatusOr<Model> c4 = SynthesizeModel("tiny-llama", DType::kBF16, 4);
  EXPECT_FALSE(SameBytes(c4->weights.layers[0].wq, b->weights.layers[0].wq));
}

TEST(ModelWriterTest, GgufLayoutFollowsLlamaCpp) {
  absl::StatusOr<Model> m = SynthesizeModel("mixtral-tiny", DType::kF16, 1);
  ASSERT_TRUE(m.ok());
  absl::StatusOr<SyntheticVocab> vocab =
      BuildSyntheticVocab(m->config.vocab_size, SpecialTokenStyle::kLlama);
  const std::string dir = testing::MakeTempDir();
  WriteModelOptions o;
  o.format = ModelFormat::kGguf;
  o.dtype = DType::kF16;
  o.vocab = &*vocab;
  ASSERT_TRUE(WriteModel(SourceFromModel(*m), o, dir).ok());
  absl::StatusOr<std::shared_ptr<GgufFile>> f =
      GgufFile::Open(dir + "/model.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.metadata()[0].first, "general.architecture");
  auto type_of = [&](const char* k) {
    const GgufValue* v = g.Find(k);
    EXPECT_NE(v, nullptr) << k;
    return v == nullptr ? GgufType::kUint8 : v->type();
  };
  EXPECT_EQ(type_of("general.architecture"), GgufType::kString);
  EXPECT_EQ(type_of("general.alignment"), GgufType::kUint32);
  EXPECT_EQ(type_of("general.file_type"), GgufType::kUint32);
  for (const char* k :
       {"llama.context_length", "llama.embedding_length", "llama.block_count",
        "llama.feed_forward_length", "llama.rope.dimension_count",
        "llama.attention.head_count", "llama.attention.head_count_kv",
        "llama.expert_count", "llama.expert_used_count", "llama.vocab_size",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"}) {
    EXPECT_EQ(type_of(k), GgufType::kUint32) << k;
  }
  EXPECT_EQ(type_of("llama.attention.layer_norm_rms_epsilon"),
            GgufType::kFloat32);
  EXPECT_EQ(type_of("llama.rope.freq_base"), GgufType::kFloat32);
  EXPECT_EQ(type_of("tokenizer.ggml.add_bos_token"), GgufType::kBool);
  EXPECT_EQ(*g.GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*g.GetString("tokenizer.ggml.pre"), "gpt2");
  EXPECT_EQ(g.Find("tokenizer.ggml.tokens")->array_type(), GgufType::kString);
  EXPECT_EQ(g.Find("tokenizer.ggml.tokens")->array_size(), 4096u);
  EXPECT_EQ(g.Find("tokenizer.ggml.token_type")->array_type(),
            GgufType::kInt32);
  EXPECT_EQ(g.Find("tokenizer.ggml.merges")->array_type(), GgufType::kString);
  // Tensor order and consecutive aligned offsets (llama.cpp checks both).
  ASSERT_GE(g.tensors().size(), 10u);
  EXPECT_EQ(g.tensors()[0].name, "token_embd.weight");
  EXPECT_EQ(g.tensors()[1].name, "blk.0.attn_norm.weight");
  EXPECT_EQ(g.tensors()[2].name, "blk.0.attn_q.weight");
  EXPECT_EQ(g.tensors().back().name, "output.weight");
  uint64_t expect = 0;
  for (const GgufTensorInfo& t : g.tensors()) {
    EXPECT_EQ(t.offset, expect) << t.name;
    expect = (t.offset + t.nbytes + 31) / 32 * 32;
  }
  EXPECT_EQ(g.data_offset() % 32, 0u);
  EXPECT_EQ(g.data_offset() + expect,
            std::filesystem::file_size(dir + "/model.gguf"));
  const GgufTensorInfo* exps = g.FindTensor("blk.0.ffn_gate_exps.weight");
  ASSERT_NE(exps, nullptr);
  EXPECT_EQ(exps->ne, (std::vector<int64_t>{256, 384, 8}));
  EXPECT_EQ(g.FindTensor("blk.0.ffn_gate_inp.weight")->type, GgmlType::kF32);
  EXPECT_EQ(g.FindTensor("blk.0.attn_norm.weight")->type, GgmlType::kF32);
  EXPECT_EQ(g.FindTensor("blk.0.attn_q.weight")->type, GgmlType::kF16);
}

TEST(ModelWriterTest, WritesQ8_0Gguf) {
  const std::string dir = testing::MakeTempDir();
  WriteModelOptions o;
  o.format = ModelFormat::kGguf;
  o.dtype = DType::kQ8_0;
  ASSERT_TRUE(
      WriteModel(SyntheticSource(*PresetConfig("demo"), DType::kQ8_0, 1), o,
                 dir)
          .ok());
  absl::StatusOr<Model> m = LoadModel(dir + "/model.gguf");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->weights.layers[0].wq.dtype(), DType::kQ8_0);
  // Dequantized values stay close to the f32 originals.
  absl::StatusOr<Model> f = SynthesizeModel("demo", DType::kF32, 1);
  const Tensor& q = m->weights.layers[0].wv;  // V is not permuted.
  const uint8_t* blk = static_cast<const uint8_t*>(q.raw_data());
  uint16_t dh;
  std::memcpy(&dh, blk, 2);
  const float d = HalfToFloat(dh);
  for (int i = 0; i < 32; ++i) {
    EXPECT_NEAR(d * static_cast<int8_t>(blk[2 + i]),
                f->weights.layers[0].wv.data<float>()[i], d * 0.51f);
  }
  o.format = ModelFormat::kHf;
  EXPECT_FALSE(
      WriteModel(SyntheticSource(*PresetConfig("demo"), DType::kQ8_0, 1), o,
                 dir)
          .ok());
}

TEST(SyntheticVocabTest, DemoIsBytesPlusBosEos) {
  absl::StatusOr<SyntheticVocab> v =
      BuildSyntheticVocab(258, SpecialTokenStyle::kLlama);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->tokens.size(), 258u);
  EXPECT_TRUE(v->merges.empty());
  EXPECT_EQ(v->bos_id, 256);
  EXPECT_EQ(v->eos_id, 257);
  EXPECT_EQ(v->tokens[256], "<s>");
  EXPECT_EQ(v->tokens['a'], "a");
  EXPECT_EQ(v->tokens[' '], "\xc4\xa0");   // "Ġ"
  EXPECT_EQ(v->tokens['\n'], "\xc4\x8a");  // "Ċ"
  EXPECT_FALSE(BuildSyntheticVocab(257, SpecialTokenStyle::kLlama).ok());
}

TEST(SyntheticVocabTest, MergesAreValidAndDeterministic) {
  absl::StatusOr<SyntheticVocab> v =
      BuildSyntheticVocab(4096, SpecialTokenStyle::kLlama);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->tokens.size(), 4096u);
  EXPECT_EQ(v->merges.size(), 4096u - 258u);
  std::set<std::string> seen(v->tokens.begin(), v->tokens.begin() + 256);
  for (size_t r = 0; r < v->merges.size(); ++r) {
    const std::string& m = v->merges[r];
    const size_t sp = m.find(' ');
    ASSERT_NE(sp, std::string::npos);
    const std::string a = m.substr(0, sp), b = m.substr(sp + 1);
    EXPECT_TRUE(seen.count(a) && seen.count(b)) << m;
    EXPECT_EQ(v->tokens[256 + r], a + b);
    EXPECT_TRUE(seen.insert(a + b).second) << "duplicate " << m;
  }
  // Common English pieces are learned from the text first.
  EXPECT_THAT(
      std::vector<std::string>(v->merges.begin(), v->merges.begin() + 40),
      ::testing::Contains("\xc4\xa0 t"));
  EXPECT_EQ(v->merges,
            BuildSyntheticVocab(4096, SpecialTokenStyle::kLlama)->merges);
  absl::StatusOr<SyntheticVocab> l3 =
      BuildSyntheticVocab(128256, SpecialTokenStyle::kLlama3);
  ASSERT_TRUE(l3.ok());
  EXPECT_EQ(l3->bos_id, 128000);
  EXPECT_EQ(l3->tokens[128000], "<|begin_of_text|>");
  EXPECT_EQ(l3->tokens[128009], "<|eot_id|>");
  EXPECT_EQ(l3->tokens[128255], "<|reserved_special_token_247|>");
}

TEST(SyntheticVocabTest, TokenizerJsonIsWellFormed) {
  absl::StatusOr<SyntheticVocab> v =
      BuildSyntheticVocab(600, SpecialTokenStyle::kLlama);
  const nlohmann::json j = nlohmann::json::parse(TokenizerJson(*v));
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(j["decoder"]["type"], "ByteLevel");
  EXPECT_EQ(j["model"]["vocab"].size(), 598u);
  EXPECT_EQ(j["model"]["merges"].size(), 600u - 258u);
  EXPECT_EQ(j["added_tokens"][0]["content"], "<s>");
  EXPECT_EQ(j["added_tokens"][0]["id"], 598);
  EXPECT_EQ(j["model"]["vocab"]["\xc4\xa0"], 32);
}

TEST(MakeModelCommandTest, WritesLoadableModels) {
  const std::string dir = testing::MakeTempDir();
  auto r = testing::RunCommand(testing::TesseraBin() +
                               " make-model --preset qwen2-tiny --dtype bf16 "
                               "--format hf --seed 5 --out " +
                               dir + "/hf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("wrote qwen2-tiny"));
  absl::StatusOr<Model> m = LoadModel(dir + "/hf");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.architecture, "qwen2");
  EXPECT_EQ(m->config.dtype, DType::kBF16);
  EXPECT_TRUE(std::filesystem::exists(dir + "/hf/tokenizer.json"));
  r = testing::RunCommand(testing::TesseraBin() +
                          " make-model --preset demo --format gguf --out " +
                          dir + "/g");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(LoadModel(dir + "/g/model.gguf").ok());
}

TEST(MakeModelCommandTest, BadFlagsExit2) {
  for (const char* args : {"--preset nope --out x", "--preset demo",
                           "--preset demo --out x "
                           "--dtype f64",
                           "--preset demo --out x --format onnx"}) {
    auto r = testing::RunCommand(testing::TesseraBin() + " make-model " + args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  auto r = testing::RunCommand(testing::TesseraBin() +
                               " make-model --preset demo --format hf "
                               "--dtype q8_0 --out /tmp/unused-q8");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("tessera make-model: q8_0"));
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// A make-model file cut anywhere is an error naming the file, never a crash.
TEST(ModelWriterTest, TruncatedModelFilesAreErrors) {
  const std::string dir = testing::MakeTempDir();
  absl::StatusOr<SyntheticVocab> vocab =
      BuildSyntheticVocab(258, SpecialTokenStyle::kLlama);
  for (ModelFormat f : {ModelFormat::kGguf, ModelFormat::kHf}) {
    WriteModelOptions o;
    o.format = f;
    o.dtype = DType::kF16;
    o.vocab = &*vocab;
    const std::string out = dir + (f == ModelFormat::kHf ? "/hf" : "/gguf");
    ASSERT_TRUE(
        WriteModel(SyntheticSource(*PresetConfig("demo"), DType::kF16, 1), o,
                   out)
            .ok());
    const std::string file =
        out + (f == ModelFormat::kHf ? "/model.safetensors" : "/model.gguf");
    const std::string bytes = *ReadFileToString(file);
    const std::string copy = out + "/cut";
    std::filesystem::create_directories(copy);
    if (f == ModelFormat::kHf) {
      std::filesystem::copy_file(out + "/config.json", copy + "/config.json");
    }
    const std::string cut_file =
        copy + (f == ModelFormat::kHf ? "/model.safetensors" : "/model.gguf");
    for (int k = 0; k < 40; ++k) {
      const size_t n = bytes.size() * k / 40 + (k * 7919) % 97;
      ASSERT_TRUE(
          WriteStringToFile(cut_file, std::string_view(bytes).substr(0, n))
              .ok());
      absl::Status s =
          LoadModel(f == ModelFormat::kHf ? copy : cut_file).status();
      EXPECT_FALSE(s.ok()) << n;
      EXPECT_THAT(std::string(s.message()), HasSubstr(cut_file)) << n;
    }
  }
}

}  // namespace
}  // namespace tessera
