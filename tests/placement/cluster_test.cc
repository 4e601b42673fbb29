#include "placement/cluster.h"

#include <string>

#include "gtest/gtest.h"
#include "placement/workload.h"

namespace tessera::placement {
namespace {

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// Each curve in `curves` as the value of `key` in an otherwise valid profile
// must be InvalidArgument naming the key.
// A minimal cpu-local profile with `extra` keys ("\"key\": value, ...").
std::string CpuProfileJson(const std::string& extra) {
  return std::string(R"({"kind": "cpu-local", "memory_gb": 16,
      "memory_bandwidth_gb_per_s": 20, "peak_tflops": {"fp32": 0.1},
      "intra_node_link": {"bandwidth_gb_per_s": 10, "latency_us": 1},
      "inter_node_link": {"bandwidth_gb_per_s": 1, "latency_us": 50}, )") +
         extra + "}";
}

void ExpectBadCurves(const std::string& key,
                     std::initializer_list<const char*> curves) {
  for (const char* curve : curves) {
    auto p = ParseDeviceProfile(CpuProfileJson("\"" + key + "\": " + curve));
    ASSERT_FALSE(p.ok()) << curve;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(Message(p.status()).find(key), std::string::npos)
        << Message(p.status());
  }
}

TEST(ClusterTest, BuiltinProfilesParse) {
  for (const char* kind : {"H100-SXM", "H200", "A100-80GB", "B200"}) {
    auto p = FindBuiltinProfile(kind);
    ASSERT_TRUE(p.ok()) << kind << ": " << Message(p.status());
    EXPECT_FALSE(p->source.empty());
  }
  auto h100 = FindBuiltinProfile("h100");
  ASSERT_TRUE(h100.ok());
  EXPECT_DOUBLE_EQ(h100->memory_bandwidth_bytes_per_s, 3350e9);
  EXPECT_DOUBLE_EQ(h100->PeakFlops("bfloat16"), 989.5e12);
  EXPECT_DOUBLE_EQ(h100->PeakFlops("q4_k"), 989.5e12);  // dequantized math
}

TEST(ClusterTest, ParsesClusterWithOverrides) {
  auto c = ParseCluster(R"({"nodes": ["gpu-a", "gpu-b"], "devices_per_node": 8,
      "device": "H100-SXM", "inter_node_link": {"bandwidth_gb_per_s": 25}})");
  ASSERT_TRUE(c.ok()) << Message(c.status());
  EXPECT_EQ(c->num_devices(), 16);
  EXPECT_EQ(c->hosts[1], "gpu-b");
  EXPECT_DOUBLE_EQ(c->device.inter_node.bandwidth_bytes_per_s, 25e9);
  EXPECT_DOUBLE_EQ(c->LinkBetween(7, 8).bandwidth_bytes_per_s, 25e9);
  EXPECT_DOUBLE_EQ(c->LinkBetween(0, 7).bandwidth_bytes_per_s, 450e9);
}

TEST(ClusterTest, ProfileRoundTrips) {
  auto p = FindBuiltinProfile("B200");
  ASSERT_TRUE(p.ok());
  auto q = ParseDeviceProfile(DeviceProfileToJson(*p));
  ASSERT_TRUE(q.ok()) << Message(q.status());
  EXPECT_DOUBLE_EQ(q->memory_bytes, p->memory_bytes);
  EXPECT_EQ(q->peak_flops, p->peak_flops);
  // The calibrated CPU-only figures travel too.
  p->attention_memory_efficiency = 0.25;
  p->softmax_seconds_per_score = 2e-9;
  p->head_overhead_s = 0.15e-6;
  auto r = ParseDeviceProfile(DeviceProfileToJson(*p));
  ASSERT_TRUE(r.ok()) << Message(r.status());
  EXPECT_DOUBLE_EQ(r->attention_memory_efficiency, 0.25);
  EXPECT_NEAR(r->softmax_seconds_per_score, 2e-9, 1e-21);
  EXPECT_NEAR(r->head_overhead_s, 0.15e-6, 1e-18);
}

TEST(ClusterTest, PerDtypeEfficienciesOverrideTheGeneralOnes) {
  auto c = ParseCluster(R"({"nodes": 1, "devices_per_node": 1,
      "device": {"kind": "H100-SXM", "compute_efficiency": 0.6,
                 "compute_efficiency_by_dtype": {"fp16": 0.5, "q8_0": 0.4},
                 "memory_efficiency_by_dtype": {"q8_0": 0.7},
                 "peak_tflops": {"fp16": 900, "q8_0": 100}}})");
  ASSERT_TRUE(c.ok()) << Message(c.status());
  const DeviceProfile& d = c->device;
  EXPECT_DOUBLE_EQ(d.ComputeEfficiency("fp16"), 0.5);
  EXPECT_DOUBLE_EQ(d.ComputeEfficiency("f16"), 0.5);  // alias
  EXPECT_DOUBLE_EQ(d.ComputeEfficiency("bf16"), 0.6);
  EXPECT_DOUBLE_EQ(d.MemoryEfficiency("q8_0"), 0.7);
  EXPECT_DOUBLE_EQ(d.MemoryEfficiency("fp16"), d.memory_efficiency);
  EXPECT_DOUBLE_EQ(d.PeakFlops("q8_0"), 100e12);
  auto again = ParseDeviceProfile(DeviceProfileToJson(d));
  ASSERT_TRUE(again.ok()) << Message(again.status());
  EXPECT_EQ(again->compute_efficiency_by_dtype, d.compute_efficiency_by_dtype);
  EXPECT_EQ(again->memory_efficiency_by_dtype, d.memory_efficiency_by_dtype);
}

