// Tokenizers: text <-> token ids, for every model family tessera loads.
//
// Implementations: byte-level BPE (GPT-2, Llama 3, Qwen2...; from
// tokenizer.json or GGUF `gpt2`), SentencePiece BPE with byte fallback (Llama
// 2, Mistral; GGUF `llama`), llama2.c tokenizer.bin, and the built-in demo
// model's byte tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera {

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
                                             bool skip_special) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;                       // -1 if none.
  virtual const std::vector<int32_t>& eos_ids() const = 0;  // May be empty.
  virtual bool IsSpecial(int32_t id) const = 0;
};

}  // namespace tessera
