// Tests of the planner bridge: ModelSpecFor (a loaded model's shapes and bytes
// as the planner sees them) and the predicted-vs-measured benchmark.
#include "runtime/calibration.h"

#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "placement/cost_model.h"
#include "runtime/bench_cost_model.h"
#include "runtime/bench_simulator.h"
#include "runtime/model_presets.h"
#include "runtime/tokenizer.h"
#include "tests/util/test_profile.h"

namespace tessera {
namespace {

TEST(ModelSpecForTest, MatchesTheLoadedModel) {
  auto model = SynthesizeModel("tiny-llama", DType::kF16, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const placement::ModelSpec s = ModelSpecFor(*model, DType::kBF16);
  ASSERT_TRUE(placement::ValidateModelSpec(s).ok());
  const ModelConfig& c = model->config;
  EXPECT_EQ(s.num_layers, c.num_hidden_layers);
  EXPECT_EQ(s.hidden_size, c.hidden_size);
  EXPECT_EQ(s.num_kv_heads, c.num_key_value_heads);
  EXPECT_EQ(s.ffn_size, c.intermediate_size);
  EXPECT_EQ(s.weight_dtype, "fp16");
  EXPECT_DOUBLE_EQ(s.weight_bytes, 2.0);  // every 2-D weight is f16
  EXPECT_EQ(s.kv_dtype, "bf16");
  EXPECT_DOUBLE_EQ(s.kv_bytes, 2.0);
  // The planner's parameter count (norms included) equals the runtime's.
  EXPECT_EQ(s.TotalParams(), c.ParameterCount());
}

TEST(ModelSpecForTest, MoeModelCountsExperts) {
  auto model = SynthesizeModel("mixtral-tiny", DType::kF32, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const placement::ModelSpec s = ModelSpecFor(*model, DType::kF32);
  ASSERT_TRUE(placement::ValidateModelSpec(s).ok());
  EXPECT_EQ(s.num_experts, model->config.num_local_experts);
  EXPECT_EQ(s.experts_per_token, model->config.num_experts_per_tok);
  EXPECT_EQ(s.weight_dtype, "fp32");
  EXPECT_EQ(s.TotalParams(), model->config.ParameterCount());
}

TEST(BenchCostModelTest, PrintsPredictedAndMeasuredForEveryShape) {
  auto model = SynthesizeModel("demo", DType::kF32, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  BenchCostModelOptions o;
  o.prompt_lens = {4, 16};
  o.decode_batches = {1, 3};
  o.decode_context = 20;
  o.threads = 1;
  o.min_seconds = 0.01;
  char* text = nullptr;
  size_t size = 0;
  std::FILE* out = open_memstream(&text, &size);
  auto rows = RunBenchCostModel(*model, testing::TestCpuProfile(), o, out);
  std::fclose(out);
  const std::string report(text, size);
  free(text);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[0].shape, "prefill 1x4");
  EXPECT_EQ((*rows)[3].shape, "decode 3 @20");
  for (const CostModelRow& r : *rows) {
    EXPECT_GT(r.predicted_s, 0);
    EXPECT_GT(r.measured_s, 0);
  }
  // More work is predicted to take longer.
  EXPECT_GT((*rows)[1].predicted_s, (*rows)[0].predicted_s);
  EXPECT_NE(report.find("cost-model: max |error|"), std::string::npos)
      << report;
}

TEST(BenchCostModelTest, RejectsShapesBeyondTheContext) {
  auto model = SynthesizeModel("demo", DType::kF32, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  BenchCostModelOptions o;
  o.prompt_lens = {model->config.max_position_embeddings + 1};
  EXPECT_EQ(RunBenchCostModel(*model, testing::TestCpuProfile(), o, stdout)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  o.prompt_lens = {};
  o.decode_batches = {};
  EXPECT_EQ(RunBenchCostModel(*model, testing::TestCpuProfile(), o, stdout)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BenchSimulatorTest, PlanMirrorsTheEngineSettings) {
  auto model = SynthesizeModel("demo", DType::kF32, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  BenchSimulatorOptions o;
  o.input_len = 20;
  o.output_len = 5;
  o.max_num_seqs = 3;
  o.max_num_batched_tokens = 64;
  auto plan = SingleInstancePlan(*model, testing::TestCpuProfile(), o, 6);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->instances.size(), 1u);
  const placement::KvCacheSettings& kv = plan->instances[0].kv_cache;
  EXPECT_EQ(kv.num_blocks, 6);
  EXPECT_EQ(kv.max_num_seqs, 3);
  EXPECT_EQ(kv.max_num_batched_tokens, 64);
  EXPECT_EQ(plan->instances[0].stages[0].layer_end,
            model->config.num_hidden_layers);
  EXPECT_DOUBLE_EQ(plan->workload.input.mean, 20);
}

TEST(BenchSimulatorTest, ServesSimulatesAndCompares) {
  auto model = SynthesizeModel("demo", DType::kF32, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  std::unique_ptr<Tokenizer> tokenizer = NewByteTokenizer();
  BenchSimulatorOptions o;
  o.request_rate = 200;
  o.num_prompts = 6;
  o.input_len = 12;
  o.output_len = 4;
  o.max_num_seqs = 4;
  o.max_num_batched_tokens = 64;
  o.threads = 1;
  char* text = nullptr;
  size_t size = 0;
  std::FILE* out = open_memstream(&text, &size);
  auto rows =
      RunBenchSimulator(*model, *tokenizer, testing::TestCpuProfile(), o, out);
  std::fclose(out);
  const std::string report(text, size);
  free(text);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 5u);
  for (const SimulatorRow& r : *rows) {
    EXPECT_GT(r.simulated, 0) << r.name;
    EXPECT_GT(r.measured, 0) << r.name;
  }
  EXPECT_NE(report.find("simulator: max |error|"), std::string::npos) << report;
}

}  // namespace
}  // namespace tessera
