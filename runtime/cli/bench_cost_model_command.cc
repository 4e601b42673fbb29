// `tessera bench cost-model`: predicted vs measured step times (see
// runtime/bench_cost_model.h).
#include <cstdio>
#include <memory>
#include <string>

#include "base/mapped_file.h"
#include "base/status.h"
#include "placement/cluster.h"
#include "runtime/bench_cost_model.h"
#include "runtime/calibration.h"
#include "runtime/cli/internal/command.h"
#include "runtime/cli/internal/model_options.h"

namespace tessera::cli {
namespace {

struct Options {
  ModelOptions model;
  BenchCostModelOptions bench;
  std::string profile;
  std::string kv_dtype = "f32";
};

absl::Status Run(Options& o) {
  ASSIGN_OR_RETURN(o.bench.kv_dtype, ParseDType(o.kv_dtype));
  o.bench.threads = o.model.threads;
  ASSIGN_OR_RETURN(placement::DeviceProfile profile,
                   LoadProfileOrCalibrate(o.profile, o.model.threads));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelAndTokenizer(o.model));
  return RunBenchCostModel(*loaded.model, profile, o.bench, stdout).status();
}

}  // namespace

void AddBenchCostModelCommand(CLI::App& bench, int* exit_code) {
  auto opts = std::make_shared<Options>();
  CLI::App* sub = bench.add_subcommand(
      "cost-model",
      "The planner's predicted prefill/decode step times on the calibrated "
      "cpu-local profile vs the measured ones");
  AddModelOptions(*sub, &opts->model);
  sub->add_option("--profile", opts->profile,
                  "Device profile from `tessera calibrate --out` (default: "
                  "calibrate now)");
  sub->add_option("--prompt-lens", opts->bench.prompt_lens,
                  "Prompt lengths of the prefill steps")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--batches", opts->bench.decode_batches,
                  "Sequences per decode step")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--context", opts->bench.decode_context,
                  "Cached tokens per decoding sequence")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  sub->add_option("--kv-dtype", opts->kv_dtype, "KV cache dtype: f32|f16|bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  sub->add_option("--seconds", opts->bench.min_seconds,
                  "Minimum seconds per measured shape")
      ->check(CLI::Range(0.01, 600.0))
      ->capture_default_str();
  sub->final_callback([opts, exit_code] {
    absl::Status status = Run(*opts);
    *exit_code = status.ok() ? kExitOk
                             : ReportError("bench cost-model",
                                           std::string(status.message()));
  });
}

}  // namespace tessera::cli
