#include "runtime/tokenizer/internal/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <map>
#include <utility>

#include "fmt/format.h"
#include "runtime/tokenizer/internal/utf8.h"

namespace tessera::tokenizer_internal {

absl::StatusOr<std::shared_ptr<const Regex>> Regex::Compile(
    std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // MATCH_INVALID_UTF: user text may hold invalid UTF-8; those bytes simply
  // never match instead of failing the whole match.
  pcre2_code* code = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY,
      &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(
        fmt::format("bad pre-tokenizer regex at offset {}: {} (pattern: {})",
                    offset, reinterpret_cast<const char*>(message), pattern));
  }
  // JIT is an optimisation only: without it (unsupported CPU or build)
  // pcre2_match interprets.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::shared_ptr<Regex> regex(new Regex());
  regex->pattern_ = std::string(pattern);
  regex->code_ = code;
  return std::shared_ptr<const Regex>(std::move(regex));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::Status Regex::FindAll(
    std::string_view text,
    std::vector<std::pair<size_t, size_t>>* matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  if (data == nullptr) return absl::ResourceExhaustedError("pcre2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  absl::Status status;
  while (start <= text.size()) {
    const int rc =
        pcre2_match(code, subject, text.size(), start, 0, data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      status = absl::InternalError(fmt::format(
          "regex match failed: {}", reinterpret_cast<const char*>(message)));
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      matches->emplace_back(b, e);
      start = e;
    } else {
      // Empty match: step over one character so the scan advances.
      if (b >= text.size()) break;
      start = b + NextUtf8(text.substr(b)).len;
    }
  }
  pcre2_match_data_free(data);
  return status;
}

absl::StatusOr<PreTokenizeStep> SplitStep(std::string_view pattern,
                                          SplitBehavior behavior, bool invert) {
  PreTokenizeStep step;
  step.kind = PreTokenizeStep::Kind::kSplit;
  auto regex = Regex::Compile(pattern);
  if (!regex.ok()) return regex.status();
  step.regex = *std::move(regex);
  step.behavior = behavior;
  step.invert = invert;
  return step;
}

namespace {

struct Segment {
  size_t begin, end;
  bool matched;
};

absl::Status SplitPiece(const PreTokenizeStep& step, const std::string& piece,
                        std::vector<std::string>* out) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (step.regex != nullptr) {
    if (auto s = step.regex->FindAll(piece, &matches); !s.ok()) return s;
  }
  std::vector<Segment> segs;
  size_t pos = 0;
  for (const auto& [b, e] : matches) {
    if (b > pos) segs.push_back({pos, b, false});
    segs.push_back({b, e, true});
    pos = e;
  }
  if (pos < piece.size()) segs.push_back({pos, piece.size(), false});
  if (step.invert) {
    for (auto& s : segs) s.matched = !s.matched;
  }
  // Group the segments into output words per the behavior.
  std::vector<std::pair<size_t, size_t>> words;
  bool merge_next = false;  // kMergedWithNext: the last word awaits more.
  for (size_t i = 0; i < segs.size(); ++i) {
    const Segment& s = segs[i];
    switch (step.behavior) {
      case SplitBehavior::kRemoved:
        if (!s.matched) words.emplace_back(s.begin, s.end);
        break;
      case SplitBehavior::kIsolated:
        words.emplace_back(s.begin, s.end);
        break;
      case SplitBehavior::kContiguous:
        if (s.matched && i > 0 && segs[i - 1].matched) {
          words.back().second = s.end;
        } else {
          words.emplace_back(s.begin, s.end);
        }
        break;
      case SplitBehavior::kMergedWithPrevious:
        if (s.matched && !words.empty()) {
          words.back().second = s.end;
        } else {
          words.emplace_back(s.begin, s.end);
        }
        break;
      case SplitBehavior::kMergedWithNext:
        if (merge_next) {
          words.back().second = s.end;
        } else {
          words.emplace_back(s.begin, s.end);
        }
        merge_next = s.matched;
        break;
    }
  }
  for (const auto& [b, e] : words) {
    if (e > b) out->push_back(piece.substr(b, e - b));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PreTokenize(const std::vector<PreTokenizeStep>& steps,
                         std::string_view text, bool at_text_start,
                         std::vector<std::string>* words) {
  std::vector<std::string> pieces{std::string(text)};
  std::vector<std::string> next;
  for (const PreTokenizeStep& step : steps) {
    next.clear();
    switch (step.kind) {
      case PreTokenizeStep::Kind::kSplit:
        for (const std::string& p : pieces) {
          if (auto s = SplitPiece(step, p, &next); !s.ok()) return s;
        }
        break;
      case PreTokenizeStep::Kind::kByteLevel: {
        const ByteLevelMap& map = ByteLevelMap::Get();
        for (const std::string& p : pieces) {
          std::string mapped;
          map.EncodeAll(p, &mapped);
          next.push_back(std::move(mapped));
        }
        break;
      }
      case PreTokenizeStep::Kind::kPrefixSpace:
        for (std::string& p : pieces) {
          if (p.starts_with(' ')) {
            next.push_back(std::move(p));
          } else {
            // (Not p.insert(0, " "): GCC 12 reports a false -Wrestrict.)
            std::string q(1, ' ');
            q += p;
            next.push_back(std::move(q));
          }
        }
        break;
      case PreTokenizeStep::Kind::kMetaspace: {
        const std::string& rep = step.replacement;
        for (size_t i = 0; i < pieces.size(); ++i) {
          std::string s;
          // Hugging Face prepends to every piece ("always") or only to the
          // one that starts the input ("first").
          const bool prepend =
              step.prepend == PreTokenizeStep::Prepend::kAlways ||
              (step.prepend == PreTokenizeStep::Prepend::kFirst && i == 0 &&
               at_text_start);
          for (const char c : pieces[i]) {
            if (c == ' ') {
              s += rep;
            } else {
              s.push_back(c);
            }
          }
          if (prepend && !s.starts_with(rep)) s.insert(0, rep);
          if (!step.metaspace_split) {
            next.push_back(std::move(s));
            continue;
          }
          // Split before each replacement character (MergedWithNext).
          size_t begin = 0;
          for (size_t pos = s.find(rep, 1); pos != std::string::npos;
               pos = s.find(rep, pos + rep.size())) {
            if (pos > begin) next.push_back(s.substr(begin, pos - begin));
            begin = pos;
          }
          if (begin < s.size()) next.push_back(s.substr(begin));
        }
        break;
      }
    }
    pieces.swap(next);
  }
  for (auto& p : pieces) {
    if (!p.empty()) words->push_back(std::move(p));
  }
  return absl::OkStatus();
}

namespace {

// llama.cpp's adaptation of the original contractions group "(?i:'s|...)"
// (same words, ASCII case only).
#define TESSERA_CONTRACTIONS \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

// GPT-2's regex as llama.cpp lists it (no final "\s+"; whitespace left
// unmatched becomes its own word anyway).
constexpr const char* kGpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
    "\\s+(?!\\S)";
constexpr const char* kLlama3 = TESSERA_CONTRACTIONS
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2 = TESSERA_CONTRACTIONS
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// DeepSeek LLM's cased-letter class, written as code points.
constexpr const char* kDeepseekLetters =
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}"
    "\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}"
    "\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}"
    "\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}"
    "\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}"
    "\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}"
    "\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}"
    "\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}"
    "\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}"
    "\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}"
    "\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"
    "\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}"
    "\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"
    "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}"
    "\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}"
    "\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}"
    "\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"
    "\\x{1E900}-\\x{1E943}]+";
constexpr const char* kCjk =
    "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";
// Mistral Tekken / GPT-4o: the published regexes (PCRE2 has \p{Lu} etc.).
#define TESSERA_UPPER "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define TESSERA_LOWER "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
constexpr const char* kTekken =
    "[^\\r\\n\\p{L}\\p{N}]?" TESSERA_UPPER "*" TESSERA_LOWER
    "+|[^\\r\\n\\p{L}\\p{N}]?" TESSERA_UPPER "+" TESSERA_LOWER
    "*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kGpt4o =
    "[^\\r\\n\\p{L}\\p{N}]?" TESSERA_UPPER "*" TESSERA_LOWER
    "+" TESSERA_CONTRACTIONS "?|[^\\r\\n\\p{L}\\p{N}]?" TESSERA_UPPER
    "+" TESSERA_LOWER "*" TESSERA_CONTRACTIONS
    "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|"
    "\\s+";
constexpr const char* kBloom =
    " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{964}\\x{6D4}"
    "\\x{60C})]+";

struct PreFamily {
  std::vector<std::string> regexes;
  bool ignore_merges = false;
  bool add_bos = false;
};

const std::map<std::string, PreFamily, std::less<>>& Families() {
  static const auto* const kFamilies = [] {
    auto* m = new std::map<std::string, PreFamily, std::less<>>();
    const PreFamily llama3{{kLlama3}, true, true};
    const PreFamily llama3_like{{kLlama3}, false, false};
    const PreFamily gpt2{{kGpt2}, false, false};
    const PreFamily qwen2{{kQwen2}, false, false};
    const PreFamily starcoder{{"\\p{N}", kGpt2}, false, false};
    const PreFamily bloom{{kBloom}, false, false};
    for (const char* n : {"llama3", "llama-v3", "llama-bpe", "falcon3"}) {
      (*m)[n] = llama3;
    }
    for (const char* n : {"dbrx", "smaug-bpe", "chatglm-bpe"}) {
      (*m)[n] = llama3_like;
    }
    for (const char* n :
         {"gpt2", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat",
          "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code",
          "roberta-bpe", "mpt", "olmo", "jais"}) {
      (*m)[n] = gpt2;
    }
    for (const char* n : {"qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen",
                          "megrez", "stablelm2"}) {
      (*m)[n] = qwen2;
    }
    for (const char* n : {"starcoder", "refact", "command-r", "smollm",
                          "codeshell", "exaone", "minerva-7b"}) {
      (*m)[n] = starcoder;
    }
    for (const char* n : {"poro-chat", "bloom", "gpt3-finnish"}) {
      (*m)[n] = bloom;
    }
    (*m)["viking"] = PreFamily{{kBloom, "\\p{N}"}, false, false};
    (*m)["deepseek-llm"] = PreFamily{
        {"[\\r\\n]", kDeepseekLetters,
         "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}"
         "\\x{3000}-\\x{3002}]+",
         "\\s+$", kCjk, "\\p{N}+"},
        false,
        false};
    (*m)["deepseek-v3"] = PreFamily{
        {"\\p{N}{1,3}",
         "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
         "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|"
         "[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
         "?[\\p{P}\\p{S}]+[\\r\\n]*|"
         "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
        false,
        false};
    (*m)["deepseek-coder"] =
        PreFamily{{"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"},
                  false,
                  false};
    (*m)["falcon"] = PreFamily{
        {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}, false, false};
    (*m)["tekken"] = PreFamily{{kTekken}, true, true};
    (*m)["gpt-4o"] = PreFamily{{kGpt4o}, false, false};
    (*m)["llama4"] = PreFamily{{kGpt4o}, false, false};
    (*m)["chameleon"] = PreFamily{
        {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
         "([\\t\\n]|    |  )", "\\p{N}", "[\\p{P}!-/:-@\\[-`{-~]", kGpt2},
        false,
        true};
    (*m)["default"] = PreFamily{
        {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"},
        false,
        false};
    return m;
  }();
  return *kFamilies;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> PreTokenizerRegexes(
    std::string_view pre_name, bool* ignore_merges, bool* add_bos) {
  const auto& families = Families();
  const auto it = families.find(pre_name);
  if (it == families.end()) {
    return absl::NotFoundError(
        fmt::format("unknown pre-tokenizer '{}'", pre_name));
  }
  *ignore_merges = it->second.ignore_merges;
  *add_bos = it->second.add_bos;
  return it->second.regexes;
}

}  // namespace tessera::tokenizer_internal
