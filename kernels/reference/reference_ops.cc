#include "kernels/reference/reference_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "base/status.h"

namespace tessera::kernels::reference {
namespace {

float LoadCacheValue(DType dtype, const void* base, int64_t index) {
  switch (dtype) {
    case DType::kF16:
      return HalfToFloat(static_cast<const uint16_t*>(base)[index]);
    case DType::kBF16:
      return BF16ToFloat(static_cast<const uint16_t*>(base)[index]);
    default:
      return static_cast<const float*>(base)[index];
  }
}

void StoreCacheValue(DType dtype, void* base, int64_t index, float value) {
  switch (dtype) {
    case DType::kF16:
      static_cast<uint16_t*>(base)[index] = FloatToHalf(value);
      break;
    case DType::kBF16:
      static_cast<uint16_t*>(base)[index] = FloatToBF16(value);
      break;
    default:
      static_cast<float*>(base)[index] = value;
  }
}

}  // namespace

void DequantizeRow(DType dtype, const void* data, int64_t cols, int64_t r,
                   float* out) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out, static_cast<const float*>(data) + r * cols,
                  cols * sizeof(float));
      break;
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + r * cols;
      for (int64_t j = 0; j < cols; ++j) out[j] = HalfToFloat(p[j]);
      break;
    }
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + r * cols;
      for (int64_t j = 0; j < cols; ++j) out[j] = BF16ToFloat(p[j]);
      break;
    }
    case DType::kQ8_0: {
      const uint8_t* p =
          static_cast<const uint8_t*>(data) + r * (cols / 32) * 34;
      for (int64_t b = 0; b < cols / 32; ++b) {
        uint16_t d16;
        std::memcpy(&d16, p + b * 34, 2);
        const float d = HalfToFloat(d16);
        const int8_t* q = reinterpret_cast<const int8_t*>(p + b * 34 + 2);
        for (int j = 0; j < 32; ++j) out[b * 32 + j] = d * q[j];
      }
      break;
    }
    default:
      break;
  }
}

absl::Status CheckLinearWeight(const Tensor& w, int64_t* n, int64_t* k) {
  if (!w.defined() || w.rank() != 2) {
    return absl::InvalidArgumentError(
        "Linear: weight must be a 2-D tensor, got " + w.DebugString());
  }
  const DType dt = w.dtype();
  if (dt != DType::kF32 && dt != DType::kF16 && dt != DType::kBF16 &&
      dt != DType::kQ8_0) {
    return absl::InvalidArgumentError("Linear: unsupported weight dtype " +
                                      std::string(DTypeName(dt)));
  }
  if (w.device().type != DeviceType::kCpu || !w.is_contiguous()) {
    return absl::InvalidArgumentError(
        "Linear: weight must be a contiguous host tensor, got " +
        w.DebugString());
  }
  *n = w.dim(0);
  *k = w.dim(1);
  if (dt == DType::kQ8_0 && *k % 32 != 0) {
    return absl::InvalidArgumentError(
        "Linear: q8_0 weight needs k % 32 == 0, got " + w.DebugString());
  }
  return absl::OkStatus();
}

absl::Status Linear(const float* x, int64_t m, int64_t ldx, const Tensor& w,
                    const float* bias, float* y, int64_t ldy) {
  int64_t n, k;
  if (absl::Status s = CheckLinearWeight(w, &n, &k); !s.ok()) return s;
  if (m < 0 || (m > 0 && (ldx < k || ldy < n))) {
    return absl::InvalidArgumentError("Linear: bad activation strides");
  }
  std::vector<float> row(k);
  for (int64_t j = 0; j < n; ++j) {
    DequantizeRow(w.dtype(), w.raw_data(), k, j, row.data());
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * ldx;
      float acc = 0.0f;
      for (int64_t c = 0; c < k; ++c) acc += xi[c] * row[c];
      y[i * ldy + j] = acc + (bias != nullptr ? bias[j] : 0.0f);
    }
  }
  return absl::OkStatus();
}

void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t n,
             float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double ss = 0.0;
    for (int64_t j = 0; j < n; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    const float inv =
        1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
    for (int64_t j = 0; j < n; ++j) o[j] = xr[j] * inv * weight[j];
  }
}

void AddRmsNorm(float* residual, const float* delta, const float* weight,
                int64_t rows, int64_t n, float eps, float* out) {
  for (int64_t i = 0; i < rows * n; ++i) residual[i] += delta[i];
  RmsNorm(residual, weight, rows, n, eps, out);
}

void Rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t row_stride, const int32_t* positions, const float* inv_freq,
          bool pairwise) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + t * row_stride + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[t]) * inv_freq[i];
        const float c = std::cos(angle);
        const float s = std::sin(angle);
        const int64_t a = pairwise ? 2 * i : i;
        const int64_t b = pairwise ? 2 * i + 1 : i + half;
        const float x0 = v[a];
        const float x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

absl::Status EmbeddingLookup(const Tensor& table, const int32_t* ids, int64_t n,
                             float* out) {
  int64_t vocab, hidden;
  if (absl::Status s = CheckLinearWeight(table, &vocab, &hidden); !s.ok()) {
    return Annotate(s, "EmbeddingLookup");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(
          "EmbeddingLookup: token id " + std::to_string(ids[i]) +
          " out of range [0, " + std::to_string(vocab) + ")");
    }
    DequantizeRow(table.dtype(), table.raw_data(), hidden, ids[i],
                  out + i * hidden);
  }
  return absl::OkStatus();
}

void KvCacheWrite(const KvCacheView& cache, const float* k, const float* v,
                  int64_t tokens, int64_t kv_stride, const int32_t* slots) {
  const int64_t row = cache.num_kv_heads * cache.head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t base = static_cast<int64_t>(slots[t]) * row;
    for (int64_t j = 0; j < row; ++j) {
      StoreCacheValue(cache.dtype, cache.k, base + j, k[t * kv_stride + j]);
      StoreCacheValue(cache.dtype, cache.v, base + j, v[t * kv_stride + j]);
    }
  }
}

absl::Status CheckQkv(const float* x, int64_t m, int64_t ldx,
                      const QkvProjection& w, int64_t num_heads,
                      const KvCacheView& cache, int64_t ldq) {
  if (w.wq == nullptr || w.wk == nullptr || w.wv == nullptr) {
    return absl::InvalidArgumentError("QkvRopeKvWrite: missing weights");
  }
  const int64_t hd = cache.head_dim;
  const int64_t kv_heads = cache.num_kv_heads;
  if (hd <= 0 || hd % 2 != 0 || kv_heads <= 0 || num_heads <= 0 ||
      num_heads % kv_heads != 0) {
    return absl::InvalidArgumentError(
        "QkvRopeKvWrite: bad head geometry (head_dim must be even and "
        "num_heads a multiple of num_kv_heads)");
  }
  int64_t nq, kq, nk, kk, nv, kv;
  RETURN_IF_ERROR(Annotate(CheckLinearWeight(*w.wq, &nq, &kq), "wq"));
  RETURN_IF_ERROR(Annotate(CheckLinearWeight(*w.wk, &nk, &kk), "wk"));
  RETURN_IF_ERROR(Annotate(CheckLinearWeight(*w.wv, &nv, &kv), "wv"));
  if (nq != num_heads * hd || nk != kv_heads * hd || nv != kv_heads * hd ||
      kk != kq || kv != kq) {
    return absl::InvalidArgumentError(
        "QkvRopeKvWrite: weight shapes do not match the head geometry");
  }
  if (m < 0 || (m > 0 && (x == nullptr || ldx < kq || ldq < nq))) {
    return absl::InvalidArgumentError("QkvRopeKvWrite: bad activation strides");
  }
  return absl::OkStatus();
}

absl::Status QkvRopeKvWrite(const float* x, int64_t m, int64_t ldx,
                            const QkvProjection& w, int64_t num_heads,
                            const int32_t* positions, const float* inv_freq,
                            bool pairwise, const KvCacheView& cache,
                            const int32_t* slots, float* q_out, int64_t ldq) {
  RETURN_IF_ERROR(CheckQkv(x, m, ldx, w, num_heads, cache, ldq));
  const int64_t hd = cache.head_dim;
  const int64_t kv_dim = cache.num_kv_heads * hd;
  std::vector<float> k(m * kv_dim), v(m * kv_dim);
  RETURN_IF_ERROR(Linear(x, m, ldx, *w.wq, w.bq, q_out, ldq));
  RETURN_IF_ERROR(Linear(x, m, ldx, *w.wk, w.bk, k.data(), kv_dim));
  RETURN_IF_ERROR(Linear(x, m, ldx, *w.wv, w.bv, v.data(), kv_dim));
  for (int64_t i = 0; i < m; ++i) {
    if (w.q_norm != nullptr) {
      RmsNorm(q_out + i * ldq, w.q_norm, num_heads, hd, w.norm_eps,
              q_out + i * ldq);
    }
    if (w.k_norm != nullptr) {
      RmsNorm(k.data() + i * kv_dim, w.k_norm, cache.num_kv_heads, hd,
              w.norm_eps, k.data() + i * kv_dim);
    }
  }
  Rope(q_out, m, num_heads, hd, ldq, positions, inv_freq, pairwise);
  Rope(k.data(), m, cache.num_kv_heads, hd, kv_dim, positions, inv_freq,
       pairwise);
  reference::KvCacheWrite(cache, k.data(), v.data(), m, kv_dim, slots);
  return absl::OkStatus();
}

