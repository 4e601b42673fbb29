// The vocabulary-driven tokenizer behind every loader (tokenizer.json, GGUF,
// llama2.c): one class, five segmentation algorithms, shared special-token
// handling, normalization and decoding. Loaders fill a ModelTokenizerSpec;
// NewModelTokenizer validates it and builds the lookup tables.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/internal/normalizer.h"
#include "runtime/tokenizer/internal/pretokenizer.h"

namespace tessera::tokenizer_internal {

// Token types, numbered as GGUF's tokenizer.ggml.token_type.
enum class TokenType : uint8_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // Special (BOS, EOS, chat markers): parse_special only.
  kUserDefined = 4,  // Added non-special tokens: always matched in text.
  kUnused = 5,
  kByte = 6,  // "<0xXX>" byte-fallback pieces.
};

enum class Algorithm {
  kBpe,        // Merges by rank (GPT-2 style; also HF BPE on "▁" pieces).
  kSpm,        // SentencePiece BPE: merges by piece score (llama.cpp's SPM).
  kLlama2c,    // llama2.c run.c's encode().
  kWordPiece,  // Greedy longest match per word (BERT; HF WordPiece, GGUF bert).
  kUnigram,    // Viterbi best path by piece score (HF Unigram, GGUF t5).
};

struct ModelTokenizerSpec {
  std::string kind;  // Reported by Tokenizer::kind().
  Algorithm algorithm = Algorithm::kBpe;
  std::vector<std::string> tokens;
  std::vector<float> scores;     // kSpm / kLlama2c; empty means all 0.
  std::vector<TokenType> types;  // Empty means all normal.
  std::vector<std::pair<std::string, std::string>> merges;  // kBpe, by rank.
  // Per added token: lstrip (eat whitespace before) / rstrip (after).
  std::vector<std::pair<int32_t, std::pair<bool, bool>>> strip_flags;

  // Encoding.
  std::vector<NormalizeStep> normalizer;
  std::vector<PreTokenizeStep> pre_tokenizer;
  bool ignore_merges = false;  // A word that is a token is used whole.
  bool byte_fallback = false;  // Unknown pieces become "<0xXX>" tokens.
  int32_t unk_id = -1;
  // kSpm: prepend ' ' to text that starts the input or follows a special token.
  bool add_space_prefix = false;
  // kSpm: write ' ' as "▁" before merging.
  bool escape_whitespace = true;
  // kWordPiece: each word is matched as word_prefix + word ("▁" for GGUF
  // bert, whose converter stores word-initial pieces as "▁x"); pieces after
  // the first are looked up as continuing_prefix + text ("##" in HF files).
  // A word longer than max_input_chars_per_word characters (0: no limit), or
  // one that cannot be matched, becomes the unknown token.
  std::string word_prefix;
  std::string continuing_prefix = "##";
  int32_t max_input_chars_per_word = 0;
  // kUnigram: score of a character no piece covers (min score - 10), and
  // which pieces may be matched: ids below unigram_model_pieces when >= 0
  // (Hugging Face: the whole model vocabulary), else normal, user-defined and
  // unused tokens (llama.cpp).
  double unk_score = -10.0;
  int32_t unigram_model_pieces = -1;
  // kUnigram: keep path scores as float (llama.cpp, SentencePiece) rather
  // than double (Hugging Face); near-ties between paths depend on it.
  bool unigram_float_sums = false;

  // Decoding.
  bool byte_level = false;           // Token text is GPT-2 byte-level encoded.
  bool metaspace = false;            // "▁" in token text means ' '.
  bool strip_leading_space = false;  // Drop the first decoded ' ' (SPM).
  // Hugging Face's WordPiece decoder: pieces after the first lose
  // `decode_prefix` or else gain a ' ' before them.
  bool wordpiece_decode = false;
  std::string decode_prefix = "##";
  // Per decoded piece, Hugging Face's cleanup (" ." -> ".", " 's" -> "'s"...).
  bool decode_cleanup = false;

  // Special ids and what add_special adds.
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;  // Stop tokens.
  bool add_bos = false;
  bool add_eos = false;
  int32_t append_eos_id = -1;  // What add_eos appends.

  std::string chat_template;
};

// Validates `spec` (ids in range, table sizes) and builds the tokenizer.
// `name` (a path) prefixes error messages.
absl::StatusOr<std::unique_ptr<Tokenizer>> NewModelTokenizer(
    ModelTokenizerSpec spec, const std::string& name);

}  // namespace tessera::tokenizer_internal
