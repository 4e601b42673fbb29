// Hardware description: device profiles, links, and the cluster (nodes ×
// devices).
//
// Profiles for H100-SXM, H200, A100-80GB and B200 ship as JSON files under
// placement/profiles/ (datasheet figures, sources in each file) and are
// compiled into the library; a cluster file names a kind or carries its own
// profile (e.g. the one `tessera calibrate` writes).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::placement {

// A point-to-point link: alpha-beta model, time = latency + bytes / bandwidth.
struct LinkSpec {
  double bandwidth_bytes_per_s = 0;  // per device, one direction
  double latency_s = 0;              // per message (per ring step)
};

// One accelerator kind (or a set of CPU cores).
struct DeviceProfile {
  std::string kind;
  std::string source;  // where the figures come from
  double memory_bytes = 0;
  double memory_bandwidth_bytes_per_s = 0;
  std::map<std::string, double> peak_flops;  // dtype → dense FLOP/s
  // Fractions of peak reached in practice by large GEMMs, by streaming
  // memory-bound kernels, and by collectives (bus bandwidth / link).
  double compute_efficiency = 0.6;
  double memory_efficiency = 0.8;
  double link_efficiency = 0.8;
  // Optional per-weight-dtype overrides of the two factors above (measured by
  // `tessera calibrate`: a CPU widens f16 weights in its GEMMs, bf16 rides a
  // different instruction, q8_0 GEMVs decode blocks while streaming).
  std::map<std::string, double> compute_efficiency_by_dtype;
  std::map<std::string, double> memory_efficiency_by_dtype;
  // Fixed per-layer launch/sync cost of one forward step (kernel launches,
  // norms, rotary...), and memory kept free (context, allocator slack).
  double layer_overhead_s = 10e-6;
  double reserved_memory_bytes = 2e9;
  double memory_utilization = 0.9;  // like vLLM's gpu_memory_utilization
  LinkSpec intra_node;
  LinkSpec inter_node;

  // Peak FLOP/s for computations in `dtype` (quantized weights run in 16-bit
  // math; fp8 uses the fp8 figure when present).
  double PeakFlops(std::string_view dtype) const;
  // The efficiency factors for weights of `dtype` (the override, else the
  // general factor).
  double ComputeEfficiency(std::string_view dtype) const;
  double MemoryEfficiency(std::string_view dtype) const;
};

// Checks the profile's figures are positive and fractions in (0, 1].
absl::Status ValidateDeviceProfile(const DeviceProfile& p);

// Parses one profile from JSON text (unknown keys are errors).
absl::StatusOr<DeviceProfile> ParseDeviceProfile(std::string_view json_text);
std::string DeviceProfileToJson(const DeviceProfile& p);

// The profiles compiled in from placement/profiles/*.json, by kind.
const std::map<std::string, DeviceProfile>& BuiltinProfiles();
// A built-in profile by kind (case-insensitive; "H100" aliases "H100-SXM").
absl::StatusOr<DeviceProfile> FindBuiltinProfile(std::string_view kind);

// Homogeneous nodes, each with the same number of devices of one kind.
struct ClusterSpec {
  std::vector<std::string> hosts;  // one name per node
  int devices_per_node = 0;
  DeviceProfile device;

  int num_nodes() const { return static_cast<int>(hosts.size()); }
  int num_devices() const { return num_nodes() * devices_per_node; }
  int NodeOf(int global_device) const {
    return global_device / devices_per_node;
  }
  // The link between two global device indices (intra- or inter-node).
  const LinkSpec& LinkBetween(int a, int b) const {
    return NodeOf(a) == NodeOf(b) ? device.intra_node : device.inter_node;
  }
};

// Parses a cluster description (JSON; YAML is not supported). Example:
//   {"nodes": 2, "devices_per_node": 8, "device": "H100-SXM",
//    "inter_node_link": {"bandwidth_gbps": 400, "latency_us": 5}}
absl::StatusOr<ClusterSpec> ParseCluster(std::string_view json_text);
absl::StatusOr<ClusterSpec> LoadCluster(const std::string& path);

}  // namespace tessera::placement
