// Runs the built `tessera plan` / `tessera simulate`.
#include <string>

#include "gtest/gtest.h"
#include "placement/cluster.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using testing::RunCommand;
using testing::TesseraBin;

const std::string kData = TESSERA_PLACEMENT_TESTDATA;

TEST(PlanCommandTest, PlansWritesAndSimulates) {
  const std::string dir = testing::MakeTempDir();
  const auto r = RunCommand(TesseraBin() + " plan --model " + kData +
                            "/llama-3-70b --cluster " + kData +
                            "/h100x16.json --workload " + kData +
                            "/chat.json --top 4 --json " + dir + "/plan.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("TTFT ms"), std::string::npos);
  EXPECT_NE(r.out.find("why the runners-up lost"), std::string::npos);
  EXPECT_NE(r.out.find("chosen:"), std::string::npos);
  const auto s = RunCommand(TesseraBin() + " simulate --plan " + dir +
                            "/plan.json --duration 10");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_NE(s.out.find("TTFT ms: p50"), std::string::npos);
  EXPECT_NE(s.out.find("goodput:"), std::string::npos);
}

TEST(PlanCommandTest, EmitsMpirunAndHelm) {
  const std::string base = TesseraBin() + " plan --model " + kData +
                           "/mixtral-8x7b --cluster " + kData +
                           "/h100x8.json --emit ";
  const auto m = RunCommand(base + "mpirun");
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_NE(m.out.find("mpirun -np 8"), std::string::npos);
  EXPECT_EQ(m.out.find("why the runners-up"),
            std::string::npos);  // table on stderr
  const auto h = RunCommand(base + "helm-values");
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_NE(h.out.find("leaderWorkerSet:"), std::string::npos);
  EXPECT_EQ(RunCommand(base + "slurm").exit_code, 2);
}

TEST(PlanCommandTest, InfeasibleAndBadInputs) {
  const auto r = RunCommand(TesseraBin() + " plan --model " + kData +
                            "/llama-2-70b --cluster " + kData + "/h100x1.json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tessera plan: no layout"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("weights need 138 GB per replica"), std::string::npos)
      << r.err;
  const std::string dir = testing::MakeTempDir();
  const auto bad = RunCommand(
      "echo '{\"nodes\": 1, \"devices_per_node\": 2, \"device\": "
      "\"Z80\"}' > " +
      dir + "/c.json && " + TesseraBin() + " plan --model " + kData +
      "/llama-2-7b --cluster " + dir + "/c.json");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("unknown device kind \"Z80\""), std::string::npos)
      << bad.err;
  EXPECT_EQ(RunCommand(TesseraBin() + " plan --cluster x").exit_code, 2);
  const auto sim =
      RunCommand(TesseraBin() + " simulate --plan /nonexistent.json");
  EXPECT_EQ(sim.exit_code, 1);
}

TEST(CalibrateCommandTest, WritesAUsableProfile) {
  const std::string dir = testing::MakeTempDir();
  const auto r =
      RunCommand(TesseraBin() + " calibrate --threads 1 --seconds 0.02 --out " +
                 dir + "/cpu.json --cluster-out " + dir + "/cluster.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto text = RunCommand("cat " + dir + "/cpu.json");
  auto p = placement::ParseDeviceProfile(text.out);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->kind, "cpu-local");
  EXPECT_GT(p->PeakFlops("fp32"), 1e8);
  EXPECT_GT(p->memory_bandwidth_bytes_per_s, 1e8);
  // GEMM efficiency by size: four measured sizes up to the reference 2048²
  // product, whose multiplier is 1 by definition.
  ASSERT_EQ(p->gemm_size_efficiency.size(), 5u);
  EXPECT_DOUBLE_EQ(p->gemm_size_efficiency.front().first, 128.0 * 256);
  EXPECT_DOUBLE_EQ(p->GemmSizeScale(2048.0 * 2048), 1.0);
  // The cluster file it writes plans a model.
  const auto plan =
      RunCommand(TesseraBin() + " plan --model " + kData +
                 "/llama-2-7b --cluster " + dir + "/cluster.json --top 1");
  EXPECT_NE(plan.exit_code, 2) << plan.err;
}

}  // namespace
}  // namespace tessera
