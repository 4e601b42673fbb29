#include "runtime/bench_serve.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>

#include "base/random.h"
#include "fmt/format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "runtime/internal/openai_protocol.h"

namespace tessera {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

BenchServeReport::Stat Summarize(std::vector<double> v) {
  BenchServeReport::Stat s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  double var = 0;
  for (double x : v) var += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(var / v.size());
  // numpy's default (linear interpolation) percentiles.
  auto pct = [&](double p) {
    const double idx = p / 100.0 * (v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(idx));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (idx - lo);
  };
  s.median = pct(50);
  s.p99 = pct(99);
  for (double* x : {&s.mean, &s.median, &s.std, &s.p99}) *x *= 1000.0;
  return s;
}

httplib::Headers AuthHeaders(const BenchServeOptions& o) {
  httplib::Headers h;
  if (!o.api_key.empty()) h.emplace("Authorization", "Bearer " + o.api_key);
  return h;
}

std::unique_ptr<httplib::Client> MakeClient(const BenchServeOptions& o) {
  auto c = std::make_unique<httplib::Client>(o.base_url);
  c->set_connection_timeout(10, 0);
  c->set_read_timeout(o.timeout_s, 0);
  c->set_write_timeout(30, 0);
  return c;
}

// Sends one streaming completion and times its chunks.
BenchRequestResult SendOne(const BenchServeOptions& o, const std::string& model,
                           const std::vector<int32_t>& prompt,
                           int64_t max_tokens) {
  BenchRequestResult r;
  r.prompt_len = static_cast<int64_t>(prompt.size());
  const bool chat = o.endpoint.find("chat") != std::string::npos;
  json body = {
      {"model", model},   {"max_tokens", max_tokens},
      {"temperature", 0}, {"ignore_eos", true},
      {"stream", true},   {"stream_options", {{"include_usage", true}}}};
  if (chat) {
    // Chat has no token-id prompts; send the ids as text.
    std::string text;
    for (int32_t t : prompt) text += fmt::format("{} ", t);
    body["messages"] = json::array({{{"role", "user"}, {"content", text}}});
  } else {
    body["prompt"] = prompt;
  }
  auto client = MakeClient(o);
  httplib::Request req;
  req.method = "POST";
  req.path = o.endpoint;
  req.headers = AuthHeaders(o);
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string buffer;
  std::string error_body;
  int64_t content_chunks = 0;
  int64_t usage_tokens = -1;
  bool got_done = false;
  const auto start = Clock::now();
  auto last = start;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    buffer.append(data, len);
    size_t pos;
    while ((pos = buffer.find("\n\n")) != std::string::npos) {
      std::string ev = buffer.substr(0, pos);
      buffer.erase(0, pos + 2);
      if (ev.rfind("data: ", 0) != 0) continue;
      ev.erase(0, 6);
      const internal::StreamEvent e = internal::ParseStreamEvent(ev, chat);
      if (e.kind == internal::StreamEvent::Kind::kDone) {
        got_done = true;
        continue;
      }
      if (e.kind == internal::StreamEvent::Kind::kError) {
        error_body = e.error;
        return false;
      }
      if (e.completion_tokens >= 0) usage_tokens = e.completion_tokens;
      const std::string& text = e.text;
      if (text.empty()) continue;
      const auto now = Clock::now();
      if (content_chunks == 0) {
        r.ttft_s = Seconds(now - start);
      } else {
        r.itl_s.push_back(Seconds(now - last));
      }
      last = now;
      ++content_chunks;
    }
    return true;
  };
  // A non-200 reply comes through the receiver too; keep it as the error.
  auto res = client->send(req);
  r.latency_s = Seconds(Clock::now() - start);
  if (!res) {
    r.error = error_body.empty() ? "HTTP " + httplib::to_string(res.error())
                                 : error_body;
    return r;
  }
  if (res->status != 200) {
    r.error = fmt::format("HTTP {}: {}", res->status,
                          error_body.empty() ? buffer : error_body);
    return r;
  }
  if (!got_done || content_chunks == 0) {
    r.error = got_done ? "no content" : "stream ended without [DONE]";
    return r;
  }
  r.output_tokens = usage_tokens >= 0 ? usage_tokens : content_chunks;
  r.success = true;
  return r;
}

}  // namespace

