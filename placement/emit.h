// Launcher artifacts derived from a Plan: an mpirun hostfile + command, and
// values for the Helm chart (LeaderWorkerSet: one group per instance).
#pragma once

#include <string>

#include "placement/plan.h"

namespace tessera::placement {

// A hostfile (one "host slots=N" line per node used) followed by the mpirun
// command line; `plan_path` is where the ranks will read the Plan and
// `model_path` the model (the same path on every host).
std::string EmitMpirun(const Plan& plan, const std::string& plan_path,
                       const std::string& model_path);

// Helm values (YAML) describing every instance's pods and devices.
std::string EmitHelmValues(const Plan& plan, const std::string& plan_path);

}  // namespace tessera::placement
