#include "runtime/tokenizer/internal/normalizer.h"

#include <unicode/ubrk.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utext.h>
#include <unicode/utf16.h>
#include <unicode/utf8.h>

#include <cstring>

#include "fmt/format.h"
#include "runtime/tokenizer/internal/utf8.h"

namespace tessera::tokenizer_internal {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

absl::Status IcuError(std::string_view what, UErrorCode err) {
  return absl::InternalError(
      fmt::format("ICU {} failed: {}", what, u_errorName(err)));
}

bool IsAscii(std::string_view s) {
  for (const char c : s) {
    if (static_cast<uint8_t>(c) >= 0x80) return false;
  }
  return true;
}

// Calls `run(valid_utf8)` for each maximal valid UTF-8 run of `text` and
// `bad(bytes)` for each invalid sequence between them, in order.
template <typename RunFn, typename BadFn>
absl::Status ForEachRun(std::string_view text, RunFn run, BadFn bad) {
  size_t pos = 0;
  size_t run_start = 0;
  while (pos < text.size()) {
    const Utf8Step step = NextUtf8(text.substr(pos));
    if (step.kind == Utf8Step::kValid) {
      pos += step.len;
      continue;
    }
    if (pos > run_start) {
      if (auto s = run(text.substr(run_start, pos - run_start)); !s.ok()) {
        return s;
      }
    }
    bad(text.substr(pos, step.len));
    pos += step.len;
    run_start = pos;
  }
  if (pos > run_start) return run(text.substr(run_start, pos - run_start));
  return absl::OkStatus();
}

// Decodes the code point at `*pos` of valid UTF-8 `s` and advances `*pos`.
UChar32 NextCodePoint(std::string_view s, size_t* pos) {
  int32_t i = static_cast<int32_t>(*pos);
  UChar32 c;
  U8_NEXT(reinterpret_cast<const uint8_t*>(s.data()), i,
          static_cast<int32_t>(s.size()), c);
  *pos = static_cast<size_t>(i);
  return c;
}

void AppendCodePoint(UChar32 c, std::string* out) {
  AppendUtf8(static_cast<uint32_t>(c), out);
}

absl::Status ToUtf16(std::string_view utf8, std::vector<UChar>* out) {
  // ICU lengths are int32_t; NFKC can expand a character up to 18 times.
  if (utf8.size() > (1u << 26)) {
    return absl::InvalidArgumentError(
        fmt::format("{} bytes of text is too long to normalize", utf8.size()));
  }
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = 0;
  out->resize(utf8.size() + 1);
  u_strFromUTF8(out->data(), static_cast<int32_t>(out->size()), &len,
                utf8.data(), static_cast<int32_t>(utf8.size()), &err);
  if (U_FAILURE(err)) return IcuError("u_strFromUTF8", err);
  out->resize(len);
  return absl::OkStatus();
}

absl::Status AppendUtf16(const std::vector<UChar>& utf16, std::string* out) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = 0;
  const size_t old = out->size();
  out->resize(old + utf16.size() * 3 + 1);
  u_strToUTF8(out->data() + old, static_cast<int32_t>(out->size() - old), &len,
              utf16.data(), static_cast<int32_t>(utf16.size()), &err);
  if (U_FAILURE(err)) return IcuError("u_strToUTF8", err);
  out->resize(old + len);
  return absl::OkStatus();
}

absl::Status IcuNormalizeRun(const UNormalizer2* norm, std::string_view run,
                             std::string* out) {
  if (IsAscii(run)) {  // ASCII is invariant under every normalization form.
    out->append(run);
    return absl::OkStatus();
  }
  std::vector<UChar> src;
  if (auto s = ToUtf16(run, &src); !s.ok()) return s;
  std::vector<UChar> dst(src.size() * 2 + 16);
  UErrorCode err = U_ZERO_ERROR;
  int32_t len =
      unorm2_normalize(norm, src.data(), static_cast<int32_t>(src.size()),
                       dst.data(), static_cast<int32_t>(dst.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    err = U_ZERO_ERROR;
    dst.resize(len);
    len = unorm2_normalize(norm, src.data(), static_cast<int32_t>(src.size()),
                           dst.data(), static_cast<int32_t>(dst.size()), &err);
  }
  if (U_FAILURE(err)) return IcuError("unorm2_normalize", err);
  dst.resize(len);
  return AppendUtf16(dst, out);
}

absl::StatusOr<const UNormalizer2*> Instance(NormalizeStep::Kind kind) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (kind) {
    case NormalizeStep::Kind::kNfc:
      n = unorm2_getNFCInstance(&err);
      break;
    case NormalizeStep::Kind::kNfd:
      n = unorm2_getNFDInstance(&err);
      break;
    case NormalizeStep::Kind::kNfkc:
      n = unorm2_getNFKCInstance(&err);
      break;
    default:
      n = unorm2_getNFKDInstance(&err);
      break;
  }
  if (U_FAILURE(err)) return IcuError("normalizer instance", err);
  return n;
}

