// Tokenizer algorithms on small hand-built vocabularies: BPE merge order,
// SentencePiece scores and byte fallback, llama2.c's encode, special tokens,
// decoding, streaming detokenization and bad input files.
#include "runtime/tokenizer.h"

#include <cstring>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/formats/gguf.h"
#include "runtime/tokenizer/internal/pretokenizer.h"
#include "runtime/tokenizer/internal/utf8.h"
#include "tests/runtime/tokenizer/tokenizer_test_util.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

using tokenizer_test::Dec;
using tokenizer_test::Enc;

// --- byte tokenizer -------------------------------------------------------

TEST(ByteTokenizerTest, BytesAndSpecials) {
  auto t = NewByteTokenizer();
  EXPECT_EQ(t->vocab_size(), 258);
  EXPECT_EQ(t->bos_id(), 256);
  EXPECT_THAT(t->eos_ids(), ElementsAre(257));
  EXPECT_THAT(Enc(*t, "Hi", true), ElementsAre(256, 'H', 'i'));
  EXPECT_THAT(Enc(*t, "a</s>", false, true), ElementsAre('a', 257));
  EXPECT_EQ(Dec(*t, {256, 'H', 'i', 257}, true), "Hi");
  EXPECT_EQ(Dec(*t, {256, 'H'}, false), "<s>H");
  EXPECT_FALSE(t->Decode(std::vector<int32_t>{258}, false).ok());
}

// --- byte-level BPE from tokenizer.json -----------------------------------

// A GPT-2 style tokenizer.json: all 256 byte characters, a few merges.
json ByteLevelJson() {
  const auto& map = tokenizer_internal::ByteLevelMap::Get();
  json vocab = json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b)
    vocab[map.Encode(static_cast<uint8_t>(b))] = id++;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"b", "c"},   {"a", "b"},    {"l", "l"},       {"h", "e"},
      {"he", "ll"}, {"hell", "o"}, {"\xC4\xA0", "w"}};  // "Ġ w"
  json jm = json::array();
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    jm.push_back(a + " " + b);
  }
  json j;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", jm}};
  j["added_tokens"] =
      json::array({{{"id", 300}, {"content", "<|end|>"}, {"special", true}},
                   {{"id", 301}, {"content", "<|begin|>"}, {"special", true}},
                   {{"id", 302}, {"content", "[TOOL]"}, {"special", false}}});
  j["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       json::array({{{"SpecialToken", {{"id", "<|begin|>"}, {"type_id", 0}}}},
                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"special_tokens",
       {{"<|begin|>", {{"id", "<|begin|>"}, {"ids", {301}}}}}}};
  return j;
}

std::unique_ptr<Tokenizer> FromJson(const json& j, const json& config = {}) {
  auto t = TokenizerFromHfJson(j.dump(), config.is_null() ? "" : config.dump(),
                               "", "test.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

TEST(BpeTest, MergesApplyByRankThenLeftmost) {
  auto t = FromJson(ByteLevelJson());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), "bpe");
  const int32_t bc = t->TokenId("bc"), a = t->TokenId("a");
  // "b c" has rank 0, so "abc" -> a + bc even though "a b" also exists.
  EXPECT_THAT(Enc(*t, "abc"), ElementsAre(a, bc));
  EXPECT_THAT(Enc(*t, "hello"), ElementsAre(t->TokenId("hello")));
  // ByteLevel splits " world" into its own word; "Ġw" merges.
  const auto ids = Enc(*t, "hello world");
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], t->TokenId("hello"));
  EXPECT_EQ(ids[1], t->TokenId("\xC4\xA0w"));
  EXPECT_EQ(Dec(*t, ids), "hello world");
}

