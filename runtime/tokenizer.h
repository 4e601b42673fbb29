// Tokenizers: text <-> token ids, for every model family tessera loads.
//
// Implementations: byte-level BPE (GPT-2, Llama 3, Qwen2...; from
// tokenizer.json or GGUF `gpt2`), SentencePiece BPE with byte fallback (Llama
// 2, Mistral; GGUF `llama`), WordPiece (BERT; tokenizer.json or GGUF `bert`),
// Unigram (T5, XLM-R; tokenizer.json or GGUF `t5`), llama2.c tokenizer.bin,
// and the built-in demo model's byte tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera {

class GgufFile;

// Where a decode stream stands; lets Decode and IncrementalDetokenizer apply
// the same context rules (e.g. SentencePiece's leading-space strip).
struct DecodeState {
  int32_t prev_id = -1;       // Last id seen (emitted or skipped); -1 first.
  bool emitted_text = false;  // Whether any bytes were produced yet.
};

// Immutable once loaded: every method is const and safe to call from many
// threads at once (Encode keeps its scratch state on the stack).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes `text`. `add_special`: prepend BOS (and append EOS) as the model's
  // config says. `parse_special`: recognise special/added tokens written in the
  // text.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(
      std::string_view text, bool add_special, bool parse_special) const = 0;
  // The raw bytes a token stands for (after byte-level/SentencePiece decoding,
  // so possibly part of a UTF-8 character). Special tokens give their text.
  virtual std::string TokenBytes(int32_t id) const = 0;
  // Decodes ids to text; `skip_special` drops BOS/EOS/control tokens. Invalid
  // UTF-8 is replaced with U+FFFD. InvalidArgument for an out-of-range id.
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                             bool skip_special) const;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;                       // -1 if none.
  virtual const std::vector<int32_t>& eos_ids() const = 0;  // May be empty.
  virtual bool IsSpecial(int32_t id) const = 0;

  // The token's string as the vocabulary stores it ("Ġthe", "▁the", "<0x0A>",
  // "<|eot_id|>"); empty for an out-of-range id.
  virtual std::string_view TokenText(int32_t id) const = 0;
  // The id whose vocabulary string is exactly `text`, or -1.
  virtual int32_t TokenId(std::string_view text) const = 0;
  // "byte", "bpe" (byte-level), "bpe-sp" (BPE on SentencePiece pieces from
  // tokenizer.json), "spm", "wordpiece", "unigram" or "llama2c".
  virtual std::string_view kind() const = 0;
  // The chat template from the model's metadata (Jinja source), or empty.
  virtual const std::string& chat_template() const = 0;

  // Appends the decoded bytes of `id` to `out`, given the stream so far in
  // `state` (which it updates): drops special tokens when `skip_special`, and
  // the SentencePiece dummy-prefix space where decoding strips it. Ids must be
  // in range (the caller checks).
  virtual void AppendDecoded(int32_t id, bool skip_special, DecodeState* state,
                             std::string* out) const;
};

// The built-in demo model's tokenizer: ids 0..255 are bytes, 256 is BOS "<s>",
// 257 is EOS "</s>" (vocab 258); add_special prepends BOS.
std::unique_ptr<Tokenizer> NewByteTokenizer();

// Loads the tokenizer at `path`: a tokenizer.json (tokenizer_config.json and
// generation_config.json beside it are read too), a Hugging Face model
// directory, a .gguf file, a llama2.c tokenizer.bin, or "builtin:demo".
// NotFound if nothing is there; InvalidArgument/DataLoss for a bad file.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& path);

// From the text of a Hugging Face tokenizer.json, plus (optionally empty) the
// text of tokenizer_config.json and generation_config.json/config.json for
// BOS/EOS and the chat template. `name` is used in error messages.
absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromHfJson(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json,
    std::string_view generation_config_json, const std::string& name);

// From the `tokenizer.*` metadata of a GGUF file (model `gpt2`, `llama`,
// `bert` or `t5`).
absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromGguf(
    const GgufFile& gguf);

// From the bytes of a llama2.c tokenizer.bin (int32 max_token_length, then per
// token: float32 score, int32 length, bytes). The vocabulary runs to the end
// of the file. Encode follows llama2.c's run.c exactly.
absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromLlama2c(
    absl::Span<const uint8_t> bytes, const std::string& name);

// Turns a stream of ids into text while streaming: Push returns only complete
// UTF-8 characters, holding back a character's leading bytes until its last
// byte arrives (a byte that can never start or continue a valid character
// comes out as U+FFFD). Not thread-safe; one per sequence.
class IncrementalDetokenizer {
 public:
  // `context`: ids already decoded before this stream (e.g. the prompt); they
  // produce no text but decide context rules such as stripping the leading
  // space of the first SentencePiece token. `tokenizer` must outlive this.
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special,
                         absl::Span<const int32_t> context = {});

  // Adds one id; returns the text that became complete (possibly empty).
  // InvalidArgument for an out-of-range id.
  absl::StatusOr<std::string> Push(int32_t id);
  // Ends the stream: returns held-back bytes of an unfinished character as
  // U+FFFD (empty if none).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  DecodeState state_;
  std::string pending_;  // Bytes not yet returned.
};

// Replaces invalid UTF-8 in `bytes` with U+FFFD (one per maximal invalid
// subsequence, as WHATWG/Python's "replace" does).
std::string SanitizeUtf8(std::string_view bytes);

}  // namespace tessera
