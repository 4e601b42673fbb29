// `tessera plan`: search layouts for a model on a cluster, print the ranking
// and why runners-up lost, write the Plan, and emit launcher artifacts.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "base/mapped_file.h"
#include "fmt/format.h"
#include "placement/emit.h"
#include "placement/plan.h"
#include "placement/search.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

struct PlanArgs {
  std::string model;
  std::string cluster;
  std::string workload;
  int top = 5;
  std::string json_out;
  std::string emit;
  std::string mode = "auto";
};

std::string Ms(double s) {
  if (!std::isfinite(s)) return "inf";
  return fmt::format("{:.1f}", s * 1e3);
}

int RunPlan(const PlanArgs& a) {
  using namespace tessera::placement;
  auto model = LoadModelSpec(a.model);
  if (!model.ok())
    return ReportError("plan", std::string(model.status().message()));
  auto cluster = LoadCluster(a.cluster);
  if (!cluster.ok())
    return ReportError("plan", std::string(cluster.status().message()));
  Workload workload = DefaultWorkload();
  if (!a.workload.empty()) {
    auto w = LoadWorkload(a.workload);
    if (!w.ok()) return ReportError("plan", std::string(w.status().message()));
    workload = *std::move(w);
  }
  SearchOptions options;
  options.colocated = a.mode != "disaggregated";
  options.disaggregated = a.mode != "colocated";
  auto result = Search(*model, *cluster, workload, options);
  if (!result.ok())
    return ReportError("plan", std::string(result.status().message()));
  const auto& ranked = result->ranked;
  auto plan = BuildPlan(*model, *cluster, workload, ranked.front());
  if (!plan.ok())
    return ReportError("plan", std::string(plan.status().message()));

  // With --emit the artifact alone goes to stdout (so it can be piped).
  FILE* out = a.emit.empty() ? stdout : stderr;
  std::fprintf(
      out,
      "model %s: %.2fB params (%.2fB active), %.1f GB %s weights, KV %.0f "
      "KB/token\ncluster: %d node(s) x %d %s\nworkload %s: input mean "
      "%.0f, output mean %.0f tokens; SLO TTFT p%g <= %s ms, TPOT <= %s ms\n"
      "%d layouts evaluated, %d infeasible\n\n",
      model->name.c_str(), model->TotalParams() / 1e9,
      model->ActiveParams() / 1e9, model->WeightBytes() / 1e9,
      model->weight_dtype.c_str(), model->KvBytesPerToken() / 1024,
      cluster->num_nodes(), cluster->devices_per_node,
      cluster->device.kind.c_str(), workload.name.c_str(), workload.input.mean,
      workload.output.mean, workload.slo.percentile,
      workload.slo.ttft_s > 0 ? Ms(workload.slo.ttft_s).c_str() : "-",
      workload.slo.tpot_s > 0 ? Ms(workload.slo.tpot_s).c_str() : "-",
      result->evaluated, result->infeasible);
  std::string table = fmt::format(
      "{:>2}  {:<38} {:>4} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "#",
      "candidate", "devs", "TTFT ms", "TPOT ms", "thru r/s", "good r/s",
      "good/dev", "wts GB/rk", "KV tokens");
  const int top =
      std::max(1, std::min<int>(a.top, static_cast<int>(ranked.size())));
  for (int i = 0; i < top; ++i) {
    const Candidate& c = ranked[i];
    table += fmt::format(
        "{:>2}  {:<38} {:>4} {:>9} {:>8} {:>9.2f} {:>9.2f} {:>9.3f} {:>9.1f} "
        "{:>9.0f}\n",
        i + 1, c.Name(), c.devices_used, Ms(c.metrics.ttft_s),
        Ms(c.metrics.tpot_s), c.metrics.throughput_rps, c.metrics.goodput_rps,
        c.metrics.goodput_per_device, c.metrics.weights_per_rank_bytes / 1e9,
        c.metrics.kv_capacity_tokens);
  }
  std::fputs(table.c_str(), out);
  std::fprintf(out, "(TTFT at p%g and TPOT predicted at %.2f req/s%s)\n\n",
               workload.slo.percentile, ranked.front().metrics.request_rate,
               workload.arrival_rate > 0 ? ", the workload's rate"
                                         : ", the best plan's goodput");
  std::fprintf(out, "chosen: %s\n  %s\n", ranked.front().Name().c_str(),
               plan->rationale.c_str());
  for (const PlanInstance& in : plan->instances) {
    std::string stages;
    for (const PlanStage& s : in.stages) {
      stages += fmt::format("{}[{},{})", stages.empty() ? "" : " ",
                            s.layer_begin, s.layer_end);
    }
    std::fprintf(out,
                 "  instance %d (%s): TP%d PP%d EP%d, ranks %d-%d, layers %s, "
                 "KV %lld blocks\n",
                 in.id, RoleName(in.role), in.layout.tp, in.layout.pp,
                 in.layout.ep, in.ranks.front().rank, in.ranks.back().rank,
                 stages.c_str(),
                 static_cast<long long>(in.kv_cache.num_blocks));
  }
  if (top > 1) {
    std::fprintf(out, "\nwhy the runners-up lost:\n");
    for (int i = 1; i < top; ++i) {
      std::fprintf(out, "  %d. %s: %s\n", i + 1, ranked[i].Name().c_str(),
                   ExplainLoss(ranked.front(), ranked[i], workload).c_str());
    }
  }
  const std::string plan_path = a.json_out.empty() ? "plan.json" : a.json_out;
  if (!a.json_out.empty()) {
    absl::Status st = WritePlan(*plan, a.json_out);
    if (!st.ok()) return ReportError("plan", std::string(st.message()));
    std::fprintf(out, "\nwrote %s\n", a.json_out.c_str());
  }
  if (a.emit == "mpirun") {
    std::fputs(EmitMpirun(*plan, plan_path, a.model).c_str(), stdout);
  } else if (a.emit == "helm-values") {
    std::fputs(EmitHelmValues(*plan, plan_path).c_str(), stdout);
  }
  return kExitOk;
}

}  // namespace

void AddPlanCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* sub = app.add_subcommand(
      "plan", "Plan the parallel layout for a model on a cluster");
  sub->add_option("--model", args->model,
                  "HF config.json, a folder holding one, or a .gguf file")
      ->required();
  sub->add_option("--cluster", args->cluster, "Cluster description (JSON)")
      ->required();
  sub->add_option(
      "--workload", args->workload,
      "Workload (JSON): lengths, arrival rate, SLOs (default: chat)");
  sub->add_option("--top", args->top, "Candidates to show")
      ->check(CLI::Range(1, 1000));
  sub->add_option("--json", args->json_out,
                  "Write the chosen Plan to this file");
  sub->add_option("--emit", args->emit,
                  "Print launcher artifacts: mpirun or helm-values")
      ->check(CLI::IsMember({"mpirun", "helm-values"}));
  sub->add_option("--mode", args->mode, "auto, colocated or disaggregated")
      ->check(CLI::IsMember({"auto", "colocated", "disaggregated"}));
  sub->final_callback([args, exit_code] { *exit_code = RunPlan(*args); });
}

}  // namespace tessera::cli
