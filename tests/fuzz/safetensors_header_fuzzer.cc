// Fuzzes the safetensors header parser: any input must parse or fail with a
// Status, and every tensor of a parsed file must lie inside the input.
#include <cstddef>
#include <cstdint>

#include "runtime/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = tessera::SafetensorsFile::Parse({data, size}, "fuzz.safetensors",
                                              nullptr);
  if (!file.ok()) return 0;
  uint64_t sum = 0;
  for (const tessera::SafetensorsTensorInfo& t : (*file)->tensors()) {
    if (t.end > t.begin) sum += t.data[0] + t.data[t.end - t.begin - 1];
    auto view = (*file)->TensorView(t);
    if (view.ok()) sum += static_cast<uint64_t>(view->nbytes());
  }
  return sum == 1 ? 0 : 0;
}
