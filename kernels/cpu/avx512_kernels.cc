// AVX-512 (F/BW/VL/DQ, + BF16 for the bf16 dot-product GEMM) kernels.
//
// Math and layouts: see kernels/cpu/internal/kernels_impl.inc. Linear keeps
// W [n, k] row-major. Streamed (decode) sizes: a 4×6 register tile holds 24
// zmm accumulators of x[i]·W[r] partial dot products (4 + 6 loads per 24
// FMAs, 29 of 32 registers), reduced once per row. Blocked (prefill) sizes:
// an outer-product tile of 8 weight rows × 48 activation rows (x packed in
// 16-row f32 slabs), 24 zmm accumulators, 3 loads + 8 broadcasts per 24
// FMAs, K blocks of 2048, W blocks of 64 rows kept in L2.
// bf16 weights (Context::exact == false): an outer-product tile of 8 weight
// rows × 48 activation rows, 24 zmm accumulators, on activations rounded to
// bf16 and packed in pairs (8 significant bits; products are exact in f32 and
// accumulated in f32); vdpbf16ps does 32 multiply-adds per instruction, twice
// the f32 FMA rate.
//
// Built with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx2
// -mfma -mf16c (kernels/CMakeLists.txt); only called after CPUID checks.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/cpu/internal/cpu_kernels.h"

namespace tessera::kernels::cpu::avx512 {
namespace {

struct Simd {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Set1(float f) { return _mm512_set1_ps(f); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // The first n (0 < n < kLanes) floats at p, the other lanes 0; nothing past
  // p + n is touched (masked load / store).
  static V LoadN(const float* p, int64_t n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  static void StoreN(float* p, V v, int64_t n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
  static V LoadF16(const uint16_t* p) {
    return _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V LoadBF16(const uint16_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
        16));
  }
  static V LoadI8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static V BroadcastF16(const uint8_t* p) {
    uint16_t h;
    __builtin_memcpy(&h, p, 2);
    return _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<int16_t>(h)));
  }
  static void StoreF16(uint16_t* p, V v) {
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(p),
        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // Round to nearest even like FloatToBF16 (vcvtneps2bf16 would flush
  // subnormals to zero).
  static void StoreBF16(uint16_t* p, V v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i lsb =
        _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)),
                         lsb),
        16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(
        r, nan,
        _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtepi32_epi16(r));
  }
  static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V Div(V a, V b) { return _mm512_div_ps(a, b); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V Max(V a, V b) { return _mm512_max_ps(a, b); }
  static V Abs(V v) { return _mm512_abs_ps(v); }
  static float ReduceAdd(V v) { return _mm512_reduce_add_ps(v); }
  static float ReduceMax(V v) { return _mm512_reduce_max_ps(v); }
  // Rounds to the nearest integer (ties to even), saturates to int8.
  static void StoreI8(int8_t* p, V v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
  }
  static V SwapPairs(V v) { return _mm512_permute_ps(v, 0xB1); }
  // out[0..3] = horizontal sums of a, b, c, d (a transpose-and-add tree:
  // ~12 instructions instead of 4 full reductions).
  static void ReduceAdd4(V a, V b, V c, V d, float* out) {
    const V ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44),
                               _mm512_shuffle_f32x4(a, b, 0xEE));
    const V cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44),
                               _mm512_shuffle_f32x4(c, d, 0xEE));
    // Chunks: [a, b, c, d] partial 4-vectors.
    V x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88),
                        _mm512_shuffle_f32x4(ab, cd, 0xDD));
    x = _mm512_add_ps(x, _mm512_permute_ps(x, 0x4E));
    x = _mm512_add_ps(x, _mm512_permute_ps(x, 0xB1));
    // Lanes 0, 4, 8, 12 hold the four sums.
    const __m128 r = _mm512_castps512_ps128(_mm512_permutexvar_ps(
        _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), x));
    _mm_storeu_ps(out, r);
  }
  // e^x, Cephes polynomial (~1 ulp on [-87, 88]); inputs are clamped.
  static V Exp(V x) {
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3365447504019f));
    const V fx = _mm512_roundscale_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    V y = _mm512_set1_ps(1.9875691500E-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x),
                        _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
  }
};

