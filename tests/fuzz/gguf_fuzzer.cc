// Fuzzes the GGUF parser: any input must parse or fail with a Status, and
// everything a parsed file exposes must be readable without going out of
// bounds, including its tokenizer.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "runtime/formats/gguf.h"
#include "runtime/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = tessera::GgufFile::Parse({data, size}, "fuzz.gguf", nullptr);
  if (!file.ok()) return 0;
  for (const auto& [key, value] : (*file)->metadata()) {
    (void)value.DebugString();
    (void)value.AsInt32Array();
    (void)value.AsFloat32Array();
    (void)value.AsStringArray();
    (void)(*file)->GetString(key);
  }
  uint64_t sum = 0;
  for (const tessera::GgufTensorInfo& t : (*file)->tensors()) {
    // Touch the first and last byte of every tensor.
    if (t.nbytes > 0) sum += t.data[0] + t.data[t.nbytes - 1];
    auto view = (*file)->TensorView(t);
    if (view.ok()) sum += static_cast<uint64_t>(view->numel());
  }
  // The tokenizer.ggml.* metadata (vocabularies, t5's precompiled charsmap)
  // is untrusted too: load it and run a text with every kind of character.
  if (auto tok = tessera::TokenizerFromGguf(**file); tok.ok()) {
    auto ids = (*tok)->Encode(
        "Hello,  WORLD! Caf\xC3\xA9 e\xCC\x81 \xE4\xB8\xAD\xEF\xAC\x81 \xFF",
        true, true);
    if (ids.ok()) (void)(*tok)->Decode(*ids, false);
  }
  return sum == 1 ? 0 : 0;
}
