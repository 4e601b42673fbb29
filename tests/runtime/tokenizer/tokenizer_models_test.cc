// Unicode normalizers, WordPiece and Unigram on small hand-built
// vocabularies. Every expected id is derived by hand from the published
// algorithm (see the comment at each check).
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/formats/gguf.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/internal/normalizer.h"
#include "tests/runtime/tokenizer/tokenizer_test_util.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
using tokenizer_internal::NormalizeStep;
using Kind = tokenizer_internal::NormalizeStep::Kind;

using tokenizer_test::Dec;
using tokenizer_test::Enc;

std::unique_ptr<Tokenizer> FromJson(const json& j) {
  auto t = TokenizerFromHfJson(j.dump(), "", "", "test.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

NormalizeStep Step(Kind kind) {
  NormalizeStep s;
  s.kind = kind;
  return s;
}

std::string Norm(std::vector<NormalizeStep> steps, std::string text) {
  auto s = tokenizer_internal::Normalize(steps, &text);
  EXPECT_TRUE(s.ok()) << s;
  return text;
}

// A tiny SentencePiece precompiled_charsmap, built by hand in darts-clone's
// layout: "A" -> "a" and "AB" -> "x".
//   unit 0 (root): offset 1                      -> children at 1 ^ byte
//   unit 64 = 1 ^ 'A': label 'A', has_leaf, offset 1 -> node 65
//   unit 65: value 0 (replacement "a" at offset 0)
//   unit 3 = 65 ^ 'B': label 'B', has_leaf, offset 1 -> node 2
//   unit 2: value 2 (replacement "x" at offset 2)
std::string TinyCharsmap() {
  std::vector<uint32_t> units(66, 0);
  units[0] = 1u << 10;
  units[64] = 'A' | (1u << 8) | (1u << 10);
  units[65] = 0x80000000u | 0;
  units[3] = 'B' | (1u << 8) | (1u << 10);
  units[2] = 0x80000000u | 2;
  std::string blob;
  const auto size = static_cast<uint32_t>(units.size() * 4);
  for (int i = 0; i < 4; ++i)
    blob.push_back(static_cast<char>(size >> (8 * i)));
  for (const uint32_t u : units) {
    for (int i = 0; i < 4; ++i) blob.push_back(static_cast<char>(u >> (8 * i)));
  }
  blob.append("a\0x\0", 4);
  return blob;
}

// --- normalizers -------------------------------------------------------------

TEST(NormalizerTest, UnicodeForms) {
  // NFC composes e + U+0301 COMBINING ACUTE into U+00E9.
  EXPECT_EQ(Norm({Step(Kind::kNfc)}, "e\xCC\x81"), "\xC3\xA9");
  // NFD decomposes it again.
  EXPECT_EQ(Norm({Step(Kind::kNfd)}, "\xC3\xA9"), "e\xCC\x81");
  // NFKC folds the compatibility ligature U+FB01 "ﬁ" to "fi", and NFKD the
  // circled digit U+2460 to "1".
  EXPECT_EQ(Norm({Step(Kind::kNfkc)}, "\xEF\xAC\x81"), "fi");
  EXPECT_EQ(Norm({Step(Kind::kNfkd)}, "\xE2\x91\xA0"), "1");
  // Bytes that are not UTF-8 pass through untouched.
  EXPECT_EQ(Norm({Step(Kind::kNfc)},
                 "a\xFF"
                 "e\xCC\x81"),
            "a\xFF\xC3\xA9");
}

TEST(NormalizerTest, LowercaseStripAccentsAndStrip) {
  // Full lowercase per character: U+00C0 -> U+00E0; U+0130 (İ) -> "i" +
  // U+0307 (its full mapping, as Rust's char::to_lowercase gives).
  EXPECT_EQ(Norm({Step(Kind::kLowercase)}, "AB\xC3\x80"), "ab\xC3\xA0");
  EXPECT_EQ(Norm({Step(Kind::kLowercase)}, "\xC4\xB0"), "i\xCC\x87");
  // NFD then StripAccents: "café" -> "cafe".
  EXPECT_EQ(Norm({Step(Kind::kNfd), Step(Kind::kStripAccents)}, "caf\xC3\xA9"),
            "cafe");
  NormalizeStep strip = Step(Kind::kStrip);
  EXPECT_EQ(Norm({strip}, " \t hi there \n"), "hi there");
  strip.right = false;
  EXPECT_EQ(Norm({strip}, "  hi  "), "hi  ");
}

TEST(NormalizerTest, BertNormalizer) {
  NormalizeStep bert = Step(Kind::kBert);  // All four options on.
  // clean_text: controls (U+0001) and NUL go, whitespace becomes ' ';
  // handle_chinese_chars: spaces around U+4E2D; strip_accents + lowercase.
  EXPECT_EQ(Norm({bert}, std::string("H\xC3\xA9l\x01lo\tW\0!", 11)),
            "hello w!");
  EXPECT_EQ(Norm({bert},
                 "a\xE4\xB8\xAD"
                 "b"),
            "a \xE4\xB8\xAD b");
  bert.lowercase = false;
  bert.strip_accents = false;
  EXPECT_EQ(Norm({bert}, "H\xC3\xA9"), "H\xC3\xA9");
}

TEST(NormalizerTest, LlamaCppWpmFold) {
  // First code point of the NFD decomposition, lowercased: "É" -> "e";
  // U+200B (Cf) is dropped; whitespace is kept for the word split.
  EXPECT_EQ(Norm({Step(Kind::kWpmFold)}, "\xC3\x89t\xE2\x80\x8B\tA"), "et\ta");
}

TEST(NormalizerTest, PrecompiledCharsmap) {
  auto map = tokenizer_internal::PrecompiledCharsmap::Parse(TinyCharsmap());
  ASSERT_TRUE(map.ok()) << map.status();
  NormalizeStep spm = Step(Kind::kSpmCharsmap);
  spm.charsmap = *map;
  // SentencePiece / llama.cpp: longest prefix: "AB" -> "x", then "A" -> "a".
  EXPECT_EQ(Norm({spm}, "ABA"), "xa");
  // An invalid byte becomes U+FFFD.
  EXPECT_EQ(Norm({spm}, "\xFF"), "\xEF\xBF\xBD");
  NormalizeStep hf = Step(Kind::kPrecompiled);
  hf.charsmap = *map;
  // Hugging Face: per grapheme, the shortest prefix's replacement stands for
  // the whole grapheme: "A", "B", "A" -> "a", "B", "a"; and the grapheme
  // "A" + U+0301 becomes just "a".
  EXPECT_EQ(Norm({hf}, "ABA"), "aBa");
  EXPECT_EQ(Norm({hf}, "A\xCC\x81"), "a");
  // Too short; a trie larger than the blob; a trie size not a multiple of 4.
  for (const std::string& bad : {std::string(), std::string("\x08\0\0\0", 4),
                                 std::string("\x05\0\0\0xxxxx", 9)}) {
    EXPECT_FALSE(tokenizer_internal::PrecompiledCharsmap::Parse(bad).ok());
  }
}

TEST(NormalizerTest, SentencePieceWhitespace) {
  NormalizeStep ws = Step(Kind::kSpmWhitespace);  // Dummy prefix + merge.
  EXPECT_EQ(Norm({ws}, "  a  b "),
            "\xE2\x96\x81"
            "a"
            "\xE2\x96\x81"
            "b");
  ws.remove_extra_whitespaces = false;
  EXPECT_EQ(Norm({ws}, "a  b"),
            "\xE2\x96\x81"
            "a"
            "\xE2\x96\x81\xE2\x96\x81"
            "b");
}

// --- WordPiece from tokenizer.json ---------------------------------------

json BertJson() {
  json vocab = {{"[UNK]", 0}, {"[CLS]", 1},  {"[SEP]", 2}, {"un", 3},
                {"##aff", 4}, {"##able", 5}, {"hello", 6}, {",", 7},
                {"world", 8}, {"!", 9},      {"caf", 10},  {"##e", 11},
                {"a", 12},    {"##ff", 13}};
  json j;
  j["model"] = {{"type", "WordPiece"},
                {"unk_token", "[UNK]"},
                {"continuing_subword_prefix", "##"},
                {"max_input_chars_per_word", 100},
                {"vocab", vocab}};
  j["added_tokens"] =
      json::array({{{"id", 0}, {"content", "[UNK]"}, {"special", true}},
                   {{"id", 1}, {"content", "[CLS]"}, {"special", true}},
                   {{"id", 2}, {"content", "[SEP]"}, {"special", true}}});
  j["normalizer"] = {{"type", "BertNormalizer"},
                     {"clean_text", true},
                     {"handle_chinese_chars", true},
                     {"strip_accents", nullptr},
                     {"lowercase", true}};
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  j["post_processor"] = {
      {"type", "BertProcessing"}, {"sep", {"[SEP]", 2}}, {"cls", {"[CLS]", 1}}};
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
  return j;
}

TEST(WordPieceTest, GreedyLongestMatch) {
  auto t = FromJson(BertJson());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), "wordpiece");
  // "unaffable": longest vocabulary prefix "un"; then "##affable",
  // "##affabl"... down to "##aff"; then "##able".
  EXPECT_THAT(Enc(*t, "unaffable"), ElementsAre(3, 4, 5));
  // Lowercased, split on whitespace and each punctuation character:
  // "hello" "," "world" "!".
  EXPECT_THAT(Enc(*t, "Hello,WORLD!"), ElementsAre(6, 7, 8, 9));
  EXPECT_THAT(Enc(*t, "  hello \t world "), ElementsAre(6, 8));
  // "Café": strip_accents (null = lowercase) -> "cafe" -> "caf" "##e".
  EXPECT_THAT(Enc(*t, "Caf\xC3\xA9"), ElementsAre(10, 11));
  // No piece fits "x": the whole word is [UNK], even after a matched "un".
  EXPECT_THAT(Enc(*t, "unx hello"), ElementsAre(0, 6));
  // BertProcessing: [CLS] ... [SEP].
  EXPECT_THAT(Enc(*t, "hello", true), ElementsAre(1, 6, 2));
  // Special tokens in the text with parse_special.
  EXPECT_THAT(Enc(*t, "hello[SEP]world", false, true), ElementsAre(6, 2, 8));
}