// out[q] = horizontal sum of acc[q], four registers at a time.
template <int N>
inline void ReduceTile(const Simd::V* acc, float* out) {
  int q = 0;
#pragma GCC unroll 8
  for (; q + 4 <= N; q += 4) {
    Simd::ReduceAdd4(acc[q], acc[q + 1], acc[q + 2], acc[q + 3], out + q);
  }
#pragma GCC unroll 4
  for (; q < N; ++q) out[q] = Simd::ReduceAdd(acc[q]);
}

// Tiling constants (see the file comment).
struct Traits {
  static constexpr int kMr = 4;
  static constexpr int kNr = 6;
  static constexpr int kKcF32 = 1024;
  // bf16 dot-product GEMM (kernels_impl.inc, GemmBf16Range): K block
  // (elements; every block re-reads and re-writes the tiles' y, so larger is
  // faster: ~0.78 / 0.87 / 0.93 of the bf16 peak at 512 / 1024 / >= 4096 on
  // one Zen 4 core, m = 32..512, k = 2048/5632), weight rows per block, tile =
  // kBf16Jr weight rows × 16 · kBf16Iv activation rows (24 accumulators + 3
  // activation vectors + 1 broadcast of 32 zmm).
  static constexpr int kKcBf16 = 8192;
  static constexpr int kNcBf16 = 64;
  static constexpr int kBf16Jr = 8;
  static constexpr int kBf16Iv = 3;
  static constexpr int kNc = 96;
  static constexpr int kMc = 64;
  static constexpr int kPad = 32;  // Panel row padding (elements).
  // f32-activation GEMM on 16-row slabs (kernels_impl.inc, GemmSlabRange):
  // an outer-product tile of kSlabJr weight rows × 16 · kSlabIv activation
  // rows (24 accumulators + 3 activation vectors + 1 broadcast of 32 zmm),
  // K blocks of <= kKcSlab elements (each extra block re-reads and re-writes
  // the tiles' y), W blocks of kNcSlab rows (f32: 512 KiB at kKcSlab, kept
  // in L2 while every slab passes).
  static constexpr int kSlabJr = 8;
  static constexpr int kSlabIv = 3;
  static constexpr int kKcSlab = 2048;
  static constexpr int kNcSlab = 64;
  // Weight rows per GEMV tile (more concurrent DRAM streams).
  static constexpr int kGemvNr = 6;
  static constexpr int kGemvMaxM = 4;
  // m <= kGemvRowMaxM streams W one row at a time (kernels_impl.inc).
  static constexpr int kGemvRowMaxM = 1;
  // Largest m whose f32 (q8_0) weights are streamed; f16: the same off AMD
  // (LinearProblem::f16_blocked), else always.
  static constexpr int kStreamMaxM = 64;
  static constexpr int kStreamMaxMQ8 = 16;
  // Activation bytes per streamed row block (kept in L2).
  static constexpr int64_t kStreamBlockBytes = 512 * 1024;
  // How many W tiles ahead a streamed tile serving more than kGemvMaxM rows
  // prefetches (Pf::kNextRows in kernels_impl.inc).
  static constexpr int kStreamPrefetchTiles = 2;
};

// ---- bf16 dot-product GEMM (outer product over bf16 pairs) ----
//
// vdpbf16ps acc, a, b adds a[2l]·b[2l] + a[2l+1]·b[2l+1] to f32 lane l: one
// instruction is 16 lanes × one k pair. The tile keeps kBf16Jr weight rows ×
// (16 · IV) activation rows of accumulators, one zmm per (weight row j, 16
// activation rows v), lanes along the activation rows. Per k pair it loads
// IV zmm of packed activations (16 rows' pairs each, contiguous: see
// PackBF16Pairs) and broadcasts each weight row's pair (W's own [n, k]
// layout: a pair is 4 consecutive bytes), then does IV · kBf16Jr vdpbf16ps:
// 24 per 3 loads + 8 broadcasts at IV = 3, no horizontal sums. Each lane
// accumulates its own (row, output) dot product in k order, so results do not
// depend on the tile shape or on how n was split.

