// Seeded, platform-independent random numbers (std distributions differ between
// standard libraries, so seeded models and tests use these instead).
#pragma once

#include <cmath>
#include <cstdint>

namespace tessera {

// SplitMix64: a fast 64-bit generator with a fully specified output sequence.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  // Next 64 random bits.
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 24 bits of precision.
  float Uniform() {
    return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f);
  }
  // Standard normal via Box-Muller (one value per call; deterministic).
  float Normal() {
    const double u1 =
        (static_cast<double>(Next() >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    const double u2 =
        static_cast<double>(Next() >> 11) * (1.0 / 9007199254740992.0);
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) *
                              std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t state_;
};

}  // namespace tessera
