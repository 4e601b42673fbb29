// Cross-backend tests: every op on every ISA this CPU supports against the
// scalar reference (kernels/reference), on odd sizes.
//
// Tolerances: vector kernels sum in a different order than the reference
// (lanes, then a horizontal reduction); the f32 rounding error of a dot
// product is bounded by ~k·ε·Σ|x·w| and is typically √k·ε·Σ|x·w|, so we allow
// 2e-5·Σ|x·w| (ε = 6e-8, k <= 1100). The bf16 dot-product path rounds the
// activations to bf16 (relative error <= 2^-9 each), so it gets 2^-8·Σ|x·w|.
// The q8_0 GEMV quantizes each activation to its block's int8 grid (error <=
// amax/254 per value), so it gets Σ_blocks amax/254 · Σ|w| on top (the exact
// bound, +0.1%). The fused QKV op must equal the unfused ops bit for bit.
// Elementwise ops use a vector exp / f32 sum of squares: a few ulps.
#include "kernels/ops.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/random.h"
#include "gtest/gtest.h"
#include "kernels/cpu_features.h"
#include "kernels/reference/reference_ops.h"
#include "kernels/thread_pool.h"

namespace tessera::kernels {
namespace {

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> isas = {Isa::kScalar};
  if (IsaSupported(Isa::kAvx2)) isas.push_back(Isa::kAvx2);
  if (IsaSupported(Isa::kAvx512)) isas.push_back(Isa::kAvx512);
  return isas;
}

std::vector<float> RandomVector(int64_t n, uint64_t seed, float scale = 1.0f) {
  SplitMix64 rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = (rng.Uniform() * 2.0f - 1.0f) * scale;
  return v;
}

// A [n, k] weight of `dtype` with random values.
Tensor RandomWeight(DType dtype, int64_t n, int64_t k, uint64_t seed) {
  Tensor w = Tensor::Empty(dtype, {n, k});
  SplitMix64 rng(seed);
  if (dtype == DType::kQ8_0) {
    uint8_t* p = w.data<uint8_t>();
    for (int64_t b = 0; b < n * k / 32; ++b) {
      const uint16_t d = FloatToHalf(0.001f + 0.02f * rng.Uniform());
      std::memcpy(p + b * 34, &d, 2);
      for (int j = 0; j < 32; ++j) {
        p[b * 34 + 2 + j] =
            static_cast<uint8_t>(static_cast<int8_t>(rng.Next() % 255 - 127));
      }
    }
    return w;
  }
  for (int64_t i = 0; i < n * k; ++i) {
    const float v = rng.Uniform() * 2.0f - 1.0f;
    if (dtype == DType::kF32) w.data<float>()[i] = v;
    if (dtype == DType::kF16) w.data<uint16_t>()[i] = FloatToHalf(v);
    if (dtype == DType::kBF16) w.data<uint16_t>()[i] = FloatToBF16(v);
  }
  return w;
}

struct LinearCase {
  DType dtype;
  int64_t m, n, k;
};

class LinearTest : public ::testing::TestWithParam<LinearCase> {};

void CheckLinear(const LinearCase& c, Isa isa, bool exact, ThreadPool* pool) {
  const int64_t ldx = c.k + 3, ldy = c.n + 5;
  const std::vector<float> x = RandomVector(c.m * ldx, 1 + c.m * 7 + c.k);
  const std::vector<float> bias = RandomVector(c.n, 99);
  const Tensor w = RandomWeight(c.dtype, c.n, c.k, 2 + c.n);
  std::vector<float> ref(c.m * ldy, 0.0f), got(c.m * ldy, -7.0f);
  ASSERT_TRUE(
      reference::Linear(x.data(), c.m, ldx, w, bias.data(), ref.data(), ldy)
          .ok());
  Context ctx{pool, isa, exact};
  ASSERT_TRUE(
      Linear(ctx, x.data(), c.m, ldx, w, bias.data(), got.data(), ldy).ok());
  // Error scale per output: Σ|x·w|.
  std::vector<float> row(c.k);
  const bool bf16_dot = c.dtype == DType::kBF16 && !exact;
  // q8_0 GEMV quantizes the activations to q8_0 blocks (ops.h, Context::exact):
  // each value moves by at most its block's amax/254.
  const bool q8_dot =
      c.dtype == DType::kQ8_0 && !exact && c.m <= 4 && isa != Isa::kScalar;
  for (int64_t j = 0; j < c.n; ++j) {
    reference::DequantizeRow(c.dtype, w.raw_data(), c.k, j, row.data());
    for (int64_t i = 0; i < c.m; ++i) {
      double s = 0.0, q8_bound = 0.0;
      for (int64_t q = 0; q < c.k; ++q) s += std::fabs(x[i * ldx + q] * row[q]);
      for (int64_t b = 0; q8_dot && b < c.k; b += 32) {
        double amax = 0.0, wsum = 0.0;
        for (int64_t q = b; q < b + 32; ++q) {
          amax = std::max<double>(amax, std::fabs(x[i * ldx + q]));
          wsum += std::fabs(row[q]);
        }
        q8_bound += amax / 254.0 * wsum * 1.001;
      }
      const double tol = (bf16_dot ? 1.0 / 256 : 2e-5) * s + q8_bound + 1e-6;
      ASSERT_NEAR(got[i * ldy + j], ref[i * ldy + j], tol)
          << IsaName(isa) << " " << DTypeName(c.dtype) << " m=" << c.m
          << " n=" << c.n << " k=" << c.k << " at (" << i << "," << j << ")";
    }
    // Padding between rows is untouched.
  }
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = c.n; j < ldy; ++j) ASSERT_EQ(got[i * ldy + j], -7.0f);
  }
}

