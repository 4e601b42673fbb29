// Tokenizers from GGUF metadata (llama.cpp's tokenizer.ggml.* keys).
#include <algorithm>

#include "base/status.h"
#include "fmt/format.h"
#include "runtime/formats/gguf.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/internal/model_tokenizer.h"
#include "spdlog/spdlog.h"

namespace tessera {

using tokenizer_internal::TokenType;

namespace {

absl::Status AddBpeModel(const GgufFile& gguf,
                         tokenizer_internal::ModelTokenizerSpec* spec) {
  ASSIGN_OR_RETURN(std::vector<std::string> merges,
                   gguf.GetStringArray("tokenizer.ggml.merges"));
  spec->merges.reserve(merges.size());
  for (const std::string& m : merges) {
    // Split at the first space after the first byte, as llama.cpp does.
    const size_t pos = m.find(' ', 1);
    if (pos == std::string::npos) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tokenizer.ggml.merges entry '{}' has no space", gguf.path(), m));
    }
    spec->merges.emplace_back(m.substr(0, pos), m.substr(pos + 1));
  }
  ASSIGN_OR_RETURN(const std::string pre,
                   gguf.GetStringOr("tokenizer.ggml.pre", "default"));
  bool ignore_merges = false, add_bos = false;
  auto regexes =
      tokenizer_internal::PreTokenizerRegexes(pre, &ignore_merges, &add_bos);
  if (!regexes.ok()) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: tokenizer.ggml.pre '{}' is not a pre-tokenizer tessera knows",
        gguf.path(), pre));
  }
  for (const std::string& re : *regexes) {
    auto step = tokenizer_internal::SplitStep(re);
    if (!step.ok()) return Annotate(step.status(), gguf.path());
    spec->pre_tokenizer.push_back(*std::move(step));
  }
  tokenizer_internal::PreTokenizeStep byte_level;
  byte_level.kind = tokenizer_internal::PreTokenizeStep::Kind::kByteLevel;
  spec->pre_tokenizer.push_back(std::move(byte_level));
  spec->kind = "bpe";
  spec->algorithm = tokenizer_internal::Algorithm::kBpe;
  spec->byte_level = true;
  spec->ignore_merges = ignore_merges;
  spec->add_bos = add_bos;
  // llama.cpp's defaults for gpt2 vocabularies without explicit ids.
  spec->bos_id = 11;
  spec->append_eos_id = 11;
  return absl::OkStatus();
}

// GGUF `bert` (llama.cpp's WPM): the converter stored word-initial pieces as
// "▁x" and continuation pieces ("##x") as "x"; text is folded (NFD's first
// code point, lowercase, controls dropped) and split on whitespace,
// punctuation and CJK ideographs before greedy longest-match.
absl::Status AddWpmModel(const GgufFile& gguf,
                         tokenizer_internal::ModelTokenizerSpec* spec) {
  spec->kind = "wordpiece";
  spec->algorithm = tokenizer_internal::Algorithm::kWordPiece;
  tokenizer_internal::NormalizeStep fold;
  fold.kind = tokenizer_internal::NormalizeStep::Kind::kWpmFold;
  spec->normalizer.push_back(std::move(fold));
  auto steps = tokenizer_internal::WpmPreTokenizerSteps();
  if (!steps.ok()) return Annotate(steps.status(), gguf.path());
  spec->pre_tokenizer = *std::move(steps);
  spec->word_prefix = "\xE2\x96\x81";
  spec->continuing_prefix.clear();
  spec->max_input_chars_per_word = 0;
  spec->metaspace = true;
  spec->strip_leading_space = true;
  spec->decode_cleanup = true;  // llama.cpp's clean_spaces.
  spec->bos_id = 101;           // [CLS]
  spec->append_eos_id = -1;     // Set from the separator below.
  return absl::OkStatus();
}

