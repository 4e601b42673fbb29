// Exact greedy generation against independent implementations (llama2.c's run.c
// and llama.cpp), from every format tessera loads.
#include "runtime/generate.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "base/host_memory.h"
#include "base/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/internal/synthetic_vocab.h"
#include "runtime/model_loader.h"
#include "runtime/model_presets.h"
#include "runtime/model_writer.h"
#include "runtime/tokenizer.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::RunCommand;
using ::tessera::testing::TesseraBin;

std::vector<int32_t> ParseIdList(const std::string& text) {
  std::vector<int32_t> ids;
  std::string item;
  for (char c : text + " ") {
    if (c == ',' || c == ' ' || c == '\n' || c == '\t') {
      int32_t id;
      if (!item.empty() && absl::SimpleAtoi(item, &id)) ids.push_back(id);
      item.clear();
    } else {
      item += c;
    }
  }
  return ids;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Greedy ids after `prompt`, stopping at a stop id, like the reference
// programs.
std::vector<int32_t> GreedyIds(const Model& model,
                               const std::vector<int32_t>& prompt,
                               int64_t max_tokens,
                               std::vector<int32_t> stop_ids,
                               DType kv_dtype = DType::kF32) {
  RunnerOptions ro;
  ro.max_model_len = static_cast<int64_t>(prompt.size()) + max_tokens - 1;
  ro.num_kv_blocks = (ro.max_model_len + ro.block_size - 1) / ro.block_size;
  ro.max_num_seqs = 1;
  ro.max_num_batched_tokens = 64;
  ro.kv_dtype = kv_dtype;
  ro.threads = 1;  // ctest runs tests in parallel on few cores.

  auto runner = CreateCpuModelRunner(model, ro);
  EXPECT_TRUE(runner.ok()) << runner.status();
  if (!runner.ok()) return {};
  GenerateOptions go;
  go.max_tokens = max_tokens;
  go.sampling.temperature = 0;
  go.stop_ids = std::move(stop_ids);
  go.prefill_chunk =
      7;  // Odd chunks exercise chunked prefill against the reference.
  std::vector<int32_t> out;
  auto stats =
      Generate(**runner, prompt, go, [&](int32_t t) { out.push_back(t); });
  EXPECT_TRUE(stats.ok()) << stats.status();
  return out;
}

TEST(GenerateTest, Stories260KMatchesLlama2c) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string ref = Slurp(shared + "/reference/stories260K.greedy.txt");
  const size_t bar = ref.find('|');
  ASSERT_NE(bar, std::string::npos);
  const std::vector<int32_t> prompt = ParseIdList(ref.substr(0, bar));
  const std::vector<int32_t> expected = ParseIdList(ref.substr(bar + 1));
  auto model = LoadModel(shared + "/models/stories260K.bin");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(
      GreedyIds(*model, prompt, static_cast<int64_t>(expected.size()), {1}),
      expected);
}

TEST(GenerateTest, Aidreams260KTextMatchesLlama2c) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string ref = Slurp(shared + "/reference/aidreams260K.greedy.tsv");
  const size_t p = ref.find("PROMPT ");
  const size_t first_id = ref.find("ID ");
  ASSERT_NE(p, std::string::npos);
  const std::vector<int32_t> prompt =
      ParseIdList(ref.substr(p + 7, first_id - p - 7));
  std::vector<int32_t> expected;
  for (size_t at = ref.find("ID "); at != std::string::npos;
       at = ref.find("ID ", at + 3)) {
    int32_t id;
    const size_t end = ref.find_first_of(" \t\n", at + 3);
    if (absl::SimpleAtoi(ref.substr(at + 3, end - at - 3), &id))
      expected.push_back(id);
  }
  auto tokenizer = LoadTokenizer(shared + "/models/aidreams260K.tok512.bin");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto encoded = (*tokenizer)->Encode("Once upon a time", true, false);
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(*encoded, prompt);
  auto model = LoadModel(shared + "/models/aidreams260K.bin");
  ASSERT_TRUE(model.ok()) << model.status();
  // run.c -n 128 counts the prompt's tokens in its 128 steps.
  const int64_t steps = 128 - static_cast<int64_t>(prompt.size()) + 1;
  const std::vector<int32_t> got = GreedyIds(*model, prompt, steps, {1});
  ASSERT_GE(expected.size(), got.size());
  EXPECT_EQ(got, std::vector<int32_t>(expected.begin(),
                                      expected.begin() + got.size()));
}