TEST_P(LinearTest, MatchesReferenceOnEveryIsa) {
  ThreadPool pool(3);
  const bool q8 = GetParam().dtype == DType::kQ8_0;
  for (int64_t n : {1, 7, 13, 101}) {
    for (int64_t k :
         {q8 ? 32 : 1, q8 ? 64 : 15, 96, q8 ? 1088 : 1100, q8 ? 3008 : 3000}) {
      LinearCase c = GetParam();
      c.n = n;
      c.k = k;
      if (c.m * n * k > 2'000'000) continue;
      for (Isa isa : SupportedIsas()) {
        CheckLinear(c, isa, /*exact=*/false, nullptr);
        CheckLinear(c, isa, /*exact=*/false, &pool);
        if (c.dtype == DType::kBF16 || c.dtype == DType::kQ8_0) {
          CheckLinear(c, isa, /*exact=*/true, &pool);
        }
      }
    }
  }
}

std::vector<LinearCase> LinearCases() {
  std::vector<LinearCase> cases;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    // 70: past the f32 streaming limit (blocked GEMM), and two f16 row blocks
    // at k = 3000 (streamed blocks hold 512 KiB of activations).
    for (int64_t m : {1, 2, 3, 4, 5, 17, 40, 70})
      cases.push_back({dt, m, 0, 0});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest, ::testing::ValuesIn(LinearCases()),
                         [](const ::testing::TestParamInfo<LinearCase>& info) {
                           return std::string(DTypeName(info.param.dtype)) +
                                  "_m" + std::to_string(info.param.m);
                         });

// The bf16 dot-product GEMM (outer-product tiles of 8 outputs × 48 rows,
// 64-output blocks, K blocks of <= 8192): shapes past every block edge (odd
// k: a half pair; three K blocks; n and m not multiples of the tile), against
// the reference, and partition invariance: each (row, output) accumulates in k
// order in its own lane, so the bits depend neither on the thread count nor
// on which rows or outputs share the call.
TEST(LinearTest, Bf16DotGemmBlockEdgesAndPartitionInvariance) {
  ThreadPool pool(3);
  for (Isa isa : SupportedIsas()) {
    if (isa == Isa::kScalar) continue;
    for (const LinearCase& c : {LinearCase{DType::kBF16, 200, 37, 2049},
                                LinearCase{DType::kBF16, 33, 70, 1040},
                                LinearCase{DType::kBF16, 49, 9, 17},
                                LinearCase{DType::kBF16, 20, 75, 16411}}) {
      CheckLinear(c, isa, /*exact=*/false, &pool);
      const std::vector<float> x = RandomVector(c.m * c.k, 5 + c.k);
      const std::vector<float> bias = RandomVector(c.n, 6);
      const Tensor w = RandomWeight(DType::kBF16, c.n, c.k, 7 + c.n);
      std::vector<float> all(c.m * c.n), one(c.m * c.n);
      ASSERT_TRUE(Linear({&pool, isa}, x.data(), c.m, c.k, w, bias.data(),
                         all.data(), c.n)
                      .ok());
      ASSERT_TRUE(Linear({nullptr, isa}, x.data(), c.m, c.k, w, bias.data(),
                         one.data(), c.n)
                      .ok());
      EXPECT_EQ(all, one) << "thread count changed the result";
      // Outputs [3, n - 2) and rows [5, m - 1) alone (still > 4 rows).
      // Row subsets only on the dot-product path (the f32 blocked GEMM's
      // register tile depends on a row's position).
      const bool dot = isa == Isa::kAvx512 && GetCpuFeatures().avx512_bf16;
      const int64_t j0 = 3, nj = c.n - 5, i0 = dot ? 5 : 0,
                    ni = dot ? c.m - 6 : c.m;
      Tensor ws = Tensor::Empty(DType::kBF16, {nj, c.k});
      std::memcpy(ws.raw_data(), w.data<uint16_t>() + j0 * c.k, nj * c.k * 2);
      std::vector<float> part(ni * nj);
      ASSERT_TRUE(Linear({&pool, isa}, x.data() + i0 * c.k, ni, c.k, ws,
                         bias.data() + j0, part.data(), nj)
                      .ok());
      for (int64_t i = 0; i < ni; ++i) {
        for (int64_t j = 0; j < nj; ++j) {
          ASSERT_EQ(part[i * nj + j], all[(i0 + i) * c.n + j0 + j])
              << IsaName(isa) << " m=" << c.m << " n=" << c.n << " k=" << c.k
              << " at (" << i0 + i << "," << j0 + j << ")";
        }
      }
    }
  }
}

