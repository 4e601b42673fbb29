// AVX2 + FMA + F16C kernels (CPUs without AVX-512).
//
// Math and layouts: see kernels/cpu/internal/kernels_impl.inc. With 16 ymm
// registers the Linear register tile is 3 activation rows × 4 weight rows (12
// accumulators + 3 x + 1 w), K blocks of 512, W blocks of 96 rows in L2. No
// bf16 dot product: bf16 weights are widened exactly (shift) and FMA'd in f32.
//
// Built with -mavx2 -mfma -mf16c (kernels/CMakeLists.txt); only called after
// CPUID checks.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/cpu/internal/cpu_kernels.h"

namespace tessera::kernels::cpu::avx2 {
namespace {

struct Simd {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V Zero() { return _mm256_setzero_ps(); }
  static V Set1(float f) { return _mm256_set1_ps(f); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // The first n (0 < n < kLanes) floats at p, the other lanes 0; nothing past
  // p + n is touched (vmaskmovps).
  static __m256i LaneMask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V LoadN(const float* p, int64_t n) {
    return _mm256_maskload_ps(p, LaneMask(n));
  }
  static void StoreN(float* p, V v, int64_t n) {
    _mm256_maskstore_ps(p, LaneMask(n), v);
  }
  static V LoadF16(const uint16_t* p) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V LoadBF16(const uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
        16));
  }
  static V LoadI8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static V BroadcastF16(const uint8_t* p) {
    uint16_t h;
    __builtin_memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<int16_t>(h)));
  }
  static void StoreF16(uint16_t* p, V v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  static void StoreBF16(uint16_t* p, V v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i lsb =
        _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)),
                         lsb),
        16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(
        r,
        _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40)),
        nan);
    const __m256i packed =
        _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_castsi256_si128(packed));
  }
  static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V Div(V a, V b) { return _mm256_div_ps(a, b); }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V Max(V a, V b) { return _mm256_max_ps(a, b); }
  static V Abs(V v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static float ReduceMax(V v) {
    __m128 s =
        _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // Rounds to the nearest integer (ties to even), saturates to int8.
  static void StoreI8(int8_t* p, V v) {
    const __m256i i = _mm256_cvtps_epi32(v);
    const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(i),
                                        _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(s16, s16));
  }
  static float ReduceAdd(V v) {
    __m128 s =
        _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static V SwapPairs(V v) { return _mm256_permute_ps(v, 0xB1); }
  // out[0..3] = horizontal sums of a, b, c, d, added in the same order as
  // ReduceAdd (lanes 4 apart, then 2, then 1), so a dot product has the same
  // bits in any tile width (results never depend on how outputs are split).
  static void ReduceAdd4(V a, V b, V c, V d, float* out) {
    __m128 sa =
        _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 sb =
        _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
    __m128 sc =
        _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
    __m128 sd =
        _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
    _MM_TRANSPOSE4_PS(sa, sb, sc, sd);  // sa = lane 0 of each, sb lane 1...
    _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(sa, sc), _mm_add_ps(sb, sd)));
  }
  static V Exp(V x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3365447504019f));
    const V fx =
        _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    V y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x),
                        _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
};

// out[q] = horizontal sum of acc[q], four registers at a time.
template <int N>
inline void ReduceTile(const Simd::V* acc, float* out) {
  int q = 0;
  for (; q + 4 <= N; q += 4) {
    Simd::ReduceAdd4(acc[q], acc[q + 1], acc[q + 2], acc[q + 3], out + q);
  }
  for (; q < N; ++q) out[q] = Simd::ReduceAdd(acc[q]);
}

struct Traits {
  static constexpr int kMr = 3;
  static constexpr int kNr = 4;
  static constexpr int kKcF32 = 512;
  static constexpr int kKcBf16 = 512;  // Unused: no bf16 dot product.
  static constexpr int kBf16Jr = 8;    // Unused: no bf16 dot product.
  static constexpr int kNc = 96;
  static constexpr int kMc = 64;
  static constexpr int kPad = 32;  // Panel row padding (elements).
  // Weight rows per GEMV tile (more concurrent DRAM streams).
  static constexpr int kGemvNr = 4;
  static constexpr int kGemvMaxM = 3;
  // m <= kGemvRowMaxM streams W one row at a time (kernels_impl.inc); 0:
  // never (not measured on an AVX2-only CPU, so the tiles stay).
  static constexpr int kGemvRowMaxM = 0;
  // Largest m whose f32 (q8_0) weights are streamed; f16 always is.
  static constexpr int kStreamMaxM = 64;
  static constexpr int kStreamMaxMQ8 = 16;
  // Activation bytes per streamed row block (kept in L2).
  static constexpr int64_t kStreamBlockBytes = 512 * 1024;
  // How many W tiles ahead a streamed tile serving more than kGemvMaxM rows
  // prefetches (Pf::kNextRows in kernels_impl.inc).
  static constexpr int kStreamPrefetchTiles = 2;
};

