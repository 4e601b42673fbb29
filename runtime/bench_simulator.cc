#include "runtime/bench_simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "base/status.h"
#include "fmt/format.h"
#include "placement/plan_schema.h"
#include "placement/simulator.h"
#include "runtime/bench_serve.h"
#include "runtime/calibration.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/engine.h"
#include "runtime/metrics.h"
#include "runtime/server.h"

namespace tessera {
namespace {

placement::LengthDistribution Fixed(int64_t n) {
  placement::LengthDistribution d;
  d.kind = placement::LengthDistribution::Kind::kFixed;
  d.mean = static_cast<double>(n);
  d.min = n;
  d.max = n;
  return d;
}

}  // namespace

absl::StatusOr<placement::Plan> SingleInstancePlan(
    const Model& model, const placement::DeviceProfile& profile,
    const BenchSimulatorOptions& o, int64_t num_kv_blocks) {
  placement::Plan plan;
  plan.schema_version = placement::kPlanSchemaVersion;
  plan.mode = "colocated";
  plan.model = ModelSpecFor(model, DType::kF32);
  plan.cluster.hosts = {"localhost"};
  plan.cluster.devices_per_node = 1;
  plan.cluster.device = profile;
  plan.workload.name = "bench simulator";
  plan.workload.input = Fixed(o.input_len);
  plan.workload.output = Fixed(o.output_len);
  plan.workload.arrival_rate = o.request_rate;
  placement::PlanInstance in;
  in.role = placement::InstanceRole::kBoth;
  placement::PlanStage stage;
  stage.layer_begin = 0;
  stage.layer_end = static_cast<int>(model.config.num_hidden_layers);
  stage.has_embedding = true;
  stage.has_lm_head = true;
  in.stages = {stage};
  in.ranks = {placement::PlanRank{}};
  in.kv_cache.block_size = static_cast<int>(o.block_size);
  in.kv_cache.num_blocks = num_kv_blocks;
  in.kv_cache.dtype = "fp32";
  in.kv_cache.max_num_seqs = o.max_num_seqs;
  in.kv_cache.max_model_len = o.input_len + o.output_len;
  in.kv_cache.max_num_batched_tokens = o.max_num_batched_tokens;
  plan.instances = {in};
  plan.rationale = "one CPU instance with the served engine's settings";
  RETURN_IF_ERROR(placement::ValidatePlan(plan));
  return plan;
}

absl::StatusOr<std::vector<SimulatorRow>> RunBenchSimulator(
    const Model& model, const Tokenizer& tokenizer,
    const placement::DeviceProfile& profile, const BenchSimulatorOptions& o,
    std::FILE* out) {
  const ModelConfig& c = model.config;
  if (o.num_prompts <= 0 || o.input_len <= 0 || o.output_len <= 1 ||
      !(o.request_rate > 0) || o.max_num_seqs <= 0 ||
      o.max_num_batched_tokens < o.max_num_seqs) {
    return absl::InvalidArgumentError(
        "need positive --num-prompts, --random-input-len, --request-rate and "
        "--max-num-seqs, --random-output-len > 1, and "
        "--max-num-batched-tokens >= --max-num-seqs");
  }
  const int64_t max_len = o.input_len + o.output_len;
  if (max_len > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        fmt::format("input + output ({}) exceed the model's context ({})",
                    max_len, c.max_position_embeddings));
  }
  if (c.vocab_size < 250) {
    return absl::InvalidArgumentError(
        "the load generator's prompts use token ids up to 250");
  }