// The f32 slab GEMM (blocked sizes of f32, q8_0 and exact bf16 weights on
// AVX-512: outer-product tiles of 8 outputs × 48 rows, K blocks of <= 2048,
// 64-output blocks): shapes past every block edge (three K blocks, a lane
// tail, m and n not multiples of the tile), against the reference; then
// partition invariance: each (row, output) accumulates in k order in its own
// lane, so the bits depend neither on the thread count nor on which outputs
// or rows share the call. Without the slab GEMM (AVX2) rows share register
// tiles, so only the thread count and output subsets are checked there.
// f16 takes the slab path off AMD (LinearProblem::f16_blocked) and streams
// there; either way each row's bits are its own.
TEST(LinearTest, SlabGemmBlockEdgesAndPartitionInvariance) {
  ThreadPool pool(3);
  for (Isa isa : SupportedIsas()) {
    if (isa == Isa::kScalar) continue;
    for (const LinearCase& c : {LinearCase{DType::kF32, 200, 37, 4101},
                                LinearCase{DType::kF32, 75, 75, 2049},
                                LinearCase{DType::kF32, 97, 9, 17},
                                LinearCase{DType::kQ8_0, 70, 19, 4128},
                                LinearCase{DType::kF16, 90, 21, 2100},
                                LinearCase{DType::kBF16, 81, 23, 2500}}) {
      const bool exact = c.dtype == DType::kBF16;
      CheckLinear(c, isa, exact, &pool);
      const std::vector<float> x = RandomVector(c.m * c.k, 15 + c.k);
      const std::vector<float> bias = RandomVector(c.n, 16);
      const Tensor w = RandomWeight(c.dtype, c.n, c.k, 17 + c.n);
      std::vector<float> all(c.m * c.n), one(c.m * c.n);
      ASSERT_TRUE(Linear({&pool, isa, exact}, x.data(), c.m, c.k, w,
                         bias.data(), all.data(), c.n)
                      .ok());
      ASSERT_TRUE(Linear({nullptr, isa, exact}, x.data(), c.m, c.k, w,
                         bias.data(), one.data(), c.n)
                      .ok());
      EXPECT_EQ(all, one) << "thread count changed the result";
      // Outputs [3, n - 2) (whole rows of W: q8_0 blocks stay intact) and,
      // on the slab path, rows [5, m - 1) (still past the streamed sizes).
      const bool slabs = isa == Isa::kAvx512;
      const int64_t j0 = 3, nj = c.n - 5, i0 = slabs ? 5 : 0,
                    ni = slabs ? c.m - 6 : c.m;
      const int64_t row_bytes = w.nbytes() / c.n;
      Tensor ws = Tensor::Empty(c.dtype, {nj, c.k});
      std::memcpy(ws.raw_data(),
                  static_cast<const uint8_t*>(w.raw_data()) + j0 * row_bytes,
                  nj * row_bytes);
      std::vector<float> part(ni * nj);
      ASSERT_TRUE(Linear({&pool, isa, exact}, x.data() + i0 * c.k, ni, c.k, ws,
                         bias.data() + j0, part.data(), nj)
                      .ok());
      for (int64_t i = 0; i < ni; ++i) {
        for (int64_t j = 0; j < nj; ++j) {
          ASSERT_EQ(part[i * nj + j], all[(i0 + i) * c.n + j0 + j])
              << IsaName(isa) << " " << DTypeName(c.dtype) << " m=" << c.m
              << " n=" << c.n << " k=" << c.k << " at (" << i0 + i << ","
              << j0 + j << ")";
        }
      }
    }
  }
}

// Streamed Linear (decode): a row's result must not depend on how many rows
// share the call. One activation row may read W one row at a time (f16, bf16
// on AVX-512, GemvRead::kRows), more rows use multi-row tiles with the next
// tile prefetched; both accumulate each dot product in the same order, so every
// row of an m-row call (m up to the streamed limit, odd n and k with lane
// tails) equals that row computed alone, bit for bit, with and without a
// bias, on every thread count.
TEST(LinearTest, StreamedRowsEqualTheRowAloneBitForBit) {
  ThreadPool pool(2);
  for (Isa isa : SupportedIsas()) {
    if (isa == Isa::kScalar) continue;
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (const auto& [n, k] :
           {std::pair<int64_t, int64_t>{37, 2049}, {131, 64}, {7, 19}}) {
        const std::vector<float> x = RandomVector(16 * k, 41 + k);
        const std::vector<float> bias = RandomVector(n, 42);
        const Tensor w = RandomWeight(dt, n, k, 43 + n);
        // exact: bf16 keeps f32 activations (the rounded-activation bf16
        // GEMM above m = 4 is another path with its own invariance test).
        const Context ctx{&pool, isa, /*exact=*/true};
        for (const float* b :
             {static_cast<const float*>(nullptr), bias.data()}) {
          std::vector<float> alone(16 * n);
          for (int64_t i = 0; i < 16; ++i) {
            ASSERT_TRUE(Linear(ctx, x.data() + i * k, 1, k, w, b,
                               alone.data() + i * n, n)
                            .ok());
          }
          // Both read orders of a single row give the same bits.
          for (GemvRead read : {GemvRead::kRows, GemvRead::kTiles}) {
            Context ctx_read = ctx;
            ctx_read.gemv_read = read;
            std::vector<float> row(n);
            for (int64_t i = 0; i < 16; ++i) {
              ASSERT_TRUE(
                  Linear(ctx_read, x.data() + i * k, 1, k, w, b, row.data(), n)
                      .ok());
              int64_t bad = 0;
              for (int64_t j = 0; j < n; ++j) bad += row[j] != alone[i * n + j];
              EXPECT_EQ(bad, 0) << IsaName(isa) << " " << DTypeName(dt)
                                << " n=" << n << " k=" << k << " row " << i
                                << " read order " << static_cast<int>(read);
            }
          }
          for (int64_t m : {2, 3, 4, 5, 16}) {
            std::vector<float> batch(m * n);
            ASSERT_TRUE(
                Linear(ctx, x.data(), m, k, w, b, batch.data(), n).ok());
            int64_t bad = 0;
            for (int64_t i = 0; i < m * n; ++i) bad += batch[i] != alone[i];
            EXPECT_EQ(bad, 0)
                << IsaName(isa) << " " << DTypeName(dt) << " n=" << n
                << " k=" << k << " m=" << m << (b != nullptr ? " bias" : "");
          }
        }
      }
    }
  }
}

