#include "placement/simulator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <memory>
#include <queue>
#include <vector>

#include "absl/status/status.h"
#include "base/random.h"
#include "base/status.h"
#include "fmt/format.h"

namespace tessera::placement {
namespace {

constexpr double kPrefillBatchTokens = 2048;

struct Request {
  double arrival = 0;
  int64_t input = 0;
  int64_t output = 0;
  int64_t generated = 0;
  int64_t prefilled = 0;  // prompt tokens done (chunked prefill)
  double first_token = -1;
  double done = -1;
};

struct Instance {
  InstanceRole role;
  std::unique_ptr<InstanceModel> model;
  double kv_capacity = 0;  // tokens
  double kv_used = 0;
  int64_t max_seqs = 0;
  int64_t max_batched_tokens = 0;
  int first_device = 0;
  bool busy = false;
  std::deque<int> waiting;     // prefill queue (or decode admission queue)
  std::vector<int> running;    // decoding sequences
  std::deque<int> prefilling;  // admitted prompts with chunks left
};

enum class EventType { kArrival, kStepDone, kPrefillDone, kKvArrived };

struct Event {
  double time;
  EventType type;
  int instance;
  int request;
  std::vector<int> batch;  // prefill batch completed (kPrefillDone)
  bool operator>(const Event& o) const { return time > o.time; }
};

Percentiles Summarize(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
  };
  p.p50 = at(0.5);
  p.p90 = at(0.9);
  p.p99 = at(0.99);
  double s = 0;
  for (double x : v) s += x;
  p.mean = s / static_cast<double>(v.size());
  return p;
}

class Simulation {
 public:
  Simulation(const Plan& plan, const Workload& w, const SimulationOptions& o,
             double rate)
      : plan_(plan),
        w_(w),
        o_(o),
        rate_(rate),
        cost_(plan.model, plan.cluster.device) {
    for (const PlanInstance& pi : plan.instances) {
      Instance in;
      in.role = pi.role;
      std::vector<StageRange> stages;
      for (const PlanStage& s : pi.stages)
        stages.push_back({s.layer_begin, s.layer_end});
      const InstanceModel::Role role =
          pi.role == InstanceRole::kPrefill  ? InstanceModel::Role::kPrefill
          : pi.role == InstanceRole::kDecode ? InstanceModel::Role::kDecode
                                             : InstanceModel::Role::kBoth;
      in.first_device = pi.ranks.front().node * plan.cluster.devices_per_node +
                        pi.ranks.front().device;
      in.model = std::make_unique<InstanceModel>(cost_, plan.cluster, pi.layout,
                                                 in.first_device, role, stages,
                                                 w.expert_skew);
      in.kv_capacity =
          static_cast<double>(pi.kv_cache.num_blocks * pi.kv_cache.block_size);
      in.max_seqs = pi.kv_cache.max_num_seqs;
      in.max_batched_tokens = pi.kv_cache.max_num_batched_tokens;
      instances_.push_back(std::move(in));
    }
  }

  SimulationResult Run() {
    SplitMix64 rng(o_.seed);
    double t = 0;
    for (const TraceRequest& tr : o_.trace) {
      Request r;
      r.arrival = tr.arrival_s;
      r.input = tr.input;
      r.output = tr.output;
      requests_.push_back(r);
      Push({r.arrival,
            EventType::kArrival,
            -1,
            static_cast<int>(requests_.size()) - 1,
            {}});
    }
    while (o_.trace.empty()) {
      const double u =
          std::max(1e-12, 1.0 - static_cast<double>(rng.Uniform()));
      t += -std::log(u) / rate_;
      // Arrivals continue past the measured window so that the requests
      // measured in it see a loaded system until they finish (no drain).
      if (t > o_.duration_s + std::max(0.5 * o_.duration_s, 30.0)) break;
      Request r;
      r.arrival = t;
      r.input = w_.input.Sample(rng);
      r.output = std::max<int64_t>(1, w_.output.Sample(rng));
      requests_.push_back(r);
      Push({t,
            EventType::kArrival,
            -1,
            static_cast<int>(requests_.size()) - 1,
            {}});
    }
    const double horizon = o_.trace.empty()
                               ? o_.duration_s * 4 + 60
                               : std::numeric_limits<double>::infinity();
    while (!events_.empty()) {
      Event e = events_.top();
      events_.pop();
      if (e.time > horizon) break;
      now_ = e.time;
      Handle(e);
    }
    return Collect();
  }

