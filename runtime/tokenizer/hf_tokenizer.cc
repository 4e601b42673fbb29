// Tokenizers from Hugging Face tokenizer.json (+ tokenizer_config.json and
// generation_config.json / config.json): model type BPE (byte-level, or on
// SentencePiece "▁" pieces with byte fallback), the common normalizers,
// pre-tokenizers, post-processors and decoders.
#include <algorithm>
#include <limits>

#include "absl/strings/escaping.h"
#include "base/status.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/internal/model_tokenizer.h"

namespace tessera {

namespace {

using json = nlohmann::json;
using tokenizer_internal::ModelTokenizerSpec;
using tokenizer_internal::NormalizeStep;
using tokenizer_internal::PreTokenizeStep;
using tokenizer_internal::SplitBehavior;
using tokenizer_internal::TokenType;

// Thrown inside this file only (caught in TokenizerFromHfJson) so the deep
// JSON walk stays readable; never crosses the module boundary.
struct HfError {
  absl::Status status;
};

[[noreturn]] void Fail(absl::StatusCode code, std::string message) {
  throw HfError{absl::Status(code, std::move(message))};
}

// Nested Sequence components beyond this depth are rejected (real files use
// one or two levels; this bounds the recursion on hostile input).
void CheckDepth(int depth) {
  if (depth > 16) {
    Fail(absl::StatusCode::kInvalidArgument, "components nested too deeply");
  }
}

// An integer token id (a float or string is an error, never a cast).
int64_t IdOf(const json& j) {
  if (!j.is_number_integer()) {
    Fail(absl::StatusCode::kInvalidArgument,
         fmt::format("token id {} is not an integer", j.dump()));
  }
  return j.get<int64_t>();
}

std::string TypeOf(const json& j) {
  return j.is_object() ? j.value("type", std::string()) : std::string();
}

// A literal string as a PCRE2 pattern.
std::string QuoteRegex(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-/").find(c) !=
        std::string_view::npos) {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  return out;
}

// {"Regex": "..."} or {"String": "..."} -> a PCRE2 pattern.
std::string PatternOf(const json& p) {
  if (p.contains("Regex")) return p.at("Regex").get<std::string>();
  if (p.contains("String"))
    return QuoteRegex(p.at("String").get<std::string>());
  Fail(absl::StatusCode::kInvalidArgument, "pattern without Regex or String");
}

PreTokenizeStep MakeSplit(const std::string& pattern, SplitBehavior behavior,
                          bool invert) {
  auto step = tokenizer_internal::SplitStep(pattern, behavior, invert);
  if (!step.ok()) throw HfError{step.status()};
  return *std::move(step);
}

SplitBehavior BehaviorOf(const json& j, SplitBehavior dflt) {
  if (!j.contains("behavior")) return dflt;
  const std::string b = j.at("behavior").get<std::string>();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  Fail(absl::StatusCode::kInvalidArgument,
       fmt::format("unknown split behavior '{}'", b));
}

NormalizeStep Step(NormalizeStep::Kind kind) {
  NormalizeStep step;
  step.kind = kind;
  return step;
}

// An optional boolean field; null counts as absent.
bool BoolOr(const json& j, const char* key, bool dflt) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  return j.at(key).get<bool>();
}

// An integer field, or `dflt` when absent. A float or string is an error:
// json's own conversion would cast 1e25 to int, which is undefined behaviour.
int64_t IntOr(const json& j, const char* key, int64_t dflt) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  if (!j.at(key).is_number_integer()) {
    Fail(absl::StatusCode::kInvalidArgument,
         fmt::format("{} {} is not an integer", key, j.at(key).dump()));
  }
  return j.at(key).get<int64_t>();
}

