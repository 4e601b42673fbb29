// UTF-8 and GPT-2 byte-level helpers shared by the tokenizers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera::tokenizer_internal {

// Length of the UTF-8 sequence that `lead` starts (1 for a stray byte).
inline size_t Utf8SeqLen(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

// Appends the UTF-8 encoding of code point `cp` to `out`.
void AppendUtf8(uint32_t cp, std::string* out);

// One step of UTF-8 decoding at the start of a non-empty string: a valid
// character of `len` bytes, an invalid sequence of `len` bytes (the maximal
// prefix of a valid sequence, at least 1) to replace with U+FFFD, or a valid
// prefix of `len` bytes cut off by the end of the string.
struct Utf8Step {
  enum Kind { kValid, kInvalid, kTruncated };
  size_t len;
  Kind kind;
};
Utf8Step NextUtf8(std::string_view s);

// Length of the longest prefix of `bytes` that cannot change by appending more
// bytes: complete characters and bytes already known to be invalid. What
// remains is the start of a possibly valid character.
size_t StableUtf8Prefix(std::string_view bytes);

// GPT-2's reversible byte <-> printable-character mapping (bytes_to_unicode).
class ByteLevelMap {
 public:
  static const ByteLevelMap& Get();
  // The UTF-8 text of the character standing for byte `b`.
  const std::string& Encode(uint8_t b) const { return encode_[b]; }
  // Appends `bytes` mapped to characters.
  void EncodeAll(std::string_view bytes, std::string* out) const;
  // Maps the characters of `text` back to bytes; characters outside the map
  // are copied unchanged.
  std::string Decode(std::string_view text) const;

 private:
  ByteLevelMap();
  std::array<std::string, 256> encode_;
  std::array<int16_t, 512> decode_;  // Code point -> byte, or -1.
};

}  // namespace tessera::tokenizer_internal
