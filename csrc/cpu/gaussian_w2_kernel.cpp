// _gaussian_w2 on the CPU: one class at a time, the classes in parallel (LAPACK's batched calls
// loop serially over the batch). The per-class work is a Cholesky, two products for
// M = L^T S2 L, one eigh, and for each wanted gradient two products (input side) or a
// triangular solve and a product (target side); everything else is plain
// loops over one D x D matrix, and the Cholesky-or-eigh decision is taken per class. Against the
// batched ATen formulation (wasserstein.cpp, still the CUDA path) this saved ~20% on two threads
// (benchmarks/results/2026-11-27-cpu-gaussian-w2-lean-ab.txt): its elementwise ops on strided
// D x D views and their dispatch were what remained besides LAPACK and the products.
// Each class is two tasks, taken from shared counters: the decomposition (Cholesky, M, eigh) and
// then the gradient products, so that with 9 classes on 2 threads the thread that has run 4
// decompositions does the others' products while the 5th runs (a static split left it idle for
// a whole class; benchmarks/results/2026-12-07-cpu-gaussian-w2-tasks-ab.txt).
// LAPACK is called directly (ATen's own wrappers in ATen/native/BatchLinearAlgebra.h) on plain
// buffers, with the eigensolver's workspace sized once per call: at::linalg_eigh and
// at::linalg_cholesky_ex spent ~0.2 ms a class at D = 128 on copies, checks and workspace
// queries around the ~0.9 ms of dsyevd (benchmarks/results/2026-12-07-cpu-gaussian-w2-lapack-ab.txt).
// The products are the package's own (cpu::MicroKernels::square_gemm), which skip the zeros of
// the triangular factors and the half of a symmetric result: ~0.15 ms a class at D = 128 where
// four MKL dgemms (torch exports no dtrmm or dsyrk) took ~0.43
// (benchmarks/results/2026-12-07-cpu-gaussian-w2-square-gemm-ab.txt).
#include "wasserstein.h"
#include "cpu/microkernels.h"
#include "cpu/output_cache_tensor.h"

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <ATen/native/BatchLinearAlgebra.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#if !AT_BUILD_WITH_LAPACK()
#error "dale_ext's CPU gaussian_w2 needs a torch built with LAPACK (every official wheel is)"
#endif

namespace dale_ext {
namespace w2 {
namespace {

// The matrices below are D x D, stored row-major in n x n buffers (n = D rounded up to
// cpu::kSquareBlock, row stride n) whose padding rows and columns hold zeros, as the products
// (cpu::MicroKernels::square_gemm) take whole blocks. A symmetric matrix reads the same in
// either order; LAPACK sees a row-major buffer as the transpose of its column-major matrix, so
// the Cholesky factor L it leaves is, read row-major, U = L^T (upper triangular), and the
// eigenvectors it returns as columns are, read row-major, the rows of E = V^T.

int64_t padded(int64_t D) { return (D + cpu::kSquareBlock - 1) / cpu::kSquareBlock * cpu::kSquareBlock; }

// dst = scale (src + src^T) + shift 11^T + ridge I, dst an n x n buffer, src a contiguous D x D
// matrix (dst != src; scale 0.5 symmetrises): 8 x 8 tiles taken with their mirror tiles, each
// pair read once and both written by rows (a transpose pass and then a sum pass took ~27 us at
// D = 128, a strided read or write per entry in one of them).
void symmetrise_into(double* dst, const double* src, int64_t D, int64_t n, double scale = 0.5, double shift = 0.0,
                     double ridge = 0.0) {
  constexpr int64_t kTile = 8;
  for (int64_t i0 = 0; i0 < D; i0 += kTile) {
    const int64_t i1 = std::min(i0 + kTile, D);
    for (int64_t j0 = 0; j0 <= i0; j0 += kTile) {
      const int64_t j1 = std::min(j0 + kTile, D);
      double a[kTile][kTile], b[kTile][kTile];  // tile (i0, j0) and its mirror (j0, i0)
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) a[i - i0][j - j0] = src[i * D + j];
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) b[j - j0][i - i0] = src[j * D + i];
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) dst[i * n + j] = scale * (a[i - i0][j - j0] + b[j - j0][i - i0]) + shift;
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) dst[j * n + i] = scale * (b[j - j0][i - i0] + a[i - i0][j - j0]) + shift;
    }
  }
  for (int64_t i = 0; i < D; ++i) dst[i * n + i] += ridge;
}

