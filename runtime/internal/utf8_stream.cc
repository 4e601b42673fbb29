#include "runtime/internal/utf8_stream.h"

namespace tessera::internal {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

bool IsCont(unsigned char c) { return (c & 0xC0) == 0x80; }

// Expected length of the character starting with `c`, or 0 if `c` cannot
// start one.
int LeadLength(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether `second` may follow `lead` (rules out overlongs, surrogates and
// code points above U+10FFFF).
bool SecondOk(unsigned char lead, unsigned char second) {
  if (!IsCont(second)) return false;
  if (lead == 0xE0) return second >= 0xA0;
  if (lead == 0xED) return second <= 0x9F;
  if (lead == 0xF0) return second >= 0x90;
  if (lead == 0xF4) return second <= 0x8F;
  return true;
}

}  // namespace

void Utf8Stream::Append(std::string_view bytes, std::string* out) {
  pending_.append(bytes);
  size_t i = 0;
  const size_t n = pending_.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(pending_[i]);
    const int len = LeadLength(c);
    if (len == 0) {
      out->append(kReplacement);
      ++i;
      continue;
    }
    if (len == 1) {
      out->push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Check the bytes that are here; stop if the character is incomplete.
    bool valid = true;
    size_t have = 1;
    for (; have < static_cast<size_t>(len) && i + have < n; ++have) {
      const auto b = static_cast<unsigned char>(pending_[i + have]);
      if (have == 1 ? !SecondOk(c, b) : !IsCont(b)) {
        valid = false;
        break;
      }
    }
    if (!valid) {
      out->append(kReplacement);
      ++i;
      continue;
    }
    if (have < static_cast<size_t>(len)) break;  // Wait for more bytes.
    out->append(pending_, i, static_cast<size_t>(len));
    i += static_cast<size_t>(len);
  }
  pending_.erase(0, i);
}

void Utf8Stream::Flush(std::string* out) {
  if (!pending_.empty()) out->append(kReplacement);
  pending_.clear();
}

size_t Utf8BoundaryAtOrBefore(std::string_view text, size_t limit) {
  if (limit >= text.size()) return text.size();
  size_t i = limit;
  while (i > 0 && IsCont(static_cast<unsigned char>(text[i]))) --i;
  return i;
}

}  // namespace tessera::internal
