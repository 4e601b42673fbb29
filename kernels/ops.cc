// Public entry points: validate, pick the ISA variant, split the work over the
// thread pool. The math lives in reference/ (scalar) and cpu/ (SIMD).
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/cpu/internal/cpu_kernels.h"
#include "kernels/cpu_features.h"
#include "kernels/reference/reference_ops.h"
#include "kernels/thread_pool.h"

namespace tessera::kernels {
namespace {

// The kernels of one ISA, as function pointers.
struct IsaKernels {
  cpu::LinearTraits (*linear_traits)();
  int64_t (*linear_scratch)(const cpu::LinearProblem&);
  bool (*linear_streams)(const cpu::LinearProblem&);
  void (*linear_range)(const cpu::LinearProblem&, int64_t, int64_t, float*);
  void (*pack_bf16)(const float*, int64_t, int64_t, int64_t, uint32_t*);
  void (*pack_f32)(const float*, int64_t, int64_t, int64_t, float*);
  void (*to_q8)(const float*, int64_t, int64_t, int64_t, int8_t*, float*,
                int32_t*);
  void (*dequantize_rows)(cpu::WeightType, const void*, int64_t, const int32_t*,
                          int64_t, float*);
  void (*rms_norm)(const float*, const float*, int64_t, int64_t, float, float*);
  void (*add_rms_norm)(float*, const float*, const float*, int64_t, int64_t,
                       float, float*);
  void (*silu_mul)(const float*, const float*, int64_t, float*);
  bool (*rope)(float*, int64_t, int64_t, int64_t, int64_t, const int32_t*,
               const float*, bool);
  void (*rope_table)(const int32_t*, int64_t, int64_t, const float*, bool,
                     float*, float*);
  void (*rope_apply)(float*, int64_t, int64_t, int64_t, int64_t, const float*,
                     const float*, bool);
  void (*kv_write_head)(cpu::CacheType, void*, int64_t, int64_t, const float*,
                        int64_t, int64_t, int64_t, const int32_t*);
  void (*kv_write)(cpu::CacheType, void*, void*, int64_t, const float*,
                   const float*, int64_t, int64_t, const int32_t*);
  int64_t (*attention_scratch)(const cpu::AttentionProblem&, int64_t);
  void (*attention)(const cpu::AttentionProblem&, const cpu::AttentionItem&,
                    float*);
};

#define TESSERA_ISA_KERNELS(ns)                                                \
  IsaKernels {                                                                 \
    &cpu::ns::GetLinearTraits, &cpu::ns::LinearScratchFloats,                  \
        &cpu::ns::LinearStreams, &cpu::ns::LinearRange,                        \
        &cpu::ns::PackBF16Pairs, &cpu::ns::PackF32Slabs,                       \
        &cpu::ns::QuantizeRowsQ8, &cpu::ns::DequantizeRows, &cpu::ns::RmsNorm, \
        &cpu::ns::AddRmsNorm, &cpu::ns::SiluMul, &cpu::ns::Rope,               \
        &cpu::ns::RopeTable, &cpu::ns::RopeApply, &cpu::ns::KvCacheWriteHead,  \
        &cpu::ns::KvCacheWrite, &cpu::ns::AttentionScratchFloats,              \
        &cpu::ns::Attention                                                    \
  }

constexpr IsaKernels kAvx512Kernels = TESSERA_ISA_KERNELS(avx512);
constexpr IsaKernels kAvx2Kernels = TESSERA_ISA_KERNELS(avx2);

// kAuto -> the best supported ISA; an unsupported explicit ISA falls back to
// the best one (Linear reports it instead).
Isa Resolve(Isa isa) {
  if (isa == Isa::kAuto || !IsaSupported(isa)) return BestIsa();
  return isa;
}

const IsaKernels* KernelsFor(Isa isa) {
  switch (Resolve(isa)) {
    case Isa::kAvx512:
      return &kAvx512Kernels;
    case Isa::kAvx2:
      return &kAvx2Kernels;
    default:
      return nullptr;
  }
}

// Per-thread scratch that grows to its high-water mark and is then reused.
float* ThreadScratch(int64_t floats) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(floats);
  return buffer.data();
}

int64_t RowBytesOf(cpu::WeightType t, int64_t k) {
  switch (t) {
    case cpu::WeightType::kF32:
      return 4 * k;
    case cpu::WeightType::kF16:
    case cpu::WeightType::kBF16:
      return 2 * k;
    case cpu::WeightType::kQ8_0:
      return k / 32 * 34;
  }
  return 4 * k;
}

bool ToWeightType(DType dtype, cpu::WeightType* out) {
  switch (dtype) {
    case DType::kF32:
      *out = cpu::WeightType::kF32;
      return true;
    case DType::kF16:
      *out = cpu::WeightType::kF16;
      return true;
    case DType::kBF16:
      *out = cpu::WeightType::kBF16;
      return true;
    case DType::kQ8_0:
      *out = cpu::WeightType::kQ8_0;
      return true;
    default:
      return false;
  }
}

cpu::CacheType ToCacheType(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return cpu::CacheType::kF16;
    case DType::kBF16:
      return cpu::CacheType::kBF16;
    default:
      return cpu::CacheType::kF32;
  }
}

