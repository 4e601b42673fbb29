#include "placement/simulator.h"

#include <string>

#include "gtest/gtest.h"
#include "placement/search.h"

namespace tessera::placement {
namespace {

const std::string kData = TESSERA_PLACEMENT_TESTDATA;

// The simulator and the analytical model agree on a plan at its predicted
// goodput: TPOT of the same order (the model is conservative), and most
// requests meet the SLOs.
TEST(SimulatorTest, AgreesWithAnalyticalModel) {
  auto m = LoadModelSpec(kData + "/llama-3-8b");
  auto c = LoadCluster(kData + "/a100x4.json");
  auto w = LoadWorkload(kData + "/chat.json");
  ASSERT_TRUE(m.ok() && c.ok() && w.ok());
  auto r = Search(*m, *c, *w);
  ASSERT_TRUE(r.ok());
  auto plan = BuildPlan(*m, *c, *w, r->ranked.front());
  ASSERT_TRUE(plan.ok());
  SimulationOptions o;
  o.duration_s = 30;
  auto s = Simulate(*plan, *w, o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_GT(s->completed, 0.9 * s->arrived);
  // The colocated analytical TPOT (prefill stalls as 1/(1-rho)) is
  // conservative against the simulator's mixed prefill+decode steps.
  EXPECT_LE(s->tpot_s.mean, plan->predicted.tpot_s * 1.1);
  EXPECT_GE(s->tpot_s.mean, plan->predicted.tpot_s * 0.5);
  EXPECT_GT(s->slo_attainment, 0.75);
  // Overload: at 5× the rate, attainment collapses.
  o.arrival_rate = plan->predicted.request_rate * 5;
  auto over = Simulate(*plan, *w, o);
  ASSERT_TRUE(over.ok());
  EXPECT_LT(over->slo_attainment, s->slo_attainment);
  o.duration_s = -1;
  EXPECT_EQ(Simulate(*plan, *w, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::placement
