// Picks the micro-kernel set for the CPU we run on (see microkernels.h).
#include "cpu/microkernels.h"

#include <cstdlib>
#include <cstring>

namespace dale_ext {
namespace cpu {

const MicroKernels& microkernels() {
  static const MicroKernels& chosen = [&]() -> const MicroKernels& {
    // DALE_EXT_CPU_ISA=baseline forces the portable set (tests compare the two).
    const char* force = std::getenv("DALE_EXT_CPU_ISA");
    const bool want_baseline = force != nullptr && std::strcmp(force, "baseline") == 0;
#ifdef DALE_EXT_HAVE_AVX2
    if (!want_baseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2::kernels;
#endif
    (void)want_baseline;
    return baseline::kernels;
  }();
  return chosen;
}

}  // namespace cpu
}  // namespace dale_ext