// The q8_0 × q8_0 decode GEMV (activations quantized, m = 1) reads W one row
// at a time (GemvRead::kRows) or in prefetched multi-row tiles (kTiles, the
// default off AMD): one reduction per accumulator either way, so the same
// bits, and the same bits on any thread count (odd n: a tile tail per range).
TEST(LinearTest, Q8GemvReadOrdersGiveTheSameBits) {
  ThreadPool pool(3);
  for (Isa isa : SupportedIsas()) {
    if (isa == Isa::kScalar) continue;
    for (const auto& [n, k] :
         {std::pair<int64_t, int64_t>{37, 2048}, {131, 96}}) {
      const std::vector<float> x = RandomVector(k, 51 + k);
      const Tensor w = RandomWeight(DType::kQ8_0, n, k, 52 + n);
      std::vector<float> rows(n), tiles(n), tiles_one_thread(n);
      Context ctx{&pool, isa};
      ctx.gemv_read = GemvRead::kRows;
      ASSERT_TRUE(Linear(ctx, x.data(), 1, k, w, nullptr, rows.data(), n).ok());
      ctx.gemv_read = GemvRead::kTiles;
      ASSERT_TRUE(
          Linear(ctx, x.data(), 1, k, w, nullptr, tiles.data(), n).ok());
      ctx.pool = nullptr;
      ASSERT_TRUE(
          Linear(ctx, x.data(), 1, k, w, nullptr, tiles_one_thread.data(), n)
              .ok());
      EXPECT_EQ(rows, tiles) << IsaName(isa) << " n=" << n << " k=" << k;
      EXPECT_EQ(tiles, tiles_one_thread)
          << IsaName(isa) << " n=" << n << " k=" << k;
    }
  }
}

TEST(LinearTest, RejectsBadInput) {
  std::vector<float> x(64), y(64);
  const Tensor i32 = Tensor::Zeros(DType::kI32, {2, 4});
  EXPECT_EQ(Linear({}, x.data(), 1, 4, i32, nullptr, y.data(), 2).code(),
            absl::StatusCode::kInvalidArgument);
  const Tensor q8 = Tensor::Zeros(DType::kF32, {2, 8, 1});
  EXPECT_EQ(Linear({}, x.data(), 1, 8, q8, nullptr, y.data(), 2).code(),
            absl::StatusCode::kInvalidArgument);
  const Tensor f = Tensor::Zeros(DType::kF32, {2, 8});
  EXPECT_EQ(Linear({}, x.data(), 1, 4, f, nullptr, y.data(), 2).code(),
            absl::StatusCode::kInvalidArgument);  // ldx < k.
}

TEST(FusedOpsTest, NormsMatchReference) {
  for (Isa isa : SupportedIsas()) {
    for (int64_t n : {1, 7, 16, 33, 100, 2048}) {
      const int64_t rows = 5;
      const std::vector<float> x = RandomVector(rows * n, n, 3.0f);
      const std::vector<float> w = RandomVector(n, n + 1);
      const std::vector<float> d = RandomVector(rows * n, n + 2);
      std::vector<float> ref(rows * n), got(rows * n);
      reference::RmsNorm(x.data(), w.data(), rows, n, 1e-5f, ref.data());
      RmsNorm({nullptr, isa}, x.data(), w.data(), rows, n, 1e-5f, got.data());
      for (int64_t i = 0; i < rows * n; ++i) {
        ASSERT_NEAR(got[i], ref[i], 1e-5f * (1.0f + std::fabs(ref[i])))
            << IsaName(isa) << " n=" << n;
      }
      std::vector<float> res_ref = x, res_got = x;
      reference::AddRmsNorm(res_ref.data(), d.data(), w.data(), rows, n, 1e-6f,
                            ref.data());
      AddRmsNorm({nullptr, isa}, res_got.data(), d.data(), w.data(), rows, n,
                 1e-6f, got.data());
      for (int64_t i = 0; i < rows * n; ++i) {
        ASSERT_EQ(res_got[i], res_ref[i]);  // One f32 add: exact.
        ASSERT_NEAR(got[i], ref[i], 1e-5f * (1.0f + std::fabs(ref[i])));
      }
    }
  }
}

TEST(FusedOpsTest, InPlaceRmsNorm) {
  const std::vector<float> x = RandomVector(3 * 40, 5);
  const std::vector<float> w = RandomVector(40, 6);
  std::vector<float> ref(x.size()), inplace = x;
  reference::RmsNorm(x.data(), w.data(), 3, 40, 1e-5f, ref.data());
  RmsNorm({}, inplace.data(), w.data(), 3, 40, 1e-5f, inplace.data());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(inplace[i], ref[i], 1e-5f * (1.0f + std::fabs(ref[i])));
  }
}

TEST(FusedOpsTest, SiluMulMatchesReference) {
  for (int64_t n : {1, 9, 31, 1000}) {
    std::vector<float> g = RandomVector(n, n, 20.0f);
    g[0] = -95.0f;  // Deep in the exp clamp.
    const std::vector<float> u = RandomVector(n, n + 1, 2.0f);
    std::vector<float> ref(n), got(n);
    reference::SiluMul(g.data(), u.data(), n, ref.data());
    SiluMul(g.data(), u.data(), n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(got[i], ref[i], 2e-6f * (1.0f + std::fabs(ref[i]))) << i;
    }
  }
}

// Over a pool, by chunks of whole vectors: the same bits as one thread.
TEST(FusedOpsTest, SiluMulOverThreadsHasTheSameBits) {
  ThreadPool pool(3);
  for (int64_t n : {1, 100, 88064, 100003}) {
    const std::vector<float> g = RandomVector(n, n, 20.0f);
    const std::vector<float> u = RandomVector(n, n + 1, 2.0f);
    std::vector<float> one(n), many(n);
    SiluMul(g.data(), u.data(), n, one.data());
    SiluMul(Context{&pool}, g.data(), u.data(), n, many.data());
    EXPECT_EQ(one, many) << n;
  }
}