BenchServeReport::EngineSplit ParseEngineCounters(std::string_view text) {
  BenchServeReport::EngineSplit e;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    // `name{labels} value` or `name value`.
    const size_t name_end = line.find_first_of("{ ");
    const size_t value_at = line.rfind(' ');
    if (name_end == std::string_view::npos ||
        value_at == std::string_view::npos)
      continue;
    const std::string_view name = line.substr(0, name_end);
    const double value =
        std::strtod(std::string(line.substr(value_at + 1)).c_str(), nullptr);
    if (name == "tessera:engine_steps_total") {
      e.steps = std::max(e.steps, 0.0) + value;
    } else if (name == "tessera:model_step_seconds_total") {
      e.model_s += value;
    } else if (name == "tessera:engine_overhead_seconds_total") {
      e.overhead_s += value;
    }
  }
  return e;
}

namespace {

BenchServeReport::EngineSplit ScrapeEngineCounters(const BenchServeOptions& o) {
  auto client = MakeClient(o);
  auto res = client->Get("/metrics", AuthHeaders(o));
  if (!res || res->status != 200) return {};
  return ParseEngineCounters(res->body);
}

}  // namespace

absl::StatusOr<BenchServeReport> RunBenchServe(const BenchServeOptions& o) {
  if (o.num_prompts <= 0) {
    return absl::InvalidArgumentError("--num-prompts must be positive");
  }
  if (o.random_input_len <= 0 || o.random_output_len <= 0) {
    return absl::InvalidArgumentError(
        "--random-input-len and --random-output-len must be positive");
  }
  if (o.random_range_ratio < 0 || o.random_range_ratio >= 1) {
    return absl::InvalidArgumentError("--random-range-ratio must be in [0, 1)");
  }
  if (!(o.request_rate > 0)) {
    return absl::InvalidArgumentError("--request-rate must be positive");
  }
  if (o.random_vocab_size <= 11) {
    return absl::InvalidArgumentError("--random-vocab-size must exceed 11");
  }
  BenchServeReport report;
  report.options = o;
  report.model = o.model;
  {
    auto client = MakeClient(o);
    if (!client->is_valid()) {
      return absl::InvalidArgumentError("bad --base-url " + o.base_url);
    }
    auto res = client->Get("/v1/models", AuthHeaders(o));
    if (!res) {
      return absl::UnavailableError(fmt::format(
          "cannot reach {}: {}", o.base_url, httplib::to_string(res.error())));
    }
    if (report.model.empty()) {
      json j = json::parse(res->body, nullptr, false);
      if (res->status != 200 || j.is_discarded() || !j.contains("data") ||
          !j["data"].is_array() || j["data"].empty()) {
        return absl::UnavailableError(fmt::format(
            "GET /v1/models failed (HTTP {}); pass --model", res->status));
      }
      report.model = j["data"][0].value("id", std::string());
    }
  }

  // Requests: lengths, prompts and arrival offsets, all from the seed.
  SplitMix64 rng(o.seed);
  auto length = [&](int64_t base) {
    const int64_t lo = std::max<int64_t>(
        1, static_cast<int64_t>(std::floor(base * (1 - o.random_range_ratio))));
    const int64_t hi =
        static_cast<int64_t>(std::ceil(base * (1 + o.random_range_ratio)));
    return lo + static_cast<int64_t>(rng.Next() %
                                     static_cast<uint64_t>(hi - lo + 1));
  };
  const size_t n = static_cast<size_t>(o.num_prompts);
  std::vector<std::vector<int32_t>> prompts(n);
  std::vector<int64_t> max_tokens(n);
  std::vector<double> arrival(n, 0.0);
  double t = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = length(o.random_input_len);
    max_tokens[i] = length(o.random_output_len);
    for (int64_t k = 0; k < in; ++k) {
      prompts[i].push_back(static_cast<int32_t>(
          10 + rng.Next() % static_cast<uint64_t>(o.random_vocab_size - 10)));
    }
    if (std::isfinite(o.request_rate)) {
      arrival[i] = t;
      t += -std::log(1.0 - rng.Uniform()) / o.request_rate;
    }
  }

  report.results.resize(n);
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  const size_t workers = std::min<size_t>(
      n, o.max_concurrency > 0 ? static_cast<size_t>(o.max_concurrency)
                               : std::min<size_t>(n, 4096));
  std::mutex print_mu;
  auto draw_progress = [&] {
    if (!o.progress) return;
    std::lock_guard<std::mutex> lock(print_mu);
    const size_t d = done.load();
    const int width = 40;
    const int filled = static_cast<int>(width * d / n);
    std::printf("\r%3zu%%|%s%s| %zu/%zu", 100 * d / n,
                std::string(filled, '#').c_str(),
                std::string(width - filled, ' ').c_str(), d, n);
    std::fflush(stdout);
  };
  const BenchServeReport::EngineSplit engine_before = ScrapeEngineCounters(o);
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  threads.reserve(workers);
  for (size_t w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
        std::this_thread::sleep_until(
            start + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(arrival[i])));
        report.results[i] = SendOne(o, report.model, prompts[i], max_tokens[i]);
        report.results[i].arrival_s = arrival[i];
        done.fetch_add(1);
        draw_progress();
      }
    });
  }
  for (auto& th : threads) th.join();
  report.duration_s = Seconds(Clock::now() - start);
  if (o.progress) std::printf("\n");
  if (engine_before.steps >= 0) {
    const BenchServeReport::EngineSplit after = ScrapeEngineCounters(o);
    if (after.steps >= engine_before.steps) {
      report.engine.steps = after.steps - engine_before.steps;
      report.engine.model_s = after.model_s - engine_before.model_s;
      report.engine.overhead_s = after.overhead_s - engine_before.overhead_s;
    }
  }

  std::vector<double> ttfts, tpots, itls, e2els;
  for (const auto& r : report.results) {
    if (!r.success) {
      ++report.failed;
      continue;
    }
    ++report.completed;
    report.total_input += r.prompt_len;
    report.total_output += r.output_tokens;
    ttfts.push_back(r.ttft_s);
    e2els.push_back(r.latency_s);
    double tpot = 0;
    if (r.output_tokens > 1) {
      tpot =
          (r.latency_s - r.ttft_s) / static_cast<double>(r.output_tokens - 1);
      tpots.push_back(tpot);
    }
    itls.insert(itls.end(), r.itl_s.begin(), r.itl_s.end());
    const bool good =
        (o.goodput_ttft_ms <= 0 || r.ttft_s * 1000 <= o.goodput_ttft_ms) &&
        (o.goodput_tpot_ms <= 0 || tpot * 1000 <= o.goodput_tpot_ms) &&
        (o.goodput_e2el_ms <= 0 || r.latency_s * 1000 <= o.goodput_e2el_ms);
    if (good) ++report.good;
  }
  report.ttft = Summarize(ttfts);
  report.tpot = Summarize(tpots);
  report.itl = Summarize(itls);
  report.e2el = Summarize(e2els);
  const double d = std::max(report.duration_s, 1e-9);
  report.request_throughput = report.completed / d;
  report.request_goodput = report.good / d;
  report.output_throughput = report.total_output / d;
  report.total_token_throughput =
      (report.total_input + report.total_output) / d;
  return report;
}

