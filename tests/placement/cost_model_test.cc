#include "placement/cost_model.h"

#include <cmath>
#include <string>

#include "gtest/gtest.h"

namespace tessera::placement {
namespace {

const std::string kData = TESSERA_PLACEMENT_TESTDATA;

ModelSpec Load(const std::string& name) {
  auto m = LoadModelSpec(kData + "/" + name);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return *m;
}

DeviceProfile H100() {
  auto p = FindBuiltinProfile("H100-SXM");
  EXPECT_TRUE(p.ok());
  return *p;
}

// Llama-2-7B, one decode token at context 1000, TP1:
//  q,k,v,o: 2 FLOPs × 4·4096² weights = 134,217,728 FLOPs;
//  MLP: 2 × 135,266,304 = 270,532,608 FLOPs;
//  attention core: 4 · 32 heads · 128 · 1001 pairs = 16,400,384 FLOPs;
//  KV read: 1000 tokens · 2 · 32 · 128 · 2 B = 16,384,000 B, plus the new
//  token's K/V write (16,384 B) and Q in / O out (2·32·128·2 = 16,384 B).
TEST(CostModelTest, Llama2_7bDecodeLayer) {
  CostModel cm(Load("llama-2-7b"), H100());
  const LayerCost c = cm.Layer(BatchShape::Decode(1, 1000), Layout{});
  EXPECT_DOUBLE_EQ(c.attn_linear.flops, 134217728.0);
  EXPECT_DOUBLE_EQ(c.ffn.flops, 270532608.0);
  EXPECT_DOUBLE_EQ(c.attn_core.flops, 16400384.0);
  EXPECT_DOUBLE_EQ(c.attn_core.bytes, 16384000.0 + 16384 + 16384);
  // Weights dominate linear bytes: 67,108,864 · 2 B + activations
  // 1 · (2·4096 + 2·4096 + 2·4096) · 2 B = 49,152.
  EXPECT_DOUBLE_EQ(c.attn_linear.bytes, 134217728.0 + 49152);
  EXPECT_DOUBLE_EQ(c.allreduce_bytes, 0);
}

// A cached-bandwidth curve speeds up the streaming of a step whose working
// set fits it, and nothing else. Llama-2-7B decode at context 1000, TP1:
// weights per layer 4·4096² + 3·4096·11008 + 2·4096 = 202,383,360 params
// (404,766,720 B), + KV 1000 tokens · 2·32·128·2 = 16,384 B per token, both
// × 32 layers, + LM head 4096·32000·2 = 262,144,000 B ≈ 13.7 GB: past any
// cache.
TEST(CostModelTest, CachedBandwidthGainAppliesToSmallWorkingSetsOnly) {
  DeviceProfile d = H100();
  d.cached_bandwidth_gain = {{50e6, 4.0}, {100e6, 1.0}};
  const ModelSpec m = Load("llama-2-7b");
  CostModel plain(m, H100()), cached(m, d);
  const BatchShape b = BatchShape::Decode(1, 1000);
  EXPECT_NEAR(cached.StepWorkingSetBytes(b, Layout{}),
              32 * (404766720.0 + 1000 * 2 * 32 * 128 * 2.0) + 262144000.0,
              1.0);
  EXPECT_DOUBLE_EQ(cached.LayerComputeTime(cached.Layer(b, Layout{})),
                   plain.LayerComputeTime(plain.Layer(b, Layout{})));
  // The same curve with a cache as large as the working set: every
  // memory-bound operator streams 4x faster.
  d.cached_bandwidth_gain = {{20e9, 4.0}, {40e9, 1.0}};
  CostModel huge(m, d);
  const LayerCost c = huge.Layer(b, Layout{});
  EXPECT_DOUBLE_EQ(c.ffn.bandwidth_gain, 4.0);
  EXPECT_DOUBLE_EQ(huge.LmHead(b, Layout{}).bandwidth_gain, 4.0);
  const LayerCost p = plain.Layer(b, Layout{});
  EXPECT_NEAR(huge.OpTime(c.ffn), plain.OpTime(p.ffn) / 4, 1e-12);
}

// The per-step overhead is paid once per stage per step, not per layer.
TEST(CostModelTest, StepOverheadIsPaidOncePerStage) {
  DeviceProfile d = H100();
  const ModelSpec m = Load("llama-2-7b");
  ClusterSpec cluster;
  cluster.hosts = {"a"};
  cluster.devices_per_node = 8;
  cluster.device = d;
  CostModel plain(m, d);
  d.step_overhead_s = 1e-3;
  cluster.device = d;
  CostModel with(m, d);
  const BatchShape b = BatchShape::Decode(4, 512);
  for (int pp : {1, 2}) {
    const Layout l{1, pp, 1};
    InstanceModel a(plain, cluster, l, 0, InstanceModel::Role::kBoth);
    InstanceModel c(with, cluster, l, 0, InstanceModel::Role::kBoth,
                    a.stages());
    EXPECT_NEAR(c.StepLatency(b) - a.StepLatency(b), pp * 1e-3, 1e-12);
  }
}

// The per-token overhead has a part per query head on the rank: Llama-2-7B
// (32 heads) at TP2 has 16 per rank; 5 tokens × (1 µs + 16 × 0.1 µs).
TEST(CostModelTest, TokenOverheadGrowsWithTheHeadsOnTheRank) {
  DeviceProfile d = H100();
  const ModelSpec m = Load("llama-2-7b");
  CostModel plain(m, d);
  d.token_overhead_s = 1e-6;
  d.head_overhead_s = 0.1e-6;
  CostModel with(m, d);
  const Layout tp2{2, 1, 1};
  const BatchShape b = BatchShape::Decode(5, 100);
  EXPECT_NEAR(with.LayerComputeTime(with.Layer(b, tp2)) -
                  plain.LayerComputeTime(plain.Layer(b, tp2)),
              5 * (1e-6 + 16 * 0.1e-6), 1e-12);
}

// Prefill of 4 tokens: causal pairs 1+2+3+4 = 10 → 4·32·128·10 FLOPs.
TEST(CostModelTest, PrefillAttentionIsCausal) {
  CostModel cm(Load("llama-2-7b"), H100());
  const LayerCost c = cm.Layer(BatchShape::Prefill(1, 4), Layout{});
  EXPECT_DOUBLE_EQ(c.attn_core.flops, 4.0 * 32 * 128 * 10);
  EXPECT_DOUBLE_EQ(c.attn_linear.flops, 4 * 134217728.0);
}

// OpTime takes the share of min(c, m) that shows from the curve at the op's
// own compute/memory ratio: 1 ms of compute over 4 ms of memory (ratio 0.25)
// shows 0.1 of it, 4 ms over 1 ms (ratio 4) 0.7.
TEST(CostModelTest, SerialFractionFollowsTheOpsBalance) {
  DeviceProfile d = H100();
  d.serial_fraction_curve = {{0.25, 0.1}, {4, 0.7}};
  const ModelSpec m = Load("llama-2-7b");
  const CostModel cm(m, d);
  const double flops_per_s =
      d.PeakFlops(m.weight_dtype) * d.ComputeEfficiency(m.weight_dtype);
  const double bytes_per_s =
      d.memory_bandwidth_bytes_per_s * d.MemoryEfficiency(m.weight_dtype);
  OpCost memory_bound{1e-3 * flops_per_s, 4e-3 * bytes_per_s};
  EXPECT_NEAR(cm.OpTime(memory_bound), 4e-3 + 0.1e-3, 1e-12);
  OpCost compute_bound{4e-3 * flops_per_s, 1e-3 * bytes_per_s};
  EXPECT_NEAR(cm.OpTime(compute_bound), 4e-3 + 0.7e-3, 1e-12);
}

// Matrix products over smaller matrices run at a lower share of peak
// (gemm_size_efficiency): the scale of an operator is the FLOP-weighted
// harmonic mean of its products' scales, so their times add up. Llama-2-7B
// at tp 8: q, k, v and o are 4096 x 512 (2,097,152 weights each), the MLP's
// three matrices 4096 x 1376 (5,636,096 each).
TEST(CostModelTest, SmallerMatricesRunAtTheirSizesEfficiency) {
  const OpCost sum = OpCost{1, 0, 0, 1, 0, 0.5} + OpCost{3, 0, 0, 1, 0, 1};
  EXPECT_DOUBLE_EQ(sum.flops, 4);
  EXPECT_DOUBLE_EQ(sum.compute_scale, 4.0 / (1 / 0.5 + 3 / 1.0));

  DeviceProfile d = H100();
  d.serial_fraction = 0;
  d.gemm_size_efficiency = {{1e6, 0.5}, {16e6, 1}};
  const ModelSpec m = Load("llama-2-7b");
  const CostModel cm(m, d);
  const auto scale = [](double weights) {
    return 0.5 + 0.5 * std::log(weights / 1e6) / std::log(16.0);
  };
  const BatchShape prefill = BatchShape::Prefill(1, 4096);
  const LayerCost tp8 = cm.Layer(prefill, Layout{8, 1, 1});
  EXPECT_NEAR(tp8.attn_linear.compute_scale, scale(2097152), 1e-12);
  EXPECT_NEAR(tp8.ffn.compute_scale, scale(5636096), 1e-12);
  // tp 1: every matrix is past the curve's last point.
  const LayerCost tp1 = cm.Layer(prefill, Layout{});
  EXPECT_DOUBLE_EQ(tp1.attn_linear.compute_scale, 1);
  EXPECT_DOUBLE_EQ(tp1.ffn.compute_scale, 1);
  // A compute-bound prefill pays the scale in full.
  const double flops_per_s =
      d.PeakFlops(m.weight_dtype) * d.ComputeEfficiency(m.weight_dtype);
  EXPECT_NEAR(cm.OpTime(tp8.ffn),
              tp8.ffn.flops / (flops_per_s * scale(5636096)),
              tp8.ffn.flops / flops_per_s * 1e-12);
}

// Attention's per-score softmax work overlaps its products: its compute time
// is the larger of the two, not their sum; and its KV reads stream at the
// profile's attention_memory_efficiency. Llama-2-7B prefill of 1000 tokens
// (compute-bound): 32 heads · 500,500 causal pairs = 16,016,000 scores,
// 4 · 128 FLOPs each = 8,200,192,000 FLOPs.
TEST(CostModelTest, AttentionScoreWorkOverlapsItsProducts) {
  DeviceProfile d = H100();
  d.serial_fraction = 0;
  d.attention_efficiency = 0.5;
  const ModelSpec m = Load("llama-2-7b");
  const BatchShape prefill = BatchShape::Prefill(1, 1000);
  const double flop_s = 8200192000.0 / (d.PeakFlops("fp16") * 0.5);
  // Score work under the FLOP time: hidden.
  d.softmax_seconds_per_score = 0.5 * flop_s / 16016000;
  {
    CostModel cm(m, d);
    const LayerCost c = cm.Layer(prefill, Layout{});
    EXPECT_DOUBLE_EQ(c.attn_core.score_s, 0.5 * flop_s);
    EXPECT_NEAR(cm.OpTime(c.attn_core, 0.5), flop_s, flop_s * 1e-12);
  }
  // Twice the FLOP time: it sets the compute time alone.
  d.softmax_seconds_per_score = 2 * flop_s / 16016000;
  {
    CostModel cm(m, d);
    const LayerCost c = cm.Layer(prefill, Layout{});
    EXPECT_NEAR(cm.OpTime(c.attn_core, 0.5), 2 * flop_s, flop_s * 1e-12);
  }
  // Decode at context 1000 is memory-bound: KV reads at a quarter of the
  // bandwidth's efficiency take 4x as long; the weights' ops are unchanged.
  d.softmax_seconds_per_score = 0;
  const BatchShape decode = BatchShape::Decode(1, 1000);
  CostModel plain(m, d);
  d.attention_memory_efficiency = d.MemoryEfficiency("fp16") / 4;
  CostModel slow(m, d);
  const LayerCost p = plain.Layer(decode, Layout{});
  const LayerCost c = slow.Layer(decode, Layout{});
  EXPECT_NEAR(slow.OpTime(c.attn_core, 0.5), 4 * plain.OpTime(p.attn_core, 0.5),
              1e-15);
  EXPECT_DOUBLE_EQ(slow.OpTime(c.ffn), plain.OpTime(p.ffn));
}

// Llama-2-70B with TP4: per rank 16 query heads and 2 KV heads:
// attn 8192·128·(2·16 + 2·2) = 37,748,736; MLP 704,643,072 / 4 =
// 176,160,768; norms 16,384 → 213,925,888 params = 427,851,776 bytes.
// With TP16 the 8 KV heads are replicated (1 per rank, not 0.5).
TEST(CostModelTest, Llama2_70bWeightsPerRank) {
  CostModel cm(Load("llama-2-70b"), H100());
  EXPECT_DOUBLE_EQ(cm.LayerWeightBytesPerRank({4, 1, 1}), 427851776.0);
  EXPECT_EQ(cm.KvHeadsPerRank({16, 1, 1}), 1);
  EXPECT_DOUBLE_EQ(cm.KvBytesPerTokenPerLayerPerRank({4, 1, 1}),
                   2.0 * 2 * 128 * 2);
  // All-reduce per layer input: tokens · 8192 · 2 B.
  EXPECT_DOUBLE_EQ(
      cm.Layer(BatchShape::Decode(8, 100), {4, 1, 1}).allreduce_bytes,
      8.0 * 8192 * 2);
}

// Mixtral decode of one token, TP1: router 2·4096·8 = 65,536 FLOPs; 2
// experts × 2 × 176,160,768 = 704,643,072 FLOPs. Bytes: both touched experts'
// weights 2·176,160,768·2 B = 704,643,072, router 65,536 B, activations
// 2 tokens·(2·4096 + 3·14336)·2 B = 204,800.
TEST(CostModelTest, MixtralDecodeMoe) {
  CostModel cm(Load("mixtral-8x7b"), H100());
  const LayerCost c = cm.Layer(BatchShape::Decode(1, 10), Layout{});
  EXPECT_DOUBLE_EQ(c.ffn.flops, 65536.0 + 704643072.0);
  EXPECT_DOUBLE_EQ(c.ffn.bytes, 704643072.0 + 65536 + 204800);
  // A large batch touches all 8 experts: bytes ≥ all expert weights.
  const LayerCost big = cm.Layer(BatchShape::Decode(256, 10), Layout{});
  EXPECT_GT(big.ffn.bytes, 8 * 176160768.0 * 2 * 0.999);
  // EP4: the busiest rank gets more than the mean share of tokens.
  const LayerCost ep = cm.Layer(BatchShape::Decode(64, 10), {4, 1, 4});
  EXPECT_GT(ep.expert_imbalance, 1.0);
  EXPECT_LE(ep.expert_imbalance, 4.0);
}

TEST(CostModelTest, AlphaBetaCollectives) {
  const LinkSpec link{100e9, 1e-6};
  // Ring all-reduce of 1 MB over 4: 2·3 steps · 1 µs + 2·3/4 · 1e6 / 1e11.
  EXPECT_NEAR(RingAllReduceTime(1e6, 4, link, 1.0), 6e-6 + 1.5e-5, 1e-12);
  EXPECT_NEAR(RingAllGatherTime(1e6, 4, link, 1.0), 3e-6 + 7.5e-6, 1e-12);
  EXPECT_NEAR(AllToAllTime(1e6, 4, link, 1.0), 3e-6 + 7.5e-6, 1e-12);
  EXPECT_NEAR(P2pTime(1e6, link, 0.5), 1e-6 + 2e-5, 1e-12);
  EXPECT_EQ(RingAllReduceTime(1e6, 1, link, 1.0), 0);
}

// 80 layers over 4 stages with the LM head worth 4 layers: the last stage
// takes fewer layers, and the slowest stage is as fast as possible.
TEST(CostModelTest, BalanceStagesAccountsForLmHead) {
  const auto st = BalanceStages(80, 4, 1.0, 0.0, 4.0);
  ASSERT_EQ(st.size(), 4u);
  EXPECT_EQ(st[0].begin, 0);
  EXPECT_EQ(st[3].end, 80);
  int total = 0;
  for (size_t s = 0; s < st.size(); ++s) {
    total += st[s].size();
    if (s > 0) {
      EXPECT_EQ(st[s].begin, st[s - 1].end);
    }
  }
  EXPECT_EQ(total, 80);
  EXPECT_EQ(st[3].size(), 17);  // 17 + 4 = 21 = ceil(84 / 4)
  EXPECT_EQ(st[0].size(), 21);
}

// A TP group spanning two nodes pays the NIC: its decode step is slower.
TEST(CostModelTest, CrossNodeTensorParallelIsSlower) {
  CostModel cm(Load("llama-2-70b"), H100());
  ClusterSpec c;
  c.hosts = {"a", "b"};
  c.devices_per_node = 8;
  c.device = H100();
  const InstanceModel inside(cm, c, {8, 1, 1}, 0, InstanceModel::Role::kDecode);
  const InstanceModel across(cm, c, {8, 1, 1}, 4, InstanceModel::Role::kDecode);
  EXPECT_FALSE(inside.tp_spans_nodes());
  EXPECT_TRUE(across.tp_spans_nodes());
  EXPECT_GT(across.DecodeIteration(64, 1000),
            inside.DecodeIteration(64, 1000) * 1.2);
}

}  // namespace
}  // namespace tessera::placement
