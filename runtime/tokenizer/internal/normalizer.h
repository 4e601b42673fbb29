// Text normalizers applied before pre-tokenization: Hugging Face's
// normalizers (NFC/NFD/NFKC/NFKD through ICU, Lowercase, StripAccents,
// BertNormalizer, Strip, Prepend, Replace, Precompiled) and the fixed
// normalization llama.cpp applies for GGUF `bert` (WPM) and `t5` (UGM)
// vocabularies.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/tokenizer/internal/pretokenizer.h"

namespace tessera::tokenizer_internal {

// SentencePiece's precompiled_charsmap: a darts-clone double-array trie over
// UTF-8 byte strings whose leaves index NUL-terminated replacements. Immutable
// after Parse; shareable between threads.
class PrecompiledCharsmap {
 public:
  // Parses the blob (uint32 LE trie size in bytes, the trie's uint32 units,
  // then the replacement strings). InvalidArgument for a malformed blob.
  static absl::StatusOr<std::shared_ptr<const PrecompiledCharsmap>> Parse(
      std::string_view blob);

  // The replacement for the shortest (`longest` false) or longest prefix of
  // `key` found in the trie, with that prefix's length in `*matched`; nullopt
  // semantics: returns false when no prefix matches (or the trie is corrupt).
  bool Lookup(std::string_view key, bool longest, size_t* matched,
              std::string_view* replacement) const;

 private:
  std::vector<uint32_t> units_;
  std::string replacements_;
};

// One normalizer stage. The steps of a tokenizer run in order on each piece of
// raw text between special/added tokens.
struct NormalizeStep {
  enum class Kind {
    kPrepend,       // Prefix `a` to non-empty text.
    kReplace,       // Replace every `a` with `b` (literal).
    kReplaceRegex,  // Replace every match of `regex` with `b`.
    kNfc,
    kNfd,
    kNfkc,
    kNfkd,
    kLowercase,      // Full Unicode lowercase, code point by code point.
    kStripAccents,   // Remove nonspacing marks (Mn); pair with kNfd.
    kBert,           // Hugging Face BertNormalizer (flags below).
    kStrip,          // Trim White_Space at the left and/or right.
    kPrecompiled,    // `charsmap`, per grapheme as Hugging Face applies it.
    kWpmFold,        // llama.cpp WPM: NFD's first code point, lowercase, drop
                     // controls (GGUF `bert`).
    kSpmCharsmap,    // `charsmap` by longest prefix as SentencePiece and
                     // llama.cpp's UGM apply it; invalid UTF-8 becomes U+FFFD.
    kSpmWhitespace,  // SentencePiece's space handling (flags below).
  };
  Kind kind = Kind::kPrepend;
  std::string a;
  std::string b;
  std::shared_ptr<const Regex> regex;
  std::shared_ptr<const PrecompiledCharsmap> charsmap;
  // kBert.
  bool clean_text = true;
  bool handle_chinese_chars = true;
  bool strip_accents = true;
  bool lowercase = true;
  // kStrip.
  bool left = true;
  bool right = true;
  // kSpmWhitespace: add_dummy_prefix, remove_extra_whitespaces,
  // escape_whitespaces (' ' -> "▁"), treat_whitespace_as_suffix.
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool whitespace_as_suffix = false;
};

// Applies `steps` to `text` in place. Bytes that are not valid UTF-8 pass
// through the Unicode steps unchanged. Internal if ICU fails.
absl::Status Normalize(const std::vector<NormalizeStep>& steps,
                       std::string* text);

// Replaces every occurrence of `from` (non-empty) in `*s` with `to`.
void ReplaceAll(std::string* s, std::string_view from, std::string_view to);

// Whether `cp` is in BERT's "Chinese character" blocks (CJK ideographs, as
// Hugging Face and llama.cpp list them).
bool IsBertChineseChar(uint32_t cp);

// The pre-tokenizer regex of Hugging Face's BertPreTokenizer, as two Split
// steps: whitespace removed, then each punctuation character isolated.
absl::StatusOr<std::vector<PreTokenizeStep>> BertPreTokenizerSteps();

// llama.cpp's WPM word split (after kWpmFold): whitespace removed; each
// punctuation character, ASCII symbol and CJK ideograph isolated.
absl::StatusOr<std::vector<PreTokenizeStep>> WpmPreTokenizerSteps();

}  // namespace tessera::tokenizer_internal
