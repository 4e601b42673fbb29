// Public entry points: validate, pick the ISA variant, split the work over the
// thread pool. The math lives in reference/ (scalar) and cpu/ (SIMD).
#include "kernels/ops.h"

#include "kernels/cpu_features.h"
#include "kernels/reference/reference_ops.h"
#include "kernels/thread_pool.h"

namespace tessera::kernels {

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAuto:
      return "auto";
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

Isa BestIsa() {
  const CpuFeatures& f = GetCpuFeatures();
  if (f.HasAvx512() && f.HasAvx2()) return Isa::kAvx512;
  if (f.HasAvx2()) return Isa::kAvx2;
  return Isa::kScalar;
}

bool IsaSupported(Isa isa) {
  switch (isa) {
    case Isa::kAuto:
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return BestIsa() != Isa::kScalar;
    case Isa::kAvx512:
      return BestIsa() == Isa::kAvx512;
  }
  return false;
}

absl::Status Linear(const Context& ctx, const float* x, int64_t m, int64_t ldx,
                    const Tensor& w, const float* bias, float* y, int64_t ldy) {
  if (!IsaSupported(ctx.isa)) {
    return absl::InvalidArgumentError(std::string("Linear: ISA ") +
                                      IsaName(ctx.isa) +
                                      " is not supported by this CPU");
  }
  return reference::Linear(x, m, ldx, w, bias, y, ldy);
}

void RmsNorm(const Context& /*ctx*/, const float* x, const float* weight,
             int64_t rows, int64_t n, float eps, float* out) {
  reference::RmsNorm(x, weight, rows, n, eps, out);
}

void AddRmsNorm(const Context& /*ctx*/, float* residual, const float* delta,
                const float* weight, int64_t rows, int64_t n, float eps,
                float* out) {
  reference::AddRmsNorm(residual, delta, weight, rows, n, eps, out);
}

void Rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t row_stride, const int32_t* positions, const float* inv_freq,
          bool pairwise) {
  reference::Rope(x, tokens, heads, head_dim, row_stride, positions, inv_freq,
                  pairwise);
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  reference::SiluMul(gate, up, n, out);
}

absl::Status EmbeddingLookup(const Tensor& table, const int32_t* ids, int64_t n,
                             float* out) {
  return reference::EmbeddingLookup(table, ids, n, out);
}

void KvCacheWrite(const KvCacheView& cache, const float* k, const float* v,
                  int64_t tokens, int64_t kv_stride, const int32_t* slots) {
  reference::KvCacheWrite(cache, k, v, tokens, kv_stride, slots);
}

absl::Status PagedAttention(const Context& /*ctx*/, const float* q,
                            int64_t q_stride, const KvCacheView& cache,
                            const AttentionBatch& batch, int64_t num_heads,
                            float scale, float* out, int64_t out_stride) {
  return reference::PagedAttention(q, q_stride, cache, batch, num_heads, scale,
                                   out, out_stride);
}

void RouterTopK(const float* logits, int64_t tokens, int64_t experts, int64_t k,
                int32_t* ids, float* weights) {
  reference::RouterTopK(logits, tokens, experts, k, ids, weights);
}

}  // namespace tessera::kernels
