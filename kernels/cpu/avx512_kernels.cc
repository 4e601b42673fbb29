// AVX-512 (F/BW/VL/DQ, + BF16 for the bf16 dot-product GEMM) kernels.
//
// Math and layouts: see kernels/cpu/internal/kernels_impl.inc. Linear keeps
// W [n, k] row-major; a 4×6 register tile holds 24 zmm accumulators of
// x[i]·W[r] partial dot products (4 + 6 loads per 24 FMAs, 29 of 32
// registers), reduced once per K block of 1024 (f32) / 2816 (bf16) elements;
// W blocks of 96 rows stay in L2 while every activation row sweeps them.
// bf16 weights: vdpbf16ps does 32 multiply-adds per instruction, twice the f32
// FMA rate, on activations rounded to bf16 (8 significant bits; products are
// exact in f32 and accumulated in f32).
//
// Built with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx2
// -mfma -mf16c (kernels/CMakeLists.txt); only called after CPUID checks.
#include <immintrin.h>

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
  static constexpr int kKcBf16 = 2816;
  static constexpr int kNc = 96;
  static constexpr int kMc = 64;
  static constexpr int kPad = 32;  // Panel row padding (elements).
  // Weight rows per GEMV tile (more concurrent DRAM streams).
  static constexpr int kGemvNr = 6;
  static constexpr int kGemvMaxM = 4;
  // Largest m whose f32 (q8_0) weights are streamed; f16 always is.
  static constexpr int kStreamMaxM = 64;
  static constexpr int kStreamMaxMQ8 = 16;
  // Activation bytes per streamed row block (kept in L2).
  static constexpr int64_t kStreamBlockBytes = 512 * 1024;
};

// acc[i][r] = Σ_c xb[i][c]·w[r][c] over bf16 pairs, 32 elements per
// vdpbf16ps; the tail is a masked load (zeros contribute nothing).
template <int MR, int NR>
inline void Bf16DotTile(const uint16_t* xb, int64_t ldxb, const uint16_t* w,
                        int64_t ws, int64_t c0, int64_t c1, float out[MR][NR]) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_setzero_ps();
  }
  int64_t c = c0;
  for (; c + 32 <= c1; c += 32) {
    __m512bh xv[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      xv[i] = (__m512bh)_mm512_loadu_si512(xb + i * ldxb + c);
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + r * ws + c);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
        acc[i][r] = _mm512_dpbf16_ps(acc[i][r], xv[i], wv);
    }
  }
  if (c < c1) {
    const __mmask32 mask = static_cast<__mmask32>((1ull << (c1 - c)) - 1);
    __m512bh xv[MR];
    for (int i = 0; i < MR; ++i) {
      xv[i] = (__m512bh)_mm512_maskz_loadu_epi16(mask, xb + i * ldxb + c);
    }
    for (int r = 0; r < NR; ++r) {
      const __m512bh wv =
          (__m512bh)_mm512_maskz_loadu_epi16(mask, w + r * ws + c);
      for (int i = 0; i < MR; ++i)
        acc[i][r] = _mm512_dpbf16_ps(acc[i][r], xv[i], wv);
    }
  }
  ReduceTile<MR * NR>(&acc[0][0], &out[0][0]);
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
#include "kernels/cpu/internal/kernels_impl.inc"

}  // namespace tessera::kernels::cpu::avx512
