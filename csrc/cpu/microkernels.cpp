// The micro-kernels of microkernels.h, written with GCC/Clang vector extensions so that the same
// source compiles to SSE2 (baseline, 32-byte vectors), AVX2+FMA (DALE_MK_ISA=avx2, 32-byte) or
// AVX-512 (DALE_MK_ISA=avx512 with DALE_MK_VECTOR_BYTES=64). This file must not include torch
// headers (see microkernels.h).
#include "cpu/microkernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if DALE_MK_VECTOR_BYTES == 64
#include <immintrin.h>
#endif

#ifndef DALE_MK_ISA
#error "compile with -DDALE_MK_ISA=<namespace>"
#endif
#ifndef DALE_MK_VECTOR_BYTES
#define DALE_MK_VECTOR_BYTES 32
#endif

namespace dale_ext {
namespace cpu {
namespace DALE_MK_ISA {
namespace {

template <typename T>
struct V;
template <>
struct V<float> {
  typedef float type __attribute__((vector_size(DALE_MK_VECTOR_BYTES)));
  static constexpr int N = DALE_MK_VECTOR_BYTES / 4;
};
template <>
struct V<double> {
  typedef double type __attribute__((vector_size(DALE_MK_VECTOR_BYTES)));
  static constexpr int N = DALE_MK_VECTOR_BYTES / 8;
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
#if DALE_MK_VECTOR_BYTES == 64
inline float hsum(V<float>::type v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return v[0];
}
inline double hsum(V<double>::type v) {
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  return v[0];
}
#elif DALE_MK_VECTOR_BYTES == 32
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
#else
#error "DALE_MK_VECTOR_BYTES must be 32 or 64"
#endif

// The dot-style syrk's register tile (32-byte builds): 4 x 3 blocks (12 accumulators) with AVX2's
// 16 vector registers, 4 x 2 otherwise (SSE2 emulates a 32-byte vector with two registers). See
// benchmarks/microkernels_bench.cpp.
#if defined(__AVX2__)
constexpr int kSyrkCols = 3;
#else
constexpr int kSyrkCols = 2;
#endif

#if DALE_MK_VECTOR_BYTES == 32
// Entries (i0 + a, j0 + b), a < 4, b < J, of Z Z^T: 4J vector accumulators; each step loads the J
// rows of the block and then each of the 4 rows once; one horizontal sum per entry at the end,
// added to acc (row stride ldacc) where the entry is on or above the diagonal and inside Dout.
template <typename T, int J>
inline void syrk_block(const T* zi, const T* zj, int64_t TT, int64_t ldz, int64_t i0, int64_t j0, double* acc,
                       int64_t Dout, int64_t ldacc) {
  using vec = typename V<T>::type;
  constexpr int N = V<T>::N;
  vec sums[4][J] = {};
  for (int64_t t = 0; t < TT; t += N) {
    vec b[J];
    for (int j = 0; j < J; ++j) b[j] = load(zj + j * ldz + t);
#pragma GCC unroll 4
    for (int a = 0; a < 4; ++a) {
      const vec za = load(zi + a * ldz + t);
      for (int j = 0; j < J; ++j) sums[a][j] += za * b[j];
    }
  }
  for (int a = 0; a < 4; ++a)
    for (int j = 0; j < J; ++j)
      if (j0 + j >= i0 + a && i0 + a < Dout && j0 + j < Dout) acc[(i0 + a) * ldacc + j0 + j] += hsum(sums[a][j]);
}
#endif

#if DALE_MK_VECTOR_BYTES == 64
// AVX-512: outer products on a transposed copy. A dot-style tile ends in one horizontal sum per
// entry, which with 16 lanes and a few hundred columns is as much work as the products; here
// P = Z^T (TT x Dq, zero-padded to whole vectors) and a tile of R rows x CV vectors of C adds
// P[t][i0 + a] * P[t][j0 ...] for every t. Each accumulator sums all TT products, so the
// caller passes at most kSyrkMaxCols columns at a time (syrk_max_cols in microkernels.h).
constexpr int kOuterRows = 8, kOuterVecs = 2;  // 16 accumulators (16 x 1 ran at half the speed)

template <typename T, int R, int CV>
inline void outer_block(const T* P, int64_t Dq, int64_t TT, int64_t i0, int64_t j0, double* acc, int64_t Dout,
                        int64_t ldacc) {
  using vec = typename V<T>::type;
  constexpr int N = V<T>::N;
  vec sums[R][CV] = {};
  for (int64_t t = 0; t < TT; ++t) {
    const T* p = P + t * Dq;
    vec b[CV];
    for (int v = 0; v < CV; ++v) b[v] = load(p + j0 + v * N);
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a) {
      const T pa = p[i0 + a];
      for (int v = 0; v < CV; ++v) sums[a][v] += pa * b[v];
    }
  }
  for (int a = 0; a < R && i0 + a < Dout; ++a)
    for (int v = 0; v < CV; ++v) {
      T tmp[N];
      store(tmp, sums[a][v]);
      const int64_t j = j0 + v * N;
      const int64_t k0 = i0 + a > j ? i0 + a - j : 0, k1 = Dout - j < N ? Dout - j : N;
      double* row = acc + (i0 + a) * ldacc + j;
      for (int64_t k = k0; k < k1; ++k) row[k] += static_cast<double>(tmp[k]);
    }
}

// Row block i0 against the vectors of columns from the one holding column i0 on (entries left
// of the diagonal are spare work).
template <typename T, int R>
inline void outer_row(const T* P, int64_t Dq, int64_t TT, int64_t i0, double* acc, int64_t Dout, int64_t ldacc) {
  constexpr int N = V<T>::N;
  const int64_t Dv = (Dout + N - 1) / N * N;  // vectors holding output columns
  int64_t j0 = (i0 / N) * N;
  for (; j0 + kOuterVecs * N <= Dv; j0 += kOuterVecs * N)
    outer_block<T, R, kOuterVecs>(P, Dq, TT, i0, j0, acc, Dout, ldacc);
  for (; j0 < Dv; j0 += N) outer_block<T, R, 1>(P, Dq, TT, i0, j0, acc, Dout, ldacc);
}

// P[t * ldp + a] = Z[a * ldz + t] for a, t < 16: 16 loads, four rounds of 16 shuffles (32-bit,
// 64-bit and twice 128-bit interleaves), 16 stores
inline void transpose16(const float* Z, int64_t ldz, float* P, int64_t ldp) {
  __m512 r[16], t[16];
  for (int a = 0; a < 16; ++a) r[a] = _mm512_loadu_ps(Z + a * ldz);
  for (int k = 0; k < 16; k += 2) {
    t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
  }
  auto lo64 = [](__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); };
  auto hi64 = [](__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); };
  for (int b = 0; b < 16; b += 4) {
    r[b] = lo64(t[b], t[b + 2]);
    r[b + 1] = hi64(t[b], t[b + 2]);
    r[b + 2] = lo64(t[b + 1], t[b + 3]);
    r[b + 3] = hi64(t[b + 1], t[b + 3]);
  }
  for (int b = 0; b < 16; b += 8)
    for (int j = 0; j < 4; ++j) {
      t[b + j] = _mm512_shuffle_f32x4(r[b + j], r[b + 4 + j], 0x88);
      t[b + 4 + j] = _mm512_shuffle_f32x4(r[b + j], r[b + 4 + j], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
  }
  for (int k = 0; k < 16; ++k) _mm512_storeu_ps(P + k * ldp, r[k]);
}

// P[t * ldp + a] = Z[a * ldz + t] for a < N (one vector of rows), t < TT: whole 16 x 16 blocks by
// shuffles, the rest by gathers (a 16-lane gather is one vector of P, but on Zen 4 it took a third
// of the syrk's time: ~10% of class_gaussians at (8,64,56,56,2))
inline void transpose_rows(const float* Z, int64_t ldz, int64_t TT, float* P, int64_t ldp) {
  int64_t t = 0;
  for (; t + 16 <= TT; t += 16) transpose16(Z + t, ldz, P + t * ldp, ldp);
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(ldz)));
  for (; t < TT; ++t) _mm512_storeu_ps(P + t * ldp, _mm512_i32gather_ps(idx, Z + t, 4));
}
inline void transpose_rows(const double* Z, int64_t ldz, int64_t TT, double* P, int64_t ldp) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(ldz)));
  for (int64_t t = 0; t < TT; ++t) _mm512_storeu_pd(P + t * ldp, _mm512_i32gather_pd(idx, Z + t, 8));
}