struct LlamaCppCase {
  std::string model;
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> expected;
};

LlamaCppCase ReadLlamaCppReference(const std::string& path) {
  const std::string ref = Slurp(path);
  std::vector<std::string> parts;
  std::string cur;
  for (char c : ref) {
    if (c == '|') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  LlamaCppCase c;
  if (parts.size() != 4) return c;
  c.model = parts[0];
  c.prompt = parts[1];
  c.prompt_ids = ParseIdList(parts[2]);
  c.expected = ParseIdList(parts[3]);
  return c;
}

TEST(GenerateTest, BenchTinyGgufAndHfMatchLlamaCpp) {
  TESSERA_REQUIRE_SHARED(shared);
  const LlamaCppCase c =
      ReadLlamaCppReference(shared + "/reference/bench-tiny.greedy.txt");
  ASSERT_EQ(c.expected.size(), 32u);
  auto tokenizer = LoadTokenizer(shared + "/models/bench-tiny/model-f16.gguf");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto encoded = (*tokenizer)->Encode(c.prompt, true, false);
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(*encoded, c.prompt_ids);
  for (const std::string path :
       {"/models/bench-tiny/model-f16.gguf", "/models/bench-tiny/hf"}) {
    auto model = LoadModel(shared + path);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(GreedyIds(*model, c.prompt_ids, 32, {}), c.expected) << path;
  }
}

TEST(GenerateTest, MoeTinyMatchesLlamaCpp) {
  TESSERA_REQUIRE_SHARED(shared);
  const LlamaCppCase c =
      ReadLlamaCppReference(shared + "/reference/moe-tiny.greedy.txt");
  ASSERT_EQ(c.expected.size(), 32u);
  auto model = LoadModel(shared + "/models/moe-tiny/model-f16.gguf");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(GreedyIds(*model, c.prompt_ids, 32, {}), c.expected);
}

TEST(GenerateTest, DemoModelIsDeterministic) {
  auto model = SynthesizeModel("demo", DType::kF32, 7);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int32_t> prompt = {256, 'H', 'i'};
  const auto a = GreedyIds(*model, prompt, 16, {});
  EXPECT_EQ(a.size(), 16u);
  EXPECT_EQ(a, GreedyIds(*model, prompt, 16, {}));
}

TEST(GenerateTest, CliRunPrintsIdsEqualToReference) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string ref = Slurp(shared + "/reference/stories260K.greedy.txt");
  const std::vector<int32_t> expected =
      ParseIdList(ref.substr(ref.find('|') + 1));
  auto r = RunCommand(
      TesseraBin() + " run --threads 1 --model " + shared +
      "/models/stories260K.bin --prompt-ids 1 --temperature 0 --print-ids "
      "--max-tokens " +
      std::to_string(expected.size()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseIdList(r.out), expected);
}

// Writes `preset` as an f16 GGUF (its 2-D weights borrowed from the mapping
// when loaded back).
absl::StatusOr<Model> LoadPresetGguf(const std::string& preset) {
  ASSIGN_OR_RETURN(Model m, SynthesizeModel(preset, DType::kF16, 11));
  ASSIGN_OR_RETURN(
      SyntheticVocab vocab,
      BuildSyntheticVocab(m.config.vocab_size, PresetTokenStyle(preset)));
  const std::string dir = testing::MakeTempDir() + "/" + preset;
  WriteModelOptions o;
  o.format = ModelFormat::kGguf;
  o.dtype = DType::kF16;
  o.vocab = &vocab;
  RETURN_IF_ERROR(WriteModel(SourceFromModel(m), o, dir));
  return LoadModel(dir + "/model.gguf");
}

// Copying the weights out of the mapped file into huge-page memory changes no
// output, keeps a tied LM head tied and MoE expert views intact, and leaves
// nothing borrowing from the file.
TEST(GenerateTest, WeightsCopiedToHostMemoryGiveTheSameIds) {
  for (const std::string preset : {"qwen3-tiny", "mixtral-tiny"}) {
    SCOPED_TRACE(preset);
    absl::StatusOr<Model> model = LoadPresetGguf(preset);
    ASSERT_TRUE(model.ok()) << model.status();
    const std::vector<int32_t> prompt = {1, 17, 300, 5, 2048, 9};
    const std::vector<int32_t> before = GreedyIds(*model, prompt, 12, {});
    ASSERT_EQ(before.size(), 12u);
    const bool tied = model->weights.lm_head.raw_data() ==
                      model->weights.token_embedding.raw_data();
    EXPECT_EQ(tied, model->config.tie_word_embeddings);
    const int64_t bytes = WeightBytes(*model);

    absl::StatusOr<WeightCopyStats> stats = CopyWeightsToHostMemory(*model);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_GE(stats->bytes, bytes);
    EXPECT_LT(stats->bytes, bytes + stats->tensors * 64);
    EXPECT_EQ(WeightBytes(*model), bytes);  // Tied tensors were not split.
    ASSERT_EQ(model->owners.size(), 1u);
    const auto* lo = static_cast<const char*>(model->owners[0].get());
    const auto* hi = lo + stats->bytes;
    // The arena is huge-page aligned (base/host_memory.h).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(lo) % kHugePageBytes, 0u);
    for (const Tensor* t :
         {&model->weights.token_embedding, &model->weights.lm_head,
          &model->weights.layers[0].wq, &model->weights.layers[1].attn_norm}) {
      const auto* p = static_cast<const char*>(t->raw_data());
      EXPECT_TRUE(p >= lo && p + t->nbytes() <= hi);
    }
    EXPECT_EQ(model->weights.lm_head.raw_data() ==
                  model->weights.token_embedding.raw_data(),
              tied);
    if (model->config.num_local_experts > 0) {
      const auto& experts = model->weights.layers[0].expert_up;
      ASSERT_EQ(static_cast<int64_t>(experts.size()),
                model->config.num_local_experts);
      EXPECT_NE(experts[0].raw_data(), experts[1].raw_data());
    }
    EXPECT_EQ(GreedyIds(*model, prompt, 12, {}), before);
  }
}

TEST(GenerateTest, CliRunWeightsMemoryModesAgree) {
  TESSERA_REQUIRE_SHARED(shared);
  std::string ids[2];
  int i = 0;
  for (const char* mode : {"mapped", "huge-pages"}) {
    auto r = RunCommand(TesseraBin() + " run --threads 1 --model " + shared +
                        "/models/stories260K.bin --prompt-ids 1 "
                        "--temperature 0 --print-ids --max-tokens 24 "
                        "--weights-memory " +
                        mode);
    ASSERT_EQ(r.exit_code, 0) << mode << ": " << r.err;
    ids[i++] = r.out;
  }
  EXPECT_FALSE(ids[0].empty());
  EXPECT_EQ(ids[0], ids[1]);
  auto bad = RunCommand(TesseraBin() +
                        " run --prompt-ids 1 --weights-memory sometimes");
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
}

TEST(GenerateTest, CliRunDemoPrintsTextAndStats) {
  auto r = RunCommand(TesseraBin() +
                      " run --threads 1 --prompt hello --max-tokens 8 --stats");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, ::testing::HasSubstr("decode"));
  EXPECT_THAT(r.err, ::testing::HasSubstr("tok/s"));
}

TEST(GenerateTest, CliRunBadModelFailsCleanly) {
  auto r = RunCommand(TesseraBin() +
                      " run --model /nonexistent/model.gguf --max-tokens 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, ::testing::HasSubstr("/nonexistent/model.gguf"));
}

}  // namespace
}  // namespace tessera
