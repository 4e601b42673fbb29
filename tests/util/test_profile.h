// A hand-written cpu-local device profile for tests of the planner's
// arithmetic: round figures, not this machine's (header-only, so only tests
// that link tessera::placement pay for it).
#pragma once

#include <cstdint>

#include "placement/cluster.h"

namespace tessera::testing {

// A cpu-local profile with `memory_bytes` of memory, 20 GB/s, 100 GFLOP/s f32.
inline placement::DeviceProfile TestCpuProfile(double memory_bytes = 16e9) {
  placement::DeviceProfile p;
  p.kind = "cpu-local";
  p.source = "test";
  p.memory_bytes = memory_bytes;
  p.memory_bandwidth_bytes_per_s = 20e9;
  p.peak_flops = {{"fp32", 100e9}};
  p.intra_node = {10e9, 1e-6};
  p.inter_node = {1e9, 50e-6};
  return p;
}

}  // namespace tessera::testing
