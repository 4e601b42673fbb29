#include "placement/search.h"

#include <string>

#include "gtest/gtest.h"

namespace tessera::placement {
namespace {

const std::string kData = TESSERA_PLACEMENT_TESTDATA;

struct Inputs {
  ModelSpec model;
  ClusterSpec cluster;
  Workload workload;
};

Inputs Load(const std::string& model, const std::string& cluster,
            const std::string& workload) {
  auto m = LoadModelSpec(kData + "/" + model);
  auto c = LoadCluster(kData + "/" + cluster);
  auto w = LoadWorkload(kData + "/" + workload);
  EXPECT_TRUE(m.ok() && c.ok() && w.ok());
  return {*m, *c, *w};
}

TEST(SearchTest, SeventyBDoesNotFitOneH100) {
  const Inputs in = Load("llama-2-70b", "h100x1.json", "chat.json");
  auto r = Search(in.model, in.cluster, in.workload);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  const std::string msg(r.status().message());
  EXPECT_NE(msg.find("weights need 138 GB per replica"), std::string::npos)
      << msg;
}

TEST(SearchTest, MixtralOnEightH100ShardsExperts) {
  const Inputs in = Load("mixtral-8x7b", "h100x8.json", "chat.json");
  auto r = Search(in.model, in.cluster, in.workload);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Candidate& best = r->ranked.front();
  // 93 GB of weights need at least 2 H100s per replica; the best plan must
  // use every device and be bound by an SLO or capacity, not by memory.
  EXPECT_GE(best.prefill.size(), 2);
  EXPECT_EQ(best.devices_used, 8);
  EXPECT_GT(best.metrics.goodput_rps, 0);
  for (const Candidate& c : r->ranked) EXPECT_GE(c.prefill.size(), 2);
}

TEST(SearchTest, TightTtftFavoursTensorParallelPrefill) {
  const Inputs in = Load("llama-2-7b", "a100x4.json", "tight_ttft.json");
  auto r = Search(in.model, in.cluster, in.workload);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Candidate& best = r->ranked.front();
  // A 150 ms p90 TTFT on 2k-token prompts needs prefill split across GPUs.
  EXPECT_GE(best.prefill.tp, 2);
  EXPECT_LE(best.metrics.ttft_s, 0.150 + 1e-6);
}

TEST(SearchTest, TensorParallelStaysInNodeWithoutBeingTold) {
  const Inputs in = Load("llama-3-70b", "h100x16.json", "chat.json");
  auto r = Search(in.model, in.cluster, in.workload);
  ASSERT_TRUE(r.ok()) << r.status().message();
  // No top candidate runs TP16 across the NIC.
  for (size_t i = 0; i < std::min<size_t>(5, r->ranked.size()); ++i) {
    EXPECT_LE(r->ranked[i].prefill.tp, 8);
    EXPECT_LE(r->ranked[i].decode.tp, 8);
  }
  const std::string why = ExplainLoss(r->ranked[0], r->ranked[1], in.workload);
  EXPECT_NE(why.find("bound by"), std::string::npos);
}

}  // namespace
}  // namespace tessera::placement