std::string FormatBenchServeReport(const BenchServeReport& r) {
  const auto& o = r.options;
  std::string out;
  auto line = [&](const std::string& label, const std::string& value) {
    out += fmt::format("{:<40} {:<10}\n", label, value);
  };
  auto num = [](double v) { return fmt::format("{:.2f}", v); };
  out += fmt::format("{:=^50}\n", " Serving Benchmark Result ");
  line("Successful requests:", std::to_string(r.completed));
  line("Failed requests:", std::to_string(r.failed));
  if (o.max_concurrency > 0) {
    line("Maximum request concurrency:", std::to_string(o.max_concurrency));
  }
  if (std::isfinite(o.request_rate)) {
    line("Request rate configured (RPS):", num(o.request_rate));
  }
  line("Benchmark duration (s):", num(r.duration_s));
  line("Total input tokens:", std::to_string(r.total_input));
  line("Total generated tokens:", std::to_string(r.total_output));
  line("Request throughput (req/s):", num(r.request_throughput));
  const bool goodput =
      o.goodput_ttft_ms > 0 || o.goodput_tpot_ms > 0 || o.goodput_e2el_ms > 0;
  if (goodput) line("Request goodput (req/s):", num(r.request_goodput));
  line("Output token throughput (tok/s):", num(r.output_throughput));
  line("Total Token throughput (tok/s):", num(r.total_token_throughput));
  auto metric = [&](const char* header, const char* name,
                    const BenchServeReport::Stat& s) {
    out += fmt::format("{:-^50}\n", header);
    line(fmt::format("Mean {} (ms):", name), num(s.mean));
    line(fmt::format("Median {} (ms):", name), num(s.median));
    line(fmt::format("P99 {} (ms):", name), num(s.p99));
  };
  metric("Time to First Token", "TTFT", r.ttft);
  metric("Time per Output Token (excl. 1st token)", "TPOT", r.tpot);
  metric("Inter-token Latency", "ITL", r.itl);
  metric("End-to-end Latency", "E2EL", r.e2el);
  if (r.engine.steps > 0) {
    // tessera's own lines (the server exported its engine counters).
    out += fmt::format("{:-^50}\n", "Engine Steps (server /metrics)");
    line("Engine steps:", fmt::format("{:.0f}", r.engine.steps));
    line("Mean model time per step (ms):",
         num(1e3 * r.engine.model_s / r.engine.steps));
    line("Mean engine overhead per step (ms):",
         num(1e3 * r.engine.overhead_s / r.engine.steps));
    line("Engine overhead (% of step):",
         num(100 * r.engine.overhead_s /
             std::max(1e-12, r.engine.model_s + r.engine.overhead_s)));
  }
  out += std::string(50, '=') + "\n";
  return out;
}