// dst = src^T, both n x n (n a multiple of 8), in 8 x 8 tiles
void transpose_into(double* dst, const double* src, int64_t n) {
  constexpr int64_t kTile = 8;
  for (int64_t i0 = 0; i0 < n; i0 += kTile)
    for (int64_t j0 = 0; j0 < n; j0 += kTile)
      for (int64_t i = i0; i < i0 + kTile; ++i)
        for (int64_t j = j0; j < j0 + kTile; ++j) dst[j * n + i] = src[i * n + j];
}

// The strict upper triangle of a D x D matrix in an n x n buffer set from its lower one, in 8 x 8
// tiles (the mirrored tile is written by rows).
void mirror_lower(double* A, int64_t D, int64_t n) {
  constexpr int64_t kTile = 8;
  for (int64_t i0 = 0; i0 < D; i0 += kTile)
    for (int64_t j0 = 0; j0 <= i0; j0 += kTile)
      for (int64_t j = j0; j < std::min(j0 + kTile, D); ++j)
        for (int64_t i = std::max(i0, j + 1); i < std::min(i0 + kTile, D); ++i) A[j * n + i] = A[i * n + j];
}

// Zeros the padding of an n x n buffer holding a D x D matrix (LAPACK leaves it as it was).
void zero_padding(double* A, int64_t D, int64_t n) {
  if (D == n) return;
  for (int64_t i = 0; i < D; ++i) std::fill(A + i * n + D, A + (i + 1) * n, 0.0);
  std::fill(A + D * n, A + n * n, 0.0);
}

void square_gemm(const double* G, const double* X, double* Y, int64_t n, cpu::SquareShape shape) {
  cpu::microkernels().square_gemm(G, X, Y, n, n, shape);
}

// out (contiguous D x D) = a (I - Z^T Z) after scaling row k of Z (in place) by s[k]; Zt and P
// are n x n scratch. Z^T Z is formed as its upper triangle and mirrored: exactly symmetric.
void identity_minus_gram(double* Z, const double* s, double* out, double* Zt, double* P, int64_t D, int64_t n,
                         double a) {
  for (int64_t k = 0; k < D; ++k)
    for (int64_t j = 0; j < n; ++j) Z[k * n + j] *= s[k];
  transpose_into(Zt, Z, n);
  square_gemm(Zt, Z, P, n, {false, false, false, cpu::Half::kUpper});
  for (int64_t i = 0; i < D; ++i) {
    const double* p = P + i * n;
    double* o = out + i * D;
    for (int64_t j = i; j < D; ++j) o[j] = -a * p[j];
    o[i] += a;
  }
  constexpr int64_t kTile = 8;
  for (int64_t i0 = 0; i0 < D; i0 += kTile)
    for (int64_t j0 = 0; j0 <= i0; j0 += kTile)
      for (int64_t i = i0; i < std::min(i0 + kTile, D); ++i)
        for (int64_t j = j0; j < std::min(j0 + kTile, i); ++j) out[i * D + j] = out[j * D + i];
}