TEST(WordPieceTest, LongWordsAreUnknown) {
  json j = BertJson();
  j["model"]["max_input_chars_per_word"] = 5;
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  // 9 characters > 5: [UNK] without trying pieces.
  EXPECT_THAT(Enc(*t, "unaffable hello"), ElementsAre(0, 6));
}

// Regression (fuzzer): a float that does not fit an int used to be converted
// by json's get<int>, which is undefined behaviour; now it is a Status.
TEST(WordPieceTest, NonIntegerLimitIsInvalidArgument) {
  for (const json& bad : {json(1.00556e25), json(7.5), json("100")}) {
    json j = BertJson();
    j["model"]["max_input_chars_per_word"] = bad;
    auto t = TokenizerFromHfJson(j.dump(), "", "", "test.json");
    ASSERT_FALSE(t.ok()) << bad.dump();
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()),
                HasSubstr("max_input_chars_per_word"));
  }
}

TEST(WordPieceTest, DecoderJoinsPiecesAndCleansUp) {
  auto t = FromJson(BertJson());
  ASSERT_NE(t, nullptr);
  // "un" first; "##aff"/"##able" lose the prefix; "," gets " ," which the
  // cleanup turns into ","; "world" gets a space.
  const std::vector<int32_t> ids = {1, 3, 4, 5, 7, 8, 2};
  EXPECT_EQ(Dec(*t, ids, true), "unaffable, world");
  EXPECT_EQ(Dec(*t, ids, false), "[CLS] unaffable, world [SEP]");
  // Round trip.
  EXPECT_EQ(Dec(*t, Enc(*t, "Hello, world! unaffable"), true),
            "hello, world! unaffable");
  // Streaming gives the same text.
  IncrementalDetokenizer d(*t, true);
  std::string streamed;
  for (const int32_t id : ids) {
    auto piece = d.Push(id);
    ASSERT_TRUE(piece.ok());
    streamed += *piece;
  }
  streamed += d.Flush();
  EXPECT_EQ(streamed, "unaffable, world");
}