// Attention work decomposition: prefill rows in tiles of kQueryTile (K/V
// blocks widened once per tile); decode rows (q_len <= kSplitMaxRows) of
// contexts longer than kSplitTokens split into kSplitTokens chunks whose
// partial softmax states merge in chunk order. Both depend only on the batch,
// never on the thread count.
constexpr int64_t kQueryTile = 16;
constexpr int64_t kSplitMaxRows = 4;
constexpr int64_t kSplitTokens = 512;
// Per-score cost of attention beyond its 4·head_dim FLOPs, in FLOPs of the
// same kernel (measured on Zen 5: ~2 ns per score at head dim 8-32 on one
// core, the time of ~500 FLOPs).
constexpr int64_t kScoreWork = 512;

}  // namespace

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

bool GemvReadsRows(GemvRead read) {
  return read == GemvRead::kRows ||
         (read == GemvRead::kAuto && GetCpuFeatures().amd);
}

namespace {

// Validates a Linear call and fills `p`, preparing the activations the chosen
// path reads (bf16 or q8_0 copies in thread-local buffers: valid until this
// thread's next Linear). Returns false in *run when there is nothing to do.
absl::Status PrepareLinear(const Context& ctx, const IsaKernels* kern,
                           const float* x, int64_t m, int64_t ldx,
                           const Tensor& w, const float* bias, float* y,
                           int64_t ldy, cpu::LinearProblem* out, bool* run) {
  int64_t n, k;
  RETURN_IF_ERROR(reference::CheckLinearWeight(w, &n, &k));
  if (m < 0 || (m > 0 && (ldx < k || ldy < n))) {
    return absl::InvalidArgumentError("Linear: bad activation strides");
  }
  *run = m > 0 && n > 0;
  if (!*run) return absl::OkStatus();
  cpu::LinearProblem& p = *out;
  p = cpu::LinearProblem();
  p.x = x;
  p.m = m;
  p.ldx = ldx;
  p.w = w.raw_data();
  ToWeightType(w.dtype(), &p.wtype);
  p.n = n;
  p.k = k;
  p.bias = bias;
  p.y = y;
  p.ldy = ldy;
  const cpu::LinearTraits traits = kern->linear_traits();
  p.row_stream = GemvReadsRows(ctx.gemv_read);
  p.f16_blocked = !GetCpuFeatures().amd;
  if (p.wtype == cpu::WeightType::kBF16 && !ctx.exact && traits.has_bf16_dot &&
      GetCpuFeatures().avx512_bf16 && m > traits.gemv_max_m) {
    // Rounded and packed once per call (16-row slabs of bf16 pairs, the
    // layout the outer-product tiles load), on every thread: on one it is
    // ~6% of a 128-row GEMM.
    thread_local std::vector<uint32_t> xp;
    const int64_t slabs = (m + 15) / 16;
    const int64_t slab_size = 16 * ((k + 1) / 2);
    if (static_cast<int64_t>(xp.size()) < slabs * slab_size) {
      xp.resize(slabs * slab_size);
    }
    uint32_t* xp_data = xp.data();
    ParallelFor(ctx.pool, slabs, 32 * k, [&](int64_t begin, int64_t end) {
      kern->pack_bf16(x + begin * 16 * ldx, std::min(m, end * 16) - begin * 16,
                      k, ldx, xp_data + begin * slab_size);
    });
    p.xp = xp_data;
  }
  if (traits.has_f32_slabs && p.xp == nullptr && !kern->linear_streams(p)) {
    // Packed once per call in 16-row slabs, like the bf16 pairs above (one
    // copy of x; on one thread ~2% of a 128-row GEMM).
    thread_local std::vector<float> xs;
    const int64_t slabs = (m + 15) / 16;
    if (static_cast<int64_t>(xs.size()) < slabs * 16 * k) {
      xs.resize(slabs * 16 * k);
    }
    float* xs_data = xs.data();
    ParallelFor(ctx.pool, slabs, 32 * k, [&](int64_t begin, int64_t end) {
      kern->pack_f32(x + begin * 16 * ldx, std::min(m, end * 16) - begin * 16,
                     k, ldx, xs_data + begin * 16 * k);
    });
    p.xs = xs_data;
  }
  if (p.wtype == cpu::WeightType::kQ8_0 && !ctx.exact &&
      m <= traits.gemv_max_m) {
    // Quantized once here, shared by every thread (the same bytes whatever
    // the thread count).
    thread_local std::vector<int8_t> xq;
    thread_local std::vector<float> xd;
    thread_local std::vector<int32_t> xsum;
    if (static_cast<int64_t>(xq.size()) < m * k) {
      xq.resize(m * k);
      xd.resize(m * k / 4);
      xsum.resize(m * k / 32);
    }
    kern->to_q8(x, m, k, ldx, xq.data(), xd.data(), xsum.data());
    p.xsum = xsum.data();
    p.xq = xq.data();
    p.ldxq = k;
    p.xd = xd.data();
    p.ldxd = k / 4;
    p.vnni = Resolve(ctx.isa) == Isa::kAvx512 && GetCpuFeatures().avx512_vnni;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Linear(const Context& ctx, const float* x, int64_t m, int64_t ldx,
                    const Tensor& w, const float* bias, float* y, int64_t ldy) {
  if (!IsaSupported(ctx.isa)) {
    return absl::InvalidArgumentError(std::string("Linear: ISA ") +
                                      IsaName(ctx.isa) +
                                      " is not supported by this CPU");
  }
  const IsaKernels* kern = KernelsFor(ctx.isa);
  if (kern == nullptr) return reference::Linear(x, m, ldx, w, bias, y, ldy);
  cpu::LinearProblem p;
  bool run = false;
  RETURN_IF_ERROR(
      PrepareLinear(ctx, kern, x, m, ldx, w, bias, y, ldy, &p, &run));
  if (!run) return absl::OkStatus();
  const cpu::LinearTraits traits = kern->linear_traits();
  const int64_t scratch = kern->linear_scratch(p);
  // Outputs per tile (the partition granularity): the bf16 dot-product or
  // f32 slab GEMM's tile width, else the register tile's.
  const int64_t nr = p.xp != nullptr   ? traits.nr_bf16
                     : p.xs != nullptr ? traits.nr_slabs
                                       : traits.nr;
  const int64_t tiles = (p.n + nr - 1) / nr;
  // Work per tile: its FLOPs or its weight bytes, whichever is larger.
  const int64_t tile_work =
      nr * std::max<int64_t>(2 * m * p.k, RowBytesOf(p.wtype, p.k));
  const int64_t n = p.n;
  ParallelFor(ctx.pool, tiles, tile_work, [&](int64_t begin, int64_t end) {
    kern->linear_range(p, begin * nr, std::min<int64_t>(end * nr, n),
                       ThreadScratch(scratch));
  });
  return absl::OkStatus();
}

void RmsNorm(const Context& ctx, const float* x, const float* weight,
             int64_t rows, int64_t n, float eps, float* out) {
  const IsaKernels* kern = KernelsFor(ctx.isa);
  if (kern == nullptr || ctx.isa == Isa::kScalar) {
    return reference::RmsNorm(x, weight, rows, n, eps, out);
  }
  ParallelFor(ctx.pool, rows, 3 * n, [&](int64_t begin, int64_t end) {
    kern->rms_norm(x + begin * n, weight, end - begin, n, eps, out + begin * n);
  });
}

void AddRmsNorm(const Context& ctx, float* residual, const float* delta,
                const float* weight, int64_t rows, int64_t n, float eps,
                float* out) {
  const IsaKernels* kern = KernelsFor(ctx.isa);
  if (kern == nullptr || ctx.isa == Isa::kScalar) {
    return reference::AddRmsNorm(residual, delta, weight, rows, n, eps, out);
  }
  ParallelFor(ctx.pool, rows, 5 * n, [&](int64_t begin, int64_t end) {
    kern->add_rms_norm(residual + begin * n, delta + begin * n, weight,
                       end - begin, n, eps, out + begin * n);
  });
}

void Rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t row_stride, const int32_t* positions, const float* inv_freq,
          bool pairwise) {
  const IsaKernels* kern = KernelsFor(Isa::kAuto);
  if (kern != nullptr && kern->rope(x, tokens, heads, head_dim, row_stride,
                                    positions, inv_freq, pairwise)) {
    return;
  }
  reference::Rope(x, tokens, heads, head_dim, row_stride, positions, inv_freq,
                  pairwise);
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  const IsaKernels* kern = KernelsFor(Isa::kAuto);
  if (kern == nullptr) return reference::SiluMul(gate, up, n, out);
  kern->silu_mul(gate, up, n, out);
}

void SiluMul(const Context& ctx, const float* gate, const float* up, int64_t n,
             float* out) {
  const IsaKernels* kern = KernelsFor(ctx.isa);
  if (kern == nullptr || ctx.isa == Isa::kScalar) {
    return reference::SiluMul(gate, up, n, out);
  }
  // Chunks of 64 values (whole vectors); ~16 FLOP-equivalents per value (the
  // exp and the division).
  constexpr int64_t kChunk = 64;
  ParallelFor(ctx.pool, (n + kChunk - 1) / kChunk, 16 * kChunk,
              [&](int64_t begin, int64_t end) {
                const int64_t b = begin * kChunk;
                kern->silu_mul(gate + b, up + b,
                               std::min<int64_t>(n, end * kChunk) - b, out + b);
              });
}

absl::Status EmbeddingLookup(const Tensor& table, const int32_t* ids, int64_t n,
                             float* out) {
  const IsaKernels* kern = KernelsFor(Isa::kAuto);
  if (kern == nullptr) return reference::EmbeddingLookup(table, ids, n, out);
  int64_t vocab, hidden;
  RETURN_IF_ERROR(Annotate(reference::CheckLinearWeight(table, &vocab, &hidden),
                           "EmbeddingLookup"));
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(
          "EmbeddingLookup: token id " + std::to_string(ids[i]) +
          " out of range [0, " + std::to_string(vocab) + ")");
    }
  }
  cpu::WeightType t = cpu::WeightType::kF32;
  ToWeightType(table.dtype(), &t);
  kern->dequantize_rows(t, table.raw_data(), hidden, ids, n, out);
  return absl::OkStatus();
}