  // The engine, as `tessera serve` builds it, with room for every sequence at
  // full length (so the comparison has no preemption) and no prefix caching
  // (random prompts share nothing; the simulator does not model it).
  RunnerOptions ro;
  ro.block_size = o.block_size;
  ro.max_model_len = max_len;
  ro.max_num_seqs = o.max_num_seqs;
  ro.max_num_batched_tokens = o.max_num_batched_tokens;
  ro.threads = o.threads;
  ro.num_kv_blocks =
      (max_len + o.block_size - 1) / o.block_size * o.max_num_seqs;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   CreateCpuModelRunner(model, ro));
  EngineOptions eo;
  eo.scheduler.max_num_seqs = o.max_num_seqs;
  eo.scheduler.max_num_batched_tokens = o.max_num_batched_tokens;
  eo.enable_prefix_caching = false;
  eo.max_model_len = max_len;
  MetricsRegistry registry;
  ServerOptions so;
  so.port = 0;
  so.served_model_name = "bench";
  Server server(so, &registry);
  RETURN_IF_ERROR(server.Start());
  ServingMetrics metrics(&registry, so.served_model_name);
  Engine engine(runner.get(), &tokenizer, eo, &metrics);
  server.AttachEngine(&engine);

  BenchServeOptions bo;
  bo.base_url = fmt::format("http://127.0.0.1:{}", server.port());
  bo.model = so.served_model_name;
  bo.num_prompts = o.num_prompts;
  bo.request_rate = o.request_rate;
  bo.random_input_len = o.input_len;
  bo.random_output_len = o.output_len;
  bo.seed = o.seed;
  absl::StatusOr<BenchServeReport> measured = RunBenchServe(bo);
  const auto now = std::chrono::steady_clock::now();
  server.Shutdown(now);
  server.Wait();
  engine.Shutdown(now);
  RETURN_IF_ERROR(measured.status());
  if (measured->failed > 0) {
    return absl::InternalError(fmt::format("{} of {} requests failed",
                                           measured->failed, o.num_prompts));
  }

  ASSIGN_OR_RETURN(placement::Plan plan,
                   SingleInstancePlan(model, profile, o, ro.num_kv_blocks));
  placement::SimulationOptions sim;
  // The same requests at the same times: a short run's Poisson arrivals can
  // be well off its nominal rate (64 requests at 20 req/s arrived in 2.3 s
  // in one run), and the load decides the batches and the queueing.
  for (const BenchRequestResult& r : measured->results) {
    sim.trace.push_back({r.arrival_s, r.prompt_len, r.output_tokens});
  }
  ASSIGN_OR_RETURN(placement::SimulationResult s,
                   placement::Simulate(plan, plan.workload, sim));

  std::vector<SimulatorRow> rows = {
      {"mean TTFT (ms)", s.ttft_s.mean * 1e3, measured->ttft.mean},
      {"median TTFT (ms)", s.ttft_s.p50 * 1e3, measured->ttft.median},
      {"mean TPOT (ms)", s.tpot_s.mean * 1e3, measured->tpot.mean},
      {"median TPOT (ms)", s.tpot_s.p50 * 1e3, measured->tpot.median},
      {"output tok/s", s.output_tokens_per_s, measured->output_throughput},
  };
  std::fprintf(out, "model: %s; profile: %s\n", model.source.c_str(),
               profile.source.c_str());
  std::fprintf(
      out,
      "load: %lld prompts of %lld tokens, %lld output tokens, "
      "Poisson %.2f req/s (the simulator replays the measured run's "
      "requests); engine: max_num_seqs %lld, max_num_batched_tokens %lld; "
      "simulated mean decode batch %.1f\n",
      static_cast<long long>(o.num_prompts),
      static_cast<long long>(o.input_len), static_cast<long long>(o.output_len),
      o.request_rate, static_cast<long long>(o.max_num_seqs),
      static_cast<long long>(o.max_num_batched_tokens), s.mean_decode_batch);
  // Where a gap comes from: the steps themselves (the cost model), time the
  // engine spends outside them, or a different batching that follows from
  // either (slower steps let more sequences pile up in each).
  const auto& e = measured->engine;
  if (e.steps > 0) {
    const double decode_tokens =
        static_cast<double>(measured->total_output - measured->completed);
    std::fprintf(
        out,
        "steps: simulated %.3f ms each (%.1f decoding sequences); measured "
        "%.3f ms in the model + %.3f ms in the engine each (%.0f steps, "
        "%.1f decoding sequences)\n",
        s.mean_step_s * 1e3, s.mean_decode_batch, e.model_s / e.steps * 1e3,
        e.overhead_s / e.steps * 1e3, e.steps, decode_tokens / e.steps);
  }
  std::fprintf(out, "%-18s %12s %12s %9s\n", "figure", "simulated", "measured",
               "error");
  double worst = 0;
  for (const SimulatorRow& r : rows) {
    std::fprintf(out, "%-18s %12.2f %12.2f %+8.1f%%\n", r.name.c_str(),
                 r.simulated, r.measured, r.error() * 100);
    if (r.name.find("TTFT") != std::string::npos ||
        r.name.find("TPOT") != std::string::npos)
      worst = std::max(worst, std::abs(r.error()));
  }
  std::fprintf(out,
               "simulator: max |error| %.1f%% (TTFT and TPOT means and "
               "medians)\n",
               worst * 100);
  return rows;
}

}  // namespace tessera