TEST(FusedOpsTest, RopeMatchesReference) {
  for (bool pairwise : {true, false}) {
    for (int64_t head_dim : {2, 6, 32, 64, 128}) {
      const int64_t tokens = 3, heads = 3, stride = heads * head_dim + 4;
      std::vector<float> x = RandomVector(tokens * stride, head_dim);
      std::vector<float> inv(head_dim / 2);
      for (int64_t i = 0; i < head_dim / 2; ++i) {
        inv[i] = std::pow(10000.0f, -2.0f * i / head_dim);
      }
      const int32_t pos[] = {0, 17, 4095};
      std::vector<float> ref = x, got = x;
      reference::Rope(ref.data(), tokens, heads, head_dim, stride, pos,
                      inv.data(), pairwise);
      Rope(got.data(), tokens, heads, head_dim, stride, pos, inv.data(),
           pairwise);
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_NEAR(got[i], ref[i], 1e-6f) << pairwise << " " << head_dim;
      }
    }
  }
}

// Runs QkvRopeKvWrite (fused) or the unfused op sequence on a fresh cache;
// returns q followed by the cache bytes (as floats' bit patterns via memcpy).
struct QkvCase {
  DType wdtype;
  DType cache_dtype;
  int64_t m;
  bool qk_norm;
  bool pairwise;
};

std::vector<uint8_t> RunQkv(const QkvCase& c, const Context& ctx, int mode) {
  constexpr int64_t kHeads = 4, kKvHeads = 2, kHd = 32, kK = 96;
  constexpr int64_t kBlockSize = 4;
  const int64_t blocks = std::max<int64_t>(4, (c.m + kBlockSize - 1) / 4);
  const int64_t ldx = kK + 3, ldq = kHeads * kHd + 5, kv_dim = kKvHeads * kHd;
  const std::vector<float> x = RandomVector(c.m * ldx, 11 + c.m);
  const Tensor wq = RandomWeight(c.wdtype, kHeads * kHd, kK, 21);
  const Tensor wk = RandomWeight(c.wdtype, kv_dim, kK, 22);
  const Tensor wv = RandomWeight(c.wdtype, kv_dim, kK, 23);
  const std::vector<float> bq = RandomVector(kHeads * kHd, 31);
  const std::vector<float> bk = RandomVector(kv_dim, 32);
  const std::vector<float> bv = RandomVector(kv_dim, 33);
  const std::vector<float> qn = RandomVector(kHd, 34);
  const std::vector<float> kn = RandomVector(kHd, 35);
  std::vector<float> inv(kHd / 2);
  for (int64_t i = 0; i < kHd / 2; ++i) {
    inv[i] = std::pow(10000.0f, -2.0f * i / kHd);
  }
  // Up to 7 tokens: scattered positions and slots; more (a long prefill):
  // positions in steps of 3, slots reversed.
  std::vector<int32_t> pos_v = {3, 10, 0, 7, 100, 1, 2};
  std::vector<int32_t> slot_v = {5, 2, 9, 0, 13, 7, 1};
  if (c.m > 7) {
    pos_v.resize(c.m);
    slot_v.resize(c.m);
    for (int64_t i = 0; i < c.m; ++i) {
      pos_v[i] = static_cast<int32_t>(3 * i);
      slot_v[i] = static_cast<int32_t>(c.m - 1 - i);
    }
  }
  const int32_t* positions = pos_v.data();
  const int32_t* slots = slot_v.data();
  const int64_t elem = DTypeBlockBytes(c.cache_dtype);
  const int64_t cache_bytes = blocks * kBlockSize * kv_dim * elem;
  std::vector<uint8_t> kc(cache_bytes, 0), vc(cache_bytes, 0);
  KvCacheView cache{c.cache_dtype, kc.data(), vc.data(),
                    kBlockSize,    kKvHeads,  kHd};
  std::vector<float> q(c.m * ldq, -7.0f);
  QkvProjection w;
  w.wq = &wq;
  w.wk = &wk;
  w.wv = &wv;
  w.bq = bq.data();
  w.bk = bk.data();
  w.bv = bv.data();
  if (c.qk_norm) {
    w.q_norm = qn.data();
    w.k_norm = kn.data();
  }
  w.norm_eps = 1e-5f;
  if (mode == 0) {  // Fused.
    EXPECT_TRUE(QkvRopeKvWrite(ctx, x.data(), c.m, ldx, w, kHeads, positions,
                               inv.data(), c.pairwise, cache, slots, q.data(),
                               ldq)
                    .ok());
  } else if (mode == 1) {  // Unfused ops, as the runner did before.
    std::vector<float> k(c.m * kv_dim), v(c.m * kv_dim);
    EXPECT_TRUE(
        Linear(ctx, x.data(), c.m, ldx, wq, bq.data(), q.data(), ldq).ok());
    EXPECT_TRUE(
        Linear(ctx, x.data(), c.m, ldx, wk, bk.data(), k.data(), kv_dim).ok());
    EXPECT_TRUE(
        Linear(ctx, x.data(), c.m, ldx, wv, bv.data(), v.data(), kv_dim).ok());
    for (int64_t i = 0; c.qk_norm && i < c.m; ++i) {
      RmsNorm(ctx, q.data() + i * ldq, qn.data(), kHeads, kHd, 1e-5f,
              q.data() + i * ldq);
      RmsNorm(ctx, k.data() + i * kv_dim, kn.data(), kKvHeads, kHd, 1e-5f,
              k.data() + i * kv_dim);
    }
    Rope(q.data(), c.m, kHeads, kHd, ldq, positions, inv.data(), c.pairwise);
    Rope(k.data(), c.m, kKvHeads, kHd, kv_dim, positions, inv.data(),
         c.pairwise);
    KvCacheWrite(cache, k.data(), v.data(), c.m, kv_dim, slots);
  } else {  // Scalar reference.
    EXPECT_TRUE(reference::QkvRopeKvWrite(x.data(), c.m, ldx, w, kHeads,
                                          positions, inv.data(), c.pairwise,
                                          cache, slots, q.data(), ldq)
                    .ok());
  }
  std::vector<uint8_t> out(q.size() * 4 + 2 * cache_bytes);
  std::memcpy(out.data(), q.data(), q.size() * 4);
  std::memcpy(out.data() + q.size() * 4, kc.data(), cache_bytes);
  std::memcpy(out.data() + q.size() * 4 + cache_bytes, vc.data(), cache_bytes);
  return out;
}