// r[i][l] <-> r[l][i] for a 16 × 16 matrix of u32 (unpack 32/64-bit, then
// two 128-bit lane shuffles).
inline void Transpose16x16(__m512i r[16]) {
  __m512i t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // r[4i + q], 128-bit chunk c: column 4c + q of rows 4i..4i+3.
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512i a = _mm512_shuffle_i32x4(r[q], r[4 + q], 0x88);
    const __m512i b = _mm512_shuffle_i32x4(r[q], r[4 + q], 0xDD);
    const __m512i c = _mm512_shuffle_i32x4(r[8 + q], r[12 + q], 0x88);
    const __m512i d = _mm512_shuffle_i32x4(r[8 + q], r[12 + q], 0xDD);
    t[q] = _mm512_shuffle_i32x4(a, c, 0x88);
    t[8 + q] = _mm512_shuffle_i32x4(a, c, 0xDD);
    t[4 + q] = _mm512_shuffle_i32x4(b, d, 0x88);
    t[12 + q] = _mm512_shuffle_i32x4(b, d, 0xDD);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Adds (first: writes, + bias) a tile's accumulators a[j] (lane l = activation
// row l, J <= 8 outputs; the bf16 and f32 slab tiles) to y rows [0, rows),
// columns [0, J): an 8 × 16 transpose (unpack, shuffle, one two-source permute
// per row pair).
template <int J>
inline void StoreColumns(const __m512* a, float* y, int64_t ldy,
                         const float* bias, bool first, int rows) {
  __m512 c[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) c[j] = j < J ? a[j] : _mm512_setzero_ps();
  __m512 t[8], u[8];
#pragma GCC unroll 4
  for (int h = 0; h < 4; ++h) {
    t[2 * h] = _mm512_unpacklo_ps(c[2 * h], c[2 * h + 1]);
    t[2 * h + 1] = _mm512_unpackhi_ps(c[2 * h], c[2 * h + 1]);
  }
  // u[r] (u[4 + r]), chunk c: row 4c + r, columns 0..3 (4..7).
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    u[4 * h] = _mm512_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm512_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    u[4 * h + 2] = _mm512_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm512_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  const __m512i lo =
      _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
  const __m512i hi = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27, 26,
                                      25, 24, 11, 10, 9, 8);
  const __mmask8 mask = static_cast<__mmask8>((1u << J) - 1);
  const __m256 b = first && bias != nullptr ? _mm256_maskz_loadu_ps(mask, bias)
                                            : _mm256_setzero_ps();
  auto put = [&](int row, __m256 v) {
    if (row >= rows) return;
    float* dst = y + row * ldy;
    v = _mm256_add_ps(v, first ? b : _mm256_maskz_loadu_ps(mask, dst));
    if constexpr (J == 8) {
      _mm256_storeu_ps(dst, v);
    } else {
      _mm256_mask_storeu_ps(dst, mask, v);
    }
  };
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    const __m512 x01 = _mm512_permutex2var_ps(u[r], lo, u[4 + r]);
    const __m512 x23 = _mm512_permutex2var_ps(u[r], hi, u[4 + r]);
    put(r, _mm512_castps512_ps256(x01));
    put(4 + r,
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x01), 1)));
    put(8 + r, _mm512_castps512_ps256(x23));
    put(12 + r,
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x23), 1)));
  }
}

// Writes an outer-product tile acc[j][v] (J outputs × IV slabs of 16
// activation rows, `rows` of them valid) into y, one slab at a time.
template <int J, int IV>
inline void StoreTile(const __m512 (&acc)[J][IV], float* y, int64_t ldy,
                      const float* bias, bool first, int rows) {
#pragma GCC unroll 4
  for (int v = 0; v < IV; ++v) {
    __m512 col[J];
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) col[j] = acc[j][v];
    StoreColumns<J>(col, y + 16 * v * ldy, ldy, bias, first, rows - 16 * v);
  }
}

