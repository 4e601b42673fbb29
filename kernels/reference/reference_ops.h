// Scalar reference implementations of every op in kernels/ops.h: plain loops,
// f32 accumulation in index order, no threads. They define the semantics the
// vectorized kernels are tested against (Isa::kScalar runs them).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "base/tensor.h"
#include "kernels/ops.h"

namespace tessera::kernels::reference {

// Row r of a [rows, cols] f32|f16|bf16|q8_0 matrix at `data`, dequantized.
void DequantizeRow(DType dtype, const void* data, int64_t cols, int64_t r,
                   float* out);
// Checks W is a 2-D, row-contiguous f32|f16|bf16|q8_0 [n, k] tensor.
absl::Status CheckLinearWeight(const Tensor& w, int64_t* n, int64_t* k);

absl::Status Linear(const float* x, int64_t m, int64_t ldx, const Tensor& w,
                    const float* bias, float* y, int64_t ldy);
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t n,
             float eps, float* out);
void AddRmsNorm(float* residual, const float* delta, const float* weight,
                int64_t rows, int64_t n, float eps, float* out);
void Rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t row_stride, const int32_t* positions, const float* inv_freq,
          bool pairwise);
void SiluMul(const float* gate, const float* up, int64_t n, float* out);
absl::Status EmbeddingLookup(const Tensor& table, const int32_t* ids, int64_t n,
                             float* out);
void KvCacheWrite(const KvCacheView& cache, const float* k, const float* v,
                  int64_t tokens, int64_t kv_stride, const int32_t* slots);
absl::Status PagedAttention(const float* q, int64_t q_stride,
                            const KvCacheView& cache,
                            const AttentionBatch& batch, int64_t num_heads,
                            float scale, float* out, int64_t out_stride);
void RouterTopK(const float* logits, int64_t tokens, int64_t experts, int64_t k,
                int32_t* ids, float* weights);

// Linear ×3, per-head RmsNorm, Rope ×2 and KvCacheWrite: the definition of
// the fused op.
absl::Status QkvRopeKvWrite(const float* x, int64_t m, int64_t ldx,
                            const QkvProjection& w, int64_t num_heads,
                            const int32_t* positions, const float* inv_freq,
                            bool pairwise, const KvCacheView& cache,
                            const int32_t* slots, float* q_out, int64_t ldq);
// Checks QkvRopeKvWrite's shapes (shared with the fast path).
absl::Status CheckQkv(const float* x, int64_t m, int64_t ldx,
                      const QkvProjection& w, int64_t num_heads,
                      const KvCacheView& cache, int64_t ldq);

// Checks an attention batch against the cache geometry (shared with the fast
// path).
absl::Status CheckAttention(const KvCacheView& cache,
                            const AttentionBatch& batch, int64_t num_heads);

}  // namespace tessera::kernels::reference