// GGUF `t5` (llama.cpp's UGM): the precompiled charsmap (longest prefix),
// SentencePiece's whitespace rules, then Viterbi over the whole text.
absl::Status AddUgmModel(const GgufFile& gguf,
                         tokenizer_internal::ModelTokenizerSpec* spec) {
  using tokenizer_internal::NormalizeStep;
  spec->kind = "unigram";
  spec->algorithm = tokenizer_internal::Algorithm::kUnigram;
  NormalizeStep charsmap;
  charsmap.kind = NormalizeStep::Kind::kSpmCharsmap;
  if (const GgufValue* v = gguf.Find("tokenizer.ggml.precompiled_charsmap")) {
    if (!v->is_array() || (v->array_type() != GgufType::kUint8 &&
                           v->array_type() != GgufType::kInt8)) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tokenizer.ggml.precompiled_charsmap is not a byte array",
          gguf.path()));
    }
    std::string blob;
    blob.reserve(v->ints().size());
    for (const int64_t b : v->ints()) blob.push_back(static_cast<char>(b));
    if (!blob.empty()) {
      auto map = tokenizer_internal::PrecompiledCharsmap::Parse(blob);
      if (!map.ok()) return Annotate(map.status(), gguf.path());
      charsmap.charsmap = *std::move(map);
    }
  }
  spec->normalizer.push_back(std::move(charsmap));
  NormalizeStep ws;
  ws.kind = NormalizeStep::Kind::kSpmWhitespace;
  // llama.cpp's defaults when the keys are absent: no dummy prefix, spaces
  // kept as they are.
  ASSIGN_OR_RETURN(ws.add_dummy_prefix,
                   gguf.GetBoolOr("tokenizer.ggml.add_space_prefix", false));
  ASSIGN_OR_RETURN(
      ws.remove_extra_whitespaces,
      gguf.GetBoolOr("tokenizer.ggml.remove_extra_whitespaces", false));
  spec->strip_leading_space = ws.add_dummy_prefix;
  spec->normalizer.push_back(std::move(ws));
  spec->metaspace = true;
  // An uncovered character scores the lowest normal piece's score minus 10.
  float min_score = 0.0f;
  bool any = false;
  for (size_t i = 0; i < spec->tokens.size(); ++i) {
    const bool normal =
        spec->types.empty() || spec->types[i] == TokenType::kNormal;
    if (!normal || i >= spec->scores.size()) continue;
    min_score = any ? std::min(min_score, spec->scores[i]) : spec->scores[i];
    any = true;
  }
  spec->unk_score = static_cast<double>(min_score - 10.0f);
  spec->unigram_float_sums = true;
  spec->bos_id = -1;
  spec->append_eos_id = 1;
  spec->add_bos = false;
  spec->add_eos = true;
  return absl::OkStatus();
}