// LAPACK's symmetric eigensolver (dsyevd) on one D x D matrix in an n x n buffer, with its
// workspace sized once. It reads the upper triangle of its column-major matrix, i.e. the lower
// one of the row-major buffer ('U' ran ~3 % faster than 'L' here at D = 128).
struct Eigensolver {
  char jobz;
  int n, lda;
  std::vector<double> work;
  std::vector<int> iwork;
  Eigensolver(int64_t D, int64_t ld, bool vectors)
      : jobz(vectors ? 'V' : 'N'), n(static_cast<int>(D)), lda(static_cast<int>(std::max<int64_t>(1, ld))) {
    double lwork = 0;
    int liwork = 0, info = 0;
    at::native::lapackSyevd<double, double>(jobz, 'U', n, nullptr, lda, nullptr, &lwork, -1, nullptr, 0,
                                            &liwork, -1, &info);
    TORCH_CHECK(info == 0, "gaussian_w2: dsyevd workspace query failed (info ", info, ")");
    work.resize(static_cast<size_t>(lwork));
    iwork.resize(static_cast<size_t>(std::max(liwork, 1)));
  }
  // Eigenvalues of M (ascending) into w; the vectors, when asked for, overwrite M (as rows, read
  // row-major).
  void operator()(double* M, double* w) {
    int info = 0;
    at::native::lapackSyevd<double, double>(jobz, 'U', n, M, lda, w, work.data(), static_cast<int>(work.size()),
                                            nullptr, 0, iwork.data(), static_cast<int>(iwork.size()), &info);
    TORCH_CHECK(info >= 0, "gaussian_w2: dsyevd rejected argument ", -info);
    TORCH_CHECK(info == 0, "gaussian_w2: the eigensolver failed to converge (dsyevd info ", info,
                "); the covariances may be ill-conditioned or contain inf");
  }
};

// Whether the Cholesky route uses the package's Cholesky (cpu::MicroKernels::cholesky_upper,
// ~25 us at D = 128 where dpotrf took 100-130) and, when eigenvectors are wanted, its
// eigensolver (symmetric_eigen: tridiagonal QL or divide and conquer, ~35 % faster than dsyevd
// at D = 128 and ~45 % at D = 64 with AVX2 or AVX-512); or LAPACK's dpotrf and dsyevd: with the
// portable kernel set (where they are the faster) and with DALE_EXT_EIGENSOLVER=lapack (for A/B
// runs and the tests that compare the two). Without vectors dsyevd's eigenvalue-only path serves.
bool own_matrix_routines() {
  static const bool own = [] {
    const char* v = std::getenv("DALE_EXT_EIGENSOLVER");
    return cpu::microkernels().symmetric_eigen_preferred && (v == nullptr || std::strcmp(v, "lapack") != 0);
  }();
  return own;
}

// One worker's buffers (n x n each, and the package eigensolver's workspace).
struct Scratch {
  int64_t D, n;
  bool vectors;
  std::vector<double> S2, T, P, eig_work;
  Eigensolver eig;
  Scratch(int64_t D_, bool vectors_)
      : D(D_),
        n(padded(D_)),
        vectors(vectors_),
        S2(n * n),
        T(n * n),
        P(n * n),
        eig_work(vectors_ ? cpu::symmetric_eigen_work_size(n) : 0),
        eig(D_, n, vectors_) {}
};

// Buffers of D x D doubles are 128 KiB at D = 128: glibc maps blocks that size afresh on every
// allocation once its mmap threshold has followed them, and per-call buffers cost ~100-900 page
// faults a loss call at (4,128,32,32,9). So each worker keeps its Scratch, and each calling
// thread its ClassStates (below), between calls; a shape change rebuilds them.
Scratch& worker_scratch(int64_t D, bool vectors) {
  thread_local std::unique_ptr<Scratch> t;
  if (!t || t->D != D || t->vectors != vectors) t = std::make_unique<Scratch>(D, vectors);
  return *t;
}

constexpr int64_t kKeptStateBytes = int64_t{8} << 20;  // class states a calling thread keeps

// What the loss adds to the covariances before W^2 (paper Eq. 13 and the ridge):
// S1 + shift1 11^T + ridge1 I and S2 + ridge2 I. Zero for gaussian_w2 itself.
struct Regularisation {
  double shift1 = 0.0, ridge1 = 0.0, ridge2 = 0.0;
};

// One class by the Cholesky route (see gaussian_w2_batched), in two steps.
struct ClassState {
  bool cholesky = false;      // false: the two-eigh route wrote the class in the first step
  double base = 0.0;          // |m1 - m2|^2 + tr S1 + tr S2
  std::vector<double> U, E;   // n x n: U = L^T with S1 = L L^T; E = V^T, V the eigenvectors of M = L^T S2 L
  std::vector<double> lm;     // eigenvalues of M, clamped at 0
};

