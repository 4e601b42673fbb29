#include <cstdio>
#include <memory>

#include "runtime/bench_decode.h"
#include "runtime/cli/internal/command.h"
#include "runtime/cli/internal/model_options.h"

namespace tessera::cli {

void AddBenchDecodeCommand(CLI::App& bench, int* exit_code) {
  struct Options {
    ModelOptions model;
    BenchDecodeOptions bench;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* sub = bench.add_subcommand("decode",
                                       "Single-stream prefill and decode speed "
                                       "against the memory/compute rooflines");
  AddModelOptions(*sub, &opts->model);
  sub->add_option("--tokens", opts->bench.decode_tokens, "Tokens to decode")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  sub->add_option("--prompt-tokens", opts->bench.prompt_tokens,
                  "Prompt (prefill) length")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--repeats", opts->bench.repeats, "Best of this many runs")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  sub->final_callback([opts, exit_code] {
    opts->bench.threads = opts->model.threads;
    auto loaded = LoadModelAndTokenizer(opts->model);
    absl::Status status = loaded.status();
    if (status.ok())
      status = RunBenchDecode(*loaded->model, opts->bench, stdout);
    *exit_code = status.ok() ? kExitOk
                             : ReportError("bench decode",
                                           std::string(status.message()));
  });
}

}  // namespace tessera::cli