std::string BenchServeReportJson(const BenchServeReport& r) {
  const auto& o = r.options;
  json j;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y%m%d-%H%M%S", std::localtime(&now));
  j["date"] = date;
  j["backend"] = "openai";
  j["base_url"] = o.base_url;
  j["endpoint"] = o.endpoint;
  j["model_id"] = r.model;
  j["num_prompts"] = o.num_prompts;
  j["request_rate"] =
      std::isfinite(o.request_rate) ? json(o.request_rate) : json("inf");
  j["max_concurrency"] =
      o.max_concurrency > 0 ? json(o.max_concurrency) : json(nullptr);
  j["random_input_len"] = o.random_input_len;
  j["random_output_len"] = o.random_output_len;
  j["random_range_ratio"] = o.random_range_ratio;
  j["seed"] = o.seed;
  j["duration"] = r.duration_s;
  j["completed"] = r.completed;
  j["failed"] = r.failed;
  j["total_input_tokens"] = r.total_input;
  j["total_output_tokens"] = r.total_output;
  j["request_throughput"] = r.request_throughput;
  j["request_goodput"] = r.request_goodput;
  j["output_throughput"] = r.output_throughput;
  j["total_token_throughput"] = r.total_token_throughput;
  auto stat = [&](const char* name, const BenchServeReport::Stat& s) {
    j[fmt::format("mean_{}_ms", name)] = s.mean;
    j[fmt::format("median_{}_ms", name)] = s.median;
    j[fmt::format("std_{}_ms", name)] = s.std;
    j[fmt::format("p99_{}_ms", name)] = s.p99;
  };
  stat("ttft", r.ttft);
  stat("tpot", r.tpot);
  stat("itl", r.itl);
  stat("e2el", r.e2el);
  if (r.engine.steps > 0) {
    j["engine_steps"] = r.engine.steps;
    j["engine_model_seconds"] = r.engine.model_s;
    j["engine_overhead_seconds"] = r.engine.overhead_s;
  }
  json input_lens = json::array(), output_lens = json::array(),
       ttfts = json::array(), itls = json::array(), errors = json::array();
  for (const auto& x : r.results) {
    input_lens.push_back(x.prompt_len);
    output_lens.push_back(x.output_tokens);
    ttfts.push_back(x.ttft_s);
    itls.push_back(x.itl_s);
    errors.push_back(x.error);
  }
  j["input_lens"] = input_lens;
  j["output_lens"] = output_lens;
  j["ttfts"] = ttfts;
  j["itls"] = itls;
  j["errors"] = errors;
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

}  // namespace tessera
