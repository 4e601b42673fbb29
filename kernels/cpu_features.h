// Runtime detection of the host CPU's vector instruction sets (x86-64
// CPUID/XGETBV).
#pragma once

#include <cstdint>
#include <string>

namespace tessera::kernels {

// What this CPU (and its OS, for the wide register state) supports.
struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool amx_tile = false;
  bool amx_bf16 = false;
  bool amd = false;  // CPUID vendor "AuthenticAMD" (tunes memory-access
                     // order, never correctness).

  // AVX-512 F+BW+VL+DQ: what the AVX-512 kernels need.
  bool HasAvx512() const { return avx512f && avx512bw && avx512vl && avx512dq; }
  // AVX2+FMA+F16C: what the AVX2 kernels need.
  bool HasAvx2() const { return avx2 && fma && f16c; }
  // "avx512f avx512bw ... avx2 fma" (only the present ones).
  std::string ToString() const;
};

// Detected once, then cached; TESSERA_CPU_ISA=avx2|scalar caps it (for tests
// and A/B runs).
const CpuFeatures& GetCpuFeatures();

// Bytes of the largest (last-level) data cache as the OS reports it (may be
// a whole socket's in a VM); 32 MiB when unknown. Benchmarks size their
// "memory" working sets past it so that they do not measure the cache.
int64_t LastLevelCacheBytes();

// A working-set size for measuring memory (not cache) bandwidth: `at_least`
// bytes, and never under 4x the last-level cache.
int64_t MemoryProbeBytes(int64_t at_least);

}  // namespace tessera::kernels
