// The symmetric eigensolver of gaussian_w2's Cholesky route (microkernels.h): Householder
// tridiagonalisation, the orthogonal factor formed explicitly, and implicit QL with Wilkinson
// shifts (Numerical Recipes' tqli, LAPACK's dsteqr) whose rotations are applied to that factor.
// At D = 128 on one core this ran in ~0.9 ms where MKL's dsyevd (divide and conquer) took
// ~1.1-1.2 ms (benchmarks/results/2026-12-07-cpu-symmetric-eigen-micro.txt): dsyevd's
// tridiagonal reduction alone is ~0.45 ms there, bound by its level-2 calls' overheads.
// Compiled once per instruction set with the micro-kernels; like them it includes no torch
// header and no std::vector (an inline function instantiated here for AVX-512 could otherwise be
// picked by the linker for code that runs on older CPUs).
//
// Layout: row-major n x n buffers (n a multiple of 8) with zero padding; A holds the whole
// symmetric matrix (both triangles). Each step works on whole rows from a vector-aligned start:
// the vectors that multiply a row are zero outside their support, so the extra columns add zeros.
#include "cpu/microkernels.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#ifndef DALE_MK_ISA
#error "compile with -DDALE_MK_ISA=<namespace>"
#endif

namespace dale_ext {
namespace cpu {
namespace DALE_MK_ISA {
namespace {

// One vector of W doubles, as wide as the instruction set's registers: AVX-512 (W = 8), AVX2
// (4) or SSE2 (2). A vector wider than the registers compiles to code that goes through memory
// here (64-byte vectors in the AVX2 build, or 32-byte ones in the SSE2 build, ran ~5x slower).
#if defined(__AVX512F__)
#define DALE_EIG_VECTOR_BYTES 64
#elif defined(__AVX__)
#define DALE_EIG_VECTOR_BYTES 32
#else
#define DALE_EIG_VECTOR_BYTES 16
#endif
typedef double vec __attribute__((vector_size(DALE_EIG_VECTOR_BYTES)));
constexpr int64_t W = DALE_EIG_VECTOR_BYTES / 8;
inline vec load(const double* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(double* p, vec v) { std::memcpy(p, &v, sizeof v); }
inline vec splat(double x) { return vec{} + x; }
#if DALE_EIG_VECTOR_BYTES == 64
inline double hsum(vec v) {
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  return v[0];
}
#elif DALE_EIG_VECTOR_BYTES == 32
inline double hsum(vec v) {
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2);
  return v[0];
}
#else
inline double hsum(vec v) { return v[0] + v[1]; }
#endif
inline int64_t aligned_down(int64_t j) { return j & ~(W - 1); }

// Rows [i0, D) of the n x n buffer X: x_i -= a_i b (kRank2: x_i -= a_i b + b_i a) over columns
// [j0, n), then out_i = scale (x_i . c); out may be a (a_i is read first). Four rows at a time,
// so that four dot products are in flight (one row's chain of FMAs is latency-bound).
template <bool kRank2>
void update_rows_then_dot(double* X, int64_t i0, int64_t D, int64_t n, int64_t j0, const double* a, const double* b,
                          const double* c, double scale, double* out) {
  int64_t i = i0;
  for (; i + 4 <= D; i += 4) {
    double* x0 = X + i * n;
    double* x1 = x0 + n;
    double* x2 = x1 + n;
    double* x3 = x2 + n;
    const vec a0 = splat(a[i]), a1 = splat(a[i + 1]), a2 = splat(a[i + 2]), a3 = splat(a[i + 3]);
    vec b0{}, b1{}, b2{}, b3{};
    if (kRank2) b0 = splat(b[i]), b1 = splat(b[i + 1]), b2 = splat(b[i + 2]), b3 = splat(b[i + 3]);
    vec s0{}, s1{}, s2{}, s3{};
    for (int64_t j = j0; j < n; j += W) {
      const vec bj = load(b + j), cj = load(c + j);
      vec y0 = load(x0 + j), y1 = load(x1 + j), y2 = load(x2 + j), y3 = load(x3 + j);
      if (kRank2) {
        const vec aj = load(a + j);
        y0 -= a0 * bj + b0 * aj, y1 -= a1 * bj + b1 * aj, y2 -= a2 * bj + b2 * aj, y3 -= a3 * bj + b3 * aj;
      } else {
        y0 -= a0 * bj, y1 -= a1 * bj, y2 -= a2 * bj, y3 -= a3 * bj;
      }
      store(x0 + j, y0), store(x1 + j, y1), store(x2 + j, y2), store(x3 + j, y3);
      s0 += y0 * cj, s1 += y1 * cj, s2 += y2 * cj, s3 += y3 * cj;
    }
    out[i] = scale * hsum(s0), out[i + 1] = scale * hsum(s1), out[i + 2] = scale * hsum(s2),
    out[i + 3] = scale * hsum(s3);
  }
  for (; i < D; ++i) {
    double* x0 = X + i * n;
    const vec a0 = splat(a[i]), b0 = kRank2 ? splat(b[i]) : vec{};
    vec s0{};
    for (int64_t j = j0; j < n; j += W) {
      vec y0 = load(x0 + j);
      y0 -= kRank2 ? a0 * load(b + j) + b0 * load(a + j) : a0 * load(b + j);
      store(x0 + j, y0);
      s0 += y0 * load(c + j);
    }
    out[i] = scale * hsum(s0);
  }
}

struct Work {
  double *e, *tau, *v, *v_next, *w, *p, *strip, *rot;
  int64_t rot_capacity;  // doubles at rot
};
constexpr int64_t kStripCols = 4 * W;  // rotations are applied to 4 vectors of columns at a time

Work carve(double* work, int64_t n, int64_t size) {
  Work k;
  k.e = work, k.tau = work + n, k.v = work + 2 * n, k.v_next = work + 3 * n, k.w = work + 4 * n,
  k.p = work + 5 * n, k.strip = work + 6 * n, k.rot = work + 6 * n + kStripCols * n;
  k.rot_capacity = size - (6 + kStripCols) * n;
  return k;
}

// Householder reflector of step k from row k of A (its entries k+1.. below the diagonal, by
// symmetry): d_k, e_k, tau_k; the vector v (v_{k+1} = 1) goes back into row k and into `v`
// (zero elsewhere). Returns tau (0: the row is already reduced).
double reflector(double* A, int64_t k, int64_t D, int64_t n, double* d, const Work& wk, double* v) {
  double* x = A + k * n;
  const int64_t j0 = k + 1;
  const double alpha = x[j0];
  double xn2 = 0.0;
  for (int64_t j = j0 + 1; j < D; ++j) xn2 += x[j] * x[j];
  d[k] = x[k];
  double tau = 0.0;
  if (xn2 == 0.0) {
    wk.e[k] = alpha;
  } else {
    const double beta = -std::copysign(std::sqrt(alpha * alpha + xn2), alpha);
    tau = (beta - alpha) / beta;
    const double scale = 1.0 / (alpha - beta);
    wk.e[k] = beta;
    for (int64_t j = j0 + 1; j < D; ++j) x[j] *= scale;
  }
  x[j0] = 1.0;
  std::fill(v, v + n, 0.0);
  std::copy(x + j0, x + D, v + j0);
  wk.tau[k] = tau;
  return tau;
}

// T = Q^T A Q into (d, e) (e_k = T[k+1][k], e_{D-1} = 0), the reflectors left in A's rows. Each
// step's rank-2 update A22 -= v w^T + w v^T is fused with the next step's A22 v: one pass.
void tridiagonalise(double* A, int64_t D, int64_t n, double* d, const Work& wk) {
  double *v = wk.v, *vn = wk.v_next, *w = wk.w, *p = wk.p;
  double tau = reflector(A, 0, D, n, d, wk, v);
  std::fill(w, w + n, 0.0);
  update_rows_then_dot<false>(A, 1, D, n, 0, w, w, v, 1.0, p);  // p = A22 v (w = 0: no update)
  for (int64_t k = 0; k + 2 < D; ++k) {
    const int64_t j0 = k + 1, ja = aligned_down(j0);
    // w = tau p - (tau^2 / 2)(p . v) v, p = A22 v
    std::fill(w, w + n, 0.0);
    if (tau != 0.0) {
      double pv = 0.0;
      for (int64_t i = j0; i < D; ++i) pv += p[i] * v[i];
      const double K = -0.5 * tau * tau * pv;
      for (int64_t i = j0; i < D; ++i) w[i] = tau * p[i] + K * v[i];
    }
    double* row = A + j0 * n;  // row k+1 first: the next reflector is taken from it
    const vec vi = splat(v[j0]), wi = splat(w[j0]);
    for (int64_t j = ja; j < n; j += W) store(row + j, load(row + j) - (vi * load(w + j) + wi * load(v + j)));
    if (k + 3 < D) {
      const double tau_next = reflector(A, k + 1, D, n, d, wk, vn);
      update_rows_then_dot<true>(A, k + 2, D, n, ja, v, w, vn, 1.0, p);
      std::swap(v, vn);
      tau = tau_next;
    } else {
      update_rows_then_dot<true>(A, k + 2, D, n, ja, v, w, v, 0.0, p);  // the last row
    }
  }
  d[D - 2] = A[(D - 2) * n + D - 2];
  wk.e[D - 2] = A[(D - 2) * n + D - 1];
  d[D - 1] = A[(D - 1) * n + D - 1];
  wk.e[D - 1] = 0.0;
}

// Z = Q^T = H_{D-3} ... H_0 from the reflectors in A's rows, built from the right end:
// Z H_k = Z - tau_k (Z v_k) v_k^T touches rows and columns k+1.. only; each step's update is
// fused with the next step's Z v_{k-1}.
void form_q_transposed(const double* A, int64_t D, int64_t n, double* Z, const Work& wk) {
  std::fill(Z, Z + n * n, 0.0);
  for (int64_t i = 0; i < D; ++i) Z[i * n + i] = 1.0;
  if (D < 3) return;
  double *v = wk.v, *vn = wk.v_next, *u = wk.p;
  auto vector_of = [&](int64_t k, double* out) {
    std::fill(out, out + n, 0.0);
    std::copy(A + k * n + k + 1, A + k * n + D, out + k + 1);
  };
  int64_t k = D - 3;
  vector_of(k, v);
  for (int64_t i = k + 1; i < D; ++i) u[i] = wk.tau[k] * v[i];  // Z is I there
  for (; k >= 0; --k) {
    double tau_next = 0.0;
    if (k > 0) {
      vector_of(k - 1, vn);
      tau_next = wk.tau[k - 1];
    } else {
      std::fill(vn, vn + n, 0.0);
    }
    update_rows_then_dot<false>(Z, k + 1, D, n, aligned_down(k), u, v, vn, tau_next, u);
    if (k > 0) u[k] = tau_next;  // row k is still e_k, and e_k . v_{k-1} = 1
    std::swap(v, vn);
  }
}

// The recorded rotations applied to the rows of Z, kStripCols columns at a time (a strip's rows
// stay in cache across all sweeps). The record is, per sweep, (top, count) then count pairs
// (c, s): rotations of rows (top - 1, top), (top - 2, top - 1), ..., in that order.
void apply_rotations(double* Z, int64_t D, int64_t n, const double* rot, int64_t used, double* strip) {
  constexpr int64_t S = kStripCols;
  for (int64_t j0 = 0; j0 < n; j0 += S) {
    const int64_t ws = std::min<int64_t>(S, n - j0);
    for (int64_t i = 0; i < D; ++i) {
      std::memcpy(strip + i * S, Z + i * n + j0, ws * sizeof(double));
      std::fill(strip + i * S + ws, strip + (i + 1) * S, 0.0);
    }
    for (int64_t r = 0; r < used;) {
      const int64_t top = static_cast<int64_t>(rot[r]), count = static_cast<int64_t>(rot[r + 1]);
      const double* cs = rot + r + 2;
      r += 2 + 2 * count;
      // row i + 1 takes s x_i + c y, and the carry y (row i's new value) c x_i - s y
      double* y = strip + top * S;
      vec c0 = load(y), c1 = load(y + W), c2 = load(y + 2 * W), c3 = load(y + 3 * W);
      for (int64_t q = 0; q < count; ++q, cs += 2) {
        const vec c = splat(cs[0]), s = splat(cs[1]);
        double* x = strip + (top - 1 - q) * S;
        const vec x0 = load(x), x1 = load(x + W), x2 = load(x + 2 * W), x3 = load(x + 3 * W);
        store(x + S, s * x0 + c * c0), store(x + S + W, s * x1 + c * c1), store(x + S + 2 * W, s * x2 + c * c2),
            store(x + S + 3 * W, s * x3 + c * c3);
        c0 = c * x0 - s * c0, c1 = c * x1 - s * c1, c2 = c * x2 - s * c2, c3 = c * x3 - s * c3;
      }
      double* x = strip + (top - count) * S;
      store(x, c0), store(x + W, c1), store(x + 2 * W, c2), store(x + 3 * W, c3);
    }
    for (int64_t i = 0; i < D; ++i) std::memcpy(Z + i * n + j0, strip + i * S, ws * sizeof(double));
  }
}

// Implicit QL on (d, e) with the rotations recorded and applied to Z's rows in batches. An
// off-diagonal entry is negligible below eps (|d_m| + |d_m+1|) or eps |T|: the latter is
// LAPACK's norm-wise accuracy (a perturbation of T of eps |T|), and without it a cluster of
// eigenvalues far below |T| (a rank-deficient covariance plus the ridge) could not converge.
bool tridiagonal_ql(double* d, int64_t D, int64_t n, double* Z, const Work& wk, int max_sweeps) {
  double* e = wk.e;
  constexpr double eps = DBL_EPSILON;
  double tnorm = 0.0;
  for (int64_t i = 0; i < D; ++i) tnorm = std::max(tnorm, std::abs(d[i]) + std::abs(e[i]) + (i ? std::abs(e[i - 1]) : 0.0));
  const double small = eps * tnorm;
  int64_t used = 0;
  for (int64_t l = 0; l < D; ++l) {
    int iterations = 0;
    int64_t m;
    do {
      for (m = l; m < D - 1; ++m) {
        const double ae = std::abs(e[m]);
        if (ae <= eps * (std::abs(d[m]) + std::abs(d[m + 1])) || ae <= small) break;
      }
      if (m == l) break;
      if (++iterations > max_sweeps) return false;
      if (used + 2 + 2 * (m - l) > wk.rot_capacity) {  // the record is full: apply it
        apply_rotations(Z, D, n, wk.rot, used, wk.strip);
        used = 0;
      }
      double* record = wk.rot + used;
      double* cs = record + 2;
      double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
      double r = std::sqrt(g * g + 1.0);  // |g| <= ~1/eps: no overflow
      g = d[m] - d[l] + e[l] / (g + std::copysign(r, g));
      double s = 1.0, c = 1.0, p = 0.0;
      int64_t i = m - 1;
      bool underflow = false;
      for (; i >= l; --i) {
        const double f = s * e[i], b = c * e[i];
        r = std::sqrt(f * f + g * g);  // the matrix was scaled to |A| ~ 1: no overflow
        e[i + 1] = r;
        if (r == 0.0) {  // f and g underflowed: T splits here
          d[i + 1] -= p;
          e[m] = 0.0;
          underflow = true;
          break;
        }
        const double inv = 1.0 / r;
        s = f * inv;
        c = g * inv;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2.0 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        *cs++ = c;
        *cs++ = s;
      }
      const int64_t count = (cs - record - 2) / 2;
      if (count > 0) {
        record[0] = static_cast<double>(m);
        record[1] = static_cast<double>(count);
        used += 2 + 2 * count;
      }
      if (underflow) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0.0;
    } while (m != l);
  }
  apply_rotations(Z, D, n, wk.rot, used, wk.strip);
  return true;
}

}  // namespace

bool symmetric_eigen(double* A, int64_t D, int64_t n, double* w, double* Z, double* work, int64_t work_size,
                     int max_sweeps) {
  if (D <= 0) return true;
  if (work_size < symmetric_eigen_work_size(n)) return false;
  const Work wk = carve(work, n, work_size);
  // scaled by a power of two (exact) where squares could overflow or underflow
  double amax = 0.0;
  for (int64_t i = 0; i < D; ++i)
    for (int64_t j = 0; j < D; ++j) {
      const double a = std::abs(A[i * n + j]);
      if (!(a <= DBL_MAX)) return false;  // inf or NaN
      amax = std::max(amax, a);
    }
  double scale = 1.0;
  if (amax > 0.0 && (amax > 0x1p300 || amax < 0x1p-300)) {
    scale = std::ldexp(1.0, -std::ilogb(amax));
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = 0; j < D; ++j) A[i * n + j] *= scale;
  }
  if (D == 1) {
    w[0] = A[0];
    wk.e[0] = 0.0;
  } else if (D == 2) {
    w[0] = A[0], w[1] = A[n + 1];
    wk.e[0] = A[1], wk.e[1] = 0.0;
  } else {
    tridiagonalise(A, D, n, w, wk);
  }
  form_q_transposed(A, D, n, Z, wk);
  if (!tridiagonal_ql(w, D, n, Z, wk, max_sweeps)) return false;
  // ascending, as LAPACK returns them
  for (int64_t i = 0; i + 1 < D; ++i) {
    int64_t k = i;
    for (int64_t j = i + 1; j < D; ++j)
      if (w[j] < w[k]) k = j;
    if (k != i) {
      std::swap(w[i], w[k]);
      std::swap_ranges(Z + i * n, Z + (i + 1) * n, Z + k * n);
    }
  }
  if (scale != 1.0)
    for (int64_t i = 0; i < D; ++i) w[i] /= scale;
  return true;
}

}  // namespace DALE_MK_ISA
}  // namespace cpu
}  // namespace dale_ext
