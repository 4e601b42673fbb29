#include "placement/plan.h"

#include <cmath>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "placement/emit.h"
#include "placement/search.h"

namespace tessera::placement {
namespace {

const std::string kData = TESSERA_PLACEMENT_TESTDATA;

void ExpectJsonNear(const nlohmann::json& a, const nlohmann::json& b) {
  ASSERT_EQ(a.type(), b.type()) << a.dump() << " vs " << b.dump();
  if (a.is_number_float()) {
    EXPECT_NEAR(a.get<double>(), b.get<double>(),
                1e-9 * (1 + std::abs(b.get<double>())));
  } else if (a.is_object() || a.is_array()) {
    ASSERT_EQ(a.size(), b.size());
    auto ia = a.begin();
    auto ib = b.begin();
    for (; ia != a.end(); ++ia, ++ib) ExpectJsonNear(*ia, *ib);
  } else {
    EXPECT_EQ(a, b);
  }
}

Plan MakePlan(const std::string& model, const std::string& cluster) {
  auto m = LoadModelSpec(kData + "/" + model);
  auto c = LoadCluster(kData + "/" + cluster);
  auto w = LoadWorkload(kData + "/chat.json");
  EXPECT_TRUE(m.ok() && c.ok() && w.ok());
  auto r = Search(*m, *c, *w);
  EXPECT_TRUE(r.ok()) << r.status().message();
  auto p = BuildPlan(*m, *c, *w, r->ranked.front());
  EXPECT_TRUE(p.ok()) << p.status().message();
  return *p;
}

TEST(PlanTest, RoundTripsThroughJson) {
  for (const auto& [model, cluster] :
       {std::pair{"mixtral-8x7b", "h100x8.json"},
        std::pair{"llama-3-70b", "h100x16.json"}}) {
    const Plan p = MakePlan(model, cluster);
    const std::string text = PlanToJson(p);
    auto q = ParsePlan(text);
    ASSERT_TRUE(q.ok()) << q.status().message();
    // Equal up to the last bit of ms↔s conversions.
    ExpectJsonNear(nlohmann::json::parse(PlanToJson(*q)),
                   nlohmann::json::parse(text));
    EXPECT_EQ(q->num_ranks(), p.num_ranks());
  }
}

TEST(PlanTest, MixtralPlanHasExpertMap) {
  const Plan p = MakePlan("mixtral-8x7b", "h100x8.json");
  for (const PlanInstance& in : p.instances) {
    EXPECT_EQ(in.expert_to_ep_rank.size(), 8u);
  }
  EXPECT_EQ(p.num_ranks(), 8);
}

nlohmann::json Mutable() {
  return nlohmann::json::parse(
      PlanToJson(MakePlan("llama-3-8b", "a100x4.json")));
}

TEST(PlanTest, RejectsInconsistentPlans) {
  {
    auto j = Mutable();
    j["surprise"] = 1;
    auto r = ParsePlan(j.dump());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(
        std::string(r.status().message()).find("unknown key \"surprise\""),
        std::string::npos);
  }
  {
    auto j = Mutable();
    j["schema_version"] = 99;
    EXPECT_EQ(ParsePlan(j.dump()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    auto j = Mutable();
    j["instances"][0]["stages"][0]["layer_end"] = 5;  // layers left uncovered
    EXPECT_EQ(ParsePlan(j.dump()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    auto j = Mutable();
    j["instances"][0]["ranks"][0]["device"] = 9;  // outside a 4-device node
    EXPECT_EQ(ParsePlan(j.dump()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    auto j = Mutable();
    j["instances"][0]["role"] = "router";
    EXPECT_EQ(ParsePlan(j.dump()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    auto j = Mutable();
    j["cluster"]["device"]["kind"] = "mystery";
    j["cluster"]["device"]["memory_gb"] = -1;
    EXPECT_EQ(ParsePlan(j.dump()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(PlanTest, EmitsLauncherArtifacts) {
  const Plan p = MakePlan("llama-3-70b", "h100x16.json");
  const std::string mpirun = EmitMpirun(p, "plan.json", "/models/llama");
  EXPECT_NE(mpirun.find("node0 slots="), std::string::npos);
  EXPECT_NE(mpirun.find("mpirun -np 16"), std::string::npos);
  EXPECT_NE(mpirun.find("tessera serve --plan plan.json --model /models/llama"),
            std::string::npos)
      << mpirun;
  const std::string helm = EmitHelmValues(p, "plan.json");
  EXPECT_NE(helm.find("instances:"), std::string::npos);
  EXPECT_NE(helm.find("tensorParallel:"), std::string::npos);
}

TEST(PlanTest, PlaceExpertsBalancesLoad) {
  EXPECT_EQ(PlaceExperts(8, 4, {}), (std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3}));
  // Two hot experts land on different ranks.
  const auto owners = PlaceExperts(4, 2, {10, 9, 1, 1});
  EXPECT_NE(owners[0], owners[1]);
}

}  // namespace
}  // namespace tessera::placement