// Reads an optional token id key; an id outside the vocabulary keeps the
// default (llama.cpp warns and does the same).
absl::StatusOr<int32_t> OptionalId(const GgufFile& gguf, std::string_view key,
                                   int32_t dflt, size_t n) {
  if (dflt >= static_cast<int64_t>(n)) dflt = -1;  // Default not in this vocab.
  if (!gguf.Has(key)) return dflt;
  ASSIGN_OR_RETURN(const int64_t v, gguf.GetInt(key));
  if (v < -1 || v >= static_cast<int64_t>(n)) {
    spdlog::warn("{}: {} = {} is outside the vocabulary; using {}", gguf.path(),
                 key, v, dflt);
    return dflt;
  }
  return static_cast<int32_t>(v);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf) {
  tokenizer_internal::ModelTokenizerSpec spec;
  ASSIGN_OR_RETURN(const std::string model,
                   gguf.GetString("tokenizer.ggml.model"));
  ASSIGN_OR_RETURN(spec.tokens, gguf.GetStringArray("tokenizer.ggml.tokens"));
  const size_t n = spec.tokens.size();
  // Per-token arrays must cover the vocabulary exactly: the tokenizers index
  // them by token id (a short token_type array read past its end in the t5
  // path, found by gguf_fuzzer).
  auto check_length = [&](std::string_view key, size_t got) -> absl::Status {
    if (got == n) return absl::OkStatus();
    return absl::InvalidArgumentError(fmt::format(
        "{}: {} has {} entries for {} tokens", gguf.path(), key, got, n));
  };
  if (gguf.Has("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(spec.scores,
                     gguf.GetFloat32Array("tokenizer.ggml.scores"));
    RETURN_IF_ERROR(check_length("tokenizer.ggml.scores", spec.scores.size()));
  }
  if (gguf.Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(const std::vector<int32_t> types,
                     gguf.GetInt32Array("tokenizer.ggml.token_type"));
    RETURN_IF_ERROR(check_length("tokenizer.ggml.token_type", types.size()));
    spec.types.reserve(types.size());
    for (const int32_t t : types) {
      spec.types.push_back(t >= 0 && t <= 6 ? static_cast<TokenType>(t)
                                            : TokenType::kUndefined);
    }
  }
  int32_t unk_default = -1;
  if (model == "gpt2") {
    RETURN_IF_ERROR(AddBpeModel(gguf, &spec));
  } else if (model == "llama") {
    spec.kind = "spm";
    spec.algorithm = tokenizer_internal::Algorithm::kSpm;
    ASSIGN_OR_RETURN(spec.add_space_prefix,
                     gguf.GetBoolOr("tokenizer.ggml.add_space_prefix", true));
    spec.strip_leading_space = spec.add_space_prefix;
    spec.metaspace = true;
    spec.byte_fallback = true;
    spec.add_bos = true;
    spec.bos_id = 1;
    spec.append_eos_id = 2;
    unk_default = 0;
  } else if (model == "bert") {
    RETURN_IF_ERROR(AddWpmModel(gguf, &spec));
    unk_default = 100;
  } else if (model == "t5") {
    RETURN_IF_ERROR(AddUgmModel(gguf, &spec));
    unk_default = 2;
  } else {
    return absl::UnimplementedError(
        fmt::format("{}: tokenizer.ggml.model '{}' is not supported (gpt2, "
                    "llama, bert, t5)",
                    gguf.path(), model));
  }
  ASSIGN_OR_RETURN(spec.bos_id, OptionalId(gguf, "tokenizer.ggml.bos_token_id",
                                           spec.bos_id, n));
  ASSIGN_OR_RETURN(
      spec.append_eos_id,
      OptionalId(gguf, "tokenizer.ggml.eos_token_id", spec.append_eos_id, n));
  ASSIGN_OR_RETURN(
      spec.unk_id,
      OptionalId(gguf, "tokenizer.ggml.unknown_token_id", unk_default, n));
  ASSIGN_OR_RETURN(spec.add_bos, gguf.GetBoolOr("tokenizer.ggml.add_bos_token",
                                                spec.add_bos));
  ASSIGN_OR_RETURN(spec.add_eos, gguf.GetBoolOr("tokenizer.ggml.add_eos_token",
                                                spec.add_eos));
  if (model == "bert") {
    // llama.cpp's WPM wraps the text in [CLS] ... [SEP] whenever special
    // tokens are added, whatever add_bos/add_eos say.
    ASSIGN_OR_RETURN(
        spec.append_eos_id,
        OptionalId(gguf, "tokenizer.ggml.seperator_token_id", 102, n));
    spec.add_bos = true;
    spec.add_eos = true;
  }
  // Stop tokens: EOS, EOT, EOM, and (as llama.cpp does) end-of-turn markers
  // found by their text.
  auto add_eos = [&](int32_t id) {
    if (id >= 0 && std::find(spec.eos_ids.begin(), spec.eos_ids.end(), id) ==
                       spec.eos_ids.end()) {
      spec.eos_ids.push_back(id);
    }
  };
  add_eos(spec.append_eos_id);
  for (const char* key :
       {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    ASSIGN_OR_RETURN(const int32_t id, OptionalId(gguf, key, -1, n));
    add_eos(id);
  }
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = spec.tokens[i];
    if (t == "<|eot_id|>" || t == "<|im_end|>" || t == "<|end|>" ||
        t == "<end_of_turn>" || t == "<|endoftext|>" || t == "<EOT>" ||
        t == "<|eom_id|>" ||
        t == "<\xEF\xBD\x9C"
             "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>") {
      add_eos(static_cast<int32_t>(i));
    }
  }
  ASSIGN_OR_RETURN(spec.chat_template,
                   gguf.GetStringOr("tokenizer.chat_template", ""));
  return tokenizer_internal::NewModelTokenizer(std::move(spec), gguf.path());
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromGguf(
    const GgufFile& gguf) {
  return FromGguf(gguf);
}

}  // namespace tessera
