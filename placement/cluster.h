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
#include <utility>
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
  // Share of the shorter of an operator's compute and memory times that is
  // not hidden behind the longer one: 0 is the ideal roofline max(c, m); a
  // CPU core that both streams weights and multiplies them pays part of both.
  double serial_fraction = 0;
  // The same share as a function of the operator's balance: (compute time /
  // memory time, share in [0, 1]) points, increasing in the ratio,
  // interpolated in log(ratio) and held flat past either end. A CPU GEMM
  // hides a small compute time under its weight stream almost fully and a
  // compute-bound one hides its stream only in part, which one number cannot
  // say. Measured by `tessera calibrate`; empty: serial_fraction everywhere.
  std::vector<std::pair<double, double>> serial_fraction_curve;
  // Attention core (QKᵀ, softmax, PV) when it runs differently from GEMMs:
  // the fraction of peak its matrix products reach (0: compute_efficiency),
  // seconds of softmax work (max, exp, rescale) per score, i.e. per
  // (query, key, head), which does not shrink with the head dimension and
  // overlaps the products (compute = the larger of the two; 0: hidden, as
  // in fused GPU kernels at large head dims), and the fraction of the
  // memory bandwidth its KV-cache reads reach (rows of one head scattered
  // over paged blocks; 0: memory_efficiency).
  double attention_efficiency = 0;
  double softmax_seconds_per_score = 0;
  double attention_memory_efficiency = 0;
  // Fixed per-layer launch/sync cost of one forward step (kernel launches,
  // norms, rotary...), and memory kept free (context, allocator slack).
  double layer_overhead_s = 10e-6;
  // Fixed cost per token per layer beyond its FLOPs and bytes (per-row kernel
  // set-up, per-sequence attention and sampling bookkeeping); 0 on GPUs,
  // where it hides in the kernels; measured by `tessera calibrate`.
  double token_overhead_s = 0;
  // The part of that cost paid per query head on this rank (per token per
  // layer: rotary, per-head projections and cache writes, attention state
  // set-up and normalization); 0 on GPUs; measured by `tessera calibrate`.
  double head_overhead_s = 0;
  // Fixed cost of one forward step on a rank outside its layers (embedding
  // gather, final norm, sampling set-up, the runner's own bookkeeping); 0 on
  // GPUs (hidden behind kernels); measured by `tessera calibrate`.
  double step_overhead_s = 0;
  // Streaming speed-up when one forward step's working set (the weight and
  // KV bytes a rank reads per step) stays in the caches from one step to the
  // next: (working-set bytes, bandwidth multiplier >= 1) points, increasing
  // in bytes, interpolated in log(bytes); 1 past the last point. Measured by
  // `tessera calibrate` with the runtime's GEMV; empty (no effect) for GPUs,
  // whose caches are small next to any model worth serving on them.
  std::vector<std::pair<double, double>> cached_bandwidth_gain;
  // GEMM efficiency by matrix size: (weights in one matrix product,
  // multiplier of the compute efficiency) points, increasing in size,
  // interpolated in log(size) and held flat past either end. Small matrices
  // (a small model's projections, or a large one's at high tensor
  // parallelism) split into few tiles per thread and pay per-call packing
  // and hand-off costs that a 2048² product hides. Measured by `tessera
  // calibrate` relative to its 2048² GEMM; empty: 1 everywhere.
  std::vector<std::pair<double, double>> gemm_size_efficiency;
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
  // The bandwidth multiplier for a step that reads `working_set_bytes`
  // (cached_bandwidth_gain interpolated; 1 when it is empty or exceeded).
  double BandwidthGain(double working_set_bytes) const;
  // The share of min(compute, memory) that shows for an operator whose
  // compute/memory ratio is `ratio` (serial_fraction_curve interpolated;
  // serial_fraction when the curve is empty or the ratio is not positive).
  double SerialFraction(double ratio) const;
  // The compute-efficiency multiplier of a matrix product over a weight
  // matrix of `weights` elements (gemm_size_efficiency interpolated; 1 when
  // it is empty or `weights` is not positive).
  double GemmSizeScale(double weights) const;
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