template <typename T>
void syrk_upper(const T* Z, int64_t D, int64_t TT, int64_t ldz, double* acc, int64_t Dout, int64_t ldacc, T* P) {
  constexpr int N = V<T>::N;
  const int64_t Dq = (D + N - 1) / N * N;
  // the transpose, N rows of Z at a time (transpose_rows: shuffles for floats, gathers for the
  // rest); an element-by-element copy took as long as the products at D = 128. The gathers'
  // indices are int32.
  int64_t i0 = 0;
  if (ldz <= 0x7fffffff / N)
    for (; i0 + N <= D; i0 += N) transpose_rows(Z + i0 * ldz, ldz, TT, P + i0, Dq);
  for (int64_t t = 0; t < TT; ++t) {
    for (int64_t i = i0; i < D; ++i) P[t * Dq + i] = Z[i * ldz + t];
    for (int64_t i = D; i < Dq; ++i) P[t * Dq + i] = T(0);
  }
  i0 = 0;
  for (; i0 + kOuterRows <= Dout; i0 += kOuterRows) outer_row<T, kOuterRows>(P, Dq, TT, i0, acc, Dout, ldacc);
  for (; i0 < Dout; i0 += 4) outer_row<T, 4>(P, Dq, TT, i0, acc, Dout, ldacc);
}
constexpr int64_t kSyrkMaxCols = 128;  // products per float accumulator, as the 32-byte sets' lanes
#else
// Blocks of 4 rows against kSyrkCols rows, from the diagonal on (D - i0 is a multiple of 4, so a
// row of blocks may end with a few rows left, done by blocks of 2 and 1).
template <typename T>
void syrk_upper(const T* Z, int64_t D, int64_t TT, int64_t ldz, double* acc, int64_t Dout, int64_t ldacc,
                T* /*scratch*/) {
  for (int64_t i0 = 0; i0 < Dout; i0 += 4) {
    const T* zi = Z + i0 * ldz;
    int64_t j0 = i0;
    for (; j0 + kSyrkCols <= D; j0 += kSyrkCols)
      syrk_block<T, kSyrkCols>(zi, Z + j0 * ldz, TT, ldz, i0, j0, acc, Dout, ldacc);
    for (; D - j0 >= 2; j0 += 2) syrk_block<T, 2>(zi, Z + j0 * ldz, TT, ldz, i0, j0, acc, Dout, ldacc);
    if (j0 < D) syrk_block<T, 1>(zi, Z + j0 * ldz, TT, ldz, i0, j0, acc, Dout, ldacc);
  }
}
constexpr int64_t kSyrkMaxCols = 1024;  // a lane adds at most 1024 / 8 products (float, AVX2)
#endif