// q8_0 × q8_0 dot products of MR quantized activation rows with NR weight
// rows, one block (32 bytes, one ymm) per step: |w| (u8) × x with w's sign
// (s8) by vpmaddubsw (pair sums < 2^15: no saturation), vpmaddwd to int32,
// then one FMA with the product of the two blocks' scales.
template <int MR, int NR>
inline void Q8DotTile(const int8_t* xq, int64_t ldxq, const float* xd,
                      int64_t ldxd, const uint8_t* w, int64_t wld, int64_t nb,
                      float out[MR][NR]) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_ps();
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b) {
    if ((b & 1) == 0) {
      for (int r = 0; r < NR; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(w + (r + NR) * wld) + b * 34,
                     _MM_HINT_T1);
      }
    }
    __m256i xv[MR];
    for (int i = 0; i < MR; ++i) {
      xv[i] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(xq + i * ldxq + b * 32));
    }
    for (int r = 0; r < NR; ++r) {
      const uint8_t* blk = w + r * wld + b * 34;
      uint16_t h;
      __builtin_memcpy(&h, blk, 2);
      const __m256 dw =
          _mm256_cvtph_ps(_mm_set1_epi16(static_cast<int16_t>(h)));
      const __m256i wv =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      const __m256i aw = _mm256_sign_epi8(wv, wv);
      for (int i = 0; i < MR; ++i) {
        const __m256i s = _mm256_madd_epi16(
            _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv[i], wv)), ones);
        acc[i][r] = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(s),
            _mm256_mul_ps(dw, _mm256_loadu_ps(xd + i * ldxd + b * 8)),
            acc[i][r]);
      }
    }
  }
  // One reduction per accumulator (not ReduceAdd4): the same bits whatever
  // the tile width, so results never depend on how [n0, n1) was split.
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) out[i][r] = Simd::ReduceAdd(acc[i][r]);
  }
}

template <int MR, int NR>
inline void Q8Tile(const cpu::LinearProblem& p, const uint8_t* w, int64_t wld,
                   int64_t j) {
  float t[MR][NR];
  Q8DotTile<MR, NR>(p.xq, p.ldxq, p.xd, p.ldxd, w + j * wld, wld, p.k / 32, t);
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      p.y[i * p.ldy + j + r] =
          t[i][r] + (p.bias != nullptr ? p.bias[j + r] : 0.0f);
    }
  }
}

// 4 weight rows per tile for 1-2 activation rows, 2 for 3 (16 registers).
template <int MR>
void Q8GemvRangeM(const cpu::LinearProblem& p, int64_t n0, int64_t n1) {
  constexpr int kNr = MR <= 2 ? 4 : 2;
  const int64_t wld = p.k / 32 * 34;
  const uint8_t* w = static_cast<const uint8_t*>(p.w);
  int64_t j = n0;
  for (; j + kNr <= n1; j += kNr) Q8Tile<MR, kNr>(p, w, wld, j);
  for (; j < n1; ++j) Q8Tile<MR, 1>(p, w, wld, j);
}

}  // namespace

void Q8GemvRange(const cpu::LinearProblem& p, int64_t n0, int64_t n1) {
  switch (p.m) {
    case 1:
      return Q8GemvRangeM<1>(p, n0, n1);
    case 2:
      return Q8GemvRangeM<2>(p, n0, n1);
    default:
      return Q8GemvRangeM<3>(p, n0, n1);
  }
}

namespace {
inline void Q8Gemv(const cpu::LinearProblem& p, int64_t n0, int64_t n1) {
  Q8GemvRange(p, n0, n1);
}
}  // namespace

#define TESSERA_HAS_BF16_DOT 0
#define TESSERA_HAS_F32_SLABS 0
#include "kernels/cpu/internal/kernels_impl.inc"

}  // namespace tessera::kernels::cpu::avx2
