#include "placement/plan_schema.h"

namespace tessera::placement {

const char* PlanSchemaName() { return "tessera.plan/v1"; }

}  // namespace tessera::placement
