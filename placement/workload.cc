#include "placement/workload.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "base/mapped_file.h"
#include "base/status.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "placement/internal/json_util.h"

namespace tessera::placement {
namespace {

using json = nlohmann::json;
using internal::CheckKeys;
using internal::GetNumber;

const char* KindName(LengthDistribution::Kind k) {
  switch (k) {
    case LengthDistribution::Kind::kFixed:
      return "fixed";
    case LengthDistribution::Kind::kUniform:
      return "uniform";
    case LengthDistribution::Kind::kExponential:
      return "exponential";
    case LengthDistribution::Kind::kLognormal:
      return "lognormal";
    case LengthDistribution::Kind::kNormal:
      return "normal";
  }
  return "fixed";
}

absl::StatusOr<LengthDistribution> ParseLength(const json& j,
                                               const std::string& where) {
  if (j.is_number_integer()) {  // shorthand: a fixed length
    if (j.get<int64_t>() <= 0) {
      return absl::InvalidArgumentError(where + ": length must be positive");
    }
    LengthDistribution d;
    d.mean = static_cast<double>(j.get<int64_t>());
    d.min = d.max = j.get<int64_t>();
    return d;
  }
  RETURN_IF_ERROR(
      CheckKeys(j, where, {"distribution", "mean", "stddev", "min", "max"}));
  LengthDistribution d;
  ASSIGN_OR_RETURN(
      std::string kind,
      internal::GetString(j, where, "distribution", "fixed", false));
  if (kind == "fixed")
    d.kind = LengthDistribution::Kind::kFixed;
  else if (kind == "uniform")
    d.kind = LengthDistribution::Kind::kUniform;
  else if (kind == "exponential")
    d.kind = LengthDistribution::Kind::kExponential;
  else if (kind == "lognormal")
    d.kind = LengthDistribution::Kind::kLognormal;
  else if (kind == "normal")
    d.kind = LengthDistribution::Kind::kNormal;
  else {
    return absl::InvalidArgumentError(fmt::format(
        "{}: unknown distribution \"{}\" (fixed, uniform, exponential, "
        "lognormal, normal)",
        where, kind));
  }
  ASSIGN_OR_RETURN(d.mean, GetNumber(j, where, "mean", 0, true, true));
  ASSIGN_OR_RETURN(d.stddev,
                   GetNumber(j, where, "stddev", d.mean * 0.5, false, false));
  ASSIGN_OR_RETURN(d.min, internal::GetInt(j, where, "min", 1, false, true));
  const int64_t default_max = d.kind == LengthDistribution::Kind::kFixed
                                  ? static_cast<int64_t>(std::llround(d.mean))
                                  : static_cast<int64_t>(std::ceil(d.mean * 8));
  ASSIGN_OR_RETURN(d.max,
                   internal::GetInt(j, where, "max", default_max, false, true));
  if (d.max < d.min || d.mean < static_cast<double>(d.min) ||
      d.mean > static_cast<double>(d.max)) {
    return absl::InvalidArgumentError(
        fmt::format("{}: need min <= mean <= max (got {} / {} / {})", where,
                    d.min, d.mean, d.max));
  }
  return d;
}

json LengthToJson(const LengthDistribution& d) {
  return json{{"distribution", KindName(d.kind)},
              {"mean", d.mean},
              {"stddev", d.stddev},
              {"min", d.min},
              {"max", d.Max()}};
}

}  // namespace

int64_t LengthDistribution::Max() const {
  return max > 0 ? max : static_cast<int64_t>(std::ceil(mean * 8));
}

int64_t LengthDistribution::Sample(SplitMix64& rng) const {
  double v = mean;
  switch (kind) {
    case Kind::kFixed:
      break;
    case Kind::kUniform: {
      // Symmetric around the mean within [min, max].
      const double half = std::min(mean - static_cast<double>(min),
                                   static_cast<double>(Max()) - mean);
      v = mean - half + 2 * half * rng.Uniform();
      break;
    }
    case Kind::kExponential:
      v = -mean * std::log(1.0 - static_cast<double>(rng.Uniform()) * 0.999999);
      break;
    case Kind::kLognormal: {
      const double cv2 = (stddev / mean) * (stddev / mean);
      const double sigma = std::sqrt(std::log1p(cv2));
      const double mu = std::log(mean) - sigma * sigma / 2;
      v = std::exp(mu + sigma * rng.Normal());
      break;
    }
    case Kind::kNormal:
      v = mean + stddev * rng.Normal();
      break;
  }
  return std::clamp<int64_t>(static_cast<int64_t>(std::llround(v)), min, Max());
}

std::vector<int64_t> LengthDistribution::Quantiles() const {
  constexpr int kN = 256;
  std::vector<int64_t> out;
  if (kind == Kind::kFixed) {
    SplitMix64 rng(1);
    return std::vector<int64_t>(kN, Sample(rng));
  }
  SplitMix64 rng(0x5eed);
  std::vector<int64_t> samples(kN * 16);
  for (auto& s : samples) s = Sample(rng);
  std::sort(samples.begin(), samples.end());
  for (int i = 0; i < kN; ++i) out.push_back(samples[i * 16 + 8]);
  return out;
}

Workload DefaultWorkload() {
  Workload w;
  w.name = "chat (default)";
  w.input = {LengthDistribution::Kind::kLognormal, 1024, 800, 16, 8192};
  w.output = {LengthDistribution::Kind::kLognormal, 256, 200, 8, 2048};
  w.slo = {1.0, 0.05, 90};
  return w;
}

absl::StatusOr<Workload> ParseWorkload(std::string_view json_text) {
  ASSIGN_OR_RETURN(json j, internal::ParseJsonObject(json_text, "workload"));
  RETURN_IF_ERROR(CheckKeys(
      j, "workload",
      {"name", "comment", "input_tokens", "output_tokens", "arrival_rate",
       "slo", "objective", "expert_skew", "expert_load"}));
  Workload w = DefaultWorkload();
  ASSIGN_OR_RETURN(
      w.name, internal::GetString(j, "workload", "name", "workload", false));
  if (j.contains("input_tokens")) {
    ASSIGN_OR_RETURN(w.input,
                     ParseLength(j["input_tokens"], "workload input_tokens"));
  }
  if (j.contains("output_tokens")) {
    ASSIGN_OR_RETURN(w.output,
                     ParseLength(j["output_tokens"], "workload output_tokens"));
  }
  ASSIGN_OR_RETURN(w.arrival_rate,
                   GetNumber(j, "workload", "arrival_rate", 0, false, false));
  if (j.contains("slo")) {
    const json& s = j["slo"];
    RETURN_IF_ERROR(
        CheckKeys(s, "workload slo", {"ttft_ms", "tpot_ms", "percentile"}));
    ASSIGN_OR_RETURN(double ttft,
                     GetNumber(s, "workload slo", "ttft_ms", 0, false, false));
    ASSIGN_OR_RETURN(double tpot,
                     GetNumber(s, "workload slo", "tpot_ms", 0, false, false));
    ASSIGN_OR_RETURN(
        w.slo.percentile,
        GetNumber(s, "workload slo", "percentile", 90, false, true));
    if (w.slo.percentile >= 100) {
      return absl::InvalidArgumentError(
          "workload slo: percentile must be in (0, 100)");
    }
    w.slo.ttft_s = ttft / 1e3;
    w.slo.tpot_s = tpot / 1e3;
  }
  ASSIGN_OR_RETURN(std::string objective,
                   internal::GetString(j, "workload", "objective", "", false));
  if (objective.empty()) {
    w.objective = (w.slo.ttft_s > 0 || w.slo.tpot_s > 0)
                      ? Workload::Objective::kGoodput
                      : Workload::Objective::kThroughput;
  } else if (objective == "goodput") {
    w.objective = Workload::Objective::kGoodput;
  } else if (objective == "throughput") {
    w.objective = Workload::Objective::kThroughput;
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "workload: unknown objective \"{}\" (goodput, throughput)", objective));
  }
  ASSIGN_OR_RETURN(w.expert_skew,
                   GetNumber(j, "workload", "expert_skew", 1.0, false, true));
  if (w.expert_skew < 1.0) {
    return absl::InvalidArgumentError("workload: expert_skew must be >= 1");
  }
  if (j.contains("expert_load")) {
    if (!j["expert_load"].is_array()) {
      return absl::InvalidArgumentError(
          "workload: expert_load must be a list of numbers");
    }
    for (const json& v : j["expert_load"]) {
      if (!v.is_number() || v.get<double>() < 0) {
        return absl::InvalidArgumentError(
            "workload: expert_load entries must be non-negative numbers");
      }
      w.expert_load.push_back(v.get<double>());
    }
  }
  return w;
}

absl::StatusOr<Workload> LoadWorkload(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto w = ParseWorkload(text);
  if (!w.ok()) return Annotate(w.status(), path);
  return w;
}

std::string WorkloadToJson(const Workload& w) {
  json j{
      {"name", w.name},
      {"input_tokens", LengthToJson(w.input)},
      {"output_tokens", LengthToJson(w.output)},
      {"arrival_rate", w.arrival_rate},
      {"slo",
       {{"ttft_ms", w.slo.ttft_s * 1e3},
        {"tpot_ms", w.slo.tpot_s * 1e3},
        {"percentile", w.slo.percentile}}},
      {"objective",
       w.objective == Workload::Objective::kGoodput ? "goodput" : "throughput"},
      {"expert_skew", w.expert_skew}};
  if (!w.expert_load.empty()) j["expert_load"] = w.expert_load;
  return j.dump(2);
}

}  // namespace tessera::placement