// Points (2 MB, 3x), (8 MB, 2x), (32 MB, 1x): log-linear between them, the
// first value below the first point, 1 past the last. At 4 MB, half-way in
// log2 between 2 and 8 MB, the gain is (3 + 2) / 2 = 2.5.
TEST(ClusterTest, CachedBandwidthGainInterpolatesInLogBytes) {
  auto p = ParseDeviceProfile(CpuProfileJson(R"("step_overhead_us": 12.5,
      "cached_bandwidth_gain": [[2, 3], [8, 2], [32, 1]])"));
  ASSERT_TRUE(p.ok()) << Message(p.status());
  EXPECT_DOUBLE_EQ(p->step_overhead_s, 12.5e-6);
  EXPECT_DOUBLE_EQ(p->BandwidthGain(1e6), 3.0);
  EXPECT_DOUBLE_EQ(p->BandwidthGain(2e6), 3.0);
  EXPECT_NEAR(p->BandwidthGain(4e6), 2.5, 1e-12);
  EXPECT_NEAR(p->BandwidthGain(16e6), 1.5, 1e-12);
  EXPECT_DOUBLE_EQ(p->BandwidthGain(32e6), 1.0);
  EXPECT_DOUBLE_EQ(p->BandwidthGain(1e12), 1.0);
  auto again = ParseDeviceProfile(DeviceProfileToJson(*p));
  ASSERT_TRUE(again.ok()) << Message(again.status());
  EXPECT_EQ(again->cached_bandwidth_gain.size(), 3u);
  EXPECT_DOUBLE_EQ(again->step_overhead_s, 12.5e-6);
  EXPECT_NEAR(again->BandwidthGain(4e6), 2.5, 1e-12);
  // Built-in GPU profiles have no curve: no effect at any size.
  EXPECT_DOUBLE_EQ(FindBuiltinProfile("H100-SXM")->BandwidthGain(1e6), 1.0);
}

// Points (ratio 0.25, 0.1), (1, 0.5), (4, 0.7): log-linear between them and
// flat past either end. At ratio 0.5, half-way in log2 between 0.25 and 1,
// the share is (0.1 + 0.5) / 2 = 0.3; at 2, (0.5 + 0.7) / 2 = 0.6. Without a
// curve (or at a ratio of 0) the scalar serial_fraction holds.
TEST(ClusterTest, SerialFractionCurveInterpolatesInLogRatio) {
  auto p = ParseDeviceProfile(CpuProfileJson(R"("serial_fraction": 0.4,
      "serial_fraction_curve": [[0.25, 0.1], [1, 0.5], [4, 0.7]])"));
  ASSERT_TRUE(p.ok()) << Message(p.status());
  EXPECT_DOUBLE_EQ(p->SerialFraction(0.1), 0.1);
  EXPECT_NEAR(p->SerialFraction(0.5), 0.3, 1e-12);
  EXPECT_NEAR(p->SerialFraction(2), 0.6, 1e-12);
  EXPECT_DOUBLE_EQ(p->SerialFraction(100), 0.7);
  EXPECT_DOUBLE_EQ(p->SerialFraction(0), 0.4);
  auto again = ParseDeviceProfile(DeviceProfileToJson(*p));
  ASSERT_TRUE(again.ok()) << Message(again.status());
  EXPECT_EQ(again->serial_fraction_curve.size(), 3u);
  EXPECT_NEAR(again->SerialFraction(2), 0.6, 1e-12);
  EXPECT_DOUBLE_EQ(FindBuiltinProfile("H100-SXM")->SerialFraction(2),
                   FindBuiltinProfile("H100-SXM")->serial_fraction);
  ExpectBadCurves(
      "serial_fraction_curve",
      {"[[4, 0.5], [1, 0.3]]", "[[1, 1.5]]", "[[0, 0.5]]", "[[1]]"});
}

TEST(ClusterTest, GemmSizeEfficiencyInterpolatesInLogSize) {
  auto p = ParseDeviceProfile(CpuProfileJson(
      R"("gemm_size_efficiency": [[0.0625, 0.5], [1, 0.9], [4, 1]])"));
  ASSERT_TRUE(p.ok()) << Message(p.status());
  EXPECT_DOUBLE_EQ(p->GemmSizeScale(1000), 0.5);      // flat below
  EXPECT_NEAR(p->GemmSizeScale(0.25e6), 0.7, 1e-12);  // halfway in log size
  EXPECT_NEAR(p->GemmSizeScale(2e6), 0.95, 1e-12);
  EXPECT_DOUBLE_EQ(p->GemmSizeScale(1e9), 1.0);  // flat above
  EXPECT_DOUBLE_EQ(p->GemmSizeScale(0), 1.0);
  auto again = ParseDeviceProfile(DeviceProfileToJson(*p));
  ASSERT_TRUE(again.ok()) << Message(again.status());
  ASSERT_EQ(again->gemm_size_efficiency.size(), 3u);
  EXPECT_NEAR(again->GemmSizeScale(2e6), 0.95, 1e-12);
  EXPECT_DOUBLE_EQ(FindBuiltinProfile("H100-SXM")->GemmSizeScale(1e3), 1.0);
  ExpectBadCurves("gemm_size_efficiency",
                  {"[[4, 1], [1, 0.9]]", "[[1, 0]]", "[[0, 0.5]]", "[[1]]"});
}

TEST(ClusterTest, BadCachedBandwidthGainIsInvalidArgument) {
  ExpectBadCurves("cached_bandwidth_gain",
                  {"[[8, 2], [2, 3]]", "[[2, 0.5]]", "[[2]]", "{\"a\": 1}"});
}

TEST(ClusterTest, BadInputsAreInvalidArgument) {
  struct Case {
    const char* json;
    const char* needle;
  } cases[] = {
      {R"({"nodes": 1, "devices_per_node": 8, "device": "H100-SXM", "gpus": 8})",
       "unknown key \"gpus\""},
      {R"({"nodes": 1, "devices_per_node": 8, "device": "TPU-v9"})",
       "unknown device kind \"TPU-v9\""},
      {R"({"nodes": -1, "devices_per_node": 8, "device": "H100-SXM"})",
       "positive"},
      {R"({"nodes": 1, "devices_per_node": 8,
           "device": {"kind": "H100-SXM", "memory_gb": -80}})",
       "memory_gb"},
      {R"({"nodes": 1, "devices_per_node": 8,
           "device": {"kind": "X", "memory_gb": 80}})",
       "memory_bandwidth_gb_per_s"},
      {R"({"nodes": 1, "devices_per_node": 8, "device": "H100-SXM",
           "inter_node_link": {"bandwidth": 5}})",
       "unknown key \"bandwidth\""},
      {R"({"nodes": 1, "devices_per_node": 1, "device": {"kind": "H100-SXM",
           "compute_efficiency_by_dtype": {"fp16": 1.5}}})",
       "(0, 1]"},
      {R"({"nodes": 1, "devices_per_node": 1, "device": {"kind": "H100-SXM",
           "memory_efficiency_by_dtype": {"fp17": 0.5}}})",
       "unknown dtype \"fp17\""},
      {R"({"nodes": 1, "devices_per_node": 1, "device": {"kind": "H100-SXM",
           "compute_efficiency_by_dtype": 0.5}})",
       "must be an object"},
      {R"({"nodes": 1, "devices_per_node": 1, "device": {"kind": "H100-SXM",
           "attention_memory_efficiency": 1.5}})",
       "attention_memory_efficiency must be in [0, 1]"},
      {R"([1, 2])", "JSON object"},
  };
  for (const Case& c : cases) {
    auto r = ParseCluster(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_NE(Message(r.status()).find(c.needle), std::string::npos)
        << Message(r.status()) << " lacks " << c.needle;
  }
}