TEST(BpeTest, SpecialAndAddedTokens) {
  auto t = FromJson(ByteLevelJson());
  ASSERT_NE(t, nullptr);
  // Special tokens only with parse_special; added non-special ones always.
  EXPECT_THAT(Enc(*t, "a<|end|>", false, true),
              ElementsAre(t->TokenId("a"), 300));
  EXPECT_GT(Enc(*t, "a<|end|>", false, false).size(), 2u);
  EXPECT_THAT(Enc(*t, "[TOOL]", false, false), ElementsAre(302));
  // TemplateProcessing adds <|begin|> as BOS.
  EXPECT_EQ(t->bos_id(), 301);
  EXPECT_THAT(Enc(*t, "a", true), ElementsAre(301, t->TokenId("a")));
  EXPECT_TRUE(t->IsSpecial(300));
  EXPECT_FALSE(t->IsSpecial(302));
  EXPECT_EQ(Dec(*t, {301, t->TokenId("a"), 300}, true), "a");
  EXPECT_EQ(Dec(*t, {301, t->TokenId("a"), 300}, false), "<|begin|>a<|end|>");
}

TEST(BpeTest, ConfigOverridesBosAndGivesEosAndTemplate) {
  json config = {{"add_bos_token", false},
                 {"eos_token", "<|end|>"},
                 {"chat_template", "{{ '<|im_start|>' }}"}};
  auto t = FromJson(ByteLevelJson(), config);
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(Enc(*t, "a", true), ElementsAre(t->TokenId("a")));
  EXPECT_THAT(t->eos_ids(), ElementsAre(300));
  EXPECT_EQ(t->chat_template(), "{{ '<|im_start|>' }}");
}

TEST(BpeTest, IgnoreMergesUsesWholeWord) {
  json j = ByteLevelJson();
  // "hello" is a token; with ignore_merges it is used even without merges.
  j["model"]["merges"] = json::array();
  j["model"]["ignore_merges"] = true;
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(Enc(*t, "hello"), ElementsAre(t->TokenId("hello")));
  EXPECT_EQ(Enc(*t, "hellx").size(), 5u);
}

TEST(BpeTest, ByteLevelPrefixSpaceOnEverySegment) {
  json j = ByteLevelJson();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  const int32_t sp = t->TokenId("\xC4\xA0"), sp_w = t->TokenId("\xC4\xA0w");
  EXPECT_EQ(Enc(*t, "wo")[0], sp_w);
  // As in Hugging Face, each segment between added tokens gets the prefix.
  EXPECT_THAT(Enc(*t, "a<|end|>b", false, true),
              ElementsAre(sp, t->TokenId("a"), 300, sp, t->TokenId("b")));
}

TEST(BpeTest, MergesAsPairs) {
  json j = ByteLevelJson();
  json pairs = json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ', 1);
    pairs.push_back({s.substr(0, sp), s.substr(sp + 1)});
  }
  j["model"]["merges"] = pairs;
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(Enc(*t, "hello"), ElementsAre(t->TokenId("hello")));
}

// --- SentencePiece-style BPE in tokenizer.json (Llama 2 / Mistral) --------

TEST(BpeTest, MetaspaceWithByteFallback) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 3 + b;
  int id = 259;
  for (const char* p :
       {"\xE2\x96\x81", "h", "i", "\xE2\x96\x81h", "\xE2\x96\x81hi"}) {
    vocab[p] = id++;
  }
  json j;
  j["model"] = {{"type", "BPE"},
                {"vocab", vocab},
                {"merges", {"\xE2\x96\x81 h", "\xE2\x96\x81h i"}},
                {"byte_fallback", true},
                {"unk_token", "<unk>"}};
  j["added_tokens"] =
      json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                   {{"id", 1}, {"content", "<s>"}, {"special", true}},
                   {{"id", 2}, {"content", "</s>"}, {"special", true}}});
  j["pre_tokenizer"] = {{"type", "Metaspace"},
                        {"replacement", "\xE2\x96\x81"},
                        {"prepend_scheme", "first"},
                        {"split", false}};
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"},
         {"pattern", {{"String", "\xE2\x96\x81"}}},
         {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}}}}}};
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), "bpe-sp");
  const int32_t hi = t->TokenId("\xE2\x96\x81hi");
  // "é" is not in the vocabulary: its two UTF-8 bytes become <0xC3> <0xA9>.
  EXPECT_THAT(Enc(*t, "hi\xC3\xA9", true),
              ElementsAre(1, hi, 3 + 0xC3, 3 + 0xA9));
  EXPECT_EQ(Dec(*t, {1, hi, 3 + 0xC3, 3 + 0xA9}, true), "hi\xC3\xA9");
}

