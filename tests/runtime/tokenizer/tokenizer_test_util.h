// Encode/decode helpers shared by the tokenizer tests: a failed Status fails
// the test and yields an empty result.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/tokenizer.h"

namespace tessera::tokenizer_test {

// The ids of `text`; empty (and a test failure) on error.
inline std::vector<int32_t> Enc(const Tokenizer& t, std::string_view text,
                                bool add_special = false,
                                bool parse_special = false) {
  auto ids = t.Encode(text, add_special, parse_special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

// The text of `ids`; empty (and a test failure) on error.
inline std::string Dec(const Tokenizer& t, const std::vector<int32_t>& ids,
                       bool skip_special = false) {
  auto text = t.Decode(ids, skip_special);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : std::string();
}

}  // namespace tessera::tokenizer_test