 private:
  void Push(Event e) { events_.push(std::move(e)); }

  bool Serves(const Instance& in, bool prefill) const {
    return in.role == InstanceRole::kBoth ||
           (prefill ? in.role == InstanceRole::kPrefill
                    : in.role == InstanceRole::kDecode);
  }

  int LeastLoaded(bool prefill) const {
    int best = -1;
    double best_load = 0;
    for (size_t i = 0; i < instances_.size(); ++i) {
      const Instance& in = instances_[i];
      if (!Serves(in, prefill)) continue;
      const double load =
          static_cast<double>(in.waiting.size() + in.running.size()) +
          (in.busy ? 0.5 : 0);
      if (best < 0 || load < best_load) {
        best = static_cast<int>(i);
        best_load = load;
      }
    }
    return best;
  }

  void Handle(const Event& e) {
    switch (e.type) {
      case EventType::kArrival: {
        const int i = LeastLoaded(true);
        instances_[i].waiting.push_back(e.request);
        Kick(i);
        break;
      }
      case EventType::kStepDone:
        instances_[e.instance].busy = false;
        Kick(e.instance);
        break;
      case EventType::kPrefillDone:
        for (int r : e.batch) FinishPrefill(e.instance, r);
        break;
      case EventType::kKvArrived:
        instances_[e.instance].waiting.push_back(e.request);
        Kick(e.instance);
        break;
    }
  }

  // Disaggregated: the prompt's KV moves to the least loaded decode instance.
  void FinishPrefill(int from, int r) {
    Request& req = requests_[r];
    req.first_token = now_;
    req.generated = 1;
    Instance& src = instances_[from];
    src.kv_used -= static_cast<double>(req.input);
    if (req.generated >= req.output) {
      req.done = now_;
      Kick(from);
      return;
    }
    const int to = LeastLoaded(false);
    const Instance& dst = instances_[to];
    const LinkSpec& link =
        plan_.cluster.LinkBetween(src.first_device, dst.first_device);
    const double bytes = static_cast<double>(req.input) *
                         plan_.model.KvBytesPerToken() /
                         dst.model->layout().size();
    Push({now_ + P2pTime(bytes, link, plan_.cluster.device.link_efficiency),
          EventType::kKvArrived,
          to,
          r,
          {}});
    Kick(from);
  }

  void Kick(int i) {
    Instance& in = instances_[i];
    if (in.busy) return;
    if (in.role == InstanceRole::kPrefill) {
      StartPrefill(i);
    } else {
      StartIteration(i);
    }
  }

  void StartPrefill(int i) {
    Instance& in = instances_[i];
    std::vector<int> batch;
    double tokens = 0;
    BatchShape shape;
    while (!in.waiting.empty()) {
      const Request& req = requests_[in.waiting.front()];
      const double len = static_cast<double>(req.input);
      // Prefill saturates the device at ~2k tokens; batching more only delays
      // the batch's first request (DistServe §3.1), so batches stay small.
      const double budget = std::min<double>(
          kPrefillBatchTokens, static_cast<double>(in.max_batched_tokens));
      if (!batch.empty() &&
          (tokens + len > budget || in.kv_used + len > in.kv_capacity)) {
        break;
      }
      tokens += len;
      in.kv_used += len;
      shape = shape + BatchShape::Prefill(1, len);
      batch.push_back(in.waiting.front());
      in.waiting.pop_front();
    }
    if (batch.empty()) return;
    in.busy = true;
    // Pipelined: the next batch may enter once the slowest stage is free.
    const double latency = in.model->StepLatency(shape);
    // (prefill instances pipeline whole prompts; see kPrefillBatchTokens)
    const double occupancy =
        in.model->layout().pp > 1 ? in.model->StageMax(shape) : latency;
    Push({now_ + occupancy, EventType::kStepDone, i, -1, {}});
    Push({now_ + latency, EventType::kPrefillDone, i, -1, std::move(batch)});
  }