// --- SentencePiece (GGUF llama) -------------------------------------------

std::string WriteSpmGguf(bool corrupt_types = false) {
  GgufWriter w;
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int64_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(fmt::format("<0x{:02X}>", b));
    scores.push_back(0);
    types.push_back(6);
  }
  // Scores decide merge order: "▁a" + "b" beats "a" + "b".
  const std::vector<std::pair<std::string, float>> pieces = {
      {"\xE2\x96\x81", -1},
      {"a", -2},
      {"b", -3},
      {"c", -4},
      {"ab", -10},
      {"\xE2\x96\x81"
       "a",
       -5},
      {"\xE2\x96\x81"
       "ab",
       -6},
      {"bc", -7}};
  for (const auto& [p, s] : pieces) {
    tokens.push_back(p);
    scores.push_back(s);
    types.push_back(1);
  }
  if (corrupt_types) types.pop_back();
  w.SetKv("tokenizer.ggml.model", GgufValue::String("llama"));
  w.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
  w.SetKv("tokenizer.ggml.scores", GgufValue::Float32Array(scores));
  w.SetKv("tokenizer.ggml.token_type",
          GgufValue::IntArray(GgufType::kInt32, types));
  w.SetKv("tokenizer.ggml.bos_token_id", GgufValue::Uint32(1));
  w.SetKv("tokenizer.ggml.eos_token_id", GgufValue::Uint32(2));
  w.SetKv("tokenizer.chat_template", GgufValue::String("[INST] <<SYS>>"));
  const std::string path = testing::MakeTempDir() + "/spm.gguf";
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

TEST(SpmTest, MergesByScoreWithSpacePrefixAndByteFallback) {
  auto t = LoadTokenizer(WriteSpmGguf());
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  EXPECT_EQ(tok.kind(), "spm");
  const int32_t sp_ab = tok.TokenId(
      "\xE2\x96\x81"
      "ab");
  const int32_t c = tok.TokenId("c");
  EXPECT_THAT(Enc(tok, "abc", true), ElementsAre(1, sp_ab, c));
  // "d" has no piece: byte fallback.
  EXPECT_THAT(Enc(tok, "d"), ElementsAre(tok.TokenId("\xE2\x96\x81"), 3 + 'd'));
  EXPECT_TRUE(Enc(tok, "").empty());
  // A special token restarts the dummy prefix, as llama.cpp does.
  EXPECT_THAT(Enc(tok, "ab</s>ab", false, true), ElementsAre(sp_ab, 2, sp_ab));
  // Decoding strips the dummy-prefix space at the start.
  EXPECT_EQ(Dec(tok, {1, sp_ab, c}, true), "abc");
  EXPECT_EQ(Dec(tok, {sp_ab, sp_ab}), "ab ab");
  EXPECT_EQ(tok.chat_template(), "[INST] <<SYS>>");
}

