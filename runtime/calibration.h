// Calibration of the planner's cost model on this machine, with the kernels
// the runtime actually executes.
//
// `tessera calibrate` writes the result as the `cpu-local` device profile;
// `tessera bench cost-model` compares the model's predicted step times with
// measured ones. The profile's figures are machine peaks (streaming read
// bandwidth, FMA and bf16 dot-product peaks) plus efficiency factors measured
// by timing kernels::Linear on prefill and decode shapes, and a per-layer
// overhead measured by running a small model, so predictions for any model
// shape follow from the same arithmetic the planner uses for GPUs.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "placement/cluster.h"
#include "placement/model_spec.h"
#include "runtime/model.h"

namespace tessera {

struct CalibrationOptions {
  int threads = 0;       // 0: all cores.
  double seconds = 0.3;  // Minimum time per measurement.
};

// Measures this machine and returns a `cpu-local` device profile.
absl::StatusOr<placement::DeviceProfile> CalibrateCpu(
    const CalibrationOptions& options);

// The profile in `path` (JSON from `tessera calibrate --out`), or, when
// `path` is empty, a fresh calibration on `threads` threads (noted on stderr).
absl::StatusOr<placement::DeviceProfile> LoadProfileOrCalibrate(
    const std::string& path, int threads);

// The planner's description of a loaded model: shapes from its config, bytes
// per weight averaged over its actual tensors (so mixed-dtype files count
// right), and the KV cache in `kv_dtype`.
placement::ModelSpec ModelSpecFor(const Model& model, DType kv_dtype);

// The planner's dtype name for weights of `dtype` ("fp32", "fp16", "bf16",
// "q8_0").
std::string PlannerDTypeName(DType dtype);

}  // namespace tessera