absl::Status ApplyIcu(NormalizeStep::Kind kind, std::string* text) {
  auto norm = Instance(kind);
  if (!norm.ok()) return norm.status();
  std::string out;
  out.reserve(text->size());
  auto s = ForEachRun(
      *text,
      [&](std::string_view run) { return IcuNormalizeRun(*norm, run, &out); },
      [&](std::string_view bad) { out.append(bad); });
  if (!s.ok()) return s;
  *text = std::move(out);
  return absl::OkStatus();
}

// Appends the full lowercase mapping of `c` (Rust's char::to_lowercase, which
// Hugging Face's Lowercase applies per character, without context).
void AppendLower(UChar32 c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    return;
  }
  UChar src[2];
  int32_t n = 0;
  U16_APPEND_UNSAFE(src, n, c);
  UChar dst[8];
  UErrorCode err = U_ZERO_ERROR;
  const int32_t len = u_strToLower(dst, 8, src, n, "", &err);
  if (U_FAILURE(err) || len > 8) {
    AppendCodePoint(u_tolower(c), out);
    return;
  }
  for (int32_t i = 0; i < len;) {
    UChar32 d;
    U16_NEXT(dst, i, len, d);
    AppendCodePoint(d, out);
  }
}

template <typename Fn>
void MapCodePoints(std::string* text, Fn fn) {
  std::string out;
  out.reserve(text->size());
  (void)ForEachRun(
      *text,
      [&](std::string_view run) {
        size_t pos = 0;
        while (pos < run.size()) fn(NextCodePoint(run, &pos), &out);
        return absl::OkStatus();
      },
      [&](std::string_view bad) { out.append(bad); });
  *text = std::move(out);
}

void Lowercase(std::string* text) {
  if (IsAscii(*text)) {
    for (char& c : *text) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    }
    return;
  }
  MapCodePoints(text, AppendLower);
}

void StripNonspacingMarks(std::string* text) {
  if (IsAscii(*text)) return;
  MapCodePoints(text, [](UChar32 c, std::string* out) {
    if (u_charType(c) != U_NON_SPACING_MARK) AppendCodePoint(c, out);
  });
}

// Python BERT's _is_control (general category C*, except \t \n \r).
bool IsBertControl(UChar32 c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (u_charType(c)) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
    case U_UNASSIGNED:
      return true;
    default:
      return false;
  }
}

absl::Status ApplyBert(const NormalizeStep& step, std::string* text) {
  if (step.clean_text || step.handle_chinese_chars) {
    MapCodePoints(text, [&](UChar32 c, std::string* out) {
      if (step.clean_text) {
        if (c == 0 || c == 0xFFFD || IsBertControl(c)) return;
        if (u_isUWhiteSpace(c)) c = ' ';
      }
      if (step.handle_chinese_chars &&
          IsBertChineseChar(static_cast<uint32_t>(c))) {
        out->push_back(' ');
        AppendCodePoint(c, out);
        out->push_back(' ');
        return;
      }
      AppendCodePoint(c, out);
    });
  }
  if (step.strip_accents) {
    if (auto s = ApplyIcu(NormalizeStep::Kind::kNfd, text); !s.ok()) return s;
    StripNonspacingMarks(text);
  }
  if (step.lowercase) Lowercase(text);
  return absl::OkStatus();
}

void Strip(bool left, bool right, std::string* text) {
  std::string_view s(*text);
  auto ws_len_at = [&](size_t pos, size_t* len) {
    const Utf8Step st = NextUtf8(s.substr(pos));
    *len = st.len;
    if (st.kind != Utf8Step::kValid) return false;
    size_t p = pos;
    return u_isUWhiteSpace(NextCodePoint(s, &p)) != 0;
  };
  size_t begin = 0;
  size_t end = s.size();
  if (left) {
    size_t len = 0;
    while (begin < end && ws_len_at(begin, &len)) begin += len;
  }
  if (right) {
    // Scan forward remembering where the trailing whitespace run starts.
    size_t pos = begin, trail = begin;
    bool in_ws = false;
    while (pos < end) {
      size_t len = 0;
      const bool ws = ws_len_at(pos, &len);
      if (ws && !in_ws) trail = pos;
      in_ws = ws;
      pos += len;
    }
    if (in_ws) end = trail;
  }
  *text = std::string(s.substr(begin, end - begin));
}

