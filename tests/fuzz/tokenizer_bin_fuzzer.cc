// libFuzzer target: llama2.c tokenizer.bin parsing, then encode/decode.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tok = tessera::TokenizerFromLlama2c(
      absl::Span<const uint8_t>(data, size), "fuzz.bin");
  if (!tok.ok()) return 0;
  auto ids = (*tok)->Encode("Once upon a time \xC3\xA9\xFF", true, false);
  if (ids.ok()) (void)(*tok)->Decode(*ids, true);
  return 0;
}
