#include "kernels/cpu_features.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace tessera::kernels {
namespace {

CpuFeatures Detect() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return f;
  // Vendor string: ebx, edx, ecx = "Auth" "enti" "cAMD".
  f.amd = ebx == 0x68747541 && edx == 0x69746e65 && ecx == 0x444d4163;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = (ecx >> 27) & 1;
  const bool fma = (ecx >> 12) & 1;
  const bool f16c = (ecx >> 29) & 1;
  uint64_t xcr0 = 0;
  if (osxsave) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
  }
  const bool ymm = (xcr0 & 0x6) == 0x6;
  const bool zmm = ymm && (xcr0 & 0xe0) == 0xe0;
  const bool amx_state = (xcr0 & 0x60000) == 0x60000;
  f.fma = fma && ymm;
  f.f16c = f16c && ymm;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    f.avx2 = ((ebx >> 5) & 1) && ymm;
    f.avx512f = ((ebx >> 16) & 1) && zmm;
    f.avx512dq = ((ebx >> 17) & 1) && zmm;
    f.avx512bw = ((ebx >> 30) & 1) && zmm;
    f.avx512vl = ((ebx >> 31) & 1) && zmm;
    f.avx512_vnni = ((ecx >> 11) & 1) && zmm;
    f.amx_bf16 = ((edx >> 22) & 1) && amx_state;
    f.amx_tile = ((edx >> 24) & 1) && amx_state;
  }
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) {
    f.avx512_bf16 = ((eax >> 5) & 1) && zmm;
  }
#endif
  if (const char* cap = std::getenv("TESSERA_CPU_ISA")) {
    const std::string_view isa(cap);
    if (isa == "avx2" || isa == "scalar") {
      f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = false;
      f.avx512_vnni = f.avx512_bf16 = f.amx_tile = f.amx_bf16 = false;
    }
    if (isa == "scalar") f.avx2 = f.fma = f.f16c = false;
  }
  return f;
}

}  // namespace

std::string CpuFeatures::ToString() const {
  std::string s;
  auto add = [&s](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512_vnni, "avx512_vnni");
  add(avx512_bf16, "avx512_bf16");
  add(amx_tile, "amx_tile");
  add(amx_bf16, "amx_bf16");
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  return s.empty() ? "none (scalar)" : s;
}

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

namespace {

// The largest data/unified cache sysfs lists for cpu0 ("32768K", "2M"), or 0.
int64_t SysfsLargestCache() {
  int64_t best = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream type(dir + "type"), size(dir + "size");
    std::string t, v;
    if (!(type >> t) || !(size >> v) || t == "Instruction") continue;
    char* end = nullptr;
    int64_t n = std::strtoll(v.c_str(), &end, 10);
    if (end != nullptr && (*end == 'K' || *end == 'k')) n <<= 10;
    if (end != nullptr && (*end == 'M' || *end == 'm')) n <<= 20;
    best = std::max(best, n);
  }
  return best;
}

}  // namespace

int64_t LastLevelCacheBytes() {
  static const int64_t bytes = [] {
    // sysfs first: glibc's sysconf decodes CPUID, which some hypervisors
    // fill with the host's figures (320 MiB reported on a 32 MiB guest).
    int64_t best = SysfsLargestCache();
    if (best <= 0) {
      for (int name : {_SC_LEVEL3_CACHE_SIZE, _SC_LEVEL2_CACHE_SIZE}) {
        best = std::max<int64_t>(best, sysconf(name));
      }
    }
    return best > 0 ? best : int64_t{32} << 20;
  }();
  return bytes;
}

int64_t MemoryProbeBytes(int64_t at_least) {
  return std::max(at_least, 4 * LastLevelCacheBytes());
}

}  // namespace tessera::kernels