// A state's n x n buffers, zero where they are padding (a state may have held another D).
void size_state(ClassState& st, int64_t D, int64_t n) {
  if (static_cast<int64_t>(st.U.size()) != n * n) {
    st.U.assign(n * n, 0.0);
    st.E.assign(n * n, 0.0);
  }
  st.lm.resize(D);
}

// Step 1: Cholesky, M, eigh. Returns false when S1 is not numerically positive definite
// (condition number above ~1e12): the caller then takes the two-eigh route.
bool w2_decompose(const double* m1, const double* c1, const double* m2, const double* c2, int64_t D,
                  const Regularisation& reg, Scratch& t, ClassState& st) {
  st.cholesky = false;  // the state may hold an earlier call's class
  const int64_t n = t.n;
  size_state(st, D, n);
  double* U = st.U.data();
  double* S2 = t.S2.data();
  symmetrise_into(U, c1, D, n, 0.5, reg.shift1, reg.ridge1);
  symmetrise_into(S2, c2, D, n, 0.5, 0.0, reg.ridge2);
  st.base = 0.0;
  for (int64_t i = 0; i < D; ++i) {
    const double d = m1[i] - m2[i];
    st.base += d * d + U[i * n + i] + S2[i * n + i];
  }
  // the package's Cholesky (microkernels.h), or LAPACK's with DALE_EXT_EIGENSOLVER=lapack
  if (own_matrix_routines()) {
    if (!cpu::microkernels().cholesky_upper(U, D, n)) return false;  // not positive definite, or NaN
  } else {
    int info = 0;
    at::native::lapackCholesky<double>('L', static_cast<int>(D), U, static_cast<int>(n), &info);
    if (info != 0) return false;
  }
  double dmin = U[0], dmax = U[0];
  for (int64_t i = 1; i < D; ++i) {
    dmin = std::min(dmin, U[i * n + i]);
    dmax = std::max(dmax, U[i * n + i]);
  }
  if (!(dmin / dmax > kCholeskyMinDiagRatio)) return false;  // NaN fails too
  for (int64_t i = 1; i < D; ++i) std::fill(U + i * n, U + i * n + i, 0.0);  // the factorisation leaves S1 (or scratch) below U
  zero_padding(S2, D, n);  // U's padding is never written; S2's buffer was scratch before

  double* L = t.T.data();
  transpose_into(L, U, n);
  square_gemm(S2, L, t.P.data(), n, {false, true, false, cpu::Half::kAll});  // S2 L
  // M = L^T (S2 L), its lower triangle (what dsyevd reads; the package's solver takes both)
  bool solved = false;
  if (t.vectors && own_matrix_routines()) {
    double* M = S2;  // S2 itself is no longer needed
    square_gemm(U, t.P.data(), M, n, {true, false, false, cpu::Half::kLower});
    mirror_lower(M, D, n);
    zero_padding(M, D, n);
    solved = cpu::microkernels().symmetric_eigen(M, D, n, st.lm.data(), st.E.data(), t.eig_work.data(),
                                                  static_cast<int64_t>(t.eig_work.size()), cpu::kQlMaxSweeps);
  }
  if (!solved) {  // LAPACK: no vectors wanted, DALE_EXT_EIGENSOLVER=lapack, or the QL gave up
    double* M = st.E.data();
    square_gemm(U, t.P.data(), M, n, {true, false, false, cpu::Half::kLower});
    t.eig(M, st.lm.data());
    zero_padding(M, D, n);
  }
  for (double& l : st.lm) l = std::max(l, 0.0);
  st.cholesky = true;
  return true;
}

