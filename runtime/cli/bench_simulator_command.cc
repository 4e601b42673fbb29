// `tessera bench simulator`: the planner's simulator vs a measured served load
// (see runtime/bench_simulator.h).
#include <cstdio>
#include <memory>
#include <string>

#include "base/mapped_file.h"
#include "base/status.h"
#include "placement/cluster.h"
#include "runtime/bench_simulator.h"
#include "runtime/calibration.h"
#include "runtime/cli/internal/command.h"
#include "runtime/cli/internal/model_options.h"

namespace tessera::cli {
namespace {

struct Options {
  ModelOptions model;
  BenchSimulatorOptions bench;
  std::string profile;
};

absl::Status Run(Options& o) {
  o.bench.threads = o.model.threads;
  ASSIGN_OR_RETURN(placement::DeviceProfile profile,
                   LoadProfileOrCalibrate(o.profile, o.model.threads));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelAndTokenizer(o.model));
  if (loaded.tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        "serving needs a tokenizer: pass --tokenizer PATH");
  }
  return RunBenchSimulator(*loaded.model, *loaded.tokenizer, profile, o.bench,
                           stdout)
      .status();
}

}  // namespace

void AddBenchSimulatorCommand(CLI::App& bench, int* exit_code) {
  auto opts = std::make_shared<Options>();
  CLI::App* sub = bench.add_subcommand(
      "simulator",
      "Serve a model here under Poisson load and compare the measured "
      "TTFT/TPOT with the planner's simulation of the same load");
  AddModelOptions(*sub, &opts->model);
  auto& b = opts->bench;
  sub->add_option("--profile", opts->profile,
                  "Device profile from `tessera calibrate --out` (default: "
                  "calibrate now)");
  sub->add_option("--request-rate", b.request_rate, "Poisson arrivals, req/s")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--num-prompts", b.num_prompts, "Requests to send")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--random-input-len", b.input_len, "Prompt tokens")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--random-output-len", b.output_len, "Output tokens")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  sub->add_option("--max-num-seqs", b.max_num_seqs, "Engine: sequences/step")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_option("--max-num-batched-tokens", b.max_num_batched_tokens,
                  "Engine: tokens/step")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--seed", b.seed, "Seed of lengths, prompts and arrivals")
      ->capture_default_str();
  sub->final_callback([opts, exit_code] {
    absl::Status status = Run(*opts);
    *exit_code = status.ok() ? kExitOk
                             : ReportError("bench simulator",
                                           std::string(status.message()));
  });
}

}  // namespace tessera::cli