void AddNormalizer(const json& j, ModelTokenizerSpec* spec, int depth = 0) {
  if (j.is_null()) return;
  CheckDepth(depth);
  const std::string type = TypeOf(j);
  using Kind = NormalizeStep::Kind;
  if (type == "Sequence") {
    for (const json& n : j.at("normalizers")) AddNormalizer(n, spec, depth + 1);
  } else if (type == "Prepend") {
    NormalizeStep step = Step(Kind::kPrepend);
    step.a = j.at("prepend").get<std::string>();
    spec->normalizer.push_back(std::move(step));
  } else if (type == "Replace") {
    const json& p = j.at("pattern");
    NormalizeStep step = Step(Kind::kReplace);
    step.b = j.at("content").get<std::string>();
    if (p.contains("String")) {
      step.a = p.at("String").get<std::string>();
    } else {
      step.kind = Kind::kReplaceRegex;
      auto regex =
          tokenizer_internal::Regex::Compile(p.at("Regex").get<std::string>());
      if (!regex.ok()) throw HfError{regex.status()};
      step.regex = *std::move(regex);
    }
    spec->normalizer.push_back(std::move(step));
  } else if (type == "NFC") {
    spec->normalizer.push_back(Step(Kind::kNfc));
  } else if (type == "NFD") {
    spec->normalizer.push_back(Step(Kind::kNfd));
  } else if (type == "NFKC") {
    spec->normalizer.push_back(Step(Kind::kNfkc));
  } else if (type == "NFKD") {
    spec->normalizer.push_back(Step(Kind::kNfkd));
  } else if (type == "Lowercase") {
    spec->normalizer.push_back(Step(Kind::kLowercase));
  } else if (type == "StripAccents") {
    spec->normalizer.push_back(Step(Kind::kStripAccents));
  } else if (type == "BertNormalizer") {
    NormalizeStep step = Step(Kind::kBert);
    step.clean_text = BoolOr(j, "clean_text", true);
    step.handle_chinese_chars = BoolOr(j, "handle_chinese_chars", true);
    step.lowercase = BoolOr(j, "lowercase", true);
    // strip_accents: null means "as lowercase".
    step.strip_accents = BoolOr(j, "strip_accents", step.lowercase);
    spec->normalizer.push_back(std::move(step));
  } else if (type == "Strip") {
    NormalizeStep step = Step(Kind::kStrip);
    step.left = BoolOr(j, "strip_left", true);
    step.right = BoolOr(j, "strip_right", true);
    spec->normalizer.push_back(std::move(step));
  } else if (type == "Precompiled") {
    const json& map = j.at("precompiled_charsmap");
    if (map.is_null()) return;  // No map: the identity.
    const std::string b64 = map.get<std::string>();
    std::string blob;
    if (!absl::Base64Unescape(absl::string_view(b64.data(), b64.size()),
                              &blob)) {
      Fail(absl::StatusCode::kInvalidArgument,
           "precompiled_charsmap is not valid base64");
    }
    if (blob.empty()) return;
    auto charsmap = tokenizer_internal::PrecompiledCharsmap::Parse(blob);
    if (!charsmap.ok()) throw HfError{charsmap.status()};
    NormalizeStep step = Step(Kind::kPrecompiled);
    step.charsmap = *std::move(charsmap);
    spec->normalizer.push_back(std::move(step));
  } else {
    Fail(absl::StatusCode::kUnimplemented,
         fmt::format("normalizer '{}' is not supported", type));
  }
}

