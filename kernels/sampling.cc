#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/random.h"

namespace tessera::kernels {
namespace {

// Orders candidates by value, best first, lower id on ties (deterministic).
struct ByValueDesc {
  const float* v;
  bool operator()(int32_t a, int32_t b) const {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  }
};

// Lowest index of the maximum (NaN never wins).
int32_t ArgMax(const float* v, int64_t n) {
  int32_t best = 0;
  float best_v = -std::numeric_limits<float>::infinity();
  bool found = false;
  for (int64_t i = 0; i < n; ++i) {
    if (!found || v[i] > best_v) {
      if (std::isnan(v[i])) continue;
      best = static_cast<int32_t>(i);
      best_v = v[i];
      found = true;
    }
  }
  return best;
}

// Draws a uniform [0, 1) number and advances the sequence's state.
float Uniform(uint64_t* state) {
  SplitMix64 gen(*state);
  const float u = gen.Uniform();
  *state += 0x9e3779b97f4a7c15ull;  // The same step SplitMix64::Next takes.
  return u;
}

}  // namespace

Sampler::Sampler(int64_t vocab_size, int32_t max_top_logprobs)
    : vocab_size_(vocab_size),
      max_top_logprobs_(std::max(0, max_top_logprobs)),
      work_(vocab_size),
      order_(vocab_size),
      probs_(vocab_size),
      counts_(vocab_size, 0),
      seen_(vocab_size, 0),
      top_(std::max(0, max_top_logprobs)) {}

SampleResult Sampler::Sample(const float* logits,
                             const SamplingOptions& options,
                             absl::Span<const int32_t> history,
                             absl::Span<const int32_t> output,
                             uint64_t* rng_state) {
  const int64_t v = vocab_size_;
  const bool greedy = !(options.temperature > 0.0f);
  const bool rep =
      options.repetition_penalty != 1.0f && options.repetition_penalty > 0.0f;
  const bool pres_freq =
      options.presence_penalty != 0.0f || options.frequency_penalty != 0.0f;
  const bool want_logprobs = options.logprobs || options.top_logprobs > 0;
  float* w = work_.data();
  std::copy(logits, logits + v, w);

  // Penalties (each token once, whatever its multiplicity in the history).
  if (rep) {
    for (int32_t id : history) {
      if (id < 0 || id >= v || seen_[id]) continue;
      seen_[id] = 1;
      w[id] = w[id] > 0.0f ? w[id] / options.repetition_penalty
                           : w[id] * options.repetition_penalty;
    }
    for (int32_t id : history) {
      if (id >= 0 && id < v) seen_[id] = 0;
    }
  }
  if (pres_freq) {
    for (int32_t id : output) {
      if (id >= 0 && id < v) ++counts_[id];
    }
    for (int32_t id : output) {
      if (id < 0 || id >= v || counts_[id] == 0) continue;
      w[id] -= options.presence_penalty +
               options.frequency_penalty * static_cast<float>(counts_[id]);
      counts_[id] = 0;
    }
  }
  if (!greedy && options.temperature != 1.0f) {
    const float inv_t = 1.0f / options.temperature;
    for (int64_t i = 0; i < v; ++i) w[i] *= inv_t;
  }

  SampleResult result;
  // Log-softmax normalizer of the processed logits.
  const int32_t best = ArgMax(w, v);
  const float max_logit = w[best];
  double sum = 0.0;
  if (want_logprobs || !greedy) {
    for (int64_t i = 0; i < v; ++i) sum += std::exp(w[i] - max_logit);
  }
  const float log_z = max_logit + static_cast<float>(std::log(sum));

  if (greedy) {
    result.token = best;
  } else {
    // Candidates: min-p keeps p >= min_p * p_max, i.e. logit >= max +
    // log(min_p).
    const float floor_logit = options.min_p > 0.0f
                                  ? max_logit + std::log(options.min_p)
                                  : -std::numeric_limits<float>::infinity();
    int64_t count = 0;
    for (int64_t i = 0; i < v; ++i) {
      if (w[i] >= floor_logit) order_[count++] = static_cast<int32_t>(i);
    }
    if (options.top_k > 0 && options.top_k < count) {
      std::nth_element(order_.begin(), order_.begin() + options.top_k,
                       order_.begin() + count, ByValueDesc{w});
      count = options.top_k;
    }
    if (options.top_p < 1.0f) {
      // Sort a growing prefix until it holds top_p of the mass: a full sort of
      // a 128K vocabulary per token is rarely needed.
      const double target = options.top_p * sum;
      int64_t sorted = std::min<int64_t>(count, 64);
      for (;;) {
        std::partial_sort(order_.begin(), order_.begin() + sorted,
                          order_.begin() + count, ByValueDesc{w});
        double mass = 0.0;
        int64_t keep = sorted;
        for (int64_t i = 0; i < sorted; ++i) {
          mass += std::exp(w[order_[i]] - max_logit);
          if (mass >= target) {
            keep = i + 1;
            break;
          }
        }
        if (mass >= target || sorted == count) {
          count = keep;
          break;
        }
        sorted = std::min<int64_t>(count, sorted * 8);
      }
    }
    // Draw from the renormalized candidates (in id-independent order: the
    // candidate list order is deterministic for given logits).
    double cand_sum = 0.0;
    for (int64_t i = 0; i < count; ++i) {
      probs_[i] = std::exp(w[order_[i]] - max_logit);
      cand_sum += probs_[i];
    }
    const double r = static_cast<double>(Uniform(rng_state)) * cand_sum;
    double acc = 0.0;
    result.token = order_[count - 1];
    for (int64_t i = 0; i < count; ++i) {
      acc += probs_[i];
      if (r < acc) {
        result.token = order_[i];
        break;
      }
    }
  }

  if (want_logprobs) {
    result.logprob = w[result.token] - log_z;
    const int64_t n_top = std::min<int64_t>(
        std::min<int64_t>(options.top_logprobs, max_top_logprobs_), v);
    if (n_top > 0) {
      for (int64_t i = 0; i < v; ++i) order_[i] = static_cast<int32_t>(i);
      std::partial_sort(order_.begin(), order_.begin() + n_top, order_.end(),
                        ByValueDesc{w});
      for (int64_t i = 0; i < n_top; ++i) {
        top_[i] = TokenLogprob{order_[i], w[order_[i]] - log_z};
      }
      result.top = absl::MakeConstSpan(top_.data(), n_top);
    }
  }
  return result;
}

}  // namespace tessera::kernels
