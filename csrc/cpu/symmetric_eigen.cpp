// The symmetric eigensolver of gaussian_w2's Cholesky route (microkernels.h): Householder
// tridiagonalisation, the orthogonal factor formed explicitly, then implicit QL with Wilkinson
// shifts (Numerical Recipes' tqli, LAPACK's dsteqr) whose rotations are applied to that factor,
// or from D = 48 one level of divide and conquer (divide_and_conquer below). At D = 128 on one
// core (AVX-512) this runs in ~0.70-0.76 ms where MKL's dsyevd took ~1.1 (QL alone: ~0.9), at
// D = 64 in 0.14 against 0.25-0.27 (benchmarks/results/2026-12-07-cpu-symmetric-eigen-micro.txt):
// dsyevd's tridiagonal reduction alone is ~0.45 ms at 128, bound by its level-2 calls' overheads.
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

extern const MicroKernels kernels;  // this set's products (microkernels.cpp), for the divide and conquer

namespace {

constexpr int64_t kSplitMinSize = 48;  // divide and conquer from here

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
  double *e, *tau, *v, *v_next, *w, *p, *strip, *g, *u, *index, *rot;
  int64_t rot_capacity;  // doubles at rot
};
constexpr int64_t kStripCols = 4 * W;  // rotations are applied to 4 vectors of columns at a time

Work carve(double* work, int64_t n, int64_t size) {
  Work k;
  k.e = work, k.tau = work + n, k.v = work + 2 * n, k.v_next = work + 3 * n, k.w = work + 4 * n,
  k.p = work + 5 * n, k.strip = work + 6 * n;
  k.g = k.strip + kStripCols * n, k.u = k.g + n * n, k.index = k.u + n * n, k.rot = k.index + 3 * n;
  k.rot_capacity = size - (k.rot - work);
  return k;
}

