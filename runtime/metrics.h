// A small Prometheus metrics registry (text exposition format 0.0.4).
//
// prometheus-cpp is not packaged in Debian 12 and nothing is vendored, so this
// implements what the server needs: counters, gauges and histograms with
// labels. Updates are lock-free atomics (a hot-path increment is one atomic
// add); creating a labelled child and Serialize() take the family's mutex.
// Children live as long as the registry, so callers cache the pointers.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tessera {

// A monotonically increasing value.
class Counter {
 public:
  // Adds `v` (must be >= 0).
  void Inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Cumulative-bucket histogram with fixed upper bounds (+Inf implied).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  // Records one observation.
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Observations <= bounds()[i] (i == bounds().size(): all).
  uint64_t cumulative_count(size_t i) const;
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // Non-cumulative.
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

// All children of one metric name, keyed by label values.
template <typename T>
class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help,
               std::vector<std::string> label_names,
               std::vector<double> bounds = {})
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        bounds_(std::move(bounds)) {}
  // The child for `label_values` (one per label name), created on first use.
  T* Labels(const std::vector<std::string>& label_values);

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Calls `fn(label_values, child)` for every child, in label order.
  template <typename Fn>
  void ForEach(Fn fn) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [labels, child] : children_) fn(labels, *child);
  }

 private:
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
};

// Owns metric families and renders them.
class MetricsRegistry {
 public:
  MetricFamily<Counter>* AddCounter(const std::string& name,
                                    const std::string& help,
                                    std::vector<std::string> label_names);
  MetricFamily<Gauge>* AddGauge(const std::string& name,
                                const std::string& help,
                                std::vector<std::string> label_names);
  MetricFamily<Histogram>* AddHistogram(const std::string& name,
                                        const std::string& help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> bounds);
  // Text exposition format 0.0.4 (HELP and TYPE lines, then samples).
  std::string Serialize() const;

 private:
  struct Entry {
    MetricType type;
    std::unique_ptr<MetricFamily<Counter>> counter;
    std::unique_ptr<MetricFamily<Gauge>> gauge;
    std::unique_ptr<MetricFamily<Histogram>> histogram;
  };
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
};

// Bucket boundaries of vLLM's histograms (vllm/v1/metrics/loggers.py).
std::vector<double> VllmTtftBuckets();
std::vector<double> VllmInterTokenBuckets();
std::vector<double> VllmRequestLatencyBuckets();
std::vector<double> VllmIterationTokenBuckets();

// The serving engine's metrics, named like vLLM's with a `tessera:` prefix and
// a `model_name` label. Pointers are stable; updates are lock-free.
struct ServingMetrics {
  ServingMetrics(MetricsRegistry* registry, const std::string& model_name);

  Gauge* num_requests_running;
  Gauge* num_requests_waiting;
  Gauge* kv_cache_usage_perc;
  Counter* prompt_tokens_total;
  Counter* generation_tokens_total;
  Counter* num_preemptions_total;
  Counter* prefix_cache_queries_total;
  Counter* prefix_cache_hits_total;
  Counter* request_success_stop;
  Counter* request_success_length;
  Counter* request_success_abort;
  Histogram* time_to_first_token_seconds;
  Histogram* inter_token_latency_seconds;
  Histogram* e2e_request_latency_seconds;
  Histogram* request_queue_time_seconds;
  Histogram* iteration_tokens_total;
  Histogram* request_prompt_tokens;
  Histogram* request_generation_tokens;
  // tessera's own (no vLLM equivalent): engine iterations and where their
  // time went, so the scheduler's overhead per step can be watched (and is
  // reported by `tessera bench serve`).
  Counter* engine_steps_total;
  Counter* model_step_seconds_total;       // inside ModelRunner::Step
  Counter* engine_overhead_seconds_total;  // scheduling + bookkeeping
};

}  // namespace tessera