// Step 2: W^2 and the wanted covariance gradients, times a, from the decomposition (E is
// overwritten).
void w2_finish(ClassState& st, int64_t D, bool cov1_grad, bool cov2_grad, double a, Scratch& t, double* w2,
               double* g1, double* g2) {
  const int64_t n = t.n;
  const double* lam = st.lm.data();
  double root_sum = 0.0, lmax = 0.0;
  for (int64_t i = 0; i < D; ++i) {
    root_sum += std::sqrt(lam[i]);
    lmax = std::max(lmax, lam[i]);
  }
  *w2 = std::max(st.base - 2.0 * root_sum, 0.0);  // rounding can leave -1e-16 for identical Gaussians

  std::vector<double> s(D);
  // dW2/dS2 = I - L M^{-1/2} L^T = I - W diag(f) W^T with W = L V and f the pseudo-inverse
  // square root (0 on the numerical null space of M); W^T = E U
  if (cov2_grad) {
    const double tol = pinv_tolerance(lmax, D);
    for (int64_t i = 0; i < D; ++i) s[i] = lam[i] > tol ? std::pow(lam[i], -0.25) : 0.0;
    double* Wt = t.T.data();
    square_gemm(st.E.data(), st.U.data(), Wt, n, {false, false, true, cpu::Half::kAll});
    identity_minus_gram(Wt, s.data(), g2, t.S2.data(), t.P.data(), D, n, a);
  }
  // dW2/dS1 = I - L^{-T} M^{1/2} L^{-1} = I - X diag(sqrt(lm)) X^T with X = L^{-T} V: LAPACK's
  // triangular solve on V in place, whose rows (read row-major) are then those of X^T
  if (cov1_grad) {
    for (int64_t i = 0; i < D; ++i) s[i] = std::pow(lam[i], 0.25);
    double* Xt = st.E.data();
    const int dn = static_cast<int>(D), ld = static_cast<int>(n);
    at::native::blasTriangularSolve<double>('L', 'L', 'T', 'N', dn, dn, st.U.data(), ld, Xt, ld);
    identity_minus_gram(Xt, s.data(), g1, t.S2.data(), t.P.data(), D, n, a);
  }
}

std::vector<ClassState>& calling_thread_states() {
  thread_local std::vector<ClassState> states;
  return states;
}

// The classes of one call, as float64 (n, D) means and (n, D, D) covariances (contiguous).
// Class i is skipped where skip[i] (W^2 and gradients 0, no work), and its gradients are
// multiplied by grad_scale[i] (1 where null); reg is added to the covariances first.
struct Classes {
  const double *m1, *c1, *m2, *c2;
  int64_t n, D;
  Regularisation reg;
  const bool* skip = nullptr;
  const double* grad_scale = nullptr;
};

