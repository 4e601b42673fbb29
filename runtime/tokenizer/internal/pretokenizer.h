// Pre-tokenization: splitting text into words before BPE, with PCRE2 running
// the published regexes (Unicode classes, lookahead), as Hugging Face
// tokenizers' Split/ByteLevel/Digits/Metaspace and llama.cpp's
// unicode_regex_split do.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::tokenizer_internal {

// A compiled PCRE2 pattern (UTF + UCP, JIT when available). Immutable and
// shareable between threads; matching allocates its own match data.
class Regex {
 public:
  // InvalidArgument with PCRE2's message and offset for a bad pattern.
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(
      std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte ranges of the non-empty, non-overlapping
  // matches in `text`, left to right. Text that is not valid UTF-8 is allowed
  // (invalid bytes never match). Internal on a matcher failure (e.g. limits).
  absl::Status FindAll(std::string_view text,
                       std::vector<std::pair<size_t, size_t>>* matches) const;
  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*.
};

// What Split does with the matched parts (Hugging Face's
// SplitDelimiterBehavior).
enum class SplitBehavior {
  kRemoved,
  kIsolated,
  kMergedWithPrevious,
  kMergedWithNext,
  kContiguous,
};

// One pre-tokenizer stage, applied to every piece produced so far.
struct PreTokenizeStep {
  enum class Kind {
    kSplit,        // Split each piece on `regex` per `behavior` / `invert`.
    kByteLevel,    // Map bytes to GPT-2's printable characters.
    kMetaspace,    // ' ' -> replacement, optional prefix, optional split.
    kPrefixSpace,  // Prepend ' ' to each piece lacking one (ByteLevel's
                   // add_prefix_space, applied before its regex).
  };
  Kind kind = Kind::kSplit;
  std::shared_ptr<const Regex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // kMetaspace.
  std::string replacement = "\xE2\x96\x81";  // U+2581 "▁".
  enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;
  bool metaspace_split = true;
};

// Runs `steps` over `text`; `at_text_start` is true when `text` begins the
// whole input (not after an added token), for prefix rules. Appends the
// resulting words.
absl::Status PreTokenize(const std::vector<PreTokenizeStep>& steps,
                         std::string_view text, bool at_text_start,
                         std::vector<std::string>* words);

// A Split step on `pattern` (Isolated); InvalidArgument for a bad pattern.
absl::StatusOr<PreTokenizeStep> SplitStep(
    std::string_view pattern, SplitBehavior behavior = SplitBehavior::kIsolated,
    bool invert = false);

// GPT-2's pre-tokenizer regex (Hugging Face ByteLevel with use_regex).
inline constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
    "\\s+(?!\\S)|\\s+";

// The regexes llama.cpp applies (in sequence, isolated) for a GGUF
// `tokenizer.ggml.pre` name; NotFound for an unknown name. `ignore_merges` and
// `add_bos` receive that family's defaults.
absl::StatusOr<std::vector<std::string>> PreTokenizerRegexes(
    std::string_view pre_name, bool* ignore_merges, bool* add_bos);

}  // namespace tessera::tokenizer_internal