TEST(WordPieceTest, NormalizersSpareAddedTokens) {
  json j = BertJson();
  j["model"]["vocab"]["fi"] = 14;
  j["added_tokens"].push_back(
      {{"id", 15}, {"content", "[TOOL]"}, {"special", false}});
  j["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "NFKC"}},
        {{"type", "Lowercase"}},
        {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}}}};
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  // NFKC turns U+FB01 into "fi"; lowercase makes "HELLO" "hello"; the added
  // token "[TOOL]" is cut out first, so neither lowercase nor the
  // punctuation split touch it.
  EXPECT_THAT(Enc(*t, "  \xEF\xAC\x81 HELLO[TOOL]hello "),
              ElementsAre(14, 6, 15, 6));
}

// --- WordPiece from GGUF `bert` (llama.cpp WPM) ---------------------------

std::string WriteBertGguf() {
  // llama.cpp's converter: "##x" stored as "x", word-initial "x" as "▁x".
  const std::vector<std::string> tokens = {"[PAD]",
                                           "[UNK]",
                                           "[CLS]",
                                           "[SEP]",
                                           "\xE2\x96\x81un",
                                           "aff",
                                           "able",
                                           "\xE2\x96\x81hello",
                                           "\xE2\x96\x81,",
                                           "\xE2\x96\x81world",
                                           "\xE2\x96\x81!",
                                           "\xE2\x96\x81"
                                           "e",
                                           "\xE2\x96\x81\xE4\xB8\xAD"};
  std::vector<int64_t> types(tokens.size(), 1);
  for (int i = 0; i < 4; ++i) types[i] = 3;
  GgufWriter w;
  w.SetKv("tokenizer.ggml.model", GgufValue::String("bert"));
  w.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
  w.SetKv("tokenizer.ggml.token_type",
          GgufValue::IntArray(GgufType::kInt32, types));
  w.SetKv("tokenizer.ggml.unknown_token_id", GgufValue::Uint32(1));
  w.SetKv("tokenizer.ggml.bos_token_id", GgufValue::Uint32(2));
  w.SetKv("tokenizer.ggml.seperator_token_id", GgufValue::Uint32(3));
  w.SetKv("tokenizer.ggml.padding_token_id", GgufValue::Uint32(0));
  const std::string path = testing::MakeTempDir() + "/bert.gguf";
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

TEST(GgufWordPieceTest, FollowsLlamaCppWpm) {
  auto t = LoadTokenizer(WriteBertGguf());
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  EXPECT_EQ(tok.kind(), "wordpiece");
  // "Unaffable" -> "unaffable" -> "▁unaffable": "▁un", "aff", "able".
  EXPECT_THAT(Enc(tok, "Unaffable"), ElementsAre(4, 5, 6));
  // Punctuation is its own word: "▁hello" "▁," "▁world" "▁!".
  EXPECT_THAT(Enc(tok, "Hello, World!"), ElementsAre(7, 8, 9, 10));
  // "É" folds to "e" (first code point of its NFD); a CJK ideograph is its
  // own word even inside letters.
  EXPECT_THAT(Enc(tok, "\xC3\x89"), ElementsAre(11));
  EXPECT_THAT(Enc(tok,
                  "e\xE4\xB8\xAD"
                  "e"),
              ElementsAre(11, 12, 11));
  // "▁unx" matches "▁un" then nothing: the word is [UNK].
  EXPECT_THAT(Enc(tok, "unx hello"), ElementsAre(1, 7));
  // add_special wraps in [CLS] ... [SEP].
  EXPECT_THAT(Enc(tok, "hello", true), ElementsAre(2, 7, 3));
  // Decoding: "▁" is a space, the leading one dropped, " ," cleaned up.
  EXPECT_EQ(Dec(tok, {2, 4, 5, 6, 8, 9, 3}, true), "unaffable, world");
}

// --- Unigram from tokenizer.json -------------------------------------------

// [[piece, score], ...] (an initializer list of pairs would become an object).
json UnigramVocab(const std::vector<std::pair<std::string, double>>& pieces) {
  json v = json::array();
  for (const auto& [p, score] : pieces) v.push_back(json::array({p, score}));
  return v;
}

json UnigramJson() {
  json j;
  // ids: 0 <unk>, 1 a, 2 b, 3 ab, 4 c, 5 abc, 6 <0x78>
  j["model"] = {{"type", "Unigram"},
                {"unk_id", 0},
                {"vocab", UnigramVocab({{"<unk>", 0.0},
                                        {"a", -1.0},
                                        {"b", -2.0},
                                        {"ab", -2.5},
                                        {"c", -3.0},
                                        {"abc", -10.0},
                                        {"<0x78>", -5.0}})}};
  j["added_tokens"] =
      json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}}});
  return j;
}

