// Version of the Plan JSON schema that this build reads and writes.
#pragma once

namespace tessera::placement {

// Bumped on any incompatible change of the Plan's JSON layout.
inline constexpr int kPlanSchemaVersion = 1;

// "tessera.plan/v1"
const char* PlanSchemaName();

}  // namespace tessera::placement
