// A deterministic byte-level BPE vocabulary for `make-model` outputs: the 256
// bytes in GPT-2's byte-to-unicode form (id = byte value), merges learned from
// a small built-in English text, filler merges up to the requested size, then
// the special tokens. Real tokenizers (tokenizer.json, GGUF gpt2) load it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

struct SyntheticVocab {
  std::vector<std::string> tokens;   // By id, byte-to-unicode form.
  std::vector<std::string> merges;   // "A B", by rank.
  std::vector<int32_t> token_types;  // GGUF: 1 normal, 3 control.
  std::vector<int32_t> special_ids;  // Ids of the special tokens.
  int32_t bos_id = 0;
  int32_t eos_id = 0;
};

// Special-token naming: `<s>`/`</s>` (kSentencePiece-style names) or Llama 3's
// 256 `<|...|>` tokens.
enum class SpecialTokenStyle { kLlama, kLlama3 };

// Builds a vocabulary of exactly `vocab_size` tokens (InvalidArgument if it is
// smaller than 256 + the special tokens). With vocab_size = 258 and kLlama it
// is the 256 bytes + `<s>` (256) + `</s>` (257), no merges.
absl::StatusOr<SyntheticVocab> BuildSyntheticVocab(int64_t vocab_size,
                                                   SpecialTokenStyle style);

// GPT-2's byte-to-unicode mapping of byte `b`, as UTF-8.
std::string ByteToUnicode(uint8_t b);

}  // namespace tessera