  // Continuous batching. Decode instances run every admitted sequence each
  // step; colocated instances also fill the step's token budget with prompt
  // chunks (chunked prefill, oldest prompt first), admitting new prompts while
  // KV blocks for their whole length are free.
  void StartIteration(int i) {
    Instance& in = instances_[i];
    if (in.role == InstanceRole::kDecode) {
      while (!in.waiting.empty() &&
             static_cast<int64_t>(in.running.size()) < in.max_seqs) {
        const Request& req = requests_[in.waiting.front()];
        const double reserve = static_cast<double>(req.input + req.output);
        if (in.kv_used + reserve > in.kv_capacity) break;
        in.kv_used += reserve;
        in.running.push_back(in.waiting.front());
        in.waiting.pop_front();
      }
    } else {
      while (!in.waiting.empty() &&
             static_cast<int64_t>(in.running.size() + in.prefilling.size()) <
                 in.max_seqs) {
        const Request& req = requests_[in.waiting.front()];
        const double reserve = static_cast<double>(req.input + req.output);
        if (in.kv_used + reserve > in.kv_capacity) break;
        in.kv_used += reserve;
        in.prefilling.push_back(in.waiting.front());
        in.waiting.pop_front();
      }
    }
    const double n = static_cast<double>(in.running.size());
    BatchShape shape;
    if (n > 0) {
      double ctx_sum = 0;
      for (int r : in.running) {
        const Request& req = requests_[r];
        ctx_sum += static_cast<double>(req.input + req.generated);
      }
      shape = BatchShape::Decode(n, ctx_sum / n);
    }
    double budget = static_cast<double>(in.max_batched_tokens) - n;
    chunks_.clear();
    for (int r : in.prefilling) {
      if (budget < 1) break;
      const Request& req = requests_[r];
      const double done = static_cast<double>(req.prefilled);
      const double c = std::min(budget, static_cast<double>(req.input) - done);
      BatchShape chunk;
      chunk.num_seqs = 1;
      chunk.new_tokens = c;
      chunk.attn_pairs = c * done + c * (c + 1) / 2;
      chunk.kv_read_tokens = done;
      chunk.logit_tokens = done + c >= static_cast<double>(req.input) ? 1 : 0;
      shape = shape + chunk;
      chunks_.push_back({r, static_cast<int64_t>(c)});
      budget -= c;
    }
    if (n == 0 && chunks_.empty()) return;
    const double step = in.model->Iteration(shape);
    if (InWindow(now_)) {
      batch_sum_ += n;
      step_sum_ += step;
      ++steps_;
    }
    in.busy = true;
    const double end = now_ + step;
    std::vector<int> still;
    for (int r : in.running) {
      Request& req = requests_[r];
      ++req.generated;
      if (req.generated >= req.output) {
        req.done = end;
        in.kv_used -= static_cast<double>(req.input + req.output);
      } else {
        still.push_back(r);
      }
    }
    for (const auto& [r, c] : chunks_) {
      Request& req = requests_[r];
      req.prefilled += c;
      if (req.prefilled < req.input) continue;
      in.prefilling.erase(
          std::find(in.prefilling.begin(), in.prefilling.end(), r));
      req.first_token = end;
      req.generated = 1;
      if (req.generated >= req.output) {
        req.done = end;
        in.kv_used -= static_cast<double>(req.input + req.output);
      } else {
        still.push_back(r);
      }
    }
    in.running = std::move(still);
    Push({end, EventType::kStepDone, i, -1, {}});
  }

  // Requests arriving in [WarmUp(), duration] are measured (steady state);
  // with a trace, every request and step.
  double WarmUp() const { return 0.2 * o_.duration_s; }
  bool InWindow(double t) const {
    return !o_.trace.empty() || (t >= WarmUp() && t <= o_.duration_s);
  }