void KvCacheWrite(const KvCacheView& cache, const float* k, const float* v,
                  int64_t tokens, int64_t kv_stride, const int32_t* slots) {
  const IsaKernels* kern = KernelsFor(Isa::kAuto);
  if (kern == nullptr) {
    return reference::KvCacheWrite(cache, k, v, tokens, kv_stride, slots);
  }
  kern->kv_write(ToCacheType(cache.dtype), cache.k, cache.v,
                 cache.num_kv_heads * cache.head_dim, k, v, tokens, kv_stride,
                 slots);
}

absl::Status QkvRopeKvWrite(const Context& ctx, const float* x, int64_t m,
                            int64_t ldx, const QkvProjection& w,
                            int64_t num_heads, const int32_t* positions,
                            const float* inv_freq, bool pairwise,
                            const KvCacheView& cache, const int32_t* slots,
                            float* q_out, int64_t ldq) {
  if (!IsaSupported(ctx.isa)) {
    return absl::InvalidArgumentError(std::string("QkvRopeKvWrite: ISA ") +
                                      IsaName(ctx.isa) +
                                      " is not supported by this CPU");
  }
  RETURN_IF_ERROR(reference::CheckQkv(x, m, ldx, w, num_heads, cache, ldq));
  if (m == 0) return absl::OkStatus();
  const int64_t hd = cache.head_dim;
  const int64_t kv_heads = cache.num_kv_heads;
  const IsaKernels* kern = KernelsFor(ctx.isa);
  if (kern == nullptr || ctx.isa == Isa::kScalar) {
    return reference::QkvRopeKvWrite(x, m, ldx, w, num_heads, positions,
                                     inv_freq, pairwise, cache, slots, q_out,
                                     ldq);
  }
  const cpu::LinearTraits traits = kern->linear_traits();
  if (m > traits.gemv_max_m || hd / 2 > 512) {
    // Prefill: the projections are compute-bound GEMMs, blocked over all
    // outputs; fusing per head would repack the activations once per head.
    const int64_t kv_dim = kv_heads * hd;
    thread_local std::vector<float> kbuf, vbuf;
    if (static_cast<int64_t>(kbuf.size()) < m * kv_dim) {
      kbuf.resize(m * kv_dim);
      vbuf.resize(m * kv_dim);
    }
    RETURN_IF_ERROR(Linear(ctx, x, m, ldx, *w.wq, w.bq, q_out, ldq));
    RETURN_IF_ERROR(Linear(ctx, x, m, ldx, *w.wk, w.bk, kbuf.data(), kv_dim));
    RETURN_IF_ERROR(Linear(ctx, x, m, ldx, *w.wv, w.bv, vbuf.data(), kv_dim));
    for (int64_t i = 0; i < m; ++i) {
      if (w.q_norm != nullptr) {
        RmsNorm(ctx, q_out + i * ldq, w.q_norm, num_heads, hd, w.norm_eps,
                q_out + i * ldq);
      }
      if (w.k_norm != nullptr) {
        RmsNorm(ctx, kbuf.data() + i * kv_dim, w.k_norm, kv_heads, hd,
                w.norm_eps, kbuf.data() + i * kv_dim);
      }
    }
    if (hd / 2 > 512) {  // Rope's scalar reference path: keep its bits.
      Rope(q_out, m, num_heads, hd, ldq, positions, inv_freq, pairwise);
      Rope(kbuf.data(), m, kv_heads, hd, kv_dim, positions, inv_freq, pairwise);
      KvCacheWrite(cache, kbuf.data(), vbuf.data(), m, kv_dim, slots);
      return absl::OkStatus();
    }
    // Rotary on q and k and the cache write, over the threads by token: each
    // token's angles once for both (RopeTable + RopeApply are the same bits as
    // Rope), while its rows are still in the cache of the thread at hand.
    const cpu::CacheType ct = ToCacheType(cache.dtype);
    const int64_t token_work =
        hd / 2 * 40 + (num_heads + kv_heads) * hd * 3 + 2 * kv_dim;
    float* kp = kbuf.data();
    const float* vp = vbuf.data();
    ParallelFor(ctx.pool, m, token_work, [&](int64_t begin, int64_t end) {
      thread_local std::vector<float> cs, sn;
      const int64_t n = end - begin;
      if (static_cast<int64_t>(cs.size()) < n * hd) {
        cs.resize(n * hd);
        sn.resize(n * hd);
      }
      kern->rope_table(positions + begin, n, hd, inv_freq, pairwise, cs.data(),
                       sn.data());
      kern->rope_apply(q_out + begin * ldq, n, num_heads, hd, ldq, cs.data(),
                       sn.data(), pairwise);
      kern->rope_apply(kp + begin * kv_dim, n, kv_heads, hd, kv_dim, cs.data(),
                       sn.data(), pairwise);
      kern->kv_write(ct, cache.k, cache.v, kv_dim, kp + begin * kv_dim,
                     vp + begin * kv_dim, n, kv_dim, slots + begin);
    });
    return absl::OkStatus();
  }
  // Decode: one pass over q, k and v heads. x is prepared (q8_0-quantized
  // for q8_0 weights) once per projection; each head is a Linear over its
  // head_dim weight rows (the same bits as the whole Linear: dot products do
  // not depend on the tiling), then normalized, rotated and stored while in
  // L1.
  cpu::LinearProblem pq, pk, pv;
  bool run = false;
  RETURN_IF_ERROR(
      PrepareLinear(ctx, kern, x, m, ldx, *w.wq, w.bq, q_out, ldq, &pq, &run));
  RETURN_IF_ERROR(PrepareLinear(ctx, kern, x, m, ldx, *w.wk, w.bk, nullptr,
                                kv_heads * hd, &pk, &run));
  RETURN_IF_ERROR(PrepareLinear(ctx, kern, x, m, ldx, *w.wv, w.bv, nullptr,
                                kv_heads * hd, &pv, &run));
  thread_local std::vector<float> cs, sn;
  if (static_cast<int64_t>(cs.size()) < m * hd) {
    cs.resize(m * hd);
    sn.resize(m * hd);
  }
  kern->rope_table(positions, m, hd, inv_freq, pairwise, cs.data(), sn.data());
  const cpu::CacheType ct = ToCacheType(cache.dtype);
  const int64_t kv_row = kv_heads * hd;
  const int64_t units = num_heads + 2 * kv_heads;
  const int64_t unit_work =
      hd * std::max<int64_t>(2 * m * pq.k, RowBytesOf(pq.wtype, pq.k));
  const float* cs_data = cs.data();
  const float* sn_data = sn.data();
  ParallelFor(ctx.pool, units, unit_work, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> head_buf;
    if (static_cast<int64_t>(head_buf.size()) < m * hd) head_buf.resize(m * hd);
    for (int64_t u = begin; u < end; ++u) {
      const int which = u < num_heads ? 0 : u < num_heads + kv_heads ? 1 : 2;
      const int64_t h = which == 0   ? u
                        : which == 1 ? u - num_heads
                                     : u - num_heads - kv_heads;
      const cpu::LinearProblem& base = which == 0 ? pq : which == 1 ? pk : pv;
      cpu::LinearProblem p = base;
      p.w = static_cast<const uint8_t*>(base.w) +
            h * hd * RowBytesOf(base.wtype, base.k);
      p.n = hd;
      p.bias = base.bias != nullptr ? base.bias + h * hd : nullptr;
      p.y = which == 0 ? q_out + h * hd : head_buf.data();
      p.ldy = which == 0 ? ldq : hd;
      kern->linear_range(p, 0, hd, nullptr);
      const float* norm = which == 0   ? w.q_norm
                          : which == 1 ? w.k_norm
                                       : nullptr;
      if (norm != nullptr) {
        for (int64_t i = 0; i < m; ++i) {
          kern->rms_norm(p.y + i * p.ldy, norm, 1, hd, w.norm_eps,
                         p.y + i * p.ldy);
        }
      }
      if (which != 2) {
        kern->rope_apply(p.y, m, 1, hd, p.ldy, cs_data, sn_data, pairwise);
      }
      if (which != 0) {
        kern->kv_write_head(ct, which == 1 ? cache.k : cache.v, kv_row, h * hd,
                            p.y, m, hd, hd, slots);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status PagedAttention(const Context& ctx, const float* q,
                            int64_t q_stride, const KvCacheView& cache,
                            const AttentionBatch& batch, int64_t num_heads,
                            float scale, float* out, int64_t out_stride) {
  const IsaKernels* kern = KernelsFor(ctx.isa);
  if (kern == nullptr || ctx.isa == Isa::kScalar) {
    return reference::PagedAttention(q, q_stride, cache, batch, num_heads,
                                     scale, out, out_stride);
  }
  RETURN_IF_ERROR(reference::CheckAttention(cache, batch, num_heads));
  const int64_t group = num_heads / cache.num_kv_heads;
  const int64_t d = cache.head_dim;
  const int64_t sstride = d + 2;

  // Plan (thread-local vectors: no allocation once warmed up).
  struct SplitGroup {
    int64_t seq, kv_head, rows, splits, partial_base;
  };
  thread_local std::vector<cpu::AttentionItem> items;
  thread_local std::vector<SplitGroup> split_groups;
  thread_local std::vector<float> partials;
  items.clear();
  split_groups.clear();
  int64_t partial_vecs = 0;
  int64_t max_rows = 1;
  // ~FLOP-equivalents: 4 per (query vector, position, dimension) plus
  // kScoreWork per score (max, exp, sum and the dot product's reduction cost
  // as much as a 128-wide dot product), so that small head dims still split.
  int64_t work = 0;
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const int64_t q_len = batch.query_start[s + 1] - batch.query_start[s];
    work += q_len * num_heads * batch.context_len[s] * (4 * d + kScoreWork);
  }
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const int64_t q_len = batch.query_start[s + 1] - batch.query_start[s];
    const int64_t ctx_len = batch.context_len[s];
    if (q_len == 0) continue;
    const int64_t splits = q_len <= kSplitMaxRows
                               ? (ctx_len + kSplitTokens - 1) / kSplitTokens
                               : 1;
    for (int64_t h = 0; h < cache.num_kv_heads; ++h) {
      if (splits > 1) {
        split_groups.push_back({s, h, q_len, splits, partial_vecs});
        for (int64_t i = 0; i < splits; ++i) {
          items.push_back(cpu::AttentionItem{
              static_cast<int32_t>(s), static_cast<int32_t>(h), 0,
              static_cast<int32_t>(q_len),
              static_cast<int32_t>(i * kSplitTokens),
              static_cast<int32_t>(std::min(ctx_len, (i + 1) * kSplitTokens)),
              partial_vecs});
          partial_vecs += q_len * group;
        }
        max_rows = std::max(max_rows, q_len);
        continue;
      }
      for (int64_t r = 0; r < q_len; r += kQueryTile) {
        const int64_t re = std::min(q_len, r + kQueryTile);
        items.push_back(cpu::AttentionItem{
            static_cast<int32_t>(s), static_cast<int32_t>(h),
            static_cast<int32_t>(r), static_cast<int32_t>(re), 0,
            static_cast<int32_t>(ctx_len), -1});
        max_rows = std::max(max_rows, re - r);
      }
    }
  }
  if (static_cast<int64_t>(partials.size()) < partial_vecs * sstride) {
    partials.resize(partial_vecs * sstride);
  }
  cpu::AttentionProblem p{q,
                          q_stride,
                          out,
                          out_stride,
                          cache.k,
                          cache.v,
                          ToCacheType(cache.dtype),
                          cache.block_size,
                          cache.num_kv_heads,
                          d,
                          num_heads,
                          scale,
                          batch.query_start,
                          batch.context_len,
                          batch.block_tables,
                          batch.max_blocks_per_seq,
                          partials.data()};
  const int64_t scratch = kern->attention_scratch(p, max_rows);
  const int64_t n_items = static_cast<int64_t>(items.size());
  const cpu::AttentionItem* item_data = items.data();
  auto run = [&](int64_t begin, int64_t end) {
    float* buf = ThreadScratch(scratch);
    for (int64_t i = begin; i < end; ++i) kern->attention(p, item_data[i], buf);
  };
  if (ctx.pool != nullptr && work >= 2 * kMinTaskWork) {
    ctx.pool->ParallelForChunks(n_items, n_items, run);
  } else {
    run(0, n_items);
  }
  // Merge the split partial states in split order.
  for (const SplitGroup& g : split_groups) {
    const int64_t q0 = batch.query_start[g.seq];
    const int64_t vecs = g.rows * group;
    for (int64_t vi = 0; vi < vecs; ++vi) {
      float m_star = -INFINITY;
      for (int64_t sp = 0; sp < g.splits; ++sp) {
        const float* st =
            partials.data() + (g.partial_base + sp * vecs + vi) * sstride;
        m_star = std::max(m_star, st[0]);
      }
      const int64_t r = vi / group;
      const int64_t h = g.kv_head * group + vi % group;
      float* o = out + (q0 + r) * out_stride + h * d;
      float l = 0.0f;
      for (int64_t c = 0; c < d; ++c) o[c] = 0.0f;
      for (int64_t sp = 0; sp < g.splits; ++sp) {
        const float* st =
            partials.data() + (g.partial_base + sp * vecs + vi) * sstride;
        if (st[0] == -INFINITY) continue;
        const float wgt = std::exp(st[0] - m_star);
        l += st[1] * wgt;
        for (int64_t c = 0; c < d; ++c) o[c] += st[2 + c] * wgt;
      }
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      for (int64_t c = 0; c < d; ++c) o[c] *= inv;
    }
  }
  return absl::OkStatus();
}

void RouterTopK(const float* logits, int64_t tokens, int64_t experts, int64_t k,
                int32_t* ids, float* weights) {
  constexpr int64_t kMaxExperts = 256;
  if (experts > kMaxExperts) {
    return reference::RouterTopK(logits, tokens, experts, k, ids, weights);
  }
  // Same operations in the same order as the reference (bitwise equal), on
  // the stack.
  float p[kMaxExperts];
  bool taken[kMaxExperts];
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits + t * experts;
    const float mx = *std::max_element(l, l + experts);
    float sum = 0.0f;
    for (int64_t e = 0; e < experts; ++e) {
      p[e] = std::exp(l[e] - mx);
      sum += p[e];
      taken[e] = false;
    }
    for (int64_t e = 0; e < experts; ++e) p[e] /= sum;
    float kept = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      int64_t best = -1;
      for (int64_t e = 0; e < experts; ++e) {
        if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
      }
      taken[best] = true;
      ids[t * k + i] = static_cast<int32_t>(best);
      kept += p[best];
    }
    for (int64_t i = 0; i < k; ++i) {
      weights[t * k + i] = p[ids[t * k + i]] / kept;
    }
  }
}

}  // namespace tessera::kernels
