#include "runtime/bench_cost_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>

#include "base/status.h"
#include "fmt/format.h"
#include "placement/cost_model.h"
#include "runtime/calibration.h"
#include "runtime/cpu_model_runner.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

absl::StatusOr<std::vector<CostModelRow>> RunBenchCostModel(
    const Model& model, const placement::DeviceProfile& profile,
    const BenchCostModelOptions& o, std::FILE* out) {
  const ModelConfig& c = model.config;
  if (o.prompt_lens.empty() && o.decode_batches.empty()) {
    return absl::InvalidArgumentError("no shapes to compare");
  }
  int64_t max_prompt = 1, max_batch = 1;
  for (int64_t l : o.prompt_lens) {
    if (l <= 0 || l > c.max_position_embeddings) {
      return absl::InvalidArgumentError(fmt::format(
          "prompt length {} outside [1, {}]", l, c.max_position_embeddings));
    }
    max_prompt = std::max(max_prompt, l);
  }
  for (int64_t b : o.decode_batches) {
    if (b <= 0) return absl::InvalidArgumentError("decode batch must be > 0");
    max_batch = std::max(max_batch, b);
  }
  if (o.decode_context < 0 ||
      o.decode_context + 1 > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        fmt::format("decode context {} outside [0, {})", o.decode_context,
                    c.max_position_embeddings));
  }

  RunnerOptions ro;
  ro.threads = o.threads;
  ro.kv_dtype = o.kv_dtype;
  ro.max_model_len = std::max(max_prompt, o.decode_context + 1);
  const int64_t blocks_per_seq =
      (ro.max_model_len + ro.block_size - 1) / ro.block_size;
  ro.num_kv_blocks = blocks_per_seq * max_batch;
  ro.max_num_seqs = max_batch;
  ro.max_num_batched_tokens = std::max(max_prompt, max_batch);
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   CreateCpuModelRunner(model, ro));

  // Each sequence owns its blocks; the cache's content (zeros) does not
  // change the work.
  std::vector<std::vector<int32_t>> tables(max_batch);
  for (int64_t s = 0; s < max_batch; ++s) {
    for (int64_t b = 0; b < blocks_per_seq; ++b)
      tables[s].push_back(static_cast<int32_t>(s * blocks_per_seq + b));
  }
  std::vector<int32_t> tokens(std::max(max_prompt, max_batch));
  for (size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = static_cast<int32_t>((i * 7919 + 13) % c.vocab_size);
  SamplingParams greedy;
  greedy.temperature = 0;
  std::vector<uint64_t> rng(max_batch, 1);
  std::vector<StepOutput> outputs;
  outputs.reserve(max_batch);

  // Best time of one step over `batch`, repeated for at least min_seconds.
  auto time_step =
      [&](absl::Span<const StepSequence> batch) -> absl::StatusOr<double> {
    double best = 1e30;
    const auto start = Clock::now();
    for (int run = 0;; ++run) {
      outputs.clear();
      const auto t0 = Clock::now();
      RETURN_IF_ERROR(runner->Step(batch, &outputs));
      const auto t1 = Clock::now();
      if (run > 0)  // the first run pages weights in and grows scratch
        best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
      if (run >= 3 &&
          std::chrono::duration<double>(t1 - start).count() >= o.min_seconds)
        break;
    }
    return best;
  };

  const placement::ModelSpec spec = ModelSpecFor(model, o.kv_dtype);
  const placement::CostModel cost(spec, profile);
  placement::ClusterSpec cluster;
  cluster.hosts = {"localhost"};
  cluster.devices_per_node = 1;
  cluster.device = profile;
  const placement::InstanceModel instance(
      cost, cluster, placement::Layout{}, 0,
      placement::InstanceModel::Role::kBoth);

  std::vector<CostModelRow> rows;
  for (int64_t len : o.prompt_lens) {
    StepSequence s;
    s.seq_id = 0;
    s.tokens = absl::MakeConstSpan(tokens.data(), len);
    s.block_table = tables[0];
    s.sample = true;
    s.sampling = &greedy;
    s.rng_state = &rng[0];
    ASSIGN_OR_RETURN(double measured, time_step(absl::MakeConstSpan(&s, 1)));
    rows.push_back({fmt::format("prefill 1x{}", len),
                    instance.Iteration(placement::BatchShape::Prefill(1, len)),
                    measured});
  }
  for (int64_t b : o.decode_batches) {
    std::vector<StepSequence> batch(b);
    for (int64_t i = 0; i < b; ++i) {
      StepSequence& s = batch[i];
      s.seq_id = i;
      s.tokens = absl::MakeConstSpan(&tokens[i], 1);
      s.num_computed = o.decode_context;
      s.block_table = tables[i];
      s.sample = true;
      s.sampling = &greedy;
      s.rng_state = &rng[i];
    }
    ASSIGN_OR_RETURN(double measured, time_step(batch));
    rows.push_back({fmt::format("decode {} @{}", b, o.decode_context),
                    instance.Iteration(placement::BatchShape::Decode(
                        b, static_cast<double>(o.decode_context))),
                    measured});
  }

  std::fprintf(out, "model: %s (%s, %.3g B params, %s weights, %s KV)\n",
               model.source.c_str(), c.architecture.c_str(),
               c.ParameterCount() / 1e9, spec.weight_dtype.c_str(),
               spec.kv_dtype.c_str());
  std::fprintf(out, "profile: %s\n", profile.source.c_str());
  std::fprintf(out, "%-18s %14s %14s %9s\n", "shape", "predicted ms",
               "measured ms", "error");
  double worst = 0;
  for (const CostModelRow& r : rows) {
    std::fprintf(out, "%-18s %14.3f %14.3f %+8.1f%%\n", r.shape.c_str(),
                 r.predicted_s * 1e3, r.measured_s * 1e3, r.error() * 100);
    worst = std::max(worst, std::abs(r.error()));
  }
  std::fprintf(out, "cost-model: max |error| %.1f%% over %zu shapes\n",
               worst * 100, rows.size());
  return rows;
}

}  // namespace tessera