// Rows i0 .. i0 + R of Y = G X, columns t0 .. t0 + CV vectors, the sum over d in [d0, d1): R x CV
// accumulators; the column strip of X (its rows d0 .. d1, CV vectors) stays in L1 while all row
// blocks of G pass over it. Row strides ldg, ldx, ldy.
template <typename T, int R, int CV>
inline void product_block(const T* G, int64_t ldg, const T* X, int64_t ldx, T* Y, int64_t ldy, int64_t i0,
                          int64_t t0, int64_t d0, int64_t d1) {
  using vec = typename V<T>::type;
  constexpr int N = V<T>::N;
  vec acc[R][CV] = {};
  const T* g = G + i0 * ldg;
  for (int64_t d = d0; d < d1; ++d) {
    vec x[CV];
    for (int v = 0; v < CV; ++v) x[v] = load(X + d * ldx + t0 + v * N);
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a) {
      const T ga = g[a * ldg + d];
      for (int v = 0; v < CV; ++v) acc[a][v] += ga * x[v];
    }
  }
  for (int a = 0; a < R; ++a)
    for (int v = 0; v < CV; ++v) store(Y + (i0 + a) * ldy + t0 + v * N, acc[a][v]);
}

template <typename T, int R, int CV>
inline void gemm_block(const T* G, const T* X, int64_t D, int64_t ldx, T* Y, int64_t ldy, int64_t i0, int64_t t0) {
  product_block<T, R, CV>(G, D, X, ldx, Y, ldy, i0, t0, 0, D);
}