TEST(SpmTest, MismatchedTokenTypesIsAnError) {
  auto t = LoadTokenizer(WriteSpmGguf(/*corrupt_types=*/true));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GgufTokenizerTest, CorruptOrIncompleteFilesAreErrors) {
  // Truncated file: the GGUF reader reports it, nothing crashes.
  const std::string good = WriteSpmGguf();
  auto bytes = ReadFileToString(good);
  ASSERT_TRUE(bytes.ok());
  const std::string dir = testing::MakeTempDir();
  for (size_t cut :
       {size_t{3}, size_t{40}, bytes->size() / 2, bytes->size() - 40}) {
    const std::string path = dir + "/cut.gguf";
    ASSERT_TRUE(WriteStringToFile(path, bytes->substr(0, cut)).ok());
    auto cut_tok = LoadTokenizer(path);
    EXPECT_FALSE(cut_tok.ok()) << cut << " of " << bytes->size() << ": "
                               << (cut_tok.ok() ? (*cut_tok)->vocab_size() : 0);
  }
  // No vocabulary at all.
  GgufWriter none;
  none.SetKv("general.architecture", GgufValue::String("llama"));
  ASSERT_TRUE(none.Write(dir + "/none.gguf").ok());
  auto t = LoadTokenizer(dir + "/none.gguf");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  // A gpt2 vocabulary naming a pre-tokenizer nobody defined.
  GgufWriter bpe;
  bpe.SetKv("tokenizer.ggml.model", GgufValue::String("gpt2"));
  bpe.SetKv("tokenizer.ggml.pre", GgufValue::String("no-such-pre"));
  bpe.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray({"a", "b", "ab"}));
  bpe.SetKv("tokenizer.ggml.merges", GgufValue::StringArray({"a b"}));
  ASSERT_TRUE(bpe.Write(dir + "/bpe.gguf").ok());
  t = LoadTokenizer(dir + "/bpe.gguf");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("no-such-pre"));
  // The same with a known one works, and merges apply.
  bpe.SetKv("tokenizer.ggml.pre", GgufValue::String("llama-bpe"));
  ASSERT_TRUE(bpe.Write(dir + "/bpe.gguf").ok());
  t = LoadTokenizer(dir + "/bpe.gguf");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(Enc(**t, "ab"), ElementsAre(2));
  // Unsupported vocabulary types are Unimplemented, not a crash.
  bpe.SetKv("tokenizer.ggml.model", GgufValue::String("rwkv"));
  ASSERT_TRUE(bpe.Write(dir + "/bpe.gguf").ok());
  t = LoadTokenizer(dir + "/bpe.gguf");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
}

// --- llama2.c tokenizer.bin -------------------------------------------------

std::string Llama2cBin(
    const std::vector<std::pair<std::string, float>>& extra) {
  std::string out;
  auto put = [&](const void* p, size_t n) {
    out.append(static_cast<const char*>(p), n);
  };
  const int32_t max_len = 16;
  put(&max_len, 4);
  auto add = [&](const std::string& s, float score) {
    const auto len = static_cast<int32_t>(s.size());
    put(&score, 4);
    put(&len, 4);
    out += s;
  };
  add("<unk>", 0);
  add("\n<s>\n", 0);
  add("\n</s>\n", 0);
  for (int b = 0; b < 256; ++b) add(fmt::format("<0x{:02X}>", b), 0);
  for (const auto& [s, score] : extra) add(s, score);
  return out;
}

std::unique_ptr<Tokenizer> FromLlama2c(const std::string& bin) {
  auto t = TokenizerFromLlama2c(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bin.data()),
                                bin.size()),
      "tok.bin");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

TEST(Llama2cTest, EncodeFollowsRunC) {
  // ids: 259 " ", 260 "a", 261 "b", 262 " a", 263 "ab", 264 " ab".
  auto t = FromLlama2c(Llama2cBin(
      {{" ", -1}, {"a", -1}, {"b", -1}, {" a", -3}, {"ab", -2}, {" ab", -1}}));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), "llama2c");
  // BOS, dummy prefix " ", then greedy merges by best score: "ab" (-2)
  // first, then " ab".
  EXPECT_THAT(Enc(*t, "ab", true), ElementsAre(1, 264));
  // Byte fallback: 'z' -> 'z' + 3.
  EXPECT_THAT(Enc(*t, "z", false), ElementsAre(259, 'z' + 3));
  // Empty text: no dummy prefix.
  EXPECT_THAT(Enc(*t, "", true), ElementsAre(1));
  // run.c strips the leading space after BOS; byte tokens decode to bytes.
  EXPECT_EQ(Dec(*t, {1, 264, 'z' + 3}, true), "abz");
  EXPECT_EQ(Dec(*t, {264}, true), " ab");
  EXPECT_THAT(t->eos_ids(), ElementsAre(1));
}

TEST(Llama2cTest, CorruptFilesAreErrors) {
  const std::string good = Llama2cBin({{" ", -1}});
  for (size_t cut : {size_t{0}, size_t{3}, size_t{10}, good.size() - 1}) {
    const std::string bad = good.substr(0, cut);
    auto t = TokenizerFromLlama2c(
        absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bad.data()),
                                  bad.size()),
        "tok.bin");
    EXPECT_FALSE(t.ok()) << cut;
  }
  std::string huge = good;
  const int32_t bad_len = 1 << 30;
  std::memcpy(&huge[4 + 4], &bad_len, 4);  // First token's length.
  EXPECT_FALSE(
      TokenizerFromLlama2c(
          absl::Span<const uint8_t>(
              reinterpret_cast<const uint8_t*>(huge.data()), huge.size()),
          "tok.bin")
          .ok());
}

