#include "placement/plan_schema.h"

#include <string>

#include "gtest/gtest.h"

namespace tessera::placement {
namespace {

TEST(PlanSchemaTest, NameCarriesVersion) {
  EXPECT_EQ(std::string(PlanSchemaName()),
            "tessera.plan/v" + std::to_string(kPlanSchemaVersion));
}

}  // namespace
}  // namespace tessera::placement