// Decodes RunQkv's bytes back to floats (the cache part per its dtype).
std::vector<float> QkvValues(const std::vector<uint8_t>& bytes, int64_t m,
                             DType cache_dtype) {
  const int64_t q_floats = m * (4 * 32 + 5);
  std::vector<float> out(q_floats);
  std::memcpy(out.data(), bytes.data(), q_floats * 4);
  const uint8_t* c = bytes.data() + q_floats * 4;
  const int64_t elem = DTypeBlockBytes(cache_dtype);
  const int64_t n = (static_cast<int64_t>(bytes.size()) - q_floats * 4) / elem;
  for (int64_t i = 0; i < n; ++i) {
    if (cache_dtype == DType::kF32) {
      float f;
      std::memcpy(&f, c + i * 4, 4);
      out.push_back(f);
    } else {
      uint16_t h;
      std::memcpy(&h, c + i * 2, 2);
      out.push_back(HalfToFloat(h));
    }
  }
  return out;
}

TEST(QkvRopeKvWriteTest, FusedEqualsUnfusedOpsBitForBitAndMatchesReference) {
  ThreadPool pool(3);
  for (DType wdt : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    for (int64_t m : {1, 3, 7}) {
      for (int variant = 0; variant < 4; ++variant) {
        const QkvCase c{wdt, variant % 2 == 0 ? DType::kF32 : DType::kF16, m,
                        variant >= 2, variant == 1 || variant == 2};
        const std::vector<uint8_t> ref = RunQkv(c, Context{}, 2);
        const std::vector<float> ref_values = QkvValues(ref, m, c.cache_dtype);
        for (Isa isa : SupportedIsas()) {
          const std::vector<uint8_t> fused = RunQkv(c, Context{&pool, isa}, 0);
          const std::vector<uint8_t> fused1 =
              RunQkv(c, Context{nullptr, isa}, 0);
          EXPECT_EQ(fused, fused1) << "thread count changed the result";
          if (isa != Isa::kScalar) {
            const std::vector<uint8_t> unfused =
                RunQkv(c, Context{&pool, isa}, 1);
            EXPECT_EQ(fused, unfused) << IsaName(isa) << " " << DTypeName(wdt)
                                      << " m=" << m << " variant " << variant;
          }
          // Against the scalar definition, with exact f32 activations (the
          // q8_0 / bf16 activation rounding of the default path is bounded by
          // LinearTest; here it equals the unfused ops bit for bit).
          const std::vector<float> got =
              QkvValues(RunQkv(c, Context{&pool, isa, /*exact=*/true}, 0), m,
                        c.cache_dtype);
          const bool approx = c.cache_dtype == DType::kF16;
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_NEAR(
                got[i], ref_values[i],
                (approx ? 2e-3 : 1e-4) * (1.0 + std::fabs(ref_values[i])))
                << IsaName(isa) << " " << DTypeName(wdt) << " m=" << m
                << " variant " << variant << " at " << i;
          }
        }
      }
    }
  }
}

// A long prefill runs rotary and the cache write over the threads by token:
// the same bits with any thread count and as the unfused ops.
TEST(QkvRopeKvWriteTest, LongPrefillSplitsOverThreadsWithTheSameBits) {
  ThreadPool pool(3);
  for (int variant = 0; variant < 4; ++variant) {
    const QkvCase c{DType::kF16, variant % 2 == 0 ? DType::kF32 : DType::kF16,
                    400, variant >= 2, variant == 1 || variant == 2};
    for (Isa isa : SupportedIsas()) {
      if (isa == Isa::kScalar) continue;
      const std::vector<uint8_t> fused = RunQkv(c, Context{&pool, isa}, 0);
      EXPECT_EQ(fused, RunQkv(c, Context{nullptr, isa}, 0))
          << IsaName(isa) << " variant " << variant;
      EXPECT_EQ(fused, RunQkv(c, Context{&pool, isa}, 1))
          << IsaName(isa) << " variant " << variant;
    }
  }
}