// Thread-local grapheme break iterator (opening one per call costs more than
// the segmentation of a typical prompt).
class GraphemeIterator {
 public:
  GraphemeIterator() {
    UErrorCode err = U_ZERO_ERROR;
    brk_ = ubrk_open(UBRK_CHARACTER, "", nullptr, 0, &err);
    if (U_FAILURE(err)) brk_ = nullptr;
  }
  ~GraphemeIterator() {
    if (brk_ != nullptr) ubrk_close(brk_);
  }
  GraphemeIterator(const GraphemeIterator&) = delete;
  GraphemeIterator& operator=(const GraphemeIterator&) = delete;

  // Appends the grapheme boundaries of valid UTF-8 `run` (byte offsets,
  // starting with 0 and ending with run.size()).
  absl::Status Boundaries(std::string_view run, std::vector<size_t>* out) {
    if (brk_ == nullptr) return absl::InternalError("ICU ubrk_open failed");
    if (run.size() > (1u << 26)) {  // Boundaries are int32_t.
      return absl::InvalidArgumentError(
          fmt::format("{} bytes of text is too long to segment", run.size()));
    }
    UErrorCode err = U_ZERO_ERROR;
    UText* ut = utext_openUTF8(nullptr, run.data(),
                               static_cast<int64_t>(run.size()), &err);
    if (U_FAILURE(err)) return IcuError("utext_openUTF8", err);
    ubrk_setUText(brk_, ut, &err);
    if (U_FAILURE(err)) {
      utext_close(ut);
      return IcuError("ubrk_setUText", err);
    }
    out->clear();
    for (int32_t b = ubrk_first(brk_); b != UBRK_DONE; b = ubrk_next(brk_)) {
      out->push_back(static_cast<size_t>(b));
    }
    // Detach the text before closing it.
    UErrorCode err2 = U_ZERO_ERROR;
    ubrk_setText(brk_, nullptr, 0, &err2);
    utext_close(ut);
    return absl::OkStatus();
  }

 private:
  UBreakIterator* brk_ = nullptr;
};

absl::Status ApplyPrecompiledHf(const PrecompiledCharsmap& map,
                                std::string* text) {
  thread_local GraphemeIterator graphemes;
  std::vector<size_t> bounds;
  std::string out;
  out.reserve(text->size());
  auto transform = [&](std::string_view chunk) {
    size_t matched = 0;
    std::string_view rep;
    if (!map.Lookup(chunk, /*longest=*/false, &matched, &rep)) return false;
    out.append(rep);
    return true;
  };
  auto s = ForEachRun(
      *text,
      [&](std::string_view run) -> absl::Status {
        if (auto st = graphemes.Boundaries(run, &bounds); !st.ok()) return st;
        for (size_t k = 0; k + 1 < bounds.size(); ++k) {
          const std::string_view g =
              run.substr(bounds[k], bounds[k + 1] - bounds[k]);
          // Hugging Face (spm_precompiled): a short grapheme is looked up
          // whole; otherwise, or without a match, each character alone.
          if (g.size() < 6 && transform(g)) continue;
          size_t pos = 0;
          while (pos < g.size()) {
            const size_t len = NextUtf8(g.substr(pos)).len;
            if (!transform(g.substr(pos, len))) out.append(g.substr(pos, len));
            pos += len;
          }
        }
        return absl::OkStatus();
      },
      [&](std::string_view bad) { out.append(bad); });
  if (!s.ok()) return s;
  *text = std::move(out);
  return absl::OkStatus();
}

void ApplySpmCharsmap(const PrecompiledCharsmap* map, std::string* text) {
  std::string out;
  out.reserve(text->size());
  const std::string_view s(*text);
  size_t pos = 0;
  while (pos < s.size()) {
    size_t matched = 0;
    std::string_view rep;
    if (map != nullptr &&
        map->Lookup(s.substr(pos), /*longest=*/true, &matched, &rep)) {
      out.append(rep);
      pos += matched;
      continue;
    }
    const Utf8Step step = NextUtf8(s.substr(pos));
    if (step.kind == Utf8Step::kValid) {
      out.append(s.substr(pos, step.len));
      pos += step.len;
    } else {
      out.append(kReplacementChar);  // One byte at a time, as llama.cpp.
      pos += 1;
    }
  }
  *text = std::move(out);
}