void run_classes(const Classes& cl, bool cov1_grad, bool cov2_grad, double* w2p, double* g1, double* g2) {
  const int64_t n = cl.n, D = cl.D, DD = D * D;
  auto g1_of = [&](int64_t i) { return cov1_grad ? g1 + i * DD : nullptr; };
  auto g2_of = [&](int64_t i) { return cov2_grad ? g2 + i * DD : nullptr; };
  auto scale_of = [&](int64_t i) { return cl.grad_scale ? cl.grad_scale[i] : 1.0; };
  const bool want_vectors = cov1_grad || cov2_grad;
  // a class left with st.cholesky set is finished by w2_finish; the others are written here
  auto decompose = [&](int64_t i, Scratch& t, ClassState& st) {
    if (cl.skip && cl.skip[i]) {
      st.cholesky = false;  // the state may hold an earlier call's class
      w2p[i] = 0.0;
      if (cov1_grad) std::fill_n(g1_of(i), DD, 0.0);
      if (cov2_grad) std::fill_n(g2_of(i), DD, 0.0);
      return;
    }
    if (w2_decompose(cl.m1 + i * D, cl.c1 + i * DD, cl.m2 + i * D, cl.c2 + i * DD, D, cl.reg, t, st)) return;
    // ill-conditioned S1: eigh on both matrices, pseudo-inverses on the null spaces. Results
    // are written through pointers: a worker thread is not in the caller's inference mode,
    // and an in-place copy into an inference tensor would raise there.
    const auto opts = at::TensorOptions().dtype(at::kDouble);
    auto view = [&](const double* p, at::IntArrayRef shape) { return at::from_blob(const_cast<double*>(p), shape, opts); };
    at::Tensor c1 = view(cl.c1 + i * DD, {D, D}) + cl.reg.shift1, c2 = view(cl.c2 + i * DD, {D, D}).clone();
    c1.diagonal().add_(cl.reg.ridge1);
    c2.diagonal().add_(cl.reg.ridge2);
    auto [w, a, b] = gaussian_w2_batched(view(cl.m1 + i * D, {D}), c1, view(cl.m2 + i * D, {D}), c2, cov1_grad, cov2_grad);
    w2p[i] = w.item<double>();
    const double k = scale_of(i);
    auto put = [&](const at::Tensor& g, double* out) {
      const at::Tensor gc = g.contiguous();
      const double* src = gc.data_ptr<double>();
      for (int64_t e = 0; e < DD; ++e) out[e] = k * src[e];
    };
    if (cov1_grad) put(a, g1_of(i));
    if (cov2_grad) put(b, g2_of(i));
  };
  // Every worker claims decompositions in class order until none is left, then finishing steps
  // in class order, waiting for a class whose decomposition another worker is still running.
  // No deadlock: a class's finish is claimed only after its decomposition was, by a worker that
  // is running it (or ran it, when parallel_for runs the workers one after another). Each class
  // is computed by one thread with the same calls, so the results do not depend on the schedule.
  // The classes go in windows, so that a large batch does not hold every class's L and V (2 D^2
  // doubles) at once: at most 32 MiB of them, and never fewer classes than workers.
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  const int64_t nn = padded(D) * padded(D);
  const int64_t window = std::max<int64_t>(workers, (int64_t{32} << 20) / std::max<int64_t>(1, 16 * nn));
  // kept by the calling thread between calls, up to kKeptStateBytes (see worker_scratch); a
  // plain reference, which the workers share (a thread_local named in the lambda would be theirs)
  std::vector<ClassState>& state = calling_thread_states();
  state.resize(std::min(n, window));
  std::vector<std::atomic<bool>> decomposed(state.size());
  for (int64_t i0 = 0; i0 < n; i0 += window) {
    const int64_t m = std::min(window, n - i0);
    for (int64_t k = 0; k < m; ++k) decomposed[k].store(false, std::memory_order_relaxed);
    std::atomic<int64_t> next_decompose{0}, next_finish{0};
    std::atomic<bool> failed{false};  // a worker threw: the others stop waiting (parallel_for rethrows)
    at::parallel_for(0, std::min(workers, m), 1, [&](int64_t w0, int64_t w1) {
      Scratch& t = worker_scratch(D, want_vectors);
      for (int64_t worker = w0; worker < w1; ++worker) {
        for (int64_t k; (k = next_decompose.fetch_add(1)) < m;) {
          try {
            decompose(i0 + k, t, state[k]);
          } catch (...) {
            failed.store(true);
            throw;
          }
          decomposed[k].store(true, std::memory_order_release);
        }
        for (int64_t k; (k = next_finish.fetch_add(1)) < m;) {
          while (!decomposed[k].load(std::memory_order_acquire)) {
            if (failed.load()) return;
            std::this_thread::yield();
          }
          const int64_t i = i0 + k;
          if (state[k].cholesky)
            w2_finish(state[k], D, cov1_grad, cov2_grad, scale_of(i), t, w2p + i, g1_of(i), g2_of(i));
        }
      }
    });
  }
  if (static_cast<int64_t>(state.size()) * 16 * nn > kKeptStateBytes) std::vector<ClassState>().swap(state);
}

