// libFuzzer target: Hugging Face tokenizer.json parsing, then encoding and
// decoding with whatever tokenizer it yields. Must never crash, hang or
// leak; bad input ends in a Status.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto tok = tessera::TokenizerFromHfJson(input, "", "", "fuzz.json");
  if (!tok.ok()) return 0;
  // Encode a fixed text with specials and the input's own tail.
  const std::string_view tail =
      input.substr(input.size() > 64 ? input.size() - 64 : 0);
  for (std::string_view text :
       {std::string_view("Hello, world! 123 <s>"),
        std::string_view("Caf\xC3\xA9  e\xCC\x81 A\xCC\x81 \xE4\xB8\xAD"
                         "\xEF\xAC\x81\t\xC4\xB0 \xFF"),
        tail}) {
    auto ids = (*tok)->Encode(text, true, true);
    if (!ids.ok()) continue;
    (void)(*tok)->Decode(*ids, false);
    tessera::IncrementalDetokenizer d(**tok, true);
    for (int32_t id : *ids) (void)d.Push(id);
    (void)d.Flush();
  }
  return 0;
}
