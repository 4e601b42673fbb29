// Public compute kernels of tessera: dense/quantized Linear (GEMV and GEMM),
// fused normalization, RoPE, SwiGLU, embedding lookup, paged KV cache and
// attention, and the MoE router.
//
// All activations are f32, row-major. Each op has a scalar reference in
// kernels/reference/ and AVX2 / AVX-512 variants in kernels/cpu/, chosen at
// run time from the CPU's features (Context::isa, TESSERA_CPU_ISA caps it).
// Ops never allocate on the decode path except for per-thread scratch that
// grows once to its high-water mark.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "base/dtype.h"
#include "base/tensor.h"

namespace tessera::kernels {

class ThreadPool;

// Instruction set of a kernel variant.
enum class Isa : uint8_t { kAuto, kScalar, kAvx2, kAvx512 };

// "auto", "scalar", "avx2", "avx512".
const char* IsaName(Isa isa);
// The best ISA this CPU supports (respects TESSERA_CPU_ISA).
Isa BestIsa();
// True when `isa` can run here (kAuto and kScalar always can).
bool IsaSupported(Isa isa);

// How a single-row (decode) Linear over f16, bf16 or q8_0 weights reads W.
// The bits are the same either way; only the speed differs, by CPU:
//   kRows: one weight row at a time, one sequential stream per thread for the
//     hardware prefetchers (Zen 5 guest: 52-56 GB/s vs 46-48 for kTiles);
//   kTiles: kGemvNr interleaved rows with the next tile software-prefetched
//     (Intel Xeon guest: TinyLlama f16 decode 0.85-0.87 of the memory
//     roofline vs 0.77-0.81 for kRows);
//   kAuto: kRows on AMD, kTiles elsewhere.
enum class GemvRead { kAuto, kRows, kTiles };

// Whether `read` means kRows on this CPU (kAuto resolved by vendor).
bool GemvReadsRows(GemvRead read);

// How a kernel runs: on which threads and with which instruction set.
struct Context {
  ThreadPool* pool = nullptr;  // Null: the calling thread only.
  Isa isa = Isa::kAuto;        // kAuto: the best the CPU has; kScalar: the
                               // reference.
  // For bf16 weights on AVX-512-BF16 CPUs, Linear rounds the activations to
  // bf16 and uses vdpbf16ps (2x the f32 FMA rate, ~3 significant digits per
  // product, f32 accumulation). Set `exact` to keep the activations in f32
  // (weights widened exactly, f32 FMA).
  // For q8_0 weights, GEMV (m <= 4 on AVX-512, 3 on AVX2) quantizes each
  // activation row to q8_0 too (per 32 values: scale amax/127, int8 rounded
  // half-even; as llama.cpp does) and uses int8 dot products (vpdpbusd with
  // AVX512_VNNI): each activation is off by at most amax/254 of its block,
  // so |y - reference| <= Σ_blocks amax/254 · Σ|w| (+ f32 rounding). `exact`
  // keeps f32 activations there too.
  bool exact = false;
  GemvRead gemv_read = GemvRead::kAuto;  // See GemvRead.
};

// y[i,:] = x[i,:] · Wᵀ (+ bias) for i < m. W: 2-D [n, k] of f32|f16|bf16|q8_0
// with contiguous rows (k a multiple of 32 for q8_0). x: [m, k] with row
// stride ldx; y: [m, n] with row stride ldy; bias (n values) may be null.
// InvalidArgument for an unsupported dtype, shape or ISA.
absl::Status Linear(const Context& ctx, const float* x, int64_t m, int64_t ldx,
                    const Tensor& w, const float* bias, float* y, int64_t ldy);

// out = x * rsqrt(mean(x²) + eps) * weight, per row of n (out may alias x).
void RmsNorm(const Context& ctx, const float* x, const float* weight,
             int64_t rows, int64_t n, float eps, float* out);

// Fused: residual += delta; out = RmsNorm(residual) (out may alias delta).
void AddRmsNorm(const Context& ctx, float* residual, const float* delta,
                const float* weight, int64_t rows, int64_t n, float eps,
                float* out);

// In-place rotary embedding of `heads` heads of head_dim per token; tokens are
// row_stride floats apart; token t is at positions[t]; inv_freq has head_dim/2
// frequencies (scaling, e.g. llama3's, is the caller's). pairwise=true rotates
// (2i, 2i+1) (GGUF/Meta order); false rotates (i, i+head_dim/2) (HF
// rotate-half).
void Rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t row_stride, const int32_t* positions, const float* inv_freq,
          bool pairwise);

