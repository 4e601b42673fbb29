// AVX-512 VNNI q8_0 GEMV: the q8_0 × q8_0 dot products of
// kernels/cpu/internal/q8_gemv_avx512.inc with vpdpbusd. A separate file so
// -mavx512vnni applies to nothing else; called only when CPUID reports
// AVX512_VNNI (LinearProblem::vnni).
//
// Built with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2
// -mfma -mf16c (kernels/CMakeLists.txt).
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/internal/cpu_kernels.h"

namespace tessera::kernels::cpu::avx512_vnni {

#define TESSERA_Q8_VNNI 1
#include "kernels/cpu/internal/q8_gemv_avx512.inc"
#undef TESSERA_Q8_VNNI

}  // namespace tessera::kernels::cpu::avx512_vnni
