// `tessera bench serve`: a streaming load generator for any OpenAI-compatible
// server (tessera, vLLM, llama.cpp's server), reporting like vLLM's
// benchmarks/serve.py so both can be read side by side.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

struct BenchServeOptions {
  std::string base_url = "http://127.0.0.1:8000";
  std::string endpoint = "/v1/completions";
  std::string model;  // Empty: the first model of GET /v1/models.
  std::string api_key;
  int64_t num_prompts = 100;
  // Poisson arrivals at this rate (req/s); infinity sends all at once.
  double request_rate = std::numeric_limits<double>::infinity();
  int64_t max_concurrency = 0;  // 0 = unlimited.
  int64_t random_input_len = 1024;
  int64_t random_output_len = 128;
  double random_range_ratio = 0.0;  // Lengths uniform in [L(1-r), L(1+r)].
  // Prompt token ids are drawn from [10, random_vocab_size).
  int64_t random_vocab_size = 250;
  uint64_t seed = 0;
  // Goodput SLOs in milliseconds (<= 0: not used).
  double goodput_ttft_ms = 0, goodput_tpot_ms = 0, goodput_e2el_ms = 0;
  bool progress = false;  // Progress bar on stdout.
  int timeout_s = 600;
};

// One request's outcome.
struct BenchRequestResult {
  bool success = false;
  std::string error;
  int64_t prompt_len = 0;
  int64_t output_tokens = 0;
  double arrival_s = 0;       // Scheduled send time, from the run's start.
  double ttft_s = 0;          // Time to the first content chunk.
  double latency_s = 0;       // Until the stream ended.
  std::vector<double> itl_s;  // Gaps between content chunks.
};

struct BenchServeReport {
  BenchServeOptions options;
  std::string model;
  double duration_s = 0;
  int64_t completed = 0;
  int64_t failed = 0;
  int64_t total_input = 0;
  int64_t total_output = 0;
  int64_t good = 0;  // Requests meeting every goodput SLO.
  std::vector<BenchRequestResult> results;
  // Derived, in milliseconds: {mean, median, std, p99} per metric.
  struct Stat {
    double mean = 0, median = 0, std = 0, p99 = 0;
  };
  Stat ttft, tpot, itl, e2el;
  double request_throughput = 0, request_goodput = 0, output_throughput = 0,
         total_token_throughput = 0;
  // From the server's /metrics before and after the run, when it exports
  // tessera's engine counters (steps < 0 otherwise, e.g. against vLLM).
  struct EngineSplit {
    double steps = -1;
    double model_s = 0;
    double overhead_s = 0;
  } engine;
};

// Sums each of tessera's engine counters (tessera:engine_steps_total,
// model_step_seconds_total, engine_overhead_seconds_total) over label sets in
// a Prometheus text exposition; steps < 0 when absent.
BenchServeReport::EngineSplit ParseEngineCounters(std::string_view metrics);

// Runs the benchmark. InvalidArgument for bad options; Unavailable when the
// server cannot be reached before the run (individual failures are counted).
absl::StatusOr<BenchServeReport> RunBenchServe(
    const BenchServeOptions& options);

// vLLM's "Serving Benchmark Result" text block.
std::string FormatBenchServeReport(const BenchServeReport& report);
// vLLM-style result JSON (summary plus per-request lists).
std::string BenchServeReportJson(const BenchServeReport& report);

}  // namespace tessera