void ApplySpmWhitespace(const NormalizeStep& step, std::string* text) {
  const std::string_view space = step.escape_whitespaces ? "\xE2\x96\x81" : " ";
  const bool prepend = !step.whitespace_as_suffix && step.add_dummy_prefix;
  const bool append = step.whitespace_as_suffix && step.add_dummy_prefix;
  const bool merge = step.remove_extra_whitespaces;
  std::string out;
  out.reserve(text->size() * 3 + 3);
  bool prepended = false;
  bool in_word = false;
  // llama.cpp's UGM normalize: with merging, every word (the first one too)
  // gets one space before it.
  for (const char c : *text) {
    if (c != ' ') {
      if (!in_word) {
        in_word = true;
        if ((prepend && !prepended) || merge) {
          out.append(space);
          prepended = true;
        }
      }
      out.push_back(c);
    } else {
      in_word = false;
      if (!merge) out.append(space);
    }
  }
  if (append) out.append(space);
  *text = std::move(out);
}

void ApplyWpmFold(std::string* text) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* nfd = unorm2_getNFDInstance(&err);
  std::string out;
  out.reserve(text->size());
  (void)ForEachRun(
      *text,
      [&](std::string_view run) {
        size_t pos = 0;
        while (pos < run.size()) {
          UChar32 c = NextCodePoint(run, &pos);
          if (u_isUWhiteSpace(c)) {
            AppendCodePoint(c, &out);
            continue;
          }
          // llama.cpp keeps only the first code point of the canonical
          // decomposition (so "é" becomes "e").
          if (nfd != nullptr && c >= 0x80) {
            UChar buf[8];
            UErrorCode e = U_ZERO_ERROR;
            const int32_t n = unorm2_getDecomposition(nfd, c, buf, 8, &e);
            if (U_SUCCESS(e) && n > 0) U16_GET(buf, 0, 0, n, c);
          }
          const int8_t type = u_charType(c);
          if (c == 0 || c == 0xFFFD || type == U_CONTROL_CHAR ||
              type == U_FORMAT_CHAR || type == U_PRIVATE_USE_CHAR ||
              type == U_SURROGATE) {
            continue;
          }
          AppendCodePoint(u_tolower(c), &out);
        }
        return absl::OkStatus();
      },
      [](std::string_view) {});  // Invalid bytes are U+FFFD: dropped.
  *text = std::move(out);
}

absl::Status ReplaceRegex(const Regex& regex, std::string_view to,
                          std::string* s) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (auto st = regex.FindAll(*s, &matches); !st.ok()) return st;
  if (matches.empty()) return absl::OkStatus();
  std::string out;
  size_t pos = 0;
  for (const auto& [b, e] : matches) {
    out.append(*s, pos, b - pos);
    out.append(to);
    pos = e;
  }
  out.append(*s, pos);
  *s = std::move(out);
  return absl::OkStatus();
}

// The White_Space characters (Rust's char::is_whitespace, llama.cpp's \s).
constexpr std::string_view kWhitespaceClass =
    "[\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}]+";
constexpr std::string_view kCjkRanges =
    "\\x{4E00}-\\x{9FFF}\\x{3400}-\\x{4DBF}\\x{20000}-\\x{2A6DF}"
    "\\x{2A700}-\\x{2B73F}\\x{2B740}-\\x{2B81F}\\x{2B920}-\\x{2CEAF}"
    "\\x{F900}-\\x{FAFF}\\x{2F800}-\\x{2FA1F}";

}  // namespace

absl::StatusOr<std::shared_ptr<const PrecompiledCharsmap>>
PrecompiledCharsmap::Parse(std::string_view blob) {
  if (blob.size() < 4) {
    return absl::InvalidArgumentError("precompiled_charsmap is too short");
  }
  uint32_t trie_bytes = 0;
  for (int i = 3; i >= 0; --i) {
    trie_bytes = (trie_bytes << 8) | static_cast<uint8_t>(blob[i]);
  }
  if (trie_bytes % 4 != 0 || trie_bytes > blob.size() - 4) {
    return absl::InvalidArgumentError(
        fmt::format("precompiled_charsmap: trie of {} bytes in a blob of {}",
                    trie_bytes, blob.size()));
  }
  auto map = std::make_shared<PrecompiledCharsmap>();
  map->units_.resize(trie_bytes / 4);
  for (size_t u = 0; u < map->units_.size(); ++u) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) {
      v = (v << 8) | static_cast<uint8_t>(blob[4 + u * 4 + i]);
    }
    map->units_[u] = v;
  }
  map->replacements_ = std::string(blob.substr(4 + trie_bytes));
  return std::shared_ptr<const PrecompiledCharsmap>(std::move(map));
}

