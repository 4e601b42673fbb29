#include "runtime/tokenizer/internal/utf8.h"

namespace tessera::tokenizer_internal {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

Utf8Step NextUtf8(std::string_view s) {
  const auto b0 = static_cast<uint8_t>(s[0]);
  if (b0 < 0x80) return {1, Utf8Step::kValid};
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // Allowed range of the second byte.
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // No surrogates.
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {1, Utf8Step::kInvalid};
  }
  for (size_t i = 1; i < len; ++i) {
    if (i >= s.size()) return {i, Utf8Step::kTruncated};
    const auto b = static_cast<uint8_t>(s[i]);
    const uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) return {i, Utf8Step::kInvalid};
  }
  return {len, Utf8Step::kValid};
}

size_t StableUtf8Prefix(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const Utf8Step step = NextUtf8(bytes.substr(i));
    if (step.kind == Utf8Step::kTruncated) break;
    i += step.len;
  }
  return i;
}

}  // namespace tessera::tokenizer_internal

namespace tessera {

std::string SanitizeUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const auto step = tokenizer_internal::NextUtf8(bytes.substr(i));
    if (step.kind == tokenizer_internal::Utf8Step::kValid) {
      out.append(bytes.substr(i, step.len));
    } else {
      out.append("\xEF\xBF\xBD");
    }
    i += step.len;
  }
  return out;
}

}  // namespace tessera

namespace tessera::tokenizer_internal {

ByteLevelMap::ByteLevelMap() {
  decode_.fill(-1);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                           (b >= 0xAE && b <= 0xFF);
    const int cp = printable ? b : next++;
    AppendUtf8(static_cast<uint32_t>(cp), &encode_[b]);
    decode_[cp] = static_cast<int16_t>(b);
  }
}

const ByteLevelMap& ByteLevelMap::Get() {
  static const ByteLevelMap* const kMap = new ByteLevelMap();
  return *kMap;
}

void ByteLevelMap::EncodeAll(std::string_view bytes, std::string* out) const {
  for (const char c : bytes) out->append(encode_[static_cast<uint8_t>(c)]);
}

std::string ByteLevelMap::Decode(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const Utf8Step step = NextUtf8(text.substr(i));
    if (step.kind == Utf8Step::kValid && step.len <= 2) {
      uint32_t cp = static_cast<uint8_t>(text[i]);
      if (step.len == 2) {
        cp = ((cp & 0x1F) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3F);
      }
      if (cp < decode_.size() && decode_[cp] >= 0) {
        out.push_back(static_cast<char>(decode_[cp]));
        i += step.len;
        continue;
      }
    }
    out.append(text.substr(i, step.len));
    i += step.len;
  }
  return out;
}

}  // namespace tessera::tokenizer_internal