TEST(UnigramTest, ViterbiPicksTheBestPath) {
  auto t = FromJson(UnigramJson());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), "unigram");
  // "abc": a+b+c = -6, ab+c = -5.5, abc = -10, a+... : best is ab + c
  // (greedy longest match would take "abc").
  EXPECT_THAT(Enc(*t, "abc"), ElementsAre(3, 4));
  // "ab": ab = -2.5 beats a+b = -3.
  EXPECT_THAT(Enc(*t, "ab"), ElementsAre(3));
  // Unknown characters score min(-10) - 10 = -20 each; the run "xy" is one
  // fused <unk>.
  EXPECT_THAT(Enc(*t, "axyb"), ElementsAre(1, 0, 2));
}

TEST(UnigramTest, ByteFallbackForUnknownRuns) {
  json j = UnigramJson();
  j["model"]["byte_fallback"] = true;
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  // "x" is uncovered: its byte 0x78 becomes "<0x78>"; "y" has no byte piece
  // so it is <unk>.
  EXPECT_THAT(Enc(*t, "axb"), ElementsAre(1, 6, 2));
  EXPECT_THAT(Enc(*t, "ay"), ElementsAre(1, 0));
  // The fused run "xy" falls back only if every byte has a piece: one <unk>.
  EXPECT_THAT(Enc(*t, "axyb"), ElementsAre(1, 0, 2));
}