// Y = G X in blocks of 4 rows x 2 vectors of columns (32-byte vectors), or 8 rows x 2 vectors
// with a 1-vector tail (64-byte: one vector of floats is a whole kColBlock); D is a multiple of 4.
template <typename T>
void gemm(const T* G, const T* X, int64_t D, int64_t TT, int64_t ldx, T* Y, int64_t ldy) {
  constexpr int N = V<T>::N;
#if DALE_MK_VECTOR_BYTES == 64
  int64_t t0 = 0;
  for (; t0 + 2 * N <= TT; t0 += 2 * N) {
    int64_t i0 = 0;
    for (; i0 + 8 <= D; i0 += 8) gemm_block<T, 8, 2>(G, X, D, ldx, Y, ldy, i0, t0);
    if (i0 < D) gemm_block<T, 4, 2>(G, X, D, ldx, Y, ldy, i0, t0);
  }
  for (; t0 < TT; t0 += N) {
    int64_t i0 = 0;
    for (; i0 + 8 <= D; i0 += 8) gemm_block<T, 8, 1>(G, X, D, ldx, Y, ldy, i0, t0);
    if (i0 < D) gemm_block<T, 4, 1>(G, X, D, ldx, Y, ldy, i0, t0);
  }
#else
  for (int64_t t0 = 0; t0 < TT; t0 += 2 * N)
    for (int64_t i0 = 0; i0 < D; i0 += 4) gemm_block<T, 4, 2>(G, X, D, ldx, Y, ldy, i0, t0);
#endif
}

// Blocks of R rows x 2 vectors (8 x 16 doubles with 64-byte vectors, 4 x 8 otherwise), column
// strip by column strip so that the strip of X stays in L1 while G's row blocks pass over it.
void square_gemm(const double* G, const double* X, double* Y, int64_t n, int64_t ld, SquareShape s) {
  constexpr int64_t kCols = 2 * V<double>::N;
  constexpr int R = DALE_MK_VECTOR_BYTES == 64 ? 8 : 4;
  static_assert(kSquareBlock % kCols == 0 && kSquareBlock % R == 0, "kSquareBlock must hold whole blocks");
  for (int64_t t0 = 0; t0 < n; t0 += kCols)
    for (int64_t i0 = 0; i0 < n; i0 += R) {
      if (s.y == Half::kUpper && t0 + kCols <= i0) continue;  // every t < i
      if (s.y == Half::kLower && t0 > i0 + R - 1) continue;   // every t > i
      int64_t d0 = 0, d1 = n;
      if (s.g_upper) d0 = std::max(d0, i0);
      if (s.x_lower) d0 = std::max(d0, t0);
      if (s.x_upper) d1 = std::min(d1, t0 + kCols);
      product_block<double, R, 2>(G, ld, X, ld, Y, ld, i0, t0, d0, d1);
    }
}