// Householder reflector of step k from row k of A (its entries k+1.. below the diagonal, by
// symmetry): d_k, e_k, tau_k; the vector v (v_{k+1} = 1) goes back into row k and into `v`
// (zero elsewhere). Returns tau (0: the row is already reduced).
double reflector(double* A, int64_t k, int64_t D, int64_t n, double* d, const Work& wk, double* v) {
  double* x = A + k * n;
  const int64_t j0 = k + 1;
  const double alpha = x[j0];
  // the norm taken on the row scaled by its largest entry (as LAPACK's dlarfg/dnrm2): the
  // matrix is scaled to |A|max ~ 1, but a row's entries can be ~1e-160, whose squares lose
  // their digits as subnormals (the reflector was then far from orthogonal)
  double xmax = 0.0;
  for (int64_t j = j0 + 1; j < D; ++j) xmax = std::max(xmax, std::abs(x[j]));
  d[k] = x[k];
  double tau = 0.0;
  if (xmax == 0.0) {
    wk.e[k] = alpha;
  } else {
    const double s = std::max(xmax, std::abs(alpha)), inv_s = 1.0 / s;
    double sum = (alpha * inv_s) * (alpha * inv_s);
    for (int64_t j = j0 + 1; j < D; ++j) sum += (x[j] * inv_s) * (x[j] * inv_s);
    const double beta = -std::copysign(s * std::sqrt(sum), alpha);
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
void apply_rotations(double* Z, int64_t D, int64_t cols, int64_t ld, const double* rot, int64_t used, double* strip) {
  constexpr int64_t S = kStripCols;
  for (int64_t j0 = 0; j0 < cols; j0 += S) {
    const int64_t ws = std::min<int64_t>(S, cols - j0);
    for (int64_t i = 0; i < D; ++i) {
      std::memcpy(strip + i * S, Z + i * ld + j0, ws * sizeof(double));
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
    for (int64_t i = 0; i < D; ++i) std::memcpy(Z + i * ld + j0, strip + i * S, ws * sizeof(double));
  }
}

// Implicit QL on (d, e) with the rotations recorded and applied to Z's rows in batches. An
// off-diagonal entry is negligible below eps (|d_m| + |d_m+1|) or eps |T|: the latter is
// LAPACK's norm-wise accuracy (a perturbation of T of eps |T|), and without it a cluster of
// eigenvalues far below |T| (a rank-deficient covariance plus the ridge) could not converge.
// Z's rows hold `cols` entries at stride ld.
// `floor`: an off-diagonal entry at or below it is negligible too (the whole matrix's eps |T|
// when this is one half of a divide and conquer: a tiny half's own norm would make rounding
// noise look significant, and its rotations' squares underflow).
bool tridiagonal_ql(double* d, double* e, int64_t D, int64_t cols, int64_t ld, double* Z, const Work& wk,
                    int max_sweeps, double floor = 0.0) {
  constexpr double eps = DBL_EPSILON;
  double tnorm = 0.0;
  for (int64_t i = 0; i < D; ++i) tnorm = std::max(tnorm, std::abs(d[i]) + std::abs(e[i]) + (i ? std::abs(e[i - 1]) : 0.0));
  const double small = std::max(eps * tnorm, floor);
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
        apply_rotations(Z, D, cols, ld, wk.rot, used, wk.strip);
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
  apply_rotations(Z, D, cols, ld, wk.rot, used, wk.strip);
  return true;
}


// Sums over j in [j0, j1) of w2_j / t_j and w2_j / t_j^2, t_j = (dl_j - origin) - tau.
void secular_sums(const double* dl, const double* w2, double origin, double tau, int64_t j0, int64_t j1, double& f,
                  double& df) {
  vec sf{}, sd{};
  const vec vo = splat(origin), vt = splat(tau), one = splat(1.0);
  int64_t j = j0;
  for (; j + W <= j1; j += W) {  // one division a term (a vector division is ~10x a product)
    const vec inv = one / ((load(dl + j) - vo) - vt), r = load(w2 + j) * inv;
    sf += r;
    sd += r * inv;
  }
  double f1 = hsum(sf), d1 = hsum(sd);
  for (; j < j1; ++j) {
    const double inv = 1.0 / ((dl[j] - origin) - tau), r = w2[j] * inv;
    f1 += r;
    d1 += r * inv;
  }
  f = f1, df = d1;
}

// Root i of the secular equation 1/rho + sum_j w2_j / (dl_j - x) = 0 (dl ascending, rho > 0):
// x = dl[origin] + tau with dl_i < x < dl_{i+1} (x < dl_i + rho sum w2 for the last), origin the
// nearer pole, so that the differences dl_j - x are accurate. Each step solves a model with the
// two poles around the root fitted to the sums left and right of it (value and slope; Li's
// "middle way" in LAPACK's dlaed4), kept inside a bracket that bisection falls back on.
bool secular_root(const double* dl, const double* w2, int64_t K, int64_t i, double rho, int64_t& origin,
                  double& tau) {
  constexpr double eps = DBL_EPSILON;
  const double inv_rho = 1.0 / rho;
  const bool last = i + 1 == K;
  double lo, hi;
  if (!last) {
    const double half = 0.5 * (dl[i + 1] - dl[i]);
    double psi, dpsi, phi, dphi;
    secular_sums(dl, w2, dl[i], half, 0, K, psi, dpsi);
    if (inv_rho + psi >= 0.0) {  // the root is in the left half
      origin = i, lo = 0.0, hi = half;
    } else {
      origin = i + 1, lo = -half, hi = 0.0;
    }
    (void)phi, (void)dphi;
  } else {
    double total = 0.0;
    for (int64_t j = 0; j < K; ++j) total += w2[j];
    origin = i, lo = 0.0, hi = rho * total * (1.0 + 4.0 * eps) + DBL_MIN;
  }
  const double o = dl[origin];
  tau = 0.5 * (lo + hi);
  for (int it = 0; it < 64; ++it) {
    double psi, dpsi, phi = 0.0, dphi = 0.0;
    secular_sums(dl, w2, o, tau, 0, i + 1, psi, dpsi);
    if (!last) secular_sums(dl, w2, o, tau, i + 1, K, phi, dphi);
    const double f = inv_rho + psi + phi;
    if (f == 0.0 || std::abs(f) <= 8.0 * eps * static_cast<double>(K) * (inv_rho + std::abs(psi) + std::abs(phi)))
      return true;
    if (f < 0.0)
      lo = tau;
    else
      hi = tau;
    const double a = (dl[i] - o) - tau;  // to the pole left of the root (< 0)
    double eta;
    bool model = false;
    if (last) {
      const double q = dpsi * a * a, c = inv_rho + psi - dpsi * a;
      if (c > 0.0) eta = a + q / c, model = true;
    } else {
      const double b = (dl[i + 1] - o) - tau;  // to the pole right of it (> 0)
      const double q = dpsi * a * a, sr = dphi * b * b;
      const double c = inv_rho + (psi - dpsi * a) + (phi - dphi * b);
      const double C0 = a * b * f, B = c * (a + b) + q + sr;
      const double root = std::sqrt(std::max(B * B - 4.0 * c * C0, 0.0));
      const double big = B + std::copysign(root, B);
      const double e1 = big != 0.0 ? 2.0 * C0 / big : 0.0, e2 = c != 0.0 ? big / (2.0 * c) : 0.0;
      if (e1 > a && e1 < b) eta = e1, model = true;
      else if (c != 0.0 && e2 > a && e2 < b) eta = e2, model = true;
    }
    double next = model ? tau + eta : 0.5 * (lo + hi);
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    const bool small_step = std::abs(next - tau) <= 2.0 * eps * std::abs(next);
    tau = next;
    if (small_step || hi - lo <= 2.0 * eps * std::max(std::abs(lo), std::abs(hi))) return true;
  }
  return false;
}

// One level of divide and conquer for T = (d, e) (Cuppen's; deflation as LAPACK's dlaed2, the
// eigenvectors of the rank-one update by Gu and Eisenstat's formula, which keeps them
// orthogonal). T = diag(T1, T2) + rho v v^T, split at k ~ n / 2 (D > k); the halves by implicit QL with
// their rotations on k-long rows (a quarter of the whole QL's vector work, half its scalar
// recurrence). On entry Z = Q^T and Y is free (n x n); on return Z's rows are the eigenvectors
// of Q T Q^T and d their eigenvalues (in no order).
bool divide_and_conquer(double* Y, double* d, int64_t D, int64_t n, double* Z, const Work& wk, int max_sweeps) {
  constexpr double eps = DBL_EPSILON;
  double* e = wk.e;
  const int64_t k = n / 2 / 16 * 16, D2 = D - k;  // k a multiple of the products' block
  double tnorm = 0.0;
  for (int64_t i = 0; i < D; ++i) tnorm = std::max(tnorm, std::abs(d[i]) + std::abs(e[i]) + (i ? std::abs(e[i - 1]) : 0.0));
  const double floor = eps * tnorm;
  const double beta = e[k - 1], sigma = beta < 0.0 ? -1.0 : 1.0;
  d[k - 1] -= std::abs(beta);
  d[k] -= std::abs(beta);
  e[k - 1] = 0.0;
  std::fill(Y, Y + n * n, 0.0);
  for (int64_t i = 0; i < D; ++i) Y[i * n + i] = 1.0;
  if (!tridiagonal_ql(d, e, k, k, n, Y, wk, max_sweeps, floor)) return false;
  if (!tridiagonal_ql(d + k, e + k, D2, n - k, n, Y + k * n + k, wk, max_sweeps, floor)) return false;
  // G = Y Q^T, Y block diagonal (rows are T-hat's eigenvectors)
  double* G = wk.g;
  const SquareShape full{};
  if (2 * k == n) {  // four k x k products skip Y's zero blocks
    kernels.square_gemm(Y, Z, G, k, n, full);
    kernels.square_gemm(Y, Z + k, G + k, k, n, full);
    kernels.square_gemm(Y + k * n + k, Z + k * n, G + k * n, k, n, full);
    kernels.square_gemm(Y + k * n + k, Z + k * n + k, G + k * n + k, k, n, full);
  } else {
    kernels.square_gemm(Y, Z, G, n, n, full);
  }
  // z = Y v, v = e_{k-1} + sigma e_k, normalised (rho takes its square norm)
  double* z = wk.v;
  for (int64_t j = 0; j < k; ++j) z[j] = Y[j * n + k - 1];
  for (int64_t j = k; j < D; ++j) z[j] = sigma * Y[j * n + k];
  double zz = 0.0;
  for (int64_t j = 0; j < D; ++j) zz += z[j] * z[j];
  const double zn = std::sqrt(zz), rho = std::abs(beta) * zz;
  for (int64_t j = 0; j < D; ++j) z[j] /= zn;
  // eigenvalues ascending (an index sort), then deflation
  double* order = wk.index;
  double* kept = wk.index + n;
  double* deflated = wk.index + 2 * n;
  for (int64_t j = 0; j < D; ++j) {
    int64_t t = j;
    while (t > 0 && d[static_cast<int64_t>(order[t - 1])] > d[j]) order[t] = order[t - 1], --t;
    order[t] = static_cast<double>(j);
  }
  double dmax = 0.0, zmax = 0.0;
  for (int64_t j = 0; j < D; ++j) dmax = std::max(dmax, std::abs(d[j])), zmax = std::max(zmax, std::abs(z[j]));
  const double tol = 8.0 * eps * std::max(dmax, zmax);
  int64_t K = 0, nd = 0, pj = -1;
  for (int64_t t = 0; t < D; ++t) {
    const int64_t nj = static_cast<int64_t>(order[t]);
    if (rho * std::abs(z[nj]) <= tol) {
      deflated[nd++] = static_cast<double>(nj);
      continue;
    }
    if (pj < 0) {
      pj = nj;
      continue;
    }
    const double tau = std::hypot(z[nj], z[pj]), c = z[nj] / tau, s = -z[pj] / tau, gap = d[nj] - d[pj];
    if (std::abs(gap * c * s) <= tol) {  // close pair: rotate z[pj] to zero, and deflate pj
      z[nj] = tau, z[pj] = 0.0;
      double* gp = G + pj * n;
      double* gn = G + nj * n;
      const vec vc = splat(c), vs = splat(s);
      for (int64_t j = 0; j < n; j += W) {
        const vec x = load(gp + j), y = load(gn + j);
        store(gp + j, vc * x + vs * y), store(gn + j, vc * y - vs * x);
      }
      const double dp = d[pj] * c * c + d[nj] * s * s;
      d[nj] = d[pj] * s * s + d[nj] * c * c;
      d[pj] = dp;
      deflated[nd++] = static_cast<double>(pj);
    } else {
      kept[K++] = static_cast<double>(pj);
    }
    pj = nj;
  }
  if (pj >= 0) kept[K++] = static_cast<double>(pj);
  // the secular equation of the K kept values
  double* dl = wk.p;
  double* w2 = wk.v_next;
  double* lam = wk.tau;
  double* zhat = wk.e;
  double* U = wk.u;
  for (int64_t j = 0; j < K; ++j) {
    const int64_t r = static_cast<int64_t>(kept[j]);
    dl[j] = d[r], w2[j] = z[r] * z[r];
  }
  for (int64_t j = K; j < n; ++j) dl[j] = 0.0, w2[j] = 0.0;
  std::fill(U, U + n * n, 0.0);
  for (int64_t i = 0; i < K; ++i) {
    int64_t origin;
    double tau;
    if (!secular_root(dl, w2, K, i, rho, origin, tau)) return false;
    lam[i] = dl[origin] + tau;
    double* row = U + i * n;  // dl_j - lambda_i, accurately
    for (int64_t j = 0; j < K; ++j) row[j] = (dl[j] - dl[origin]) - tau;
  }
  // zhat_j^2 = -prod_i (dl_j - lambda_i) / (rho prod_{i != j} (dl_j - dl_i)), as ratios near 1
  // (the factor i = j, dl_j - lambda_j over rho, set aside and put back)
  for (int64_t j = 0; j < n; ++j) zhat[j] = 1.0;
  for (int64_t i = 0; i < K; ++i) {
    const double* row = U + i * n;
    const vec di = splat(dl[i]);
    const double keep = zhat[i];
    for (int64_t j = 0; j < K; j += W) {  // j = i divides by 0 here: restored below
      const vec den = load(dl + j) - di;
      store(zhat + j, load(zhat + j) * (load(row + j) / den));
    }
    zhat[i] = keep;
  }
  for (int64_t j = 0; j < K; ++j)
    zhat[j] = std::copysign(std::sqrt(std::max(-zhat[j] * (U[j * n + j] / rho), 0.0)),
                            z[static_cast<int64_t>(kept[j])]);
  for (int64_t j = K; j < n; ++j) zhat[j] = 0.0;
  // eigenvector i of diag(dl) + rho zhat zhat^T: zhat_j / (dl_j - lambda_i), normalised (past K,
  // zhat_j = 0 over 1)
  for (int64_t i = 0; i < K; ++i) {
    double* row = U + i * n;
    std::fill(row + K, row + n, 1.0);
    vec ss{};
    for (int64_t j = 0; j < K; j += W) {
      const vec u = load(zhat + j) / load(row + j);
      store(row + j, u);
      ss += u * u;
    }
    const vec inv = splat(1.0 / std::sqrt(hsum(ss)));
    for (int64_t j = 0; j < K; j += W) store(row + j, load(row + j) * inv);
    std::fill(row + K, row + n, 0.0);
  }
  // Z = U G_K (G_K: the kept rows of G, in dl's order), then the deflated rows
  std::fill(Y, Y + n * n, 0.0);
  for (int64_t j = 0; j < K; ++j) std::copy_n(G + static_cast<int64_t>(kept[j]) * n, n, Y + j * n);
  kernels.square_gemm(U, Y, Z, n, n, full);
  for (int64_t t = 0; t < nd; ++t) {
    const int64_t r = static_cast<int64_t>(deflated[t]);
    std::copy_n(G + r * n, n, Z + (K + t) * n);
    lam[K + t] = d[r];
  }
  std::copy_n(lam, D, d);
  return true;
}

}  // namespace

bool symmetric_eigen(double* A, int64_t D, int64_t n, double* w, double* Z, double* work, int64_t work_size,
                     int max_sweeps) {
  if (D <= 0) return true;
  if (work_size < symmetric_eigen_work_size(n)) return false;
  const Work wk = carve(work, n, work_size);
  // scaled by a power of two (exact) to |A|max in [1, 2): squares then neither overflow nor
  // underflow, and the divide and conquer's deflation tolerance (8 eps max(|d|, |z|), as
  // LAPACK's dlaed2 after dstedc's scaling) compares eigenvalues on the scale of 1. In two
  // factors, as 2^1074 (a subnormal |A|max's) is not a double.
  double amax = 0.0;
  for (int64_t i = 0; i < D; ++i)
    for (int64_t j = 0; j < D; ++j) {
      const double a = std::abs(A[i * n + j]);
      if (!(a <= DBL_MAX)) return false;  // inf or NaN
      amax = std::max(amax, a);
    }
  const int ex = amax > 0.0 ? -std::ilogb(amax) : 0;
  const double scale1 = std::ldexp(1.0, ex / 2), scale2 = std::ldexp(1.0, ex - ex / 2);
  if (ex != 0)
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = 0; j < D; ++j) A[i * n + j] = A[i * n + j] * scale1 * scale2;
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
  const bool split = D >= kSplitMinSize;
  if (!(split ? divide_and_conquer(A, w, D, n, Z, wk, max_sweeps) : tridiagonal_ql(w, wk.e, D, n, n, Z, wk, max_sweeps)))
    return false;
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
  if (ex != 0)
    for (int64_t i = 0; i < D; ++i) w[i] = w[i] / scale1 / scale2;
  return true;
}

}  // namespace DALE_MK_ISA
}  // namespace cpu
}  // namespace dale_ext