// --- bad tokenizer.json -----------------------------------------------------

TEST(HfJsonTest, BadFilesAreStatusErrors) {
  for (const char* text :
       {"", "{", "[]", "{\"model\": 3}", "{\"model\": {\"type\": \"Unigram\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": "
        "[\"ab\"]}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, "
        "\"pre_tokenizer\": "
        "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, "
        "\"normalizer\": "
        "{\"type\": \"Precompiled\", \"precompiled_charsmap\": \"!!\"}}",
        "{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}}",
        "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\"]]}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, "
        "\"normalizer\": {\"type\": \"NoSuchNormalizer\"}}"}) {
    auto t = TokenizerFromHfJson(text, "", "", "bad.json");
    EXPECT_FALSE(t.ok()) << text;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr("bad.json"))
        << text;
  }
}

TEST(LoadTokenizerTest, MissingPathIsNotFound) {
  auto t = LoadTokenizer("/nonexistent/tokenizer.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  auto dir = LoadTokenizer(testing::MakeTempDir());
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kNotFound);
  auto demo = LoadTokenizer("builtin:demo");
  ASSERT_TRUE(demo.ok());
  EXPECT_EQ((*demo)->kind(), "byte");
}

TEST(LoadTokenizerTest, HfDirectoryReadsConfigs) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(
      WriteStringToFile(dir + "/tokenizer.json", ByteLevelJson().dump()).ok());
  ASSERT_TRUE(WriteStringToFile(dir + "/tokenizer_config.json",
                                R"({"eos_token": {"content": "<|end|>"}})")
                  .ok());
  ASSERT_TRUE(WriteStringToFile(dir + "/generation_config.json",
                                R"({"eos_token_id": [302, 300]})")
                  .ok());
  auto t = LoadTokenizer(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->eos_ids(), ElementsAre(302, 300));
}

// --- pre-tokenizer regexes ---------------------------------------------------

std::vector<std::string> Split(std::string_view pre, std::string_view text) {
  bool ignore = false, bos = false;
  auto regexes = tokenizer_internal::PreTokenizerRegexes(pre, &ignore, &bos);
  EXPECT_TRUE(regexes.ok()) << pre;
  std::vector<tokenizer_internal::PreTokenizeStep> steps;
  for (const auto& r : *regexes) {
    auto s = tokenizer_internal::SplitStep(r);
    EXPECT_TRUE(s.ok()) << s.status();
    steps.push_back(*s);
  }
  std::vector<std::string> words;
  EXPECT_TRUE(tokenizer_internal::PreTokenize(steps, text, true, &words).ok());
  return words;
}

TEST(PreTokenizerTest, PublishedRegexes) {
  EXPECT_THAT(Split("llama3", "Hello world 12345 it's\n\n  x"),
              ElementsAre("Hello", " world", " ", "123", "45", " it", "'s",
                          "\n\n", " ", " x"));
  EXPECT_THAT(Split("qwen2", "ab 123"), ElementsAre("ab", " ", "1", "2", "3"));
  EXPECT_THAT(Split("gpt-2", "Hello  world!!"),
              ElementsAre("Hello", " ", " world", "!!"));
  EXPECT_THAT(Split("starcoder", "x12"), ElementsAre("x", "1", "2"));
  EXPECT_THAT(Split("deepseek-coder", "ab\ncd"), ElementsAre("ab", "\n", "cd"));
  // Every known family's regexes compile.
  for (const char* pre :
       {"default",        "llama3",       "llama-bpe",   "deepseek-llm",
        "deepseek-coder", "deepseek-v3",  "falcon",      "mpt",
        "starcoder",      "gpt-2",        "refact",      "command-r",
        "qwen2",          "stablelm2",    "olmo",        "dbrx",
        "smaug-bpe",      "poro-chat",    "chatglm-bpe", "viking",
        "jais",           "tekken",       "smollm",      "codeshell",
        "bloom",          "gpt3-finnish", "exaone",      "chameleon",
        "minerva-7b",     "megrez",       "gpt-4o",      "llama4"}) {
    Split(pre, "Hello, World! 1234 \xC3\xA9t\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD");
  }
  bool ignore, bos;
  EXPECT_FALSE(
      tokenizer_internal::PreTokenizerRegexes("nope", &ignore, &bos).ok());
}