bool PrecompiledCharsmap::Lookup(std::string_view key, bool longest,
                                 size_t* matched,
                                 std::string_view* replacement) const {
  // darts-clone unit layout: offset in bits 10-30 (shifted by 8 when bit 9
  // is set), has_leaf in bit 8, label in bits 0-7 (bit 31 set for values).
  auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1U << 9)) >> 6); };
  if (units_.empty()) return false;
  size_t node = offset(units_[0]);
  bool found = false;
  size_t value = 0;
  for (size_t i = 0; i < key.size(); ++i) {
    const auto c = static_cast<uint8_t>(key[i]);
    if (c == 0) break;
    node ^= c;
    if (node >= units_.size()) break;
    const uint32_t unit = units_[node];
    if ((unit & ((1U << 31) | 0xFF)) != c) break;
    node ^= offset(unit);
    if (node >= units_.size()) break;
    if ((unit >> 8) & 1) {
      found = true;
      *matched = i + 1;
      value = units_[node] & ((1U << 31) - 1);
      if (!longest) break;
    }
  }
  if (!found || value >= replacements_.size()) return false;
  const char* start = replacements_.data() + value;
  const size_t max = replacements_.size() - value;
  *replacement = std::string_view(start, strnlen(start, max));
  return true;
}

bool IsBertChineseChar(uint32_t cp) {
  // The blocks Google's BERT lists (0x2B920 is Hugging Face's reading of
  // 0x2B820; llama.cpp follows it).
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

absl::Status Normalize(const std::vector<NormalizeStep>& steps,
                       std::string* text) {
  for (const NormalizeStep& step : steps) {
    switch (step.kind) {
      case NormalizeStep::Kind::kPrepend:
        if (!text->empty()) text->insert(0, step.a);
        break;
      case NormalizeStep::Kind::kReplace:
        ReplaceAll(text, step.a, step.b);
        break;
      case NormalizeStep::Kind::kReplaceRegex:
        if (auto s = ReplaceRegex(*step.regex, step.b, text); !s.ok()) {
          return s;
        }
        break;
      case NormalizeStep::Kind::kNfc:
      case NormalizeStep::Kind::kNfd:
      case NormalizeStep::Kind::kNfkc:
      case NormalizeStep::Kind::kNfkd:
        if (auto s = ApplyIcu(step.kind, text); !s.ok()) return s;
        break;
      case NormalizeStep::Kind::kLowercase:
        Lowercase(text);
        break;
      case NormalizeStep::Kind::kStripAccents:
        StripNonspacingMarks(text);
        break;
      case NormalizeStep::Kind::kBert:
        if (auto s = ApplyBert(step, text); !s.ok()) return s;
        break;
      case NormalizeStep::Kind::kStrip:
        Strip(step.left, step.right, text);
        break;
      case NormalizeStep::Kind::kPrecompiled:
        if (step.charsmap != nullptr) {
          if (auto s = ApplyPrecompiledHf(*step.charsmap, text); !s.ok()) {
            return s;
          }
        }
        break;
      case NormalizeStep::Kind::kWpmFold:
        ApplyWpmFold(text);
        break;
      case NormalizeStep::Kind::kSpmCharsmap:
        ApplySpmCharsmap(step.charsmap.get(), text);
        break;
      case NormalizeStep::Kind::kSpmWhitespace:
        ApplySpmWhitespace(step, text);
        break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PreTokenizeStep>> BertPreTokenizerSteps() {
  std::vector<PreTokenizeStep> steps;
  auto ws = SplitStep(kWhitespaceClass, SplitBehavior::kRemoved);
  if (!ws.ok()) return ws.status();
  steps.push_back(*std::move(ws));
  auto punct = SplitStep("[\\p{P}!-/:-@\\[-`{-~]", SplitBehavior::kIsolated);
  if (!punct.ok()) return punct.status();
  steps.push_back(*std::move(punct));
  return steps;
}

absl::StatusOr<std::vector<PreTokenizeStep>> WpmPreTokenizerSteps() {
  std::vector<PreTokenizeStep> steps;
  auto ws = SplitStep(kWhitespaceClass, SplitBehavior::kRemoved);
  if (!ws.ok()) return ws.status();
  steps.push_back(*std::move(ws));
  auto isolated =
      SplitStep(fmt::format("[\\p{{P}}!-/:-@\\[-`{{-~{}]", kCjkRanges),
                SplitBehavior::kIsolated);
  if (!isolated.ok()) return isolated.status();
  steps.push_back(*std::move(isolated));
  return steps;
}

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s->size());
  size_t pos = 0;
  for (size_t hit = s->find(from); hit != std::string::npos;
       hit = s->find(from, pos)) {
    out.append(*s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(*s, pos);
  *s = std::move(out);
}

}  // namespace tessera::tokenizer_internal