TEST(UnigramTest, MetaspaceT5Style) {
  json j;
  // ids: 0 <pad>, 1 </s>, 2 <unk>, 3 ▁, 4 ▁hello, 5 ▁world, 6 ▁wor, 7 ld
  j["model"] = {{"type", "Unigram"},
                {"unk_id", 2},
                {"vocab", UnigramVocab({{"<pad>", 0.0},
                                        {"</s>", 0.0},
                                        {"<unk>", 0.0},
                                        {"\xE2\x96\x81", -2.0},
                                        {"\xE2\x96\x81hello", -3.0},
                                        {"\xE2\x96\x81world", -4.0},
                                        {"\xE2\x96\x81wor", -1.5},
                                        {"ld", -1.5}})}};
  j["added_tokens"] =
      json::array({{{"id", 0}, {"content", "<pad>"}, {"special", true}},
                   {{"id", 1}, {"content", "</s>"}, {"special", true}},
                   {{"id", 2}, {"content", "<unk>"}, {"special", true}}});
  j["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Precompiled"},
         {"precompiled_charsmap", absl::Base64Escape(TinyCharsmap())}},
        {{"type", "Replace"},
         {"pattern", {{"Regex", " {2,}"}}},
         {"content", " "}}}}};
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "WhitespaceSplit"}},
                          {{"type", "Metaspace"},
                           {"replacement", "\xE2\x96\x81"},
                           {"prepend_scheme", "always"},
                           {"split", true}}}}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"Sequence", {{"id", "A"}}}}, {{"SpecialToken", {{"id", "</s>"}}}}}},
      {"special_tokens", {{"</s>", {{"id", "</s>"}, {"ids", {1}}}}}}};
  j["decoder"] = {{"type", "Metaspace"},
                  {"replacement", "\xE2\x96\x81"},
                  {"prepend_scheme", "always"}};
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  // "▁world": ▁world = -4 loses to ▁wor + ld = -3.
  EXPECT_THAT(Enc(*t, "hello   world", true), ElementsAre(4, 6, 7, 1));
  // The charsmap maps "A" to "a"; "▁a" -> "▁" (-2) + <unk> for "a".
  EXPECT_THAT(Enc(*t, "A"), ElementsAre(3, 2));
  EXPECT_EQ(Dec(*t, {4, 6, 7, 1}, true), "hello world");
}

