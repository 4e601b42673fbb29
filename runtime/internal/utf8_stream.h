// Incremental UTF-8 assembly for streamed token bytes (private to the
// serving engine; the tokenizers' own incremental detokenizer may replace it).
#pragma once

#include <string>
#include <string_view>

namespace tessera::internal {

// Accepts token bytes as they are generated and releases text only in whole
// UTF-8 characters, so a streamed delta never splits a character. Invalid
// sequences become U+FFFD.
class Utf8Stream {
 public:
  // Appends `bytes`; moves every complete character into `*out`.
  void Append(std::string_view bytes, std::string* out);
  // Releases what is left (an incomplete tail becomes U+FFFD).
  void Flush(std::string* out);

 private:
  std::string pending_;
};

// Length of the longest prefix of `text` that ends on a character boundary
// and is at most `limit` bytes (text is valid UTF-8).
size_t Utf8BoundaryAtOrBefore(std::string_view text, size_t limit);

}  // namespace tessera::internal
