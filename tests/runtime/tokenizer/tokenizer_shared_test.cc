// Tokenizers against independent references in shared/: llama.cpp's
// vocabulary tests, llama2.c's run.c and llama.cpp's prompt tokenization.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/formats/gguf.h"
#include "runtime/tokenizer.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::vector<int32_t> ParseIds(std::string_view s) {
  std::vector<int32_t> ids;
  std::istringstream in{std::string(s)};
  for (std::string w; in >> w;) {
    if (w == "PROMPT" || w == "ID") continue;
    ids.push_back(std::stoi(w));
  }
  return ids;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

class VocabTest : public ::testing::TestWithParam<const char*> {};

// `tessera tokenize --vocab-test` reproduces llama.cpp's expected ids for
// every test string of every vocabulary in shared/vocab.
TEST_P(VocabTest, CliMatchesLlamaCppOutput) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string base = shared + "/vocab/" + GetParam();
  if (!std::filesystem::exists(base)) GTEST_SKIP() << base << " absent";
  auto r = testing::RunCommand(testing::TesseraBin() + " tokenize --model '" +
                               base + "' --vocab-test '" + base + ".inp'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto expected = ReadFileToString(base + ".out");
  ASSERT_TRUE(expected.ok());
  const auto got_lines = Lines(r.out), want_lines = Lines(*expected);
  ASSERT_EQ(got_lines.size(), want_lines.size());
  for (size_t i = 0; i < want_lines.size(); ++i) {
    EXPECT_EQ(got_lines[i], want_lines[i]) << "test string " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(SharedVocabs, VocabTest,
                         ::testing::Values("ggml-vocab-gpt-2.gguf",
                                           "ggml-vocab-llama-spm.gguf"));

// Any other vocabulary dropped into shared/vocab is checked too.
TEST(VocabDirTest, EveryVocabularyMatches) {
  TESSERA_REQUIRE_SHARED(shared);
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(shared + "/vocab")) {
    const std::string p = e.path().string();
    if (!p.ends_with(".gguf") || !std::filesystem::exists(p + ".inp") ||
        !std::filesystem::exists(p + ".out")) {
      continue;
    }
    auto r = testing::RunCommand(testing::TesseraBin() + " tokenize --model '" +
                                 p + "' --vocab-test '" + p + ".inp'");
    EXPECT_EQ(r.exit_code, 0) << p << ": " << r.err;
    EXPECT_EQ(r.out, *ReadFileToString(p + ".out")) << p;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// The tokenizer.json path on a real vocabulary: GPT-2's GGUF vocabulary
// rewritten as a Hugging Face tokenizer.json (ByteLevel pre-tokenizer) must
// reproduce llama.cpp's expected ids too.
TEST(HfJsonVocabTest, Gpt2AsTokenizerJsonMatchesLlamaCpp) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string base = shared + "/vocab/ggml-vocab-gpt-2.gguf";
  if (!std::filesystem::exists(base)) GTEST_SKIP() << base << " absent";
  auto gguf = GgufFile::Open(base);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto tokens = (*gguf)->GetStringArray("tokenizer.ggml.tokens");
  auto merges = (*gguf)->GetStringArray("tokenizer.ggml.merges");
  ASSERT_TRUE(tokens.ok() && merges.ok());
  nlohmann::json vocab = nlohmann::json::object();
  nlohmann::json added = nlohmann::json::array();
  for (size_t i = 0; i < tokens->size(); ++i) {
    const std::string& t = (*tokens)[i];
    if (t == "<|endoftext|>") {
      added.push_back({{"id", i}, {"content", t}, {"special", true}});
    }
    vocab[t] = i;
  }
  nlohmann::json j;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", *merges}};
  j["added_tokens"] = added;
  j["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  auto tok = TokenizerFromHfJson(j.dump(), "", "", "gpt2-tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto inp = ReadFileToString(base + ".inp");
  auto out = ReadFileToString(base + ".out");
  ASSERT_TRUE(inp.ok() && out.ok());
  std::vector<std::string> strings;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0, hit; (hit = inp->find(sep, pos)) != std::string::npos;
       pos = hit + sep.size()) {
    strings.push_back(inp->substr(pos, hit - pos));
  }
  const auto want = Lines(*out);
  ASSERT_EQ(strings.size(), want.size());
  for (size_t i = 0; i < strings.size(); ++i) {
    auto ids = (*tok)->Encode(strings[i], false, false);
    ASSERT_TRUE(ids.ok());
    std::string line;
    for (int32_t id : *ids) line += " " + std::to_string(id);
    EXPECT_EQ(line, want[i]) << "test string " << i;
    // Round trip: decoding gives the text back.
    EXPECT_EQ(*(*tok)->Decode(*ids, false), strings[i]);
  }
}

TEST(Aidreams260KTest, PromptAndGreedyTextMatchRunC) {
  TESSERA_REQUIRE_SHARED(shared);
  auto tok = LoadTokenizer(shared + "/models/aidreams260K.tok512.bin");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 512);
  auto tsv = ReadFileToString(shared + "/reference/aidreams260K.greedy.tsv");
  ASSERT_TRUE(tsv.ok());
  std::vector<std::string> fields;
  std::istringstream in(*tsv);
  for (std::string f; std::getline(in, f, '\t');) fields.push_back(f);
  ASSERT_GE(fields.size(), 3u);
  // Field 2: "PROMPT ids... ID n ID n ..."; the prompt ids end at "ID".
  const std::string& ids_field = fields[1];
  const size_t first_id = ids_field.find(" ID ");
  const auto prompt = ParseIds(ids_field.substr(0, first_id));
  const auto all = ParseIds(ids_field);
  auto got = (*tok)->Encode(fields[0], /*add_special=*/true, false);
  ASSERT_TRUE(got.ok());
  EXPECT_THAT(*got, ElementsAreArray(prompt));
  // run.c prints the prompt (after BOS) and every generated piece.
  auto text = (*tok)->Decode(all, /*skip_special=*/true);
  ASSERT_TRUE(text.ok());
  // The reference ends with run.c's final "\n", written as a space in the
  // TSV.
  std::string want = fields[2];
  while (!want.empty() && (want.back() == '\n' || want.back() == ' ')) {
    want.pop_back();
  }
  EXPECT_EQ(*text, want);
}

TEST(BenchTinyTest, PromptTokenizesLikeLlamaCpp) {
  TESSERA_REQUIRE_SHARED(shared);
  auto ref = ReadFileToString(shared + "/reference/bench-tiny.greedy.txt");
  ASSERT_TRUE(ref.ok());
  std::vector<std::string> parts;
  std::istringstream in(*ref);
  for (std::string f; std::getline(in, f, '|');) parts.push_back(f);
  ASSERT_GE(parts.size(), 3u);
  std::string ids = parts[2];
  for (char& c : ids) c = c == ',' ? ' ' : c;
  auto tok = LoadTokenizer(shared + "/models/bench-tiny/model-f16.gguf");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto got = (*tok)->Encode(parts[1], /*add_special=*/true, false);
  ASSERT_TRUE(got.ok());
  EXPECT_THAT(*got, ElementsAreArray(ParseIds(ids)));
  EXPECT_EQ(*(*tok)->Decode(*got, true), parts[1]);
}

TEST(SharedVocabStreamTest, LlamaSpmStreamsValidUtf8) {
  TESSERA_REQUIRE_SHARED(shared);
  auto tok = LoadTokenizer(shared + "/vocab/ggml-vocab-llama-spm.gguf");
  ASSERT_TRUE(tok.ok());
  // Multi-byte characters split across byte-fallback tokens.
  const std::string text =
      "caf\xC3\xA9 \xF0\x9F\xA6\x99 \xE1\x9E\x80\xE1\x9E\xB6 "
      "\xE4\xBD\xA0\xE5\xA5\xBD";
  auto ids = (*tok)->Encode(text, true, false);
  ASSERT_TRUE(ids.ok());
  IncrementalDetokenizer d(**tok, true);
  std::string streamed;
  for (int32_t id : *ids) {
    auto s = d.Push(id);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(SanitizeUtf8(*s), *s);
    streamed += *s;
  }
  streamed += d.Flush();
  EXPECT_EQ(streamed, text);
}

TEST(TokenizeCliTest, EncodeDecodeAndErrors) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string bin = testing::TesseraBin();
  const std::string gguf = shared + "/models/bench-tiny/model-f16.gguf";
  auto r = testing::RunCommand(bin + " tokenize --model " + gguf +
                               " --text 'Once upon a time' --add-special");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1 9038 2501 263 931\n");
  r = testing::RunCommand(
      bin + " tokenize --model " + gguf +
      " --decode --skip-special --text '1,9038,2501,263,931'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Once upon a time\n");
  r = testing::RunCommand(bin + " tokenize --model " + gguf +
                          " --decode --text '99999'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("tessera tokenize:"));
  r = testing::RunCommand(bin + " tokenize --model " + shared +
                          "/models/stories260K.bin --text hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--tokenizer"));
  r = testing::RunCommand(bin + " tokenize --model " + gguf);
  EXPECT_EQ(r.exit_code, 2);
  r = testing::RunCommand(
      bin + " tokenize --model builtin:demo --text hi --add-special");
  EXPECT_EQ(r.out, "256 104 105\n");
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// The same synthetic model written by `tessera make-model` as a Hugging Face
// directory (tokenizer.json) and as GGUF (tokenizer.ggml.*) tokenizes alike.
TEST(MakeModelTokenizerTest, HfAndGgufAgree) {
  const std::string bin = testing::TesseraBin();
  const std::string dir = testing::MakeTempDir();
  for (const char* format : {"hf", "gguf"}) {
    auto r =
        testing::RunCommand(bin + " make-model --preset qwen2-tiny --format " +
                            format + " --out " + dir + "/" + format);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const std::string text =
      "Hello world, it's 2024! \xC3\xA9t\xC3\xA9 \xF0\x9F\xA6\x99";
  auto hf = LoadTokenizer(dir + "/hf");
  auto gguf = LoadTokenizer(dir + "/gguf/model.gguf");
  ASSERT_TRUE(hf.ok()) << hf.status();
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto a = (*hf)->Encode(text, true, false);
  auto b = (*gguf)->Encode(text, true, false);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(*(*hf)->Decode(*a, true), text);
  EXPECT_EQ((*hf)->bos_id(), (*gguf)->bos_id());
}

}  // namespace
}  // namespace tessera