void AddPreTokenizer(const json& j, ModelTokenizerSpec* spec, int depth = 0) {
  if (j.is_null()) return;
  CheckDepth(depth);
  const std::string type = TypeOf(j);
  auto& steps = spec->pre_tokenizer;
  if (type == "Sequence") {
    for (const json& p : j.at("pretokenizers")) {
      AddPreTokenizer(p, spec, depth + 1);
    }
  } else if (type == "Split") {
    steps.push_back(MakeSplit(PatternOf(j.at("pattern")),
                              BehaviorOf(j, SplitBehavior::kIsolated),
                              j.value("invert", false)));
  } else if (type == "ByteLevel") {
    if (j.value("add_prefix_space", false)) {
      PreTokenizeStep prefix;
      prefix.kind = PreTokenizeStep::Kind::kPrefixSpace;
      steps.push_back(std::move(prefix));
    }
    if (j.value("use_regex", true)) {
      steps.push_back(MakeSplit(std::string(tokenizer_internal::kGpt2Pattern),
                                SplitBehavior::kIsolated, false));
    }
    PreTokenizeStep step;
    step.kind = PreTokenizeStep::Kind::kByteLevel;
    steps.push_back(std::move(step));
    spec->byte_level = true;
  } else if (type == "Digits") {
    steps.push_back(
        MakeSplit(j.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+",
                  SplitBehavior::kIsolated, false));
  } else if (type == "Metaspace") {
    PreTokenizeStep step;
    step.kind = PreTokenizeStep::Kind::kMetaspace;
    step.replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    std::string scheme = j.value("prepend_scheme", std::string());
    if (scheme.empty()) {
      scheme = j.value("add_prefix_space", true) ? "always" : "never";
    }
    step.prepend = scheme == "first"   ? PreTokenizeStep::Prepend::kFirst
                   : scheme == "never" ? PreTokenizeStep::Prepend::kNever
                                       : PreTokenizeStep::Prepend::kAlways;
    step.metaspace_split = j.value("split", true);
    steps.push_back(std::move(step));
  } else if (type == "Whitespace") {
    steps.push_back(
        MakeSplit("\\w+|[^\\w\\s]+", SplitBehavior::kRemoved, true));
  } else if (type == "WhitespaceSplit") {
    steps.push_back(MakeSplit("\\s+", SplitBehavior::kRemoved, false));
  } else if (type == "BertPreTokenizer") {
    auto bert = tokenizer_internal::BertPreTokenizerSteps();
    if (!bert.ok()) throw HfError{bert.status()};
    for (auto& step : *bert) steps.push_back(std::move(step));
  } else if (type == "Punctuation") {
    steps.push_back(MakeSplit("[\\p{P}!-/:-@\\[-`{-~]",
                              BehaviorOf(j, SplitBehavior::kIsolated), false));
  } else {
    Fail(absl::StatusCode::kUnimplemented,
         fmt::format("pre_tokenizer '{}' is not supported", type));
  }
}

// Reads decoding conventions from the decoder tree.
void ReadDecoder(const json& j, ModelTokenizerSpec* spec, int depth = 0) {
  if (j.is_null()) return;
  CheckDepth(depth);
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    for (const json& d : j.at("decoders")) ReadDecoder(d, spec, depth + 1);
  } else if (type == "ByteLevel") {
    spec->byte_level = true;
  } else if (type == "Replace") {
    const json& p = j.at("pattern");
    if (p.contains("String") && p.at("String") == "\xE2\x96\x81") {
      spec->metaspace = true;
    }
  } else if (type == "Metaspace") {
    spec->metaspace = true;
    const std::string scheme = j.value("prepend_scheme", std::string());
    spec->strip_leading_space =
        scheme.empty() ? j.value("add_prefix_space", true) : scheme != "never";
  } else if (type == "WordPiece") {
    spec->wordpiece_decode = true;
    spec->decode_prefix = j.value("prefix", std::string("##"));
    spec->decode_cleanup = BoolOr(j, "cleanup", true);
  } else if (type == "Strip") {
    const bool strips_start = j.contains("start") &&
                              j.at("start").is_number_integer() &&
                              j.at("start").get<int64_t>() > 0;
    if (strips_start && j.value("content", std::string()) == " ") {
      spec->strip_leading_space = true;
    }
  }
  // ByteFallback, Fuse and others need nothing: pieces are decoded per token.
}

// The special-token id named in a post-processor's special_tokens map.
int32_t TemplateTokenId(const json& processor, const std::string& name,
                        int32_t vocab) {
  const json& specials = processor.at("special_tokens");
  if (!specials.contains(name)) return -1;
  const json& ids = specials.at(name).at("ids");
  if (!ids.is_array() || ids.size() != 1) return -1;
  const int64_t id = IdOf(ids.at(0));
  return id >= 0 && id < vocab ? static_cast<int32_t>(id) : -1;
}

