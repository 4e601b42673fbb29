// `tessera tokenize`: text -> ids, ids -> text, and llama.cpp's vocabulary
// test format, with the tokenizer of any model tessera loads.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "fmt/format.h"
#include "runtime/cli/internal/command.h"
#include "runtime/tokenizer.h"

namespace tessera::cli {
namespace {

struct TokenizeOptions {
  std::string model;
  std::string tokenizer;
  std::string text;
  std::string file;
  std::string vocab_test;
  bool add_special = false;
  bool parse_special = false;
  bool decode = false;
  bool skip_special = false;
};

// Parses "1 2 3" / "1,2,3" into ids.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& s) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',' || s[i] == '\n' ||
                            s[i] == '\t' || s[i] == '\r')) {
      ++i;
    }
    if (i >= s.size()) break;
    size_t j = i;
    if (s[j] == '-') ++j;
    int64_t v = 0;
    const size_t digits = j;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9' && v <= INT32_MAX) {
      v = v * 10 + (s[j] - '0');
      ++j;
    }
    if (j == digits || v > INT32_MAX ||
        (j < s.size() &&
         std::string_view(" ,\n\t\r").find(s[j]) == std::string_view::npos)) {
      return absl::InvalidArgumentError(fmt::format(
          "'{}' is not a token id list (ids separated by spaces or commas)",
          s.substr(i, std::min<size_t>(20, s.size() - i))));
    }
    ids.push_back(static_cast<int32_t>(s[i] == '-' ? -v : v));
    i = j;
  }
  return ids;
}

std::string JoinIds(const std::vector<int32_t>& ids, bool leading_space) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0 || leading_space) out.push_back(' ');
    out += std::to_string(ids[i]);
  }
  return out;
}

// llama.cpp's test-tokenizer-0 input: strings, each followed by the line
// "__ggml_vocab_test__".
std::vector<std::string> SplitVocabTest(const std::string& text) {
  static constexpr std::string_view kSep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  // A file may start with the separator line for an empty first string.
  if (text.starts_with(kSep.substr(1))) {
    out.emplace_back();
    pos = kSep.size() - 1;
  }
  while (pos < text.size()) {
    const size_t hit = text.find(kSep, pos);
    if (hit == std::string::npos) {
      std::string rest = text.substr(pos);
      if (rest.ends_with('\n')) rest.pop_back();
      if (!rest.empty()) out.push_back(std::move(rest));
      break;
    }
    out.push_back(text.substr(pos, hit - pos));
    pos = hit + kSep.size();
  }
  return out;
}

absl::Status RunTokenize(const TokenizeOptions& o) {
  const std::string& source = o.tokenizer.empty() ? o.model : o.tokenizer;
  auto loaded = LoadTokenizer(source);
  if (!loaded.ok()) {
    std::string msg(loaded.status().message());
    if (o.tokenizer.empty()) {
      msg += " (if the model file holds no vocabulary, pass --tokenizer PATH)";
    }
    return absl::Status(loaded.status().code(), msg);
  }
  const Tokenizer& tok = **loaded;
  if (!o.vocab_test.empty()) {
    auto text = ReadFileToString(o.vocab_test);
    if (!text.ok()) return text.status();
    std::string out;
    for (const std::string& s : SplitVocabTest(*text)) {
      auto ids = tok.Encode(s, /*add_special=*/false, /*parse_special=*/false);
      if (!ids.ok()) return ids.status();
      out += JoinIds(*ids, /*leading_space=*/true);
      out.push_back('\n');
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return absl::OkStatus();
  }
  std::string input = o.text;
  if (!o.file.empty()) {
    auto text = ReadFileToString(o.file);
    if (!text.ok()) return text.status();
    input = *std::move(text);
  }
  if (o.decode) {
    auto ids = ParseIds(input);
    if (!ids.ok()) return ids.status();
    auto text = tok.Decode(*ids, o.skip_special);
    if (!text.ok()) return text.status();
    std::fwrite(text->data(), 1, text->size(), stdout);
    std::fputc('\n', stdout);
    return absl::OkStatus();
  }
  auto ids = tok.Encode(input, o.add_special, o.parse_special);
  if (!ids.ok()) return ids.status();
  const std::string line = JoinIds(*ids, /*leading_space=*/false) + "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  return absl::OkStatus();
}

}  // namespace

void AddTokenizeCommand(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand(
      "tokenize", "Tokenize text or detokenize ids with a model's tokenizer");
  auto o = std::make_shared<TokenizeOptions>();
  sub->add_option("--model", o->model,
                  "Model whose tokenizer to use: a GGUF file, a Hugging Face "
                  "directory, a tokenizer.json / llama2.c tokenizer.bin, or "
                  "builtin:demo");
  sub->add_option("--tokenizer", o->tokenizer,
                  "Tokenizer file to use instead of the model's (GGUF, "
                  "tokenizer.json, llama2.c tokenizer.bin)");
  auto* text = sub->add_option("--text", o->text,
                               "Text to tokenize (with --decode: ids)");
  auto* file = sub->add_option("--file", o->file,
                               "File whose contents to tokenize (with "
                               "--decode: ids)");
  auto* vocab = sub->add_option(
      "--vocab-test", o->vocab_test,
      "llama.cpp test input (strings separated by the line "
      "__ggml_vocab_test__): print one line of ids per string, no BOS/EOS, "
      "special tokens not parsed");
  text->excludes(file)->excludes(vocab);
  file->excludes(vocab);
  sub->add_flag("--add-special", o->add_special,
                "Add BOS/EOS as the model's tokenizer config says");
  sub->add_flag("--parse-special", o->parse_special,
                "Recognise special tokens written in the text (e.g. "
                "<|eot_id|>)");
  sub->add_flag("--decode", o->decode,
                "Input is token ids (spaces or commas); print their text");
  sub->add_flag("--skip-special", o->skip_special,
                "With --decode: drop special tokens (BOS, EOS, control)");
  sub->final_callback([o, exit_code, text, file, vocab] {
    if (o->model.empty() && o->tokenizer.empty()) {
      std::fputs("tessera tokenize: --model or --tokenizer is required\n",
                 stderr);
      *exit_code = kExitUsage;
      return;
    }
    if (text->count() == 0 && file->count() == 0 && vocab->count() == 0) {
      std::fputs(
          "tessera tokenize: one of --text, --file or --vocab-test is "
          "required\n",
          stderr);
      *exit_code = kExitUsage;
      return;
    }
    const absl::Status s = RunTokenize(*o);
    *exit_code =
        s.ok() ? kExitOk : ReportError("tokenize", std::string(s.message()));
  });
}

}  // namespace tessera::cli
