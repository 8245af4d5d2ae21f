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
template <typename T>
inline T hsum(typename V<T>::type v) {
  T s = 0;
  for (int k = 0; k < V<T>::N; ++k) s += v[k];
  return s;
}

// 4 rows of Z against 2 rows: 8 vector accumulators, 6 loads per 8 FMAs, one horizontal sum
// per output entry at the end of the tile.
template <typename T>
void syrk_upper(const T* Z, int64_t D, int64_t TT, int64_t ldz, T* C) {
  using vec = typename V<T>::type;
  constexpr int N = V<T>::N;
  for (int64_t i0 = 0; i0 < D; i0 += 4) {
    const T* zi0 = Z + i0 * ldz;
    for (int64_t j0 = i0; j0 < D; j0 += 2) {
      const T* zj0 = Z + j0 * ldz;
      vec acc[4][2] = {};
      for (int64_t t = 0; t < TT; t += N) {
        const vec b0 = load(zj0 + t), b1 = load(zj0 + ldz + t);
#pragma GCC unroll 4
        for (int a = 0; a < 4; ++a) {
          const vec za = load(zi0 + a * ldz + t);
          acc[a][0] += za * b0;
          acc[a][1] += za * b1;
        }
      }
      for (int a = 0; a < 4; ++a) {
        C[(i0 + a) * D + j0] = hsum<T>(acc[a][0]);
        C[(i0 + a) * D + j0 + 1] = hsum<T>(acc[a][1]);
      }
    }
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