// What the post-processor adds around a single sequence.
void ReadPostProcessor(const json& j, int32_t vocab, int32_t* bos, int32_t* eos,
                       int depth = 0) {
  if (j.is_null()) return;
  CheckDepth(depth);
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    for (const json& p : j.at("processors"))
      ReadPostProcessor(p, vocab, bos, eos, depth + 1);
  } else if (type == "TemplateProcessing") {
    const json& single = j.at("single");
    bool seen_sequence = false;
    for (const json& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const int32_t id = TemplateTokenId(
            j, item.at("SpecialToken").at("id").get<std::string>(), vocab);
        (seen_sequence ? *eos : *bos) = id;
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    // cls / sep are [token, id] pairs.
    const int64_t cls = IdOf(j.at("cls").at(1)), sep = IdOf(j.at("sep").at(1));
    *bos = cls >= 0 && cls < vocab ? static_cast<int32_t>(cls) : -1;
    *eos = sep >= 0 && sep < vocab ? static_cast<int32_t>(sep) : -1;
  }
}

// A token named in tokenizer_config.json: "text" or {"content": "text"}.
std::string ConfigTokenText(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return {};
  const json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) {
    return v.at("content").get<std::string>();
  }
  return {};
}

std::unique_ptr<Tokenizer> Build(std::string_view tokenizer_json,
                                 std::string_view config_json,
                                 std::string_view gen_json,
                                 const std::string& name) {
  const json root = json::parse(tokenizer_json);
  const json config =
      config_json.empty() ? json::object() : json::parse(config_json);
  const json gen = gen_json.empty() ? json::object() : json::parse(gen_json);
  const json& model = root.at("model");
  const std::string model_type = model.value("type", std::string("BPE"));
  if (model_type != "BPE" && model_type != "WordPiece" &&
      model_type != "Unigram") {
    Fail(absl::StatusCode::kUnimplemented,
         fmt::format("tokenizer.json model type '{}' is not supported (BPE, "
                     "WordPiece, Unigram)",
                     model_type));
  }
  if (model_type == "BPE") {
    for (const char* key :
         {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && model.at(key).is_string() &&
          !model.at(key).get<std::string>().empty()) {
        Fail(absl::StatusCode::kUnimplemented,
             fmt::format("BPE {} is not supported", key));
      }
    }
  }
  ModelTokenizerSpec spec;
  spec.algorithm =
      model_type == "WordPiece" ? tokenizer_internal::Algorithm::kWordPiece
      : model_type == "Unigram" ? tokenizer_internal::Algorithm::kUnigram
                                : tokenizer_internal::Algorithm::kBpe;
  const json& vocab_json = model.at("vocab");
  const bool unigram = model_type == "Unigram";
  if (unigram ? !vocab_json.is_array() : !vocab_json.is_object()) {
    Fail(absl::StatusCode::kInvalidArgument,
         fmt::format("model.vocab is not an {}", unigram ? "array" : "object"));
  }
  // Vocabulary: model.vocab plus added_tokens (ids may leave holes).
  // Ids may leave holes, but not absurd ones: a hostile file must not make
  // us allocate millions of empty entries.
  const size_t n_listed =
      vocab_json.size() +
      (root.contains("added_tokens") && root.at("added_tokens").is_array()
           ? root.at("added_tokens").size()
           : 0);
  const int64_t kMaxVocab = static_cast<int64_t>(2 * n_listed + 1024);
  auto place = [&](int64_t id, std::string text, TokenType type) {
    if (id < 0 || id >= kMaxVocab) {
      Fail(absl::StatusCode::kInvalidArgument,
           fmt::format("token id {} out of range", id));
    }
    if (static_cast<size_t>(id) >= spec.tokens.size()) {
      spec.tokens.resize(id + 1);
      spec.types.resize(id + 1, TokenType::kUnused);
      spec.scores.resize(id + 1, 0.0f);
    }
    spec.tokens[id] = std::move(text);
    spec.types[id] = type;
  };
  if (unigram) {
    // [[piece, score], ...]: the id is the position.
    double min_score = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < vocab_json.size(); ++i) {
      const json& e = vocab_json.at(i);
      if (!e.is_array() || e.size() != 2 || !e.at(1).is_number()) {
        Fail(absl::StatusCode::kInvalidArgument,
             fmt::format("Unigram vocab entry {} is not [piece, score]", i));
      }
      place(static_cast<int64_t>(i), e.at(0).get<std::string>(),
            TokenType::kNormal);
      const double score = e.at(1).get<double>();
      spec.scores[i] = static_cast<float>(score);
      min_score = std::min(min_score, score);
    }
    // Hugging Face: an uncovered character costs the lowest score minus 10.
    spec.unk_score = (vocab_json.empty() ? 0.0 : min_score) - 10.0;
    spec.unigram_model_pieces = static_cast<int32_t>(vocab_json.size());
    if (model.contains("unk_id") && !model.at("unk_id").is_null()) {
      const int64_t unk = IdOf(model.at("unk_id"));
      if (unk < 0 || unk >= static_cast<int64_t>(vocab_json.size())) {
        Fail(absl::StatusCode::kInvalidArgument,
             fmt::format("Unigram unk_id {} is outside the vocabulary", unk));
      }
      spec.unk_id = static_cast<int32_t>(unk);
    }
  } else {
    for (const auto& [text, id] : vocab_json.items()) {
      place(IdOf(id), text, TokenType::kNormal);
    }
  }
  if (model_type == "WordPiece") {
    spec.continuing_prefix =
        model.value("continuing_subword_prefix", std::string("##"));
    const int64_t max_chars = IntOr(model, "max_input_chars_per_word", 100);
    spec.max_input_chars_per_word = static_cast<int32_t>(
        std::clamp<int64_t>(max_chars, 0, std::numeric_limits<int32_t>::max()));
  }
  spec.byte_fallback = model.value("byte_fallback", false);
  spec.ignore_merges = model.value("ignore_merges", false);
  if (root.contains("added_tokens")) {
    for (const json& t : root.at("added_tokens")) {
      const int64_t id = IdOf(t.at("id"));
      place(id, t.at("content").get<std::string>(),
            t.value("special", false) ? TokenType::kControl
                                      : TokenType::kUserDefined);
      const bool lstrip = t.value("lstrip", false);
      const bool rstrip = t.value("rstrip", false);
      if (lstrip || rstrip) {
        spec.strip_flags.push_back(
            {static_cast<int32_t>(id), {lstrip, rstrip}});
      }
    }
  }
  const auto vocab = static_cast<int32_t>(spec.tokens.size());
  if (spec.byte_fallback) {
    for (int32_t i = 0; i < vocab; ++i) {
      const std::string& t = spec.tokens[i];
      if (spec.types[i] == TokenType::kNormal && t.size() == 6 &&
          t.starts_with("<0x") && t[5] == '>') {
        spec.types[i] = TokenType::kByte;
      }
    }
  }
  if (model_type == "BPE" && model.contains("merges")) {
    for (const json& m : model.at("merges")) {
      if (m.is_array() && m.size() == 2) {
        spec.merges.emplace_back(m.at(0).get<std::string>(),
                                 m.at(1).get<std::string>());
        continue;
      }
      const std::string s = m.get<std::string>();
      const size_t pos = s.find(' ', 1);
      if (pos == std::string::npos) {
        Fail(absl::StatusCode::kInvalidArgument,
             fmt::format("merge '{}' has no space", s));
      }
      spec.merges.emplace_back(s.substr(0, pos), s.substr(pos + 1));
    }
  }
  auto lookup = [&](const std::string& text) -> int32_t {
    if (text.empty()) return -1;
    for (int32_t i = 0; i < vocab; ++i) {
      if (spec.tokens[i] == text) return i;
    }
    return -1;
  };
  if (model.contains("unk_token") && model.at("unk_token").is_string()) {
    spec.unk_id = lookup(model.at("unk_token").get<std::string>());
  }
  if (root.contains("normalizer")) AddNormalizer(root.at("normalizer"), &spec);
  if (root.contains("pre_tokenizer")) {
    AddPreTokenizer(root.at("pre_tokenizer"), &spec);
  }
  if (root.contains("decoder")) ReadDecoder(root.at("decoder"), &spec);
  spec.kind = model_type == "WordPiece" ? "wordpiece"
              : unigram                 ? "unigram"
              : spec.byte_level         ? "bpe"
                                        : "bpe-sp";

  int32_t tmpl_bos = -1, tmpl_eos = -1;
  if (root.contains("post_processor")) {
    ReadPostProcessor(root.at("post_processor"), vocab, &tmpl_bos, &tmpl_eos);
  }
  auto config_id = [&](const json& j, const char* key) -> std::vector<int32_t> {
    std::vector<int32_t> ids;
    if (!j.is_object() || !j.contains(key)) return ids;
    const json& v = j.at(key);
    for (const json& e : v.is_array() ? v : json::array({v})) {
      if (e.is_number_integer() && e.get<int64_t>() >= 0 &&
          e.get<int64_t>() < vocab) {
        ids.push_back(e.get<int32_t>());
      }
    }
    return ids;
  };
  spec.bos_id = tmpl_bos;
  if (const std::string t = ConfigTokenText(config, "bos_token"); !t.empty()) {
    if (const int32_t id = lookup(t); id >= 0) spec.bos_id = id;
  } else if (spec.bos_id < 0) {
    if (const auto ids = config_id(gen, "bos_token_id"); !ids.empty()) {
      spec.bos_id = ids[0];
    }
  }
  spec.add_bos = tmpl_bos >= 0;
  spec.add_eos = tmpl_eos >= 0;
  if (config.contains("add_bos_token") &&
      config.at("add_bos_token").is_boolean()) {
    spec.add_bos = config.at("add_bos_token").get<bool>();
  }
  if (config.contains("add_eos_token") &&
      config.at("add_eos_token").is_boolean()) {
    spec.add_eos = config.at("add_eos_token").get<bool>();
  }
  int32_t eos_token = -1;
  if (const std::string t = ConfigTokenText(config, "eos_token"); !t.empty()) {
    eos_token = lookup(t);
  }
  spec.append_eos_id = tmpl_eos >= 0 ? tmpl_eos : eos_token;
  // Stop tokens: generation_config's eos_token_id (often a list, e.g. Llama
  // 3's <|end_of_text|>, <|eom_id|>, <|eot_id|>), plus the config's EOS.
  spec.eos_ids = config_id(gen, "eos_token_id");
  for (const int32_t id : {eos_token, spec.append_eos_id}) {
    if (id >= 0 && std::find(spec.eos_ids.begin(), spec.eos_ids.end(), id) ==
                       spec.eos_ids.end()) {
      spec.eos_ids.push_back(id);
    }
  }
  if (config.contains("chat_template")) {
    const json& t = config.at("chat_template");
    if (t.is_string()) {
      spec.chat_template = t.get<std::string>();
    } else if (t.is_array()) {
      // Named templates: take "default", else the first.
      for (const json& e : t) {
        if (!e.is_object() || !e.contains("template")) continue;
        if (spec.chat_template.empty() || e.value("name", "") == "default") {
          spec.chat_template = e.at("template").get<std::string>();
        }
      }
    }
  }
  auto tok = tokenizer_internal::NewModelTokenizer(std::move(spec), name);
  if (!tok.ok()) throw HfError{tok.status()};
  return *std::move(tok);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromHfJson(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json,
    std::string_view generation_config_json, const std::string& name) {
  try {
    return Build(tokenizer_json, tokenizer_config_json, generation_config_json,
                 name);
  } catch (const HfError& e) {
    if (std::string(e.status.message()).starts_with(name)) return e.status;
    return Annotate(e.status, name);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("{}: bad tokenizer JSON: {}", name, e.what()));
  }
}

}  // namespace tessera