// out = silu(gate) * up elementwise over n values (out may alias either).
void SiluMul(const float* gate, const float* up, int64_t n, float* out);
// The same over ctx's threads (a prefill's n = tokens x ffn is worth it: the
// gate/up halves a GEMM's threads just wrote stay in their caches); the same
// bits.
void SiluMul(const Context& ctx, const float* gate, const float* up, int64_t n,
             float* out);

// out[i,:] = dequantized row ids[i] of table [vocab, hidden]
// (f32|f16|bf16|q8_0). InvalidArgument for an id out of range or a bad table.
absl::Status EmbeddingLookup(const Tensor& table, const int32_t* ids, int64_t n,
                             float* out);

// Paged KV cache of one layer: pools of blocks, each block
// [block_size, num_kv_heads, head_dim] of dtype f32|f16|bf16.
struct KvCacheView {
  DType dtype = DType::kF32;
  void* k = nullptr;
  void* v = nullptr;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Writes the K and V rows of `tokens` tokens (each num_kv_heads*head_dim
// values, kv_stride floats apart) into cache slots (slot = block * block_size
// + offset).
void KvCacheWrite(const KvCacheView& cache, const float* k, const float* v,
                  int64_t tokens, int64_t kv_stride, const int32_t* slots);

// The attention input projections of one layer, for QkvRopeKvWrite.
struct QkvProjection {
  const Tensor* wq = nullptr;  // [num_heads * head_dim, k]
  const Tensor* wk = nullptr;  // [num_kv_heads * head_dim, k]
  const Tensor* wv = nullptr;  // [num_kv_heads * head_dim, k]
  const float* bq = nullptr;   // Optional biases (e.g. Qwen2).
  const float* bk = nullptr;
  const float* bv = nullptr;
  // Optional per-head RMSNorm weights (head_dim values) of q and k, applied
  // before RoPE (Qwen3's QK-norm), with norm_eps.
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  float norm_eps = 1e-6f;
};

// Fused attention prologue of m tokens: q = x·Wqᵀ (+ bq), k and v likewise;
// q and k RmsNorm'ed per head (when q_norm/k_norm are set) and rotated by
// Rope (positions, inv_freq, pairwise as in Rope); k and v stored into `cache`
// (which gives num_kv_heads and head_dim) at `slots`, q into q_out [m,
// num_heads * head_dim] (row stride ldq). Bit for bit the same as Linear ×3,
// RmsNorm, Rope ×2 and KvCacheWrite with the same Context. Decode-sized m
// (the GEMV range) runs as one parallel pass over heads, each head projected,
// normalized, rotated and stored by one thread while it is in L1; larger m
// (compute-bound GEMM) runs the unfused sequence. InvalidArgument for
// inconsistent shapes.
absl::Status QkvRopeKvWrite(const Context& ctx, const float* x, int64_t m,
                            int64_t ldx, const QkvProjection& w,
                            int64_t num_heads, const int32_t* positions,
                            const float* inv_freq, bool pairwise,
                            const KvCacheView& cache, const int32_t* slots,
                            float* q_out, int64_t ldq);

// A mixed prefill/decode batch for PagedAttention. Sequence s owns query rows
// [query_start[s], query_start[s+1]) and has context_len[s] tokens in the cache
// (its new ones included, already written); its query row j sits at position
// context_len[s] - q_len + j and attends positions <= it. block_tables holds
// num_seqs rows of max_blocks_per_seq block ids.
struct AttentionBatch {
  int64_t num_seqs = 0;
  const int32_t* query_start = nullptr;  // num_seqs + 1 entries.
  const int32_t* context_len = nullptr;  // num_seqs entries.
  const int32_t* block_tables = nullptr;
  int64_t max_blocks_per_seq = 0;
};

// Causal GQA attention over the paged cache: head h reads kv head
// h / (num_heads / num_kv_heads). q/out: [rows, num_heads*head_dim] with row
// strides. Online softmax, tiled over query rows; long decode contexts are
// split into fixed-size chunks merged in a fixed order, so results do not
// depend on the thread count. InvalidArgument for inconsistent shapes.
absl::Status PagedAttention(const Context& ctx, const float* q,
                            int64_t q_stride, const KvCacheView& cache,
                            const AttentionBatch& batch, int64_t num_heads,
                            float scale, float* out, int64_t out_stride);

// Mixtral router: softmax over `experts` logits per token, keep the top k
// (lowest id on ties), renormalize their weights to sum to 1.
// ids/weights: [tokens, k].
void RouterTopK(const float* logits, int64_t tokens, int64_t experts, int64_t k,
                int32_t* ids, float* weights);

}  // namespace tessera::kernels
