// `tessera bench serve`: load-test an OpenAI-compatible server.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "runtime/bench_serve.h"
#include "runtime/cli/internal/command.h"

namespace tessera::cli {
namespace {

struct Flags {
  BenchServeOptions options;
  double request_rate = 0;  // 0 = inf.
  std::vector<std::string> goodput;
  std::string json_path;
};

// Parses "ttft:MS tpot:MS e2el:MS" pairs.
bool ParseGoodput(const std::vector<std::string>& items, BenchServeOptions* o,
                  std::string* error) {
  for (const auto& item : items) {
    const size_t colon = item.find(':');
    if (colon == std::string::npos) {
      *error = fmt::format("--goodput wants NAME:MS, got '{}'", item);
      return false;
    }
    const std::string name = item.substr(0, colon);
    double ms = 0;
    try {
      ms = std::stod(item.substr(colon + 1));
    } catch (...) {
      *error = fmt::format("--goodput: bad number in '{}'", item);
      return false;
    }
    if (ms <= 0) {
      *error = fmt::format("--goodput: '{}' must be positive", item);
      return false;
    }
    if (name == "ttft") {
      o->goodput_ttft_ms = ms;
    } else if (name == "tpot") {
      o->goodput_tpot_ms = ms;
    } else if (name == "e2el") {
      o->goodput_e2el_ms = ms;
    } else {
      *error = fmt::format("--goodput: unknown metric '{}' (ttft, tpot, e2el)",
                           name);
      return false;
    }
  }
  return true;
}

int Run(Flags& f) {
  BenchServeOptions& o = f.options;
  if (f.request_rate > 0) o.request_rate = f.request_rate;
  std::string error;
  if (!ParseGoodput(f.goodput, &o, &error)) {
    std::fprintf(stderr, "tessera bench serve: %s\n", error.c_str());
    return kExitUsage;
  }
  o.progress = ::isatty(STDOUT_FILENO) == 1;
  auto report = RunBenchServe(o);
  if (!report.ok()) {
    if (report.status().code() == absl::StatusCode::kInvalidArgument) {
      std::fprintf(stderr, "tessera bench serve: %s\n",
                   std::string(report.status().message()).c_str());
      return kExitUsage;
    }
    return ReportError("bench serve", std::string(report.status().message()));
  }
  std::fputs(FormatBenchServeReport(*report).c_str(), stdout);
  for (const auto& r : report->results) {
    if (!r.success) {
      std::fprintf(stderr, "first failure: %s\n", r.error.c_str());
      break;
    }
  }
  if (!f.json_path.empty()) {
    std::ofstream out(f.json_path);
    out << BenchServeReportJson(*report) << "\n";
    if (!out) {
      return ReportError("bench serve", "cannot write " + f.json_path);
    }
  }
  return kExitOk;
}

}  // namespace

void AddBenchServeCommand(CLI::App& bench, int* exit_code) {
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = bench.add_subcommand(
      "serve", "Load-test an OpenAI-compatible server (vLLM-style report)");
  BenchServeOptions& o = flags->options;
  sub->add_option("--base-url", o.base_url, "Server URL")
      ->capture_default_str();
  sub->add_option("--endpoint", o.endpoint,
                  "API path (/v1/completions or /v1/chat/completions)")
      ->capture_default_str();
  sub->add_option("--model", o.model,
                  "Model name (default: the server's first model)");
  sub->add_option("--api-key", o.api_key, "Bearer token");
  sub->add_option("--num-prompts", o.num_prompts, "Requests to send")
      ->capture_default_str();
  sub->add_option("--request-rate", flags->request_rate,
                  "Poisson arrival rate in req/s (default: all at once)");
  sub->add_option("--max-concurrency", o.max_concurrency,
                  "Requests in flight at most (default: unlimited)");
  sub->add_option("--random-input-len", o.random_input_len,
                  "Prompt tokens per request")
      ->capture_default_str();
  sub->add_option("--random-output-len", o.random_output_len,
                  "Generated tokens per request (ignore_eos)")
      ->capture_default_str();
  sub->add_option("--random-range-ratio", o.random_range_ratio,
                  "Lengths vary uniformly by this fraction")
      ->capture_default_str();
  sub->add_option("--random-vocab-size", o.random_vocab_size,
                  "Prompt token ids are drawn from [10, N)")
      ->capture_default_str();
  sub->add_option("--seed", o.seed, "Random seed")->capture_default_str();
  sub->add_option("--goodput", flags->goodput,
                  "SLOs as ttft:MS tpot:MS e2el:MS")
      ->expected(1, 3);
  sub->add_option("--json", flags->json_path, "Write results as JSON");
  sub->add_option("--timeout", o.timeout_s, "Per-request read timeout (s)")
      ->capture_default_str();
  sub->final_callback([flags, exit_code] { *exit_code = Run(*flags); });
}

}  // namespace tessera::cli
