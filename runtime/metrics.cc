#include "runtime/metrics.h"

#include <algorithm>
#include <cmath>

#include "base/logging.h"
#include "fmt/format.h"

namespace tessera {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  TESSERA_CHECK(std::is_sorted(bounds_.begin(), bounds_.end()));
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  const size_t i = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

uint64_t Histogram::cumulative_count(size_t i) const {
  uint64_t total = 0;
  for (size_t b = 0; b <= i && b <= bounds_.size(); ++b) {
    total += buckets_[b].load(std::memory_order_relaxed);
  }
  return total;
}

template <typename T>
T* MetricFamily<T>::Labels(const std::vector<std::string>& label_values) {
  TESSERA_CHECK(label_values.size() == label_names_.size(),
                "metric {}: {} label values for {} names", name_,
                label_values.size(), label_names_.size());
  std::lock_guard<std::mutex> lock(mu_);
  auto& child = children_[label_values];
  if (!child) {
    if constexpr (std::is_same_v<T, Histogram>) {
      child = std::make_unique<Histogram>(bounds_);
    } else {
      child = std::make_unique<T>();
    }
  }
  return child.get();
}

template class MetricFamily<Counter>;
template class MetricFamily<Gauge>;
template class MetricFamily<Histogram>;

MetricFamily<Counter>* MetricsRegistry::AddCounter(
    const std::string& name, const std::string& help,
    std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e{MetricType::kCounter};
  e.counter = std::make_unique<MetricFamily<Counter>>(name, help,
                                                      std::move(label_names));
  entries_.push_back(std::move(e));
  return entries_.back().counter.get();
}

MetricFamily<Gauge>* MetricsRegistry::AddGauge(
    const std::string& name, const std::string& help,
    std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e{MetricType::kGauge};
  e.gauge =
      std::make_unique<MetricFamily<Gauge>>(name, help, std::move(label_names));
  entries_.push_back(std::move(e));
  return entries_.back().gauge.get();
}

MetricFamily<Histogram>* MetricsRegistry::AddHistogram(
    const std::string& name, const std::string& help,
    std::vector<std::string> label_names, std::vector<double> bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e{MetricType::kHistogram};
  e.histogram = std::make_unique<MetricFamily<Histogram>>(
      name, help, std::move(label_names), std::move(bounds));
  entries_.push_back(std::move(e));
  return entries_.back().histogram.get();
}

namespace {

std::string EscapeHelp(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeLabel(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

// `{a="x",b="y"}` (empty when no labels), with an optional extra label.
std::string LabelString(const std::vector<std::string>& names,
                        const std::vector<std::string>& values,
                        const std::string& extra_name = "",
                        const std::string& extra_value = "") {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ",";
    out += fmt::format("{}=\"{}\"", names[i], EscapeLabel(values[i]));
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ",";
    out += fmt::format("{}=\"{}\"", extra_name, EscapeLabel(extra_value));
  }
  return out + "}";
}

template <typename F>
void Header(const F& family, const char* type, std::string* out) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", family.name(),
                      EscapeHelp(family.help()), family.name(), type);
}

}  // namespace

std::string MetricsRegistry::Serialize() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const Entry& e : entries_) {
    switch (e.type) {
      case MetricType::kCounter: {
        const auto& f = *e.counter;
        Header(f, "counter", &out);
        f.ForEach(
            [&](const std::vector<std::string>& labels, const Counter& c) {
              out += fmt::format("{}{} {}\n", f.name(),
                                 LabelString(f.label_names(), labels),
                                 FormatValue(c.value()));
            });
        break;
      }
      case MetricType::kGauge: {
        const auto& f = *e.gauge;
        Header(f, "gauge", &out);
        f.ForEach([&](const std::vector<std::string>& labels, const Gauge& g) {
          out += fmt::format("{}{} {}\n", f.name(),
                             LabelString(f.label_names(), labels),
                             FormatValue(g.value()));
        });
        break;
      }
      case MetricType::kHistogram: {
        const auto& f = *e.histogram;
        Header(f, "histogram", &out);
        f.ForEach([&](const std::vector<std::string>& labels,
                      const Histogram& h) {
          // Read buckets first: count and sum are then >= what buckets say,
          // and +Inf uses the same snapshot so the series stays monotonic.
          uint64_t cumulative = 0;
          for (size_t i = 0; i < h.bounds().size(); ++i) {
            cumulative = h.cumulative_count(i);
            out += fmt::format("{}_bucket{} {}\n", f.name(),
                               LabelString(f.label_names(), labels, "le",
                                           FormatValue(h.bounds()[i])),
                               cumulative);
          }
          const uint64_t all = h.cumulative_count(h.bounds().size());
          out += fmt::format("{}_bucket{} {}\n", f.name(),
                             LabelString(f.label_names(), labels, "le", "+Inf"),
                             all);
          out += fmt::format("{}_sum{} {}\n", f.name(),
                             LabelString(f.label_names(), labels),
                             FormatValue(h.sum()));
          out += fmt::format("{}_count{} {}\n", f.name(),
                             LabelString(f.label_names(), labels), all);
        });
        break;
      }
    }
  }
  return out;
}