TEST(WorkloadTest, ParsesAndRejects) {
  auto w = ParseWorkload(
      R"({"input_tokens": {"distribution": "lognormal", "mean": 512},
      "output_tokens": 128, "arrival_rate": 4, "slo": {"ttft_ms": 200, "tpot_ms": 30}})");
  ASSERT_TRUE(w.ok()) << Message(w.status());
  EXPECT_DOUBLE_EQ(w->slo.ttft_s, 0.2);
  EXPECT_EQ(w->output.Max(), 128);
  EXPECT_EQ(w->objective, Workload::Objective::kGoodput);
  auto again = ParseWorkload(WorkloadToJson(*w));
  ASSERT_TRUE(again.ok()) << Message(again.status());
  EXPECT_DOUBLE_EQ(again->input.mean, 512);

  for (const char* bad :
       {R"({"input_tokens": {"mean": -5}})", R"({"arrival_rate": -1})",
        R"({"slo": {"ttft": 5}})",
        R"({"input_tokens": {"distribution": "zipf", "mean": 5}})",
        R"({"prompt": 5})", R"({"output_tokens": 0})"}) {
    auto r = ParseWorkload(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(WorkloadTest, SamplesStayInRange) {
  auto w = ParseWorkload(
      R"({"input_tokens": {"distribution": "exponential", "mean": 100,
      "min": 10, "max": 400}})");
  ASSERT_TRUE(w.ok());
  SplitMix64 rng(7);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const int64_t v = w->input.Sample(rng);
    ASSERT_GE(v, 10);
    ASSERT_LE(v, 400);
    sum += static_cast<double>(v);
  }
  EXPECT_NEAR(sum / 10000, 100, 15);
}

}  // namespace
}  // namespace tessera::placement
