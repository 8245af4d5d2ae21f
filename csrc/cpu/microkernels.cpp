// The micro-kernels of microkernels.h, written with GCC/Clang vector extensions (32-byte vectors)
// so that the same source compiles to SSE2 (baseline) or AVX2+FMA (DALE_MK_ISA=avx2). This file
// must not include torch headers (see microkernels.h).
#include "cpu/microkernels.h"

#include <cstring>

#ifndef DALE_MK_ISA
#error "compile with -DDALE_MK_ISA=<namespace>"
#endif

namespace dale_ext {
namespace cpu {
namespace DALE_MK_ISA {
namespace {

template <typename T>
struct V;
template <>
struct V<float> {
  typedef float type __attribute__((vector_size(32)));
  static constexpr int N = 8;
};
template <>
struct V<double> {
  typedef double type __attribute__((vector_size(32)));
  static constexpr int N = 4;
};

template <typename T>
inline typename V<T>::type load(const T* p) {
  typename V<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void store(T* p, typename V<T>::type v) {
  std::memcpy(p, &v, sizeof(v));
}
// Horizontal sums as trees of whole-vector shuffles and adds (an element-by-element loop compiles
// to scalar extractions through the stack: a quarter of the syrk's time at short rows).
inline float hsum(V<float>::type v) {
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  return v[0];
}
inline double hsum(V<double>::type v) {
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2);
  return v[0];
}

// The syrk's register tile: 4 x 3 blocks (12 accumulators) with AVX2's 16 vector registers, 4 x 2
// otherwise (SSE2 emulates a 32-byte vector with two registers). See benchmarks/microkernels_bench.cpp.
#ifdef __AVX2__
constexpr int kSyrkCols = 3;
#else
constexpr int kSyrkCols = 2;
#endif

// Entries (i0 + a, j0 + b), a < 4, b < J, of Z Z^T: 4J vector accumulators; each step loads the J
// rows of the block and then each of the 4 rows once; one horizontal sum per entry at the end.
template <typename T, int J>
inline void syrk_block(const T* zi, const T* zj, int64_t TT, int64_t ldz, T* c, int64_t ldc) {
  using vec = typename V<T>::type;
  constexpr int N = V<T>::N;
  vec acc[4][J] = {};
  for (int64_t t = 0; t < TT; t += N) {
    vec b[J];
    for (int j = 0; j < J; ++j) b[j] = load(zj + j * ldz + t);
#pragma GCC unroll 4
    for (int a = 0; a < 4; ++a) {
      const vec za = load(zi + a * ldz + t);
      for (int j = 0; j < J; ++j) acc[a][j] += za * b[j];
    }
  }
  for (int a = 0; a < 4; ++a)
    for (int j = 0; j < J; ++j) c[a * ldc + j] = hsum(acc[a][j]);
}

// Blocks of 4 rows against kSyrkCols rows, from the diagonal on (D - i0 is a multiple of 4, so a
// row of blocks ends with 0, 1 or 2 rows left, done by narrower blocks).
template <typename T>
void syrk_upper(const T* Z, int64_t D, int64_t TT, int64_t ldz, T* C) {
  for (int64_t i0 = 0; i0 < D; i0 += 4) {
    const T* zi = Z + i0 * ldz;
    int64_t j0 = i0;
    for (; j0 + kSyrkCols <= D; j0 += kSyrkCols)
      syrk_block<T, kSyrkCols>(zi, Z + j0 * ldz, TT, ldz, C + i0 * D + j0, D);
    if (D - j0 >= 2) {
      syrk_block<T, 2>(zi, Z + j0 * ldz, TT, ldz, C + i0 * D + j0, D);
      j0 += 2;
    }
    if (j0 < D) syrk_block<T, 1>(zi, Z + j0 * ldz, TT, ldz, C + i0 * D + j0, D);
  }
}

// Y = G X with 4 rows x 2 vectors of columns per block; the column strip of X (D rows x 2
// vectors) stays in L1 while all row blocks of G pass over it.
template <typename T>
void gemm(const T* G, const T* X, int64_t D, int64_t TT, int64_t ldx, T* Y, int64_t ldy) {
  using vec = typename V<T>::type;
  constexpr int N = V<T>::N;
  for (int64_t t0 = 0; t0 < TT; t0 += 2 * N) {
    for (int64_t i0 = 0; i0 < D; i0 += 4) {
      vec acc[4][2] = {};
      const T* g = G + i0 * D;
      for (int64_t d = 0; d < D; ++d) {
        const vec x0 = load(X + d * ldx + t0), x1 = load(X + d * ldx + t0 + N);
#pragma GCC unroll 4
        for (int a = 0; a < 4; ++a) {
          const T ga = g[a * D + d];
          acc[a][0] += ga * x0;
          acc[a][1] += ga * x1;
        }
      }
      for (int a = 0; a < 4; ++a) {
        store(Y + (i0 + a) * ldy + t0, acc[a][0]);
        store(Y + (i0 + a) * ldy + t0 + N, acc[a][1]);
      }
    }
  }
}

static_assert(kRowBlock == 4 && kColBlock == 2 * V<float>::N && kColBlock % (2 * V<double>::N) == 0,
              "padding constants must match the block shapes above");

}  // namespace

#define DALE_MK_STR2(x) #x
#define DALE_MK_STR(x) DALE_MK_STR2(x)
extern const MicroKernels kernels = {
    {&syrk_upper<float>, &gemm<float>},
    {&syrk_upper<double>, &gemm<double>},
    DALE_MK_STR(DALE_MK_ISA),
};

}  // namespace DALE_MK_ISA
}  // namespace cpu
}  // namespace dale_ext