TEST(PreTokenizerTest, InvalidUtf8NeverFails) {
  EXPECT_FALSE(Split("llama3", "a\xFF\xFE b").empty());
}

// --- UTF-8 and streaming
// ------------------------------------------------------

TEST(Utf8Test, SanitizeReplacesInvalidSequences) {
  EXPECT_EQ(SanitizeUtf8("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(SanitizeUtf8("a\xFF"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(SanitizeUtf8("\xE2\x82"
                         "A"),
            "\xEF\xBF\xBD"
            "A");  // Truncated.
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

bool ValidUtf8(const std::string& s) { return SanitizeUtf8(s) == s; }

TEST(IncrementalDetokenizerTest, HoldsBackPartialCharacters) {
  auto t = NewByteTokenizer();
  IncrementalDetokenizer d(*t, true);
  // "é" (C3 A9) and "🦙" (F0 9F A6 99) arrive one byte per token.
  const std::vector<int32_t> ids = {'a',  0xC3, 0xA9, 0xF0,
                                    0x9F, 0xA6, 0x99, 257};
  std::vector<std::string> chunks;
  for (int32_t id : ids) {
    auto s = d.Push(id);
    ASSERT_TRUE(s.ok());
    chunks.push_back(*s);
  }
  EXPECT_THAT(chunks, ElementsAre("a", "", "\xC3\xA9", "", "", "",
                                  "\xF0\x9F\xA6\x99", ""));
  EXPECT_EQ(d.Flush(), "");
  EXPECT_FALSE(d.Push(999).ok());
}

TEST(IncrementalDetokenizerTest, InvalidBytesBecomeReplacementAndFlush) {
  auto t = NewByteTokenizer();
  IncrementalDetokenizer d(*t, true);
  EXPECT_EQ(*d.Push(0xFF), "\xEF\xBF\xBD");
  EXPECT_EQ(*d.Push(0xE2), "");
  EXPECT_EQ(*d.Push('x'),
            "\xEF\xBF\xBD"
            "x");
  EXPECT_EQ(*d.Push(0xE2), "");
  EXPECT_EQ(d.Flush(), "\xEF\xBF\xBD");
}

TEST(IncrementalDetokenizerTest, SpmLeadingSpaceDependsOnContext) {
  auto t = LoadTokenizer(WriteSpmGguf());
  ASSERT_TRUE(t.ok());
  const int32_t sp_ab = (*t)->TokenId(
      "\xE2\x96\x81"
      "ab");
  IncrementalDetokenizer first(**t, true, std::vector<int32_t>{1});
  EXPECT_EQ(*first.Push(sp_ab), "ab");  // Starts the text: space stripped.
  EXPECT_EQ(*first.Push(sp_ab), " ab");
  IncrementalDetokenizer cont(**t, true, std::vector<int32_t>{1, sp_ab});
  EXPECT_EQ(*cont.Push(sp_ab), " ab");  // Continues the prompt.
}

TEST(IncrementalDetokenizerTest, RandomStreamsMatchDecode) {
  auto t = LoadTokenizer(WriteSpmGguf());
  ASSERT_TRUE(t.ok());
  uint64_t state = 12345;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 12; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      ids.push_back(static_cast<int32_t>((state >> 33) % (*t)->vocab_size()));
    }
    IncrementalDetokenizer d(**t, true);
    std::string streamed;
    for (int32_t id : ids) {
      auto s = d.Push(id);
      ASSERT_TRUE(s.ok());
      ASSERT_TRUE(ValidUtf8(*s)) << trial;
      streamed += *s;
    }
    streamed += d.Flush();
    EXPECT_EQ(streamed, Dec(**t, ids, true)) << trial;
  }
}

}  // namespace
}  // namespace tessera
