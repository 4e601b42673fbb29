// libFuzzer target for the planner's parsers of untrusted input: Plan,
// cluster, workload and device-profile JSON, HF config.json, GGUF metadata.
// Built only with -DTESSERA_BUILD_FUZZERS=ON (clang).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "placement/cluster.h"
#include "placement/internal/gguf_metadata.h"
#include "placement/model_spec.h"
#include "placement/plan.h"
#include "placement/workload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tessera::placement;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)ParsePlan(text);
  (void)ParseCluster(text);
  (void)ParseWorkload(text);
  (void)ParseDeviceProfile(text);
  (void)ParseHfConfig(text, "fuzz");
  (void)internal::ParseGgufMetadata(data, size);
  return 0;
}
