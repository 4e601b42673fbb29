// `tessera simulate`: discrete-event simulation of serving a workload with a
// Plan (see placement/simulator.h).
#include <cstdio>
#include <memory>
#include <string>

#include "fmt/format.h"
#include "placement/plan.h"
#include "placement/simulator.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

struct SimulateArgs {
  std::string plan;
  std::string workload;
  double duration = 60;
  double rate = 0;
  uint64_t seed = 1;
};

int RunSimulate(const SimulateArgs& a) {
  using namespace tessera::placement;
  auto plan = LoadPlan(a.plan);
  if (!plan.ok())
    return ReportError("simulate", std::string(plan.status().message()));
  Workload workload = plan->workload;
  if (!a.workload.empty()) {
    auto w = LoadWorkload(a.workload);
    if (!w.ok())
      return ReportError("simulate", std::string(w.status().message()));
    workload = *std::move(w);
  }
  SimulationOptions o;
  o.duration_s = a.duration;
  o.seed = a.seed;
  o.arrival_rate = a.rate;
  auto r = Simulate(*plan, workload, o);
  if (!r.ok())
    return ReportError("simulate", std::string(r.status().message()));
  auto ms = [](double s) { return s * 1e3; };
  std::printf(
      "simulated %.0f s of %s on %s (%d ranks, %zu instances) at %.2f req/s\n"
      "requests: %lld arrived, %lld completed\n"
      "TTFT ms: p50 %.1f  p90 %.1f  p99 %.1f  mean %.1f\n"
      "TPOT ms: p50 %.2f  p90 %.2f  p99 %.2f  mean %.2f\n"
      "throughput: %.2f req/s, %.0f output tokens/s; mean decode batch %.1f\n"
      "goodput: %.2f req/s (%.1f%% of requests within TTFT <= %.0f ms and TPOT "
      "<= %.0f ms)\n",
      a.duration, workload.name.c_str(), plan->cluster.device.kind.c_str(),
      plan->num_ranks(), plan->instances.size(), r->arrival_rate,
      static_cast<long long>(r->arrived), static_cast<long long>(r->completed),
      ms(r->ttft_s.p50), ms(r->ttft_s.p90), ms(r->ttft_s.p99),
      ms(r->ttft_s.mean), ms(r->tpot_s.p50), ms(r->tpot_s.p90),
      ms(r->tpot_s.p99), ms(r->tpot_s.mean), r->throughput_rps,
      r->output_tokens_per_s, r->mean_decode_batch, r->goodput_rps,
      r->slo_attainment * 100, ms(workload.slo.ttft_s),
      ms(workload.slo.tpot_s));
  std::printf(
      "planner predicted: TTFT p%g %.1f ms, TPOT %.2f ms at %.2f req/s\n",
      workload.slo.percentile, ms(plan->predicted.ttft_s),
      ms(plan->predicted.tpot_s), plan->predicted.request_rate);
  return kExitOk;
}

}  // namespace

void AddSimulateCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<SimulateArgs>();
  CLI::App* sub =
      app.add_subcommand("simulate", "Simulate serving a workload with a plan");
  sub->add_option("--plan", args->plan, "Plan JSON (from tessera plan --json)")
      ->required();
  sub->add_option("--workload", args->workload,
                  "Workload JSON (default: the one recorded in the plan)");
  sub->add_option("--duration", args->duration,
                  "Seconds of arrivals to simulate")
      ->check(CLI::PositiveNumber);
  sub->add_option(
         "--rate", args->rate,
         "Arrival rate, requests/s (default: the workload's, else the plan's)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--seed", args->seed, "Random seed");
  sub->final_callback([args, exit_code] { *exit_code = RunSimulate(*args); });
}

}  // namespace tessera::cli
