// Picks the kernel sets for the CPU we run on (microkernels.h, fuzzy_rows.h), once per process.
// DALE_EXT_CPU_ISA caps the choice: "baseline" (the portable sets) or "avx2" (no AVX-512);
// anything else, or unset, takes the best set this build and CPU have. Tests compare them.
#include "cpu/fuzzy_rows.h"
#include "cpu/microkernels.h"

#include <cstdlib>
#include <cstring>

namespace dale_ext {
namespace cpu {
namespace {

enum class Isa { kBaseline, kAvx2, kAvx512 };

Isa chosen_isa() {
  static const Isa chosen = [] {
    const char* force = std::getenv("DALE_EXT_CPU_ISA");
    const bool cap_baseline = force != nullptr && std::strcmp(force, "baseline") == 0;
    const bool cap_avx2 = force != nullptr && std::strcmp(force, "avx2") == 0;
    (void)cap_avx2;
    if (cap_baseline) return Isa::kBaseline;
#ifdef DALE_EXT_HAVE_AVX2
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return Isa::kBaseline;
#ifdef DALE_EXT_HAVE_AVX512
    // the set is compiled with -mavx512f/vl/dq/bw: each must be there
    if (!cap_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      return Isa::kAvx512;
#endif
    return Isa::kAvx2;
#else
    return Isa::kBaseline;
#endif
  }();
  return chosen;
}

}  // namespace

const MicroKernels& microkernels() {
  switch (chosen_isa()) {
#ifdef DALE_EXT_HAVE_AVX512
    case Isa::kAvx512: return avx512::kernels;
#endif
#ifdef DALE_EXT_HAVE_AVX2
    case Isa::kAvx2: return avx2::kernels;
#endif
    default: return baseline::kernels;
  }
}

// The row kernels have no AVX-512 set (fuzzy_split is bound by memory there): AVX2 serves both.
const FuzzyRowKernels& fuzzy_row_kernels() {
#ifdef DALE_EXT_HAVE_AVX2
  if (chosen_isa() != Isa::kBaseline) return avx2::fuzzy_rows;
#endif
  return baseline::fuzzy_rows;
}

const char* microkernels_isa() { return microkernels().isa; }

}  // namespace cpu
}  // namespace dale_ext