TEST(QkvRopeKvWriteTest, RejectsInconsistentShapes) {
  const Tensor wq = RandomWeight(DType::kF32, 64, 32, 1);
  const Tensor wk = RandomWeight(DType::kF32, 32, 32, 2);
  const Tensor wk_bad = RandomWeight(DType::kF32, 48, 32, 2);
  std::vector<float> x(32), q(64), kc(64 * 32), vc(64 * 32), inv(8);
  const int32_t pos[] = {0}, slot[] = {0};
  KvCacheView cache{DType::kF32, kc.data(), vc.data(), 4, 2, 16};
  QkvProjection w;
  w.wq = &wq;
  w.wk = &wk;
  w.wv = &wk;
  EXPECT_TRUE(QkvRopeKvWrite({}, x.data(), 1, 32, w, 4, pos, inv.data(), true,
                             cache, slot, q.data(), 64)
                  .ok());
  w.wk = &wk_bad;
  EXPECT_EQ(QkvRopeKvWrite({}, x.data(), 1, 32, w, 4, pos, inv.data(), true,
                           cache, slot, q.data(), 64)
                .code(),
            absl::StatusCode::kInvalidArgument);
  w.wk = &wk;
  EXPECT_EQ(QkvRopeKvWrite({}, x.data(), 1, 32, w, 3, pos, inv.data(), true,
                           cache, slot, q.data(), 64)
                .code(),
            absl::StatusCode::kInvalidArgument);
  w.wv = nullptr;
  EXPECT_EQ(QkvRopeKvWrite({}, x.data(), 1, 32, w, 4, pos, inv.data(), true,
                           cache, slot, q.data(), 64)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EmbeddingTest, MatchesReferenceAndRejectsBadIds) {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    const Tensor table = RandomWeight(dt, 50, 96, 3);
    const int32_t ids[] = {0, 49, 7, 7};
    std::vector<float> ref(4 * 96), got(4 * 96);
    ASSERT_TRUE(reference::EmbeddingLookup(table, ids, 4, ref.data()).ok());
    ASSERT_TRUE(EmbeddingLookup(table, ids, 4, got.data()).ok());
    EXPECT_EQ(ref, got) << DTypeName(dt);  // Exact conversions.
    const int32_t bad[] = {3, 50};
    EXPECT_EQ(EmbeddingLookup(table, bad, 2, got.data()).code(),
              absl::StatusCode::kInvalidArgument);
    const int32_t neg[] = {-1};
    EXPECT_EQ(EmbeddingLookup(table, neg, 1, got.data()).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(RouterTest, TopKMatchesReference) {
  const int64_t tokens = 9, experts = 8, k = 2;
  std::vector<float> logits = RandomVector(tokens * experts, 11, 3.0f);
  logits[3] = logits[5];  // A tie: lower id first.
  std::vector<int32_t> ids_ref(tokens * k), ids(tokens * k);
  std::vector<float> w_ref(tokens * k), w(tokens * k);
  reference::RouterTopK(logits.data(), tokens, experts, k, ids_ref.data(),
                        w_ref.data());
  RouterTopK(logits.data(), tokens, experts, k, ids.data(), w.data());
  EXPECT_EQ(ids, ids_ref);
  EXPECT_EQ(w, w_ref);
  for (int64_t t = 0; t < tokens; ++t) {
    EXPECT_NEAR(w[t * k] + w[t * k + 1], 1.0f, 1e-6f);
    EXPECT_GE(w[t * k], w[t * k + 1]);
  }
}

// ---- KV cache and attention ----

struct AttnSetup {
  DType dtype;
  int64_t block_size, kv_heads, heads, head_dim;
  std::vector<int32_t> q_lens, ctx_lens;
};

class AttentionTest : public ::testing::TestWithParam<AttnSetup> {};

TEST_P(AttentionTest, MatchesReferenceAndIsThreadCountInvariant) {
  const AttnSetup& a = GetParam();
  const int64_t seqs = static_cast<int64_t>(a.q_lens.size());
  const int64_t row = a.kv_heads * a.head_dim;
  int64_t max_blocks = 0;
  for (int32_t c : a.ctx_lens) {
    max_blocks =
        std::max<int64_t>(max_blocks, (c + a.block_size - 1) / a.block_size);
  }
  const int64_t total_blocks = seqs * max_blocks;
  // Blocks handed out in a scrambled order.
  std::vector<int32_t> tables(seqs * max_blocks);
  for (int64_t i = 0; i < seqs * max_blocks; ++i) {
    tables[i] = static_cast<int32_t>((i * 7 + 3) % total_blocks);
  }
  const int64_t elem = a.dtype == DType::kF32 ? 4 : 2;
  std::vector<uint8_t> kc(total_blocks * a.block_size * row * elem),
      vc(kc.size());
  KvCacheView cache{a.dtype,      kc.data(),  vc.data(),
                    a.block_size, a.kv_heads, a.head_dim};
  // Write every context token through KvCacheWrite (vs the reference write).
  std::vector<uint8_t> kc_ref(kc.size()), vc_ref(kc.size());
  KvCacheView cache_ref = cache;
  cache_ref.k = kc_ref.data();
  cache_ref.v = vc_ref.data();
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t ctx = a.ctx_lens[s];
    const std::vector<float> k = RandomVector(ctx * (row + 1), 100 + s);
    const std::vector<float> v = RandomVector(ctx * (row + 1), 200 + s);
    std::vector<int32_t> slots(ctx);
    for (int64_t t = 0; t < ctx; ++t) {
      slots[t] = tables[s * max_blocks + t / a.block_size] * a.block_size +
                 t % a.block_size;
    }
    KvCacheWrite(cache, k.data(), v.data(), ctx, row + 1, slots.data());
    reference::KvCacheWrite(cache_ref, k.data(), v.data(), ctx, row + 1,
                            slots.data());
  }
  ASSERT_EQ(kc, kc_ref);
  ASSERT_EQ(vc, vc_ref);

  std::vector<int32_t> qstart(seqs + 1, 0);
  for (int64_t s = 0; s < seqs; ++s) qstart[s + 1] = qstart[s] + a.q_lens[s];
  const int64_t rows = qstart[seqs];
  const int64_t qs = a.heads * a.head_dim + 2;
  const std::vector<float> q = RandomVector(rows * qs, 7, 2.0f);
  AttentionBatch batch{seqs, qstart.data(), a.ctx_lens.data(), tables.data(),
                       max_blocks};
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  std::vector<float> ref(rows * qs, 0.0f);
  ASSERT_TRUE(reference::PagedAttention(q.data(), qs, cache, batch, a.heads,
                                        scale, ref.data(), qs)
                  .ok());
  ThreadPool pool3(3);
  for (Isa isa : SupportedIsas()) {
    std::vector<float> one(rows * qs, 0.0f), three(rows * qs, 0.0f);
    ASSERT_TRUE(PagedAttention({nullptr, isa}, q.data(), qs, cache, batch,
                               a.heads, scale, one.data(), qs)
                    .ok());
    ASSERT_TRUE(PagedAttention({&pool3, isa}, q.data(), qs, cache, batch,
                               a.heads, scale, three.data(), qs)
                    .ok());
    EXPECT_EQ(one, three) << IsaName(isa);
    for (int64_t i = 0; i < rows * qs; ++i) {
      ASSERT_NEAR(one[i], ref[i], 2e-5f) << IsaName(isa) << " at " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Batches, AttentionTest,
    ::testing::Values(
        // Decode rows with long contexts (split over the context) + prefill.
        AttnSetup{DType::kF32, 16, 2, 8, 64, {1, 37, 1}, {1300, 37, 5}},
        AttnSetup{DType::kF16, 16, 2, 4, 40, {1, 20}, {700, 50}},
        AttnSetup{DType::kBF16, 8, 1, 3, 24, {2, 5, 1}, {1030, 5, 1}},
        AttnSetup{DType::kF32, 32, 4, 4, 128, {19}, {19}}));

TEST(AttentionTest, RejectsInconsistentBatch) {
  std::vector<float> kv(64);
  KvCacheView cache{DType::kF32, kv.data(), kv.data(), 4, 1, 4};
  const int32_t qstart[] = {0, 3};
  const int32_t ctx[] = {2};  // Fewer cached tokens than queries.
  const int32_t table[] = {0};
  AttentionBatch batch{1, qstart, ctx, table, 1};
  std::vector<float> q(12), out(12);
  EXPECT_EQ(
      PagedAttention({}, q.data(), 4, cache, batch, 1, 1.0f, out.data(), 4)
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      PagedAttention({}, q.data(), 4, cache, batch, 3, 1.0f, out.data(), 4)
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ThreadPoolTest, CoversRangeOnceWithNesting) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.size(), 3);
  for (int64_t n : {0, 1, 2, 5, 1000}) {
    std::vector<int> hits(n, 0);
    pool.ParallelFor(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[i];
      pool.ParallelFor(2, [](int64_t, int64_t) {});  // Nested: inline.
    });
    for (int h : hits) EXPECT_EQ(h, 1);
  }
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 200; ++rep) {
    pool.ParallelForChunks(100, 17, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
  }
  EXPECT_EQ(sum.load(), 200 * 4950);
}

TEST(ThreadPoolTest, SmallWorkRunsInlineLargeWorkIsSplit) {
  ThreadPool pool(2);
  const std::thread::id caller = std::this_thread::get_id();
  int calls = 0;
  bool on_caller = true;
  // 100 items × 100 units: far below two tasks' worth of kMinTaskWork.
  ParallelFor(&pool, 100, 100, [&](int64_t b, int64_t e) {
    ++calls;
    on_caller = on_caller && std::this_thread::get_id() == caller;
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 100);
  });
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(on_caller);
  // Plenty of work: several chunks (at most a few per thread), each index
  // once.
  std::vector<std::atomic<int>> hits(64);
  std::atomic<int> chunks{0};
  ParallelFor(&pool, 64, kMinTaskWork, [&](int64_t b, int64_t e) {
    ++chunks;
    for (int64_t i = b; i < e; ++i) ++hits[i];
  });
  EXPECT_GT(chunks.load(), 1);
  EXPECT_LE(chunks.load(), 4 * pool.size());
  for (const auto& h : hits) EXPECT_EQ(h.load(), 1);
}

TEST(ThreadPoolTest, ManyShortCallsWithSleepingWorkersComplete) {
  // Workers fall asleep between calls (the sleeps outlast their spin); every
  // call must still run each chunk exactly once, whoever claims it.
  ThreadPool pool(4);
  for (int rep = 0; rep < 50; ++rep) {
    if (rep % 10 == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::vector<int> hits(37, 0);
    pool.ParallelForChunks(37, 9, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[i];
    });
    for (int h : hits) ASSERT_EQ(h, 1) << rep;
  }
}

// Back-to-back calls whose task counts change: a worker still in the
// previous call's RunChunks must never claim a chunk of the next one with the
// finished state (it ran a chunk twice and counted it in the next call's
// done_, which then never matched: the caller spun forever, within seconds
// here before the fix). A watchdog turns a hang into a failure.
TEST(ThreadPoolTest, ChangingTaskCountsNeverRunAChunkTwice) {
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    for (int i = 0; i < 600 && !finished.load(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!finished.load()) {
      std::fprintf(stderr, "ThreadPool hung in ParallelForChunks\n");
      std::_Exit(1);
    }
  });
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(40);
  int64_t bad = 0;
  // ~4 s: the race hit within the first 1-2 million calls in most runs.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(4);
  for (int64_t i = 0; i < 3000000 && bad == 0; ++i) {
    if (i % 4096 == 0 && std::chrono::steady_clock::now() > deadline) break;
    const int64_t n = 1 + i % 40;
    for (int64_t j = 0; j < n; ++j) hits[j].store(0);
    pool.ParallelForChunks(n, n, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) hits[j].fetch_add(1);
    });
    for (int64_t j = 0; j < n; ++j) bad += hits[j].load() != 1;
  }
  finished.store(true);
  watchdog.join();
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace tessera::kernels