at::Tensor as_double(const at::Tensor& t) { return t.to(at::kDouble).contiguous(); }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_w2_cpu(const at::Tensor& mean1, const at::Tensor& cov1,
                                                                const at::Tensor& mean2, const at::Tensor& cov2,
                                                                bool cov1_grad, bool cov2_grad) {
  const auto D = cov1.size(-1);
  const auto out_dtype = cov1.scalar_type();
  const at::Tensor m1 = as_double(mean1), m2 = as_double(mean2), c1 = as_double(cov1), c2 = as_double(cov2);
  const int64_t n = D > 0 ? c1.numel() / (D * D) : 0;
  at::Tensor w2 = at::empty({n}, c1.options());
  // the gradients are n D^2 doubles (1.2 MB for 9 classes of 128): the output cache's blocks
  at::Tensor g1 = cpu::empty_cached({cov1_grad ? n : 0, D, D}, at::kDouble),
             g2 = cpu::empty_cached({cov2_grad ? n : 0, D, D}, at::kDouble);
  const Classes cl{m1.data_ptr<double>(), c1.data_ptr<double>(), m2.data_ptr<double>(), c2.data_ptr<double>(), n, D};
  run_classes(cl, cov1_grad, cov2_grad, w2.data_ptr<double>(), cov1_grad ? g1.data_ptr<double>() : nullptr,
              cov2_grad ? g2.data_ptr<double>() : nullptr);
  const auto batch = cov1.sizes().slice(0, cov1.dim() - 2);
  const at::Tensor none = at::empty({0}, cov1.options().dtype(out_dtype));
  return {w2.view(batch).to(out_dtype), cov1_grad ? g1.view(cov1.sizes()).to(out_dtype) : none,
          cov2_grad ? g2.view(cov1.sizes()).to(out_dtype) : none};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> w2_loss_host_cpu(
    const at::Tensor& n_in, const at::Tensor& mu_in, const at::Tensor& cov_in, const at::Tensor& n_t,
    const at::Tensor& mu_t, const at::Tensor& cov_t, double perturbation, double eps, double min_count,
    c10::string_view reduction, bool need_in, bool need_t) {
  const char* op = "_w2_loss_host";
  TORCH_CHECK_VALUE(reduction == "sum" || reduction == "mean" || reduction == "none", op,
                    ": `reduction` must be sum, mean or none; got ", reduction);
  TORCH_CHECK_VALUE(cov_in.dim() == 3 && cov_in.size(1) == cov_in.size(2), op,
                    ": `cov_in` must be (C, D, D); got ", cov_in.sizes());
  const int64_t C = cov_in.size(0), D = cov_in.size(1);
  TORCH_CHECK_VALUE(cov_t.sizes() == cov_in.sizes(), op, ": `cov_t` must be ", cov_in.sizes(), "; got ",
                    cov_t.sizes());
  for (const auto* t : {&mu_in, &mu_t})
    TORCH_CHECK_VALUE(t->dim() == 2 && t->size(0) == C && t->size(1) == D, op, ": the means must be (", C, ", ",
                      D, "); got ", t->sizes());
  for (const auto* t : {&n_in, &n_t})
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == C, op, ": the counts must be (", C, ",); got ", t->sizes());
  for (const auto* t : {&n_in, &mu_in, &cov_in, &n_t, &mu_t, &cov_t})
    TORCH_CHECK_VALUE(t->device().is_cpu(), op, ": all inputs must be host tensors; got ", t->device());
  const at::Tensor ni = as_double(n_in), nt = as_double(n_t), mi = as_double(mu_in), mt = as_double(mu_t),
                   ci = as_double(cov_in), ct = as_double(cov_t);
  const auto f64 = ci.options();
  const double *pni = ni.data_ptr<double>(), *pnt = nt.data_ptr<double>();
  // which classes count, and d loss / d W^2_c for an incoming gradient of 1
  at::Tensor valid = at::empty({C}, f64.dtype(at::kBool));
  bool* ok = valid.data_ptr<bool>();
  std::unique_ptr<bool[]> skip(new bool[std::max<int64_t>(C, 1)]);
  int64_t n_valid = 0;
  for (int64_t c = 0; c < C; ++c) {
    ok[c] = pni[c] >= min_count && pnt[c] >= min_count;
    skip[c] = !ok[c];
    n_valid += ok[c];
  }
  const double unit = reduction == "mean" ? 1.0 / static_cast<double>(std::max<int64_t>(n_valid, 1)) : 1.0;
  std::vector<double> a(C);
  for (int64_t c = 0; c < C; ++c) a[c] = ok[c] ? unit : 0.0;
  at::Tensor w2 = at::empty({C}, f64);
  at::Tensor g_in = cpu::empty_cached({need_in ? C : 0, D, D}, at::kDouble),
             g_t = cpu::empty_cached({need_t ? C : 0, D, D}, at::kDouble);
  Classes cl{mt.data_ptr<double>(), ct.data_ptr<double>(), mi.data_ptr<double>(), ci.data_ptr<double>(), C, D};
  cl.reg = Regularisation{perturbation, eps, eps};
  cl.skip = skip.get();
  cl.grad_scale = a.data();
  if (C > 0 && D > 0)
    run_classes(cl, need_t, need_in, w2.data_ptr<double>(), need_t ? g_t.data_ptr<double>() : nullptr,
                need_in ? g_in.data_ptr<double>() : nullptr);
  else
    w2.zero_();
  // the loss: per class (W^2 of a skipped class is 0), or its sum over the classes that count
  at::Tensor loss;
  if (reduction == "none") {
    loss = w2;
  } else {
    const double* pw = w2.data_ptr<double>();
    double total = 0.0;
    for (int64_t c = 0; c < C; ++c) total += pw[c];
    loss = at::scalar_tensor(total * unit, f64);
  }
  // d loss / d mu_t = 2 a (mu_t - mu_in), the input side's is its negative
  at::Tensor g_mu = at::empty({need_in || need_t ? C : 0, D}, f64);
  if (need_in || need_t) {
    double* pg = g_mu.data_ptr<double>();
    const double *pmt = mt.data_ptr<double>(), *pmi = mi.data_ptr<double>();
    for (int64_t c = 0; c < C; ++c)
      for (int64_t d = 0; d < D; ++d) pg[c * D + d] = 2.0 * a[c] * (pmt[c * D + d] - pmi[c * D + d]);
  }
  return {loss, valid, g_mu, g_in, g_t};
}

