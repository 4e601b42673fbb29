#include "placement/cluster.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/status/status.h"
#include "base/logging.h"
#include "base/mapped_file.h"
#include "base/status.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "placement/internal/builtin_profiles.h"
#include "placement/internal/json_util.h"
#include "placement/model_spec.h"

namespace tessera::placement {
namespace {

using json = nlohmann::json;
using internal::CheckKeys;
using internal::GetNumber;

constexpr double kGB = 1e9;

absl::Status DTypeCheck(const std::string& dtype, const std::string& where) {
  static const char* kKnown[] = {"fp32", "tf32", "fp16", "bf16",
                                 "fp8",  "int8", "fp4",  "int4"};
  for (const char* k : kKnown) {
    if (dtype == k) return absl::OkStatus();
  }
  // Weight formats (e.g. GGUF q8_0) may carry their own figures: a CPU
  // multiplies them in f32, not in 16-bit math.
  if (DTypeBytesPerElement(dtype).ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format(
      "{}: unknown dtype \"{}\" (known: fp32, tf32, fp16, bf16, fp8, int8, "
      "fp4, int4, and weight formats such as q8_0)",
      where, dtype));
}

absl::StatusOr<LinkSpec> ParseLink(const json& j, std::string_view where,
                                   const LinkSpec& fallback) {
  RETURN_IF_ERROR(CheckKeys(j, where, {"bandwidth_gb_per_s", "latency_us"}));
  LinkSpec l;
  ASSIGN_OR_RETURN(
      double bw, GetNumber(j, where, "bandwidth_gb_per_s",
                           fallback.bandwidth_bytes_per_s / kGB, false, true));
  ASSIGN_OR_RETURN(double lat,
                   GetNumber(j, where, "latency_us", fallback.latency_s * 1e6,
                             false, false));
  l.bandwidth_bytes_per_s = bw * kGB;
  l.latency_s = lat * 1e-6;
  return l;
}

json LinkToJson(const LinkSpec& l) {
  return json{{"bandwidth_gb_per_s", l.bandwidth_bytes_per_s / kGB},
              {"latency_us", l.latency_s * 1e6}};
}

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

// An array of [x, y] points (x scaled by x_scale); `what` names it in errors
// and `point` names the pair's two parts.
absl::StatusOr<std::vector<std::pair<double, double>>> ParseCurve(
    const json& g, const std::string& what, const char* point, double x_scale) {
  if (!g.is_array()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: must be an array of [{}] pairs", what, point));
  }
  std::vector<std::pair<double, double>> out;
  for (const json& xy : g) {
    if (!xy.is_array() || xy.size() != 2 || !xy[0].is_number() ||
        !xy[1].is_number()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: each point must be [{}]", what, point));
    }
    out.emplace_back(xy[0].get<double>() * x_scale, xy[1].get<double>());
  }
  return out;
}

absl::StatusOr<DeviceProfile> ProfileFromJson(const json& j,
                                              const DeviceProfile* base) {
  const std::string where = "device profile";
  RETURN_IF_ERROR(CheckKeys(j, where,
                            {"kind",
                             "source",
                             "memory_gb",
                             "memory_bandwidth_gb_per_s",
                             "peak_tflops",
                             "compute_efficiency",
                             "memory_efficiency",
                             "link_efficiency",
                             "layer_overhead_us",
                             "reserved_memory_gb",
                             "memory_utilization",
                             "intra_node_link",
                             "inter_node_link",
                             "compute_efficiency_by_dtype",
                             "memory_efficiency_by_dtype",
                             "serial_fraction",
                             "attention_efficiency",
                             "softmax_ns_per_score",
                             "attention_memory_efficiency",
                             "token_overhead_us",
                             "head_overhead_us",
                             "step_overhead_us",
                             "cached_bandwidth_gain",
                             "serial_fraction_curve",
                             "gemm_size_efficiency"}));
  DeviceProfile p = base ? *base : DeviceProfile{};
  const bool req = base == nullptr;
  ASSIGN_OR_RETURN(p.kind, internal::GetString(j, where, "kind", p.kind, req));
  ASSIGN_OR_RETURN(p.source,
                   internal::GetString(j, where, "source", p.source, false));
  const std::string w = where + " " + p.kind;
  ASSIGN_OR_RETURN(double mem, GetNumber(j, w, "memory_gb",
                                         p.memory_bytes / kGB, req, true));
  p.memory_bytes = mem * kGB;
  ASSIGN_OR_RETURN(double bw,
                   GetNumber(j, w, "memory_bandwidth_gb_per_s",
                             p.memory_bandwidth_bytes_per_s / kGB, req, true));
  p.memory_bandwidth_bytes_per_s = bw * kGB;
  if (j.contains("peak_tflops")) {
    const json& pf = j["peak_tflops"];
    if (!pf.is_object() || pf.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: peak_tflops must be an object dtype → TFLOP/s", w));
    }
    p.peak_flops.clear();
    for (auto it = pf.begin(); it != pf.end(); ++it) {
      RETURN_IF_ERROR(DTypeCheck(it.key(), w));
      ASSIGN_OR_RETURN(double tf, GetNumber(pf, w + " peak_tflops",
                                            it.key().c_str(), 0, true, true));
      p.peak_flops[it.key()] = tf * 1e12;
    }
  } else if (req) {
    return absl::InvalidArgumentError(
        fmt::format("{}: missing \"peak_tflops\"", w));
  }
  ASSIGN_OR_RETURN(
      p.compute_efficiency,
      GetNumber(j, w, "compute_efficiency", p.compute_efficiency, false, true));
  ASSIGN_OR_RETURN(
      p.memory_efficiency,
      GetNumber(j, w, "memory_efficiency", p.memory_efficiency, false, true));
  for (const auto& [key, map] : {std::pair{"compute_efficiency_by_dtype",
                                           &p.compute_efficiency_by_dtype},
                                 std::pair{"memory_efficiency_by_dtype",
                                           &p.memory_efficiency_by_dtype}}) {
    if (!j.contains(key)) continue;
    const json& o = j[key];
    if (!o.is_object()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: {} must be an object dtype → fraction", w, key));
    }
    map->clear();
    for (auto it = o.begin(); it != o.end(); ++it) {
      RETURN_IF_ERROR(DTypeCheck(it.key(), w));
      ASSIGN_OR_RETURN(double f, GetNumber(o, w + " " + key, it.key().c_str(),
                                           0, true, true));
      (*map)[it.key()] = f;
    }
  }
  ASSIGN_OR_RETURN(
      p.serial_fraction,
      GetNumber(j, w, "serial_fraction", p.serial_fraction, false, false));
  ASSIGN_OR_RETURN(p.attention_efficiency,
                   GetNumber(j, w, "attention_efficiency",
                             p.attention_efficiency, false, false));
  ASSIGN_OR_RETURN(double softmax_ns,
                   GetNumber(j, w, "softmax_ns_per_score",
                             p.softmax_seconds_per_score * 1e9, false, false));
  p.softmax_seconds_per_score = softmax_ns * 1e-9;
  ASSIGN_OR_RETURN(p.attention_memory_efficiency,
                   GetNumber(j, w, "attention_memory_efficiency",
                             p.attention_memory_efficiency, false, false));
  ASSIGN_OR_RETURN(
      p.link_efficiency,
      GetNumber(j, w, "link_efficiency", p.link_efficiency, false, true));
  ASSIGN_OR_RETURN(
      double ov, GetNumber(j, w, "layer_overhead_us", p.layer_overhead_s * 1e6,
                           false, false));
  p.layer_overhead_s = ov * 1e-6;
  ASSIGN_OR_RETURN(
      double tov, GetNumber(j, w, "token_overhead_us", p.token_overhead_s * 1e6,
                            false, false));
  p.token_overhead_s = tov * 1e-6;
  ASSIGN_OR_RETURN(double hov,
                   GetNumber(j, w, "head_overhead_us", p.head_overhead_s * 1e6,
                             false, false));
  p.head_overhead_s = hov * 1e-6;
  ASSIGN_OR_RETURN(double sov,
                   GetNumber(j, w, "step_overhead_us", p.step_overhead_s * 1e6,
                             false, false));
  p.step_overhead_s = sov * 1e-6;
  if (j.contains("cached_bandwidth_gain")) {
    ASSIGN_OR_RETURN(
        p.cached_bandwidth_gain,
        ParseCurve(j["cached_bandwidth_gain"], w + " cached_bandwidth_gain",
                   "working-set MB, multiplier", 1e6));
  }
  if (j.contains("serial_fraction_curve")) {
    ASSIGN_OR_RETURN(
        p.serial_fraction_curve,
        ParseCurve(j["serial_fraction_curve"], w + " serial_fraction_curve",
                   "compute/memory ratio, fraction", 1));
  }
  if (j.contains("gemm_size_efficiency")) {
    ASSIGN_OR_RETURN(
        p.gemm_size_efficiency,
        ParseCurve(j["gemm_size_efficiency"], w + " gemm_size_efficiency",
                   "million weights, multiplier", 1e6));
  }
  ASSIGN_OR_RETURN(double res,
                   GetNumber(j, w, "reserved_memory_gb",
                             p.reserved_memory_bytes / kGB, false, false));
  p.reserved_memory_bytes = res * kGB;
  ASSIGN_OR_RETURN(
      p.memory_utilization,
      GetNumber(j, w, "memory_utilization", p.memory_utilization, false, true));
  if (j.contains("intra_node_link")) {
    ASSIGN_OR_RETURN(
        p.intra_node,
        ParseLink(j["intra_node_link"], w + " intra_node_link", p.intra_node));
  } else if (req) {
    return absl::InvalidArgumentError(
        fmt::format("{}: missing \"intra_node_link\"", w));
  }
  if (j.contains("inter_node_link")) {
    ASSIGN_OR_RETURN(
        p.inter_node,
        ParseLink(j["inter_node_link"], w + " inter_node_link", p.inter_node));
  } else if (req) {
    return absl::InvalidArgumentError(
        fmt::format("{}: missing \"inter_node_link\"", w));
  }
  RETURN_IF_ERROR(ValidateDeviceProfile(p));
  return p;
}

}  // namespace

double DeviceProfile::PeakFlops(std::string_view dtype) const {
  std::string d(dtype);
  if (d == "float16" || d == "f16") d = "fp16";
  if (d == "bfloat16") d = "bf16";
  if (d == "float32" || d == "f32") d = "fp32";
  auto it = peak_flops.find(d);
  if (it != peak_flops.end()) return it->second;
  // Weight-only quantization (int4, GGUF q*) dequantizes into 16-bit math.
  for (const char* fallback : {"bf16", "fp16", "fp32"}) {
    it = peak_flops.find(fallback);
    if (it != peak_flops.end()) return it->second;
  }
  return peak_flops.empty() ? 1.0 : peak_flops.begin()->second;
}

namespace {

std::string CanonicalDType(std::string_view dtype) {
  std::string d(dtype);
  if (d == "float16" || d == "f16") d = "fp16";
  if (d == "bfloat16") d = "bf16";
  if (d == "float32" || d == "f32") d = "fp32";
  return d;
}

double Lookup(const std::map<std::string, double>& m, std::string_view dtype,
              double fallback) {
  auto it = m.find(CanonicalDType(dtype));
  return it != m.end() ? it->second : fallback;
}

}  // namespace

double DeviceProfile::ComputeEfficiency(std::string_view dtype) const {
  return Lookup(compute_efficiency_by_dtype, dtype, compute_efficiency);
}

double DeviceProfile::MemoryEfficiency(std::string_view dtype) const {
  return Lookup(memory_efficiency_by_dtype, dtype, memory_efficiency);
}

namespace {

// y at x > 0 on the curve of (x, y) points (increasing x, not empty),
// linear in log(x) between points, the first y below the first point and
// `past_end` beyond the last.
double LogInterpolate(const std::vector<std::pair<double, double>>& g, double x,
                      double past_end) {
  if (x <= g.front().first) return g.front().second;
  for (size_t i = 1; i < g.size(); ++i) {
    if (x <= g[i].first) {
      const double x0 = std::log(g[i - 1].first), x1 = std::log(g[i].first);
      const double f = (std::log(x) - x0) / (x1 - x0);
      return g[i - 1].second + f * (g[i].second - g[i - 1].second);
    }
  }
  return past_end;
}

// Whether every point has a finite positive x, larger than the previous
// point's, and a y that `y_ok` accepts.
bool CurveOk(const std::vector<std::pair<double, double>>& g,
             bool (*y_ok)(double)) {
  for (size_t i = 0; i < g.size(); ++i) {
    const auto& [x, y] = g[i];
    if (!(x > 0) || !std::isfinite(x) || !y_ok(y) ||
        (i > 0 && !(x > g[i - 1].first))) {
      return false;
    }
  }
  return true;
}

}  // namespace

double DeviceProfile::BandwidthGain(double working_set_bytes) const {
  if (cached_bandwidth_gain.empty() || !(working_set_bytes > 0)) return 1.0;
  return LogInterpolate(cached_bandwidth_gain, working_set_bytes, 1.0);
}

double DeviceProfile::SerialFraction(double ratio) const {
  const auto& g = serial_fraction_curve;
  if (g.empty() || !(ratio > 0)) return serial_fraction;
  return LogInterpolate(g, ratio, g.back().second);
}

double DeviceProfile::GemmSizeScale(double weights) const {
  const auto& g = gemm_size_efficiency;
  if (g.empty() || !(weights > 0)) return 1.0;
  return LogInterpolate(g, weights, g.back().second);
}

absl::Status ValidateDeviceProfile(const DeviceProfile& p) {
  const std::string w = "device profile " + p.kind;
  if (p.kind.empty())
    return absl::InvalidArgumentError("device profile: empty kind");
  if (!(p.memory_bytes > 0) || !(p.memory_bandwidth_bytes_per_s > 0)) {
    return absl::InvalidArgumentError(
        w + ": memory size and bandwidth must be positive");
  }
  if (p.peak_flops.empty())
    return absl::InvalidArgumentError(w + ": no peak_tflops");
  std::vector<double> fractions = {p.compute_efficiency, p.memory_efficiency,
                                   p.link_efficiency, p.memory_utilization};
  for (const auto* m :
       {&p.compute_efficiency_by_dtype, &p.memory_efficiency_by_dtype}) {
    for (const auto& [dtype, f] : *m) fractions.push_back(f);
  }
  if (!(p.attention_efficiency >= 0 && p.attention_efficiency <= 1)) {
    return absl::InvalidArgumentError(
        w + ": attention_efficiency must be in [0, 1]");
  }
  if (!(p.attention_memory_efficiency >= 0 &&
        p.attention_memory_efficiency <= 1)) {
    return absl::InvalidArgumentError(
        w + ": attention_memory_efficiency must be in [0, 1]");
  }
  if (!(p.serial_fraction >= 0 && p.serial_fraction <= 1)) {
    return absl::InvalidArgumentError(w +
                                      ": serial_fraction must be in [0, 1]");
  }
  for (double f : fractions) {
    if (!(f > 0 && f <= 1)) {
      return absl::InvalidArgumentError(
          w + ": efficiency factors and memory_utilization must be in (0, 1]");
    }
  }
  if (!CurveOk(p.cached_bandwidth_gain,
               [](double gain) { return gain >= 1 && std::isfinite(gain); })) {
    return absl::InvalidArgumentError(
        w +
        ": cached_bandwidth_gain needs increasing positive sizes and "
        "multipliers >= 1");
  }
  if (!CurveOk(p.serial_fraction_curve,
               [](double f) { return f >= 0 && f <= 1; })) {
    return absl::InvalidArgumentError(
        w +
        ": serial_fraction_curve needs increasing positive ratios and "
        "fractions in [0, 1]");
  }
  if (!CurveOk(p.gemm_size_efficiency, [](double scale) {
        return scale > 0 && std::isfinite(scale);
      })) {
    return absl::InvalidArgumentError(
        w +
        ": gemm_size_efficiency needs increasing positive sizes and "
        "positive multipliers");
  }
  if (!(p.intra_node.bandwidth_bytes_per_s > 0) ||
      !(p.inter_node.bandwidth_bytes_per_s > 0)) {
    return absl::InvalidArgumentError(w + ": link bandwidths must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceProfile> ParseDeviceProfile(std::string_view json_text) {
  ASSIGN_OR_RETURN(json j,
                   internal::ParseJsonObject(json_text, "device profile"));
  return ProfileFromJson(j, nullptr);
}

std::string DeviceProfileToJson(const DeviceProfile& p) {
  json pf = json::object();
  for (const auto& [k, v] : p.peak_flops) pf[k] = v / 1e12;
  json j{{"kind", p.kind},
         {"source", p.source},
         {"memory_gb", p.memory_bytes / kGB},
         {"memory_bandwidth_gb_per_s", p.memory_bandwidth_bytes_per_s / kGB},
         {"peak_tflops", pf},
         {"compute_efficiency", p.compute_efficiency},
         {"memory_efficiency", p.memory_efficiency},
         {"link_efficiency", p.link_efficiency},
         {"layer_overhead_us", p.layer_overhead_s * 1e6},
         {"reserved_memory_gb", p.reserved_memory_bytes / kGB},
         {"memory_utilization", p.memory_utilization},
         {"intra_node_link", LinkToJson(p.intra_node)},
         {"inter_node_link", LinkToJson(p.inter_node)}};
  if (p.serial_fraction > 0) j["serial_fraction"] = p.serial_fraction;
  if (p.token_overhead_s > 0) j["token_overhead_us"] = p.token_overhead_s * 1e6;
  if (p.head_overhead_s > 0) j["head_overhead_us"] = p.head_overhead_s * 1e6;
  if (p.step_overhead_s > 0) j["step_overhead_us"] = p.step_overhead_s * 1e6;
  if (p.attention_efficiency > 0)
    j["attention_efficiency"] = p.attention_efficiency;
  if (p.softmax_seconds_per_score > 0)
    j["softmax_ns_per_score"] = p.softmax_seconds_per_score * 1e9;
  if (p.attention_memory_efficiency > 0)
    j["attention_memory_efficiency"] = p.attention_memory_efficiency;
  if (!p.compute_efficiency_by_dtype.empty())
    j["compute_efficiency_by_dtype"] = p.compute_efficiency_by_dtype;
  if (!p.memory_efficiency_by_dtype.empty())
    j["memory_efficiency_by_dtype"] = p.memory_efficiency_by_dtype;
  if (!p.cached_bandwidth_gain.empty()) {
    json g = json::array();
    for (const auto& [bytes, gain] : p.cached_bandwidth_gain) {
      g.push_back(json::array({bytes / 1e6, gain}));
    }
    j["cached_bandwidth_gain"] = g;
  }
  if (!p.serial_fraction_curve.empty()) {
    json g = json::array();
    for (const auto& [ratio, f] : p.serial_fraction_curve) {
      g.push_back(json::array({ratio, f}));
    }
    j["serial_fraction_curve"] = g;
  }
  if (!p.gemm_size_efficiency.empty()) {
    json g = json::array();
    for (const auto& [weights, scale] : p.gemm_size_efficiency) {
      g.push_back(json::array({weights / 1e6, scale}));
    }
    j["gemm_size_efficiency"] = g;
  }
  return j.dump(2);
}

const std::map<std::string, DeviceProfile>& BuiltinProfiles() {
  static const auto* profiles = [] {
    auto* m = new std::map<std::string, DeviceProfile>();
    for (const char* text : internal::BuiltinProfileTexts()) {
      auto p = ParseDeviceProfile(text);
      TESSERA_CHECK(p.ok(), "built-in profile does not parse: {}",
                    std::string(p.status().message()));
      (*m)[p->kind] = *p;
    }
    return m;
  }();
  return *profiles;
}

absl::StatusOr<DeviceProfile> FindBuiltinProfile(std::string_view kind) {
  std::string want = Lower(kind);
  if (want == "h100") want = "h100-sxm";
  if (want == "a100" || want == "a100-80g") want = "a100-80gb";
  std::string known;
  for (const auto& [k, p] : BuiltinProfiles()) {
    if (Lower(k) == want) return p;
    if (!known.empty()) known += ", ";
    known += k;
  }
  return absl::InvalidArgumentError(fmt::format(
      "unknown device kind \"{}\" (built-in: {}; or give a full profile "
      "object as \"device\")",
      std::string(kind), known));
}

absl::StatusOr<ClusterSpec> ParseCluster(std::string_view json_text) {
  ASSIGN_OR_RETURN(json j, internal::ParseJsonObject(json_text, "cluster"));
  RETURN_IF_ERROR(CheckKeys(j, "cluster",
                            {"name", "comment", "nodes", "devices_per_node",
                             "device", "intra_node_link", "inter_node_link"}));
  ClusterSpec c;
  if (!j.contains("nodes")) {
    return absl::InvalidArgumentError(
        "cluster: missing \"nodes\" (a count or a list of host names)");
  }
  const json& nodes = j["nodes"];
  if (nodes.is_array()) {
    for (const json& h : nodes) {
      if (!h.is_string() || h.get<std::string>().empty()) {
        return absl::InvalidArgumentError(
            "cluster: \"nodes\" list must hold host names");
      }
      c.hosts.push_back(h.get<std::string>());
    }
    if (c.hosts.empty())
      return absl::InvalidArgumentError("cluster: \"nodes\" is empty");
  } else {
    ASSIGN_OR_RETURN(int64_t n,
                     internal::GetInt(j, "cluster", "nodes", 0, true, true));
    if (n > 4096)
      return absl::InvalidArgumentError("cluster: more than 4096 nodes");
    for (int64_t i = 0; i < n; ++i) c.hosts.push_back(fmt::format("node{}", i));
  }
  ASSIGN_OR_RETURN(
      int64_t dpn,
      internal::GetInt(j, "cluster", "devices_per_node", 0, true, true));
  if (dpn > 1024)
    return absl::InvalidArgumentError("cluster: devices_per_node > 1024");
  c.devices_per_node = static_cast<int>(dpn);
  if (!j.contains("device")) {
    return absl::InvalidArgumentError(
        "cluster: missing \"device\" (a kind such as \"H100-SXM\" or a profile "
        "object)");
  }
  const json& dev = j["device"];
  if (dev.is_string()) {
    ASSIGN_OR_RETURN(c.device, FindBuiltinProfile(dev.get<std::string>()));
  } else if (dev.is_object()) {
    // A profile object; with only some fields it overrides the named kind.
    const std::string kind = dev.value("kind", std::string());
    auto builtin = FindBuiltinProfile(kind);
    ASSIGN_OR_RETURN(c.device,
                     ProfileFromJson(dev, builtin.ok() ? &*builtin : nullptr));
  } else {
    return absl::InvalidArgumentError(
        "cluster: \"device\" must be a kind name or an object");
  }
  if (j.contains("intra_node_link")) {
    ASSIGN_OR_RETURN(c.device.intra_node,
                     ParseLink(j["intra_node_link"], "cluster intra_node_link",
                               c.device.intra_node));
  }
  if (j.contains("inter_node_link")) {
    ASSIGN_OR_RETURN(c.device.inter_node,
                     ParseLink(j["inter_node_link"], "cluster inter_node_link",
                               c.device.inter_node));
  }
  return c;
}

absl::StatusOr<ClusterSpec> LoadCluster(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto c = ParseCluster(text);
  if (!c.ok()) return Annotate(c.status(), path);
  return c;
}

}  // namespace tessera::placement