// One tile: y[16·IV rows (rows valid)][J outputs] (+)= Σ over `pairs` k pairs
// (+ one half pair: k odd, last K block) of x·w. xs: the first slab's packed
// pairs at the block's first pair (slab_stride u32 between slabs); w: weight
// row 0 at the block's first element (wld bytes between rows). No software
// prefetch: the hardware prefetchers follow the 8 + IV sequential streams
// (measured: a one-tile-ahead prefetch of W cost 3-5% at m = 32, even with W
// cycled through 96 MiB of copies).
template <int J, int IV>
void Bf16PairTile(const uint32_t* xs, int64_t slab_stride, const uint8_t* w,
                  int64_t wld, int64_t pairs, bool half, float* y, int64_t ldy,
                  const float* bias, bool first, int rows) {
  __m512 acc[J][IV];
#pragma GCC unroll 8
  for (int j = 0; j < J; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < IV; ++v) acc[j][v] = _mm512_setzero_ps();
  }
  int64_t q = 0;
  for (; q < pairs; ++q) {
    __m512bh xv[IV];
#pragma GCC unroll 4
    for (int v = 0; v < IV; ++v) {
      xv[v] = (__m512bh)_mm512_loadu_si512(xs + q * 16 + v * slab_stride);
    }
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) {
      int32_t pair;
      __builtin_memcpy(&pair, w + q * 4 + j * wld, 4);
      const __m512bh b = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int v = 0; v < IV; ++v) {
        acc[j][v] = _mm512_dpbf16_ps(acc[j][v], xv[v], b);
      }
    }
  }
  if (half) {  // k odd: the last weight element alone (x's pair is (x, 0)).
    __m512bh xv[IV];
#pragma GCC unroll 4
    for (int v = 0; v < IV; ++v) {
      xv[v] = (__m512bh)_mm512_loadu_si512(xs + q * 16 + v * slab_stride);
    }
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) {
      uint16_t e;
      __builtin_memcpy(&e, w + q * 4 + j * wld, 2);
      const __m512bh b = (__m512bh)_mm512_set1_epi32(e);
#pragma GCC unroll 4
      for (int v = 0; v < IV; ++v) {
        acc[j][v] = _mm512_dpbf16_ps(acc[j][v], xv[v], b);
      }
    }
  }
  StoreTile<J, IV>(acc, y, ldy, bias, first, rows);
}

using Bf16TileFn = void (*)(const uint32_t*, int64_t, const uint8_t*, int64_t,
                            int64_t, bool, float*, int64_t, const float*, bool,
                            int);

// Tiles [J - 1][IV - 1].
static_assert(Traits::kBf16Iv == 3 && Traits::kBf16Jr == 8);
template <int... Js>
constexpr auto MakeBf16Tiles(std::integer_sequence<int, Js...>) {
  struct Table {
    Bf16TileFn fn[sizeof...(Js)][3];
  };
  return Table{{{&Bf16PairTile<Js + 1, 1>, &Bf16PairTile<Js + 1, 2>,
                 &Bf16PairTile<Js + 1, 3>}...}};
}

// PackBF16Pairs for one slab of `rows` (<= 16) rows. vcvtne2ps2bf16 rounds
// to nearest even like FloatToBF16 but flushes subnormals to zero: the same
// products, since vdpbf16ps treats subnormal inputs as zero anyway (and is 5x
// cheaper than the integer rounding StoreBF16 needs for the KV cache).
inline void PackSlab(const float* x, int64_t rows, int64_t k, int64_t ld,
                     uint32_t* out) {
  const int64_t kp = (k + 1) / 2;
  for (int64_t q0 = 0; q0 < kp; q0 += 16) {
    const int64_t c0 = 2 * q0;
    const int64_t left = k - c0;
    const __mmask16 m0 = left >= 16 ? 0xffff : (1u << left) - 1;
    const __mmask16 m1 = left >= 32   ? 0xffff
                         : left <= 16 ? 0
                                      : (1u << (left - 16)) - 1;
    __m512i r[16];
#pragma GCC unroll 16
    for (int l = 0; l < 16; ++l) {
      if (l >= rows) {
        r[l] = _mm512_setzero_si512();
        continue;
      }
      const float* src = x + l * ld + c0;
      r[l] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, src + 16),
                                          _mm512_maskz_loadu_ps(m0, src));
    }
    Transpose16x16(r);
    const int64_t n = kp - q0 < 16 ? kp - q0 : 16;
    for (int64_t q = 0; q < n; ++q) {
      _mm512_storeu_si512(out + (q0 + q) * 16, r[q]);
    }
  }
}