// The first n < N elements of a vector (the rest zero), and their store: masked on AVX-512 (a
// class's runs are often shorter than 16 pixels: blocky label maps, lesion borders).
#if DALE_MK_VECTOR_BYTES == 64
inline V<float>::type load_part(const float* p, int64_t n) {
  return reinterpret_cast<V<float>::type>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p));
}
inline void store_part(float* p, V<float>::type v, int64_t n) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), reinterpret_cast<__m512>(v));
}
inline V<double>::type load_part(const double* p, int64_t n) {
  return reinterpret_cast<V<double>::type>(_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p));
}
inline void store_part(double* p, V<double>::type v, int64_t n) {
  _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), reinterpret_cast<__m512d>(v));
}
#else
template <typename T>
inline typename V<T>::type load_part(const T* p, int64_t n) {
  typename V<T>::type v = {};
  for (int64_t k = 0; k < n; ++k) v[k] = p[k];
  return v;
}
template <typename T>
inline void store_part(T* p, typename V<T>::type v, int64_t n) {
  for (int64_t k = 0; k < n; ++k) p[k] = v[k];
}
#endif

// The statistics' gather of a class's pixels (one feature row of a strip), with the weighted sum
// that gives the block's first mean estimate taken on the way (the reads come from memory; the
// products are free). Long runs are cut so that a lane adds at most kSumChunk / N terms.
template <typename T>
double gather_runs(const T* row, const RunSpan* runs, int64_t nruns, const T* f, T* out) {
  using vec = typename V<T>::type;
  constexpr int64_t N = V<T>::N;
  double total = 0.0;
  vec acc = {};
  int64_t since = 0;  // terms in acc
  for (int64_t r = 0; r < nruns; ++r) {
    const T* in = row + runs[r].start;
    const T* fr = f + runs[r].start;
    for (int64_t k0 = 0, len = runs[r].length; k0 < len;) {
      const int64_t k1 = std::min(len, k0 + kSumChunk - since);
      int64_t k = k0;
      for (; k + N <= k1; k += N) {
        const vec x = load(in + k);
        store(out + k, x);
        acc += x * load(fr + k);
      }
      if (k < k1) {
        const vec x = load_part(in + k, k1 - k);
        store_part(out + k, x, k1 - k);
        acc += x * load_part(fr + k, k1 - k);
      }
      since += k1 - k0;
      if (since == kSumChunk) {
        total += static_cast<double>(hsum(acc));
        acc = vec{};
        since = 0;
      }
      k0 = k1;
    }
    out += runs[r].length;
  }
  return total + static_cast<double>(hsum(acc));
}

template <typename T>
void scatter_runs(const T* y, const RunSpan* runs, int64_t nruns, const T* w, T scale, T bias, T* out) {
  using vec = typename V<T>::type;
  constexpr int64_t N = V<T>::N;
  for (int64_t r = 0; r < nruns; ++r) {
    const int64_t start = runs[r].start, len = runs[r].length;
    const T* wr = w + start;
    T* o = out + start;
    int64_t k = 0;
    for (; k + N <= len; k += N) store(o + k, load(wr + k) * (scale * load(y + k) + bias));
    if (k < len) store_part(o + k, load_part(wr + k, len - k) * (scale * load_part(y + k, len - k) + bias), len - k);
    y += len;
  }
}

// The statistics' centring of a block's row, with the sum that corrects its mean: the shift is
// a float estimate, so sum f (x - shift) is small and taken from the centred values themselves.
template <typename T>
double centre_row(T* z, int64_t n, T shift, const T* f) {
  using vec = typename V<T>::type;
  constexpr int64_t N = V<T>::N;
  double total = 0.0;
  for (int64_t c0 = 0; c0 < n; c0 += kSumChunk) {
    const int64_t c1 = std::min(n, c0 + kSumChunk);
    vec acc = {};
    int64_t k = c0;
    for (; k + N <= c1; k += N) {
      const vec fk = load(f + k);
      const vec v = (load(z + k) - shift) * fk;
      store(z + k, v);
      acc += v * fk;
    }
    if (k < c1) {
      const vec fk = load_part(f + k, c1 - k);
      const vec v = (load_part(z + k, c1 - k) - shift) * fk;
      store_part(z + k, v, c1 - k);
      acc += v * fk;
    }
    total += static_cast<double>(hsum(acc));
  }
  return total;
}

