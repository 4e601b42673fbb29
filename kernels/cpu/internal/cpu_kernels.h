// Plain-data interface between the dispatcher (kernels/ops.cc) and the
// ISA-specific kernel files (kernels/cpu/*_kernels.cc). It includes nothing but
// <cstdint> on purpose: the ISA files are compiled with -mavx512*/-mavx2, and
// any inline function they pulled in from a shared header could be emitted
// there with wide instructions and picked by the linker for every caller (an
// ODR trap that would crash CPUs without those instructions).
#pragma once

#include <cstdint>

namespace tessera::kernels::cpu {

enum class WeightType : int32_t { kF32, kF16, kBF16, kQ8_0 };
enum class CacheType : int32_t { kF32, kF16, kBF16 };

// Tiling of the Linear kernels of one ISA (see the kernel files' headers).
struct LinearTraits {
  int32_t lanes;       // f32 lanes per vector register.
  int32_t mr;          // Activation rows per register tile.
  int32_t nr;          // Weight rows (outputs) per register tile.
  int32_t kc_f32;      // K block of the f32-FMA GEMM (elements).
  int32_t kc_bf16;     // K block of the bf16 dot-product GEMM (elements).
  int32_t nr_bf16;     // Outputs per bf16 dot-product tile (the partition
                       // granularity of that path).
  int32_t nc;          // Weight rows per L2 block.
  int32_t mc;          // Activation rows per block.
  int32_t gemv_max_m;  // m at or below which Linear streams W (no blocking).
  int32_t nr_slabs;    // Outputs per f32 slab tile (the partition
                       // granularity of that path).
  bool has_bf16_dot;   // vdpbf16ps available (compiled in and enabled).
  bool has_f32_slabs;  // The blocked GEMM runs on PackF32Slabs activations.
};

// One Linear call: y[m, n] = x[m, k] · W[n, k]ᵀ (+ bias).
struct LinearProblem {
  const float* x = nullptr;
  int64_t m = 0;
  int64_t ldx = 0;
  const void* w = nullptr;
  WeightType wtype = WeightType::kF32;
  int64_t n = 0;
  int64_t k = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
  // Set for the bf16 dot-product path: x rounded to bf16 and packed by
  // PackBF16Pairs (slabs of 16 rows, (k + 1) / 2 bf16 pairs per row).
  const uint32_t* xp = nullptr;
  // Set for the f32 slab GEMM (blocked path, has_f32_slabs): x packed by
  // PackF32Slabs (slabs of 16 rows, k floats per row).
  const float* xs = nullptr;
  // Set for the q8_0 × q8_0 GEMV path (q8_0 weights, m <= gemv_max_m): x
  // quantized per 32-value block, int8 values (row stride ldxq bytes) and each
  // block's f32 scale repeated 8 times (row stride ldxd floats = k / 4).
  const int8_t* xq = nullptr;
  int64_t ldxq = 0;
  const float* xd = nullptr;
  int64_t ldxd = 0;
  const int32_t* xsum = nullptr;  // Σ of each block's int8 values (k / 32
                                  // per row).
  // m = 1 with f16/bf16 W or the q8_0 × q8_0 GEMV: read W one row at a time
  // instead of in multi-row tiles (kernels::GemvRead; same bits).
  bool row_stream = false;
  // f16 W past the streamed sizes runs the f32 slab GEMM (where the ISA has
  // it) instead of streaming at every m (kernels_impl.inc, LinearStreams).
  bool f16_blocked = false;
  bool vnni = false;  // Use cpu::avx512_vnni::Q8GemvRange (CPU has VNNI).
};

// Paged attention work item: query rows [row_begin, row_end) of one sequence
// for all heads of kv head `kv_head`, over cache positions [t_begin, t_end).
struct AttentionItem {
  int32_t seq;
  int32_t kv_head;
  int32_t row_begin;
  int32_t row_end;
  int32_t t_begin;
  int32_t t_end;
  // >= 0: write unnormalized partials (max, sum, acc[head_dim]) per (row,
  // head) at partials + partial_index * stride instead of the output.
  int64_t partial_index;
};

struct AttentionProblem {
  const float* q;
  int64_t q_stride;
  float* out;
  int64_t out_stride;
  const void* k_cache;
  const void* v_cache;
  CacheType cache_type;
  int64_t block_size;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t num_heads;
  float scale;
  const int32_t* query_start;
  const int32_t* context_len;
  const int32_t* block_tables;
  int64_t max_blocks_per_seq;
  float* partials;  // See AttentionItem::partial_index.
};

// The entry points every ISA file provides (namespace avx512 / avx2).
#define TESSERA_DECLARE_CPU_KERNELS(ns)                                        \
  namespace ns {                                                               \
  LinearTraits GetLinearTraits();                                              \
  /* Per-thread scratch (floats) LinearRange needs for this problem. */        \
  int64_t LinearScratchFloats(const LinearProblem& p);                         \
  /* Whether p runs the streamed path (no packed x wanted), given p.xp. */     \
  bool LinearStreams(const LinearProblem& p);                                  \
  /* Outputs [n0, n1) for all m rows. */                                       \
  void LinearRange(const LinearProblem& p, int64_t n0, int64_t n1,             \
                   float* scratch);                                            \
  /* Rows of x (stride ld, k a multiple of 32) to q8_0 blocks: d = amax/127,   \
     q = round-half-even(x / d); see LinearProblem::xq. */                     \
  void QuantizeRowsQ8(const float* x, int64_t rows, int64_t k, int64_t ld,     \
                      int8_t* q, float* d, int32_t* sum);                      \
  /* q8_0 × q8_0 GEMV over outputs [n0, n1) (p.xq set). */                    \
  void Q8GemvRange(const LinearProblem& p, int64_t n0, int64_t n1);            \
  /* x rows [0, rows) (stride ld) rounded to bf16 (nearest even) into 16-row   \
     slabs of bf16 pairs: slab s at out + s * 16 * kp (kp = (k + 1) / 2)       \
     holds u32 [kp][16] = x[16s + l][2q] | x[16s + l][2q + 1] << 16 at         \
     [q][l]; missing rows and the odd column are zero. */                      \
  void PackBF16Pairs(const float* x, int64_t rows, int64_t k, int64_t ld,      \
                     uint32_t* out);                                           \
  /* x rows [0, rows) (stride ld) into 16-row slabs: slab s at out + s * 16 *  \
     k holds float [k][16] = x[16s + l][c] at [c][l]; missing rows zero.       \
     Only where LinearTraits::has_f32_slabs (traps elsewhere). */              \
  void PackF32Slabs(const float* x, int64_t rows, int64_t k, int64_t ld,       \
                    float* out);                                               \
  void DequantizeRows(WeightType t, const void* w, int64_t cols,               \
                      const int32_t* ids, int64_t n, float* out);              \
  void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t n,   \
               float eps, float* out);                                         \
  void AddRmsNorm(float* residual, const float* delta, const float* weight,    \
                  int64_t rows, int64_t n, float eps, float* out);             \
  void SiluMul(const float* gate, const float* up, int64_t n, float* out);     \
  /* False when head_dim is too large for the fast path. */                    \
  bool Rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,         \
            int64_t row_stride, const int32_t* positions,                      \
            const float* inv_freq, bool pairwise);                             \
  /* cos/sin tables (head_dim floats per token each) for RopeApply. */         \
  void RopeTable(const int32_t* positions, int64_t tokens, int64_t head_dim,   \
                 const float* inv_freq, bool pairwise, float* cs, float* sn);  \
  /* Rope with precomputed tables: the same bits as Rope. */                   \
  void RopeApply(float* x, int64_t tokens, int64_t heads, int64_t head_dim,    \
                 int64_t row_stride, const float* cs, const float* sn,         \
                 bool pairwise);                                               \
  /* n values per token (stride src_stride) into cache + slot * row + col. */  \
  void KvCacheWriteHead(CacheType t, void* cache, int64_t row, int64_t col,    \
                        const float* src, int64_t tokens, int64_t src_stride,  \
                        int64_t n, const int32_t* slots);                      \
  void KvCacheWrite(CacheType t, void* k_cache, void* v_cache, int64_t row,    \
                    const float* k, const float* v, int64_t tokens,            \
                    int64_t kv_stride, const int32_t* slots);                  \
  int64_t AttentionScratchFloats(const AttentionProblem& p, int64_t max_rows); \
  void Attention(const AttentionProblem& p, const AttentionItem& item,         \
                 float* scratch);                                              \
  }

TESSERA_DECLARE_CPU_KERNELS(avx512)
TESSERA_DECLARE_CPU_KERNELS(avx2)

// The vpdpbusd variant of avx512::Q8GemvRange
// (kernels/cpu/avx512_vnni_kernels.cc).
namespace avx512_vnni {
void Q8GemvRange(const LinearProblem& p, int64_t n0, int64_t n1);
}  // namespace avx512_vnni

}  // namespace tessera::kernels::cpu