TEST(UnigramTest, ConcurrentEncodesAgree) {
  // The Precompiled normalizer keeps a grapheme iterator per thread; the
  // tokenizer itself is shared and const.
  json j = UnigramJson();
  j["normalizer"] = {
      {"type", "Precompiled"},
      {"precompiled_charsmap", absl::Base64Escape(TinyCharsmap())}};
  auto t = FromJson(j);
  ASSERT_NE(t, nullptr);
  const std::string text = "ABabc e\xCC\x81 axyb A\xCC\x81 abcab";
  const std::vector<int32_t> expected = Enc(*t, text);
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < got.size(); ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 200; ++rep) {
        auto ids = t->Encode(text, false, false);
        if (ids.ok()) got[k] = *ids;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& ids : got) EXPECT_EQ(ids, expected);
}

// --- Unigram from GGUF `t5` (llama.cpp UGM) ---------------------------------

std::string WriteT5Gguf(bool with_charsmap) {
  const std::vector<std::string> tokens = {"<pad>",
                                           "</s>",
                                           "<unk>",
                                           "\xE2\x96\x81",
                                           "\xE2\x96\x81hello",
                                           "\xE2\x96\x81world",
                                           "\xE2\x96\x81wor",
                                           "ld",
                                           "a"};
  const std::vector<float> scores = {0, 0, 0, -2, -3, -4, -1.5, -1.5, -1};
  const std::vector<int64_t> types = {3, 3, 2, 1, 1, 1, 1, 1, 1};
  GgufWriter w;
  w.SetKv("tokenizer.ggml.model", GgufValue::String("t5"));
  w.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
  w.SetKv("tokenizer.ggml.scores", GgufValue::Float32Array(scores));
  w.SetKv("tokenizer.ggml.token_type",
          GgufValue::IntArray(GgufType::kInt32, types));
  w.SetKv("tokenizer.ggml.add_space_prefix", GgufValue::Bool(true));
  w.SetKv("tokenizer.ggml.remove_extra_whitespaces", GgufValue::Bool(true));
  if (with_charsmap) {
    const std::string blob = TinyCharsmap();
    std::vector<int64_t> bytes;
    for (const char c : blob) bytes.push_back(static_cast<uint8_t>(c));
    w.SetKv("tokenizer.ggml.precompiled_charsmap",
            GgufValue::IntArray(GgufType::kUint8, bytes));
  }
  const std::string path = testing::MakeTempDir() + "/t5.gguf";
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

TEST(GgufUnigramTest, FollowsLlamaCppUgm) {
  auto t = LoadTokenizer(WriteT5Gguf(/*with_charsmap=*/true));
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  EXPECT_EQ(tok.kind(), "unigram");
  // "  hello   world " -> "▁hello▁world" (dummy prefix, spaces merged) ->
  // ▁hello (-3) + ▁wor (-1.5) + ld (-1.5) = -6 beats ▁world's -7; </s> added.
  EXPECT_THAT(Enc(tok, "  hello   world ", true), ElementsAre(4, 6, 7, 1));
  // The charsmap maps "A" to "a": "▁a" = ▁ (-2) + a (-1).
  EXPECT_THAT(Enc(tok, "A"), ElementsAre(3, 8));
  // "%" is covered by no piece: <unk> (id 2).
  EXPECT_THAT(Enc(tok, "hello%%"), ElementsAre(4, 2));
  EXPECT_TRUE(Enc(tok, "").empty());
  EXPECT_EQ(Dec(tok, {4, 6, 7, 1}, true), "hello world");
  // Without a charsmap "A" is unknown: "▁" + <unk>.
  auto plain = LoadTokenizer(WriteT5Gguf(/*with_charsmap=*/false));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(Enc(**plain, "A"), ElementsAre(3, 2));
}

// A token_type (or scores) array shorter than the vocabulary is a clear
// error, not a read past its end (gguf_fuzzer found that in the t5 path).
TEST(GgufUnigramTest, RejectsPerTokenArraysOfTheWrongLength) {
  const std::vector<std::string> tokens = {"<pad>", "</s>", "<unk>", "a"};
  for (const bool short_types : {true, false}) {
    GgufWriter w;
    w.SetKv("tokenizer.ggml.model", GgufValue::String("t5"));
    w.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
    w.SetKv(
        "tokenizer.ggml.scores",
        GgufValue::Float32Array(short_types ? std::vector<float>{0, 0, 0, -1}
                                            : std::vector<float>{0, 0, -1}));
    w.SetKv(
        "tokenizer.ggml.token_type",
        GgufValue::IntArray(GgufType::kInt32,
                            short_types ? std::vector<int64_t>{3}
                                        : std::vector<int64_t>{3, 3, 2, 1}));
    const std::string path = testing::MakeTempDir() + "/short.gguf";
    ASSERT_TRUE(w.Write(path).ok());
    auto t = LoadTokenizer(path);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()),
                ::testing::HasSubstr(short_types ? "token_type" : "scores"));
  }
}

