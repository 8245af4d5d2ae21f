// Dense micro-kernels of the Wasserstein statistics (CPU). They are compiled once per
// instruction set (baseline and, on x86-64, AVX2+FMA) in microkernels.cpp, a file that includes
// no torch header, so that no inline function compiled for AVX2 can be picked by the linker
// for code that runs on older CPUs. microkernels() returns the best set for this CPU.
//
// Shapes are padded by the caller: D to a multiple of kRowBlock, T to a multiple of kColBlock,
// with zeros in the padding.
#pragma once

#include <cstdint>

namespace dale_ext {
namespace cpu {

constexpr int64_t kRowBlock = 4;
constexpr int64_t kColBlock = 16;

template <typename T>
struct MicroKernelsFor {
  // C[i][j] = sum_t Z[i][t] Z[j][t] for the blocks with j >= i (the upper triangle and a few
  // entries below it); Z is D x T with row stride ldz, C is D x D row-major.
  void (*syrk_upper)(const T* Z, int64_t D, int64_t T_, int64_t ldz, T* C);
  // Y = G X; G is D x D row-major, X is D x T (row stride ldx), Y is D x T (row stride ldy).
  void (*gemm)(const T* G, const T* X, int64_t D, int64_t T_, int64_t ldx, T* Y, int64_t ldy);
};

struct MicroKernels {
  MicroKernelsFor<float> f32;
  MicroKernelsFor<double> f64;
  const char* isa;
  template <typename T>
  const MicroKernelsFor<T>& get() const;
};
template <>
inline const MicroKernelsFor<float>& MicroKernels::get<float>() const { return f32; }
template <>
inline const MicroKernelsFor<double>& MicroKernels::get<double>() const { return f64; }

const MicroKernels& microkernels();

// One set per instruction set, defined in microkernels.cpp.
namespace baseline { extern const MicroKernels kernels; }
#ifdef DALE_EXT_HAVE_AVX2
namespace avx2 { extern const MicroKernels kernels; }
#endif

}  // namespace cpu
}  // namespace dale_ext
