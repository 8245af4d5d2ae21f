// Picks the kernel sets for the CPU we run on (microkernels.h, fuzzy_rows.h).
#include "cpu/fuzzy_rows.h"
#include "cpu/microkernels.h"

#include <cstdlib>
#include <cstring>

namespace dale_ext {
namespace cpu {
namespace {

bool use_avx2() {
  static const bool chosen = [] {
    // DALE_EXT_CPU_ISA=baseline forces the portable sets (tests compare the two).
    const char* force = std::getenv("DALE_EXT_CPU_ISA");
    const bool want_baseline = force != nullptr && std::strcmp(force, "baseline") == 0;
#ifdef DALE_EXT_HAVE_AVX2
    return !want_baseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    (void)want_baseline;
    return false;
#endif
  }();
  return chosen;
}

}  // namespace

const MicroKernels& microkernels() {
#ifdef DALE_EXT_HAVE_AVX2
  if (use_avx2()) return avx2::kernels;
#endif
  return baseline::kernels;
}

const FuzzyRowKernels& fuzzy_row_kernels() {
#ifdef DALE_EXT_HAVE_AVX2
  if (use_avx2()) return avx2::fuzzy_rows;
#endif
  return baseline::fuzzy_rows;
}

}  // namespace cpu
}  // namespace dale_ext