// Right-looking Cholesky in rows: block of 4 rows factored, then every later row j takes the
// block's rank-4 update from column j on (one pass over the trailing rows a block; one row at a
// time, each step streamed them: MKL's dpotrf, unblocked below its 32-row crossover at D = 128,
// took 100-130 us there against ~25 here).
bool cholesky_upper(double* A, int64_t D, int64_t ld) {
  using vec = V<double>::type;
  constexpr int64_t N = V<double>::N;
  for (int64_t i0 = 0; i0 < D; i0 += 4) {
    const int64_t i1 = std::min<int64_t>(i0 + 4, D);
    for (int64_t i = i0; i < i1; ++i) {
      double* ri = A + i * ld;
      const double d = ri[i];
      if (!(d > 0.0)) return false;  // not positive definite, or NaN
      const double u = std::sqrt(d), inv = 1.0 / u;
      ri[i] = u;
      for (int64_t j = i + 1; j < D; ++j) ri[j] *= inv;
      for (int64_t r = i + 1; r < i1; ++r) {
        double* rr = A + r * ld;
        const double c = ri[r];
        for (int64_t j = r; j < D; ++j) rr[j] -= c * ri[j];
      }
    }
    const double* b0 = A + i0 * ld;
    const double* b1 = b0 + ld;
    const double* b2 = b1 + ld;
    const double* b3 = b2 + ld;
    for (int64_t j = i1; j < D; ++j) {  // columns below j change too: below the diagonal, unread
      double* rj = A + j * ld;
      const int64_t ja = j / N * N;
      if (i1 - i0 == 4) {
        const vec c0 = vec{} + b0[j], c1 = vec{} + b1[j], c2 = vec{} + b2[j], c3 = vec{} + b3[j];
        for (int64_t k = ja; k < ld; k += N)
          store(rj + k, load(rj + k) - c0 * load(b0 + k) - c1 * load(b1 + k) - c2 * load(b2 + k) - c3 * load(b3 + k));
      } else {
        for (int64_t q = i0; q < i1; ++q) {
          const double* bq = A + q * ld;
          const vec c = vec{} + bq[j];
          for (int64_t k = ja; k < ld; k += N) store(rj + k, load(rj + k) - c * load(bq + k));
        }
      }
    }
  }
  return true;
}

#if DALE_MK_VECTOR_BYTES == 64
static_assert(kRowBlock == 4 && kColBlock == V<float>::N && kColBlock % V<double>::N == 0,
              "padding constants must match the block shapes above");
#else
static_assert(kRowBlock == 4 && kColBlock == 2 * V<float>::N && kColBlock % (2 * V<double>::N) == 0,
              "padding constants must match the block shapes above");
#endif

}  // namespace

bool symmetric_eigen(double* A, int64_t D, int64_t n, double* w, double* Z, double* work, int64_t work_size,
                     int max_sweeps);  // symmetric_eigen.cpp

#define DALE_MK_STR2(x) #x
#define DALE_MK_STR(x) DALE_MK_STR2(x)
extern const MicroKernels kernels = {
    {&syrk_upper<float>, &gemm<float>, &gather_runs<float>, &centre_row<float>, &scatter_runs<float>, kSyrkMaxCols},
    {&syrk_upper<double>, &gemm<double>, &gather_runs<double>, &centre_row<double>, &scatter_runs<double>, kSyrkMaxCols},
    &square_gemm,
    &cholesky_upper,
    &symmetric_eigen,
#if defined(__AVX2__)
    true,
#else
    false,
#endif
    DALE_MK_STR(DALE_MK_ISA),
};

}  // namespace DALE_MK_ISA
}  // namespace cpu
}  // namespace dale_ext