absl::Status CheckAttention(const KvCacheView& cache,
                            const AttentionBatch& batch, int64_t num_heads) {
  if (cache.dtype != DType::kF32 && cache.dtype != DType::kF16 &&
      cache.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        "PagedAttention: unsupported KV cache dtype " +
        std::string(DTypeName(cache.dtype)));
  }
  if (cache.block_size <= 0 || cache.num_kv_heads <= 0 || cache.head_dim <= 0 ||
      num_heads <= 0 || num_heads % cache.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        "PagedAttention: bad geometry (num_heads must be a multiple of "
        "num_kv_heads)");
  }
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const int64_t q_len = batch.query_start[s + 1] - batch.query_start[s];
    const int64_t ctx = batch.context_len[s];
    if (q_len < 0 || ctx < q_len ||
        ctx > batch.max_blocks_per_seq * cache.block_size) {
      return absl::InvalidArgumentError(
          "PagedAttention: sequence " + std::to_string(s) + " has " +
          std::to_string(q_len) + " query rows and context " +
          std::to_string(ctx) + " (capacity " +
          std::to_string(batch.max_blocks_per_seq * cache.block_size) + ")");
    }
  }
  return absl::OkStatus();
}

absl::Status PagedAttention(const float* q, int64_t q_stride,
                            const KvCacheView& cache,
                            const AttentionBatch& batch, int64_t num_heads,
                            float scale, float* out, int64_t out_stride) {
  if (absl::Status s = CheckAttention(cache, batch, num_heads); !s.ok()) {
    return s;
  }
  const int64_t d = cache.head_dim;
  const int64_t group = num_heads / cache.num_kv_heads;
  const int64_t kv_row = cache.num_kv_heads * d;
  std::vector<float> scores;
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const int64_t q0 = batch.query_start[s];
    const int64_t q_len = batch.query_start[s + 1] - q0;
    const int64_t ctx = batch.context_len[s];
    const int32_t* table = batch.block_tables + s * batch.max_blocks_per_seq;
    for (int64_t j = 0; j < q_len; ++j) {
      const int64_t pos = ctx - q_len + j;
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t kvh = h / group;
        const float* qv = q + (q0 + j) * q_stride + h * d;
        scores.assign(pos + 1, 0.0f);
        float max_score = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t <= pos; ++t) {
          const int64_t slot =
              static_cast<int64_t>(table[t / cache.block_size]) *
                  cache.block_size +
              t % cache.block_size;
          const int64_t base = slot * kv_row + kvh * d;
          float dot = 0.0f;
          for (int64_t c = 0; c < d; ++c) {
            dot += qv[c] * LoadCacheValue(cache.dtype, cache.k, base + c);
          }
          scores[t] = dot * scale;
          max_score = std::max(max_score, scores[t]);
        }
        float denom = 0.0f;
        for (int64_t t = 0; t <= pos; ++t) {
          scores[t] = std::exp(scores[t] - max_score);
          denom += scores[t];
        }
        float* o = out + (q0 + j) * out_stride + h * d;
        for (int64_t c = 0; c < d; ++c) o[c] = 0.0f;
        for (int64_t t = 0; t <= pos; ++t) {
          const int64_t slot =
              static_cast<int64_t>(table[t / cache.block_size]) *
                  cache.block_size +
              t % cache.block_size;
          const int64_t base = slot * kv_row + kvh * d;
          const float p = scores[t] / denom;
          for (int64_t c = 0; c < d; ++c) {
            o[c] += p * LoadCacheValue(cache.dtype, cache.v, base + c);
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

void RouterTopK(const float* logits, int64_t tokens, int64_t experts, int64_t k,
                int32_t* ids, float* weights) {
  std::vector<float> p(experts);
  std::vector<int32_t> order(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits + t * experts;
    const float mx = *std::max_element(l, l + experts);
    float sum = 0.0f;
    for (int64_t e = 0; e < experts; ++e) {
      p[e] = std::exp(l[e] - mx);
      sum += p[e];
    }
    for (int64_t e = 0; e < experts; ++e) {
      p[e] /= sum;
      order[e] = static_cast<int32_t>(e);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return p[a] > p[b]; });
    float kept = 0.0f;
    for (int64_t i = 0; i < k; ++i) kept += p[order[i]];
    for (int64_t i = 0; i < k; ++i) {
      ids[t * k + i] = order[i];
      weights[t * k + i] = p[order[i]] / kept;
    }
  }
}

}  // namespace tessera::kernels::reference