// The package's eigensolver on one float64 matrix, for the tests: eigenvalues ascending, the
// eigenvectors as columns (as torch.linalg.eigh), and whether it converged within max_sweeps.
std::tuple<at::Tensor, at::Tensor, at::Tensor> symmetric_eigen_cpu(const at::Tensor& matrix, int64_t max_sweeps) {
  const char* op = "_symmetric_eigen";
  TORCH_CHECK_VALUE(matrix.dim() == 2 && matrix.size(0) == matrix.size(1), op,
                    ": `matrix` must be square (D, D); got ", matrix.sizes());
  TORCH_CHECK_VALUE(matrix.scalar_type() == at::kDouble, op, ": `matrix` must be float64; got ",
                    matrix.scalar_type());
  TORCH_CHECK_VALUE(max_sweeps >= 1, op, ": `max_sweeps` must be >= 1; got ", max_sweeps);
  const int64_t D = matrix.size(0), n = padded(D);
  std::vector<double> A(n * n, 0.0), Z(n * n), work(cpu::symmetric_eigen_work_size(n));
  const at::Tensor src = matrix.contiguous();
  for (int64_t i = 0; i < D; ++i) std::copy_n(src.data_ptr<double>() + i * D, D, A.data() + i * n);
  at::Tensor w = at::zeros({D}, src.options()), V = at::zeros({D, D}, src.options());
  const bool ok = cpu::microkernels().symmetric_eigen(A.data(), D, n, w.data_ptr<double>(), Z.data(), work.data(),
                                                      static_cast<int64_t>(work.size()), static_cast<int>(max_sweeps));
  double* pv = V.data_ptr<double>();
  for (int64_t i = 0; i < D; ++i)
    for (int64_t j = 0; j < D; ++j) pv[j * D + i] = Z[i * n + j];
  return {w, V, at::scalar_tensor(ok, src.options().dtype(at::kBool))};
}

}  // namespace w2
}  // namespace dale_ext

TORCH_LIBRARY_IMPL(dale_ext, CPU, m) {
  m.impl("_w2_loss_host", &dale_ext::w2::w2_loss_host_cpu);
  m.impl("_symmetric_eigen", &dale_ext::w2::symmetric_eigen_cpu);
}