std::vector<double> VllmTtftBuckets() {
  return {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
}

std::vector<double> VllmInterTokenBuckets() {
  return {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
          0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
}

std::vector<double> VllmRequestLatencyBuckets() {
  return {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
          5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
          60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

std::vector<double> VllmIterationTokenBuckets() {
  return {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
}

namespace {
std::vector<double> TokenCountBuckets() {
  // vLLM's build_1_2_5_buckets up to a generous max_model_len.
  std::vector<double> b;
  for (double m = 1; m <= 1e6; m *= 10) {
    for (double x : {1.0, 2.0, 5.0}) b.push_back(x * m);
  }
  return b;
}
}  // namespace

ServingMetrics::ServingMetrics(MetricsRegistry* r,
                               const std::string& model_name) {
  const std::vector<std::string> m = {"model_name"};
  const std::vector<std::string> v = {model_name};
  // Every family below but request_success_total has just the model label.
  auto gauge = [&](const char* name, const char* help) {
    return r->AddGauge(name, help, m)->Labels(v);
  };
  auto counter = [&](const char* name, const char* help) {
    return r->AddCounter(name, help, m)->Labels(v);
  };
  auto histogram = [&](const char* name, const char* help,
                       std::vector<double> buckets) {
    return r->AddHistogram(name, help, m, std::move(buckets))->Labels(v);
  };
  num_requests_running =
      gauge("tessera:num_requests_running",
            "Number of requests in model execution batches.");
  num_requests_waiting = gauge("tessera:num_requests_waiting",
                               "Number of requests waiting to be processed.");
  kv_cache_usage_perc = gauge("tessera:kv_cache_usage_perc",
                              "KV-cache usage. 1 means 100 percent usage.");
  prompt_tokens_total = counter("tessera:prompt_tokens_total",
                                "Number of prefill tokens processed.");
  generation_tokens_total = counter("tessera:generation_tokens_total",
                                    "Number of generation tokens processed.");
  auto* success = r->AddCounter("tessera:request_success_total",
                                "Count of successfully processed requests.",
                                {"model_name", "finished_reason"});
  request_success_stop = success->Labels({model_name, "stop"});
  request_success_length = success->Labels({model_name, "length"});
  request_success_abort = success->Labels({model_name, "abort"});
  num_preemptions_total =
      counter("tessera:num_preemptions_total",
              "Cumulative number of preemptions from the engine.");
  prefix_cache_queries_total =
      counter("tessera:prefix_cache_queries_total",
              "Prefix cache queries, in terms of number of queried tokens.");
  prefix_cache_hits_total =
      counter("tessera:prefix_cache_hits_total",
              "Prefix cache hits, in terms of number of cached tokens.");
  iteration_tokens_total =
      histogram("tessera:iteration_tokens_total",
                "Histogram of number of tokens per engine_step.",
                VllmIterationTokenBuckets());
  time_to_first_token_seconds = histogram(
      "tessera:time_to_first_token_seconds",
      "Histogram of time to first token in seconds.", VllmTtftBuckets());
  inter_token_latency_seconds = histogram(
      "tessera:inter_token_latency_seconds",
      "Histogram of inter-token latency in seconds.", VllmInterTokenBuckets());
  e2e_request_latency_seconds =
      histogram("tessera:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                VllmRequestLatencyBuckets());
  request_queue_time_seconds =
      histogram("tessera:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                VllmRequestLatencyBuckets());
  request_prompt_tokens =
      histogram("tessera:request_prompt_tokens",
                "Number of prefill tokens processed.", TokenCountBuckets());
  request_generation_tokens =
      histogram("tessera:request_generation_tokens",
                "Number of generation tokens processed.", TokenCountBuckets());
  engine_steps_total = counter("tessera:engine_steps_total",
                               "Engine iterations that ran a model step.");
  model_step_seconds_total = counter("tessera:model_step_seconds_total",
                                     "Seconds spent executing model steps.");
  engine_overhead_seconds_total =
      counter("tessera:engine_overhead_seconds_total",
              "Seconds of engine iterations spent outside the model "
              "(scheduling, KV bookkeeping, detokenization, streaming).");
}

}  // namespace tessera