// PackF32Slabs for one slab of `rows` (<= 16) rows: float [k][16], row l of
// the slab in lane l, missing rows zero; 16 × 16 transposes.
inline void PackSlabF32(const float* x, int64_t rows, int64_t k, int64_t ld,
                        float* out) {
  for (int64_t c0 = 0; c0 < k; c0 += 16) {
    const int64_t left = k - c0;
    const __mmask16 m = left >= 16 ? 0xffff : (1u << left) - 1;
    __m512i r[16];
#pragma GCC unroll 16
    for (int l = 0; l < 16; ++l) {
      r[l] =
          l < rows
              ? _mm512_castps_si512(_mm512_maskz_loadu_ps(m, x + l * ld + c0))
              : _mm512_setzero_si512();
    }
    Transpose16x16(r);
    const int64_t n = left < 16 ? left : 16;
    for (int64_t c = 0; c < n; ++c) {
      _mm512_storeu_si512(out + (c0 + c) * 16, r[c]);
    }
  }
}

// One f32 slab tile: y[16·IV rows (rows valid)][J outputs] (+)= Σ over kc
// elements of x·w. xs: the first slab at the block's first element
// (slab_stride floats between slabs); w: weight row 0 at the block's first
// element (wld floats between rows). Per k: IV slab loads, J broadcasts,
// J · IV FMAs; each lane accumulates its own (row, output) in k order, so
// the bits depend neither on the tile shape nor on how n was split.
template <int J, int IV>
void F32SlabTile(const float* xs, int64_t slab_stride, const float* w,
                 int64_t wld, int64_t kc, float* y, int64_t ldy,
                 const float* bias, bool first, int rows) {
  __m512 acc[J][IV];
#pragma GCC unroll 8
  for (int j = 0; j < J; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < IV; ++v) acc[j][v] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < kc; ++c) {
    __m512 xv[IV];
#pragma GCC unroll 4
    for (int v = 0; v < IV; ++v) {
      xv[v] = _mm512_loadu_ps(xs + c * 16 + v * slab_stride);
    }
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) {
      const __m512 b = _mm512_set1_ps(w[j * wld + c]);
#pragma GCC unroll 4
      for (int v = 0; v < IV; ++v) {
        acc[j][v] = _mm512_fmadd_ps(xv[v], b, acc[j][v]);
      }
    }
  }
  StoreTile<J, IV>(acc, y, ldy, bias, first, rows);
}

using SlabTileFn = void (*)(const float*, int64_t, const float*, int64_t,
                            int64_t, float*, int64_t, const float*, bool, int);

// Tiles [J - 1][IV - 1].
static_assert(Traits::kSlabIv == 3 && Traits::kSlabJr == 8);
template <int... Js>
constexpr auto MakeSlabTiles(std::integer_sequence<int, Js...>) {
  struct Table {
    SlabTileFn fn[sizeof...(Js)][3];
  };
  return Table{{{&F32SlabTile<Js + 1, 1>, &F32SlabTile<Js + 1, 2>,
                 &F32SlabTile<Js + 1, 3>}...}};
}
}  // namespace

#define TESSERA_Q8_VNNI 0
#include "kernels/cpu/internal/q8_gemv_avx512.inc"
#undef TESSERA_Q8_VNNI

namespace {
inline void Q8Gemv(const cpu::LinearProblem& p, int64_t n0, int64_t n1) {
  if (p.vnni) return cpu::avx512_vnni::Q8GemvRange(p, n0, n1);
  Q8GemvRange(p, n0, n1);
}
}  // namespace

#define TESSERA_HAS_BF16_DOT 1
#define TESSERA_HAS_F32_SLABS 1
#include "kernels/cpu/internal/kernels_impl.inc"

}  // namespace tessera::kernels::cpu::avx512