  SimulationResult Collect() const {
    SimulationResult res;
    res.arrival_rate = rate_;
    std::vector<double> ttft, tpot;
    int64_t good = 0;
    double out_tokens = 0;
    for (const Request& r : requests_) {
      if (!InWindow(r.arrival)) continue;
      ++res.arrived;
      if (r.done < 0) continue;
      ++res.completed;
      out_tokens += static_cast<double>(r.output);
      const double t1 = r.first_token - r.arrival;
      const double t2 = r.output > 1 ? (r.done - r.first_token) /
                                           static_cast<double>(r.output - 1)
                                     : 0;
      ttft.push_back(t1);
      if (r.output > 1) tpot.push_back(t2);
      const bool ok = (w_.slo.ttft_s <= 0 || t1 <= w_.slo.ttft_s) &&
                      (w_.slo.tpot_s <= 0 || t2 <= w_.slo.tpot_s);
      if (ok) ++good;
    }
    res.ttft_s = Summarize(ttft);
    res.tpot_s = Summarize(tpot);
    // A trace's figures are over the run, from its start to the last
    // completion (a benchmark's duration).
    double window = o_.duration_s - WarmUp();
    if (!o_.trace.empty()) {
      window = 0;
      for (const Request& r : requests_) window = std::max(window, r.done);
    }
    const double per_s = window > 0 ? 1 / window : 0;
    res.throughput_rps = static_cast<double>(res.completed) * per_s;
    res.output_tokens_per_s = out_tokens * per_s;
    res.goodput_rps = static_cast<double>(good) * per_s;
    res.slo_attainment = res.arrived > 0 ? static_cast<double>(good) /
                                               static_cast<double>(res.arrived)
                                         : 0;
    res.mean_decode_batch =
        steps_ > 0 ? batch_sum_ / static_cast<double>(steps_) : 0;
    res.mean_step_s = steps_ > 0 ? step_sum_ / static_cast<double>(steps_) : 0;
    return res;
  }

  const Plan& plan_;
  const Workload& w_;
  const SimulationOptions& o_;
  double rate_;
  CostModel cost_;
  std::vector<Instance> instances_;
  std::vector<Request> requests_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  double now_ = 0;
  double batch_sum_ = 0;
  double step_sum_ = 0;
  std::vector<std::pair<int, int64_t>> chunks_;  // this step's prompt chunks
  int64_t steps_ = 0;
};

}  // namespace

absl::StatusOr<SimulationResult> Simulate(const Plan& plan,
                                          const Workload& workload,
                                          const SimulationOptions& options) {
  if (!options.trace.empty()) {
    double last = 0;
    for (const TraceRequest& r : options.trace) {
      if (!(r.arrival_s >= last) || !std::isfinite(r.arrival_s) ||
          r.input < 1 || r.output < 1) {
        return absl::InvalidArgumentError(
            "a trace needs non-decreasing finite arrival times and at least "
            "one prompt and one output token per request");
      }
      last = r.arrival_s;
    }
    RETURN_IF_ERROR(ValidatePlan(plan));
    const double rate =
        last > 0 ? static_cast<double>(options.trace.size()) / last : 1.0;
    Simulation sim(plan, workload, options, rate);
    return sim.Run();
  }
  if (!(options.duration_s > 0) || options.duration_s > 1e6) {
    return absl::InvalidArgumentError(
        fmt::format("simulation duration must be in (0, 1e6] s, got {}",
                    options.duration_s));
  }
  double rate =
      options.arrival_rate > 0 ? options.arrival_rate : workload.arrival_rate;
  if (rate <= 0) rate = plan.predicted.request_rate;
  if (!(rate > 0)) {
    return absl::InvalidArgumentError(
        "no arrival rate: set \"arrival_rate\" in the workload or --rate");
  }
  if (rate * options.duration_s > 5e6) {
    return absl::InvalidArgumentError(
        "more than 5 million requests to simulate; shorten --duration");
  }
  RETURN_IF_ERROR(ValidatePlan(plan));
  Simulation sim(plan, workload, options, rate);
  return sim.Run();
}

}  // namespace tessera::placement