// Scores whose two segmentations of "xaaaa" tie exactly in double
// arithmetic but not with float path sums (found by search):
//   x a aaa: (X + A1) + A3 and x aaa a: (X + A3) + A1.
constexpr float kX = -1.5386019945144653f;
constexpr float kA1 = -16.87953758239746f;
constexpr float kA3 = -9.222574234008789f;

TEST(GgufUnigramTest, PathScoresAreFloatAsInLlamaCpp) {
  const std::vector<std::string> tokens = {"<pad>", "</s>", "<unk>",
                                           "x",     "a",    "aaa"};
  GgufWriter w;
  w.SetKv("tokenizer.ggml.model", GgufValue::String("t5"));
  w.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
  w.SetKv("tokenizer.ggml.scores",
          GgufValue::Float32Array(std::vector<float>{0, 0, 0, kX, kA1, kA3}));
  w.SetKv("tokenizer.ggml.token_type",
          GgufValue::IntArray(GgufType::kInt32, {3, 3, 2, 1, 1, 1}));
  const std::string path = testing::MakeTempDir() + "/tie.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  auto t = LoadTokenizer(path);
  ASSERT_TRUE(t.ok()) << t.status();
  // llama.cpp: the best sum to each position is stored as float, so the
  // path through "aaa" first comes out ahead by one float ulp.
  EXPECT_THAT(Enc(**t, "xaaaa"), ElementsAre(3, 5, 4));
  // Hugging Face sums in double: an exact tie, and the first path found
  // (ending "a" + "aaa") stays.
  json j;
  j["model"] = {{"type", "Unigram"},
                {"unk_id", 2},
                {"vocab", UnigramVocab({{"<pad>", 0.0},
                                        {"</s>", 0.0},
                                        {"<unk>", 0.0},
                                        {"x", kX},
                                        {"a", kA1},
                                        {"aaa", kA3}})}};
  auto hf = FromJson(j);
  ASSERT_NE(hf, nullptr);
  EXPECT_THAT(Enc(*hf, "xaaaa"), ElementsAre(3, 4, 5));
}

TEST(HfJsonModelsTest, UnsupportedPiecesAreNamed) {
  json j = BertJson();
  j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "@@"}};
  auto t = TokenizerFromHfJson(j.dump(), "", "", "x.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  j = BertJson();
  j["model"]["type"] = "WordLevel";
  t = TokenizerFromHfJson(j.dump(), "", "", "x.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("WordLevel"));
}

}  // namespace
}  // namespace tessera
