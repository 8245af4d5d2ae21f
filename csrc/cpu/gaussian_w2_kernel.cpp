// _gaussian_w2 on the CPU: one class at a time, the classes in parallel (LAPACK's batched calls
// loop serially over the batch). The per-class work is a Cholesky, two products for
// M = L^T S2 L, one eigh, and two products for each wanted gradient; everything else is plain
// loops over one D x D matrix, and the Cholesky-or-eigh decision is taken per class. Against the
// batched ATen formulation (wasserstein.cpp, still the CUDA path) this saved ~20% on two threads
// (benchmarks/results/2026-11-27-cpu-gaussian-w2-lean-ab.txt): its elementwise ops on strided
// D x D views and their dispatch were what remained besides LAPACK and the products.
// Each class is two tasks, taken from shared counters: the decomposition (Cholesky, M, eigh) and
// then the gradient products, so that with 9 classes on 2 threads the thread that has run 4
// decompositions does the others' products while the 5th runs (a static split left it idle for
// a whole class; benchmarks/results/2026-12-07-cpu-gaussian-w2-tasks-ab.txt).
#include "wasserstein.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

namespace dale_ext {
namespace w2 {
namespace {

// dst = 0.5 (src + src^T), both D x D row-major
void symmetrise_into(double* dst, const double* src, int64_t D) {
  for (int64_t i = 0; i < D; ++i) {
    dst[i * D + i] = src[i * D + i];
    for (int64_t j = i + 1; j < D; ++j) dst[i * D + j] = dst[j * D + i] = 0.5 * (src[i * D + j] + src[j * D + i]);
  }
}

// out = I - sym(X X^T) after scaling column j of X (in place) by s[j]
void identity_minus_gram(at::Tensor& X, const double* s, double* out, int64_t D) {
  double* x = X.data_ptr<double>();
  for (int64_t i = 0; i < D; ++i)
    for (int64_t j = 0; j < D; ++j) x[i * D + j] *= s[j];
  const at::Tensor G = at::mm(X, X.t()).contiguous();
  symmetrise_into(out, G.data_ptr<double>(), D);
  for (int64_t k = 0; k < D * D; ++k) out[k] = -out[k];
  for (int64_t i = 0; i < D; ++i) out[i * D + i] += 1.0;
}

// One class by the Cholesky route (see gaussian_w2_batched), in two steps.
struct ClassState {
  bool cholesky = false;  // false: the two-eigh route wrote the class in the first step
  double base = 0.0;      // |m1 - m2|^2 + tr S1 + tr S2
  at::Tensor L, lm, V;    // S1 = L L^T; eigenvalues (clamped at 0) and vectors of M = L^T S2 L
};

// Step 1: Cholesky, M, eigh. Returns false, writing nothing, when S1 is not numerically positive
// definite (condition number above ~1e12): the caller then takes the two-eigh route.
bool w2_decompose(const double* m1, const double* c1, const double* m2, const double* c2, int64_t D,
                  bool want_vectors, ClassState& st) {
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  at::Tensor S1 = at::empty({D, D}, opts), S2 = at::empty({D, D}, opts);
  symmetrise_into(S1.data_ptr<double>(), c1, D);
  symmetrise_into(S2.data_ptr<double>(), c2, D);

  auto [L, info] = at::linalg_cholesky_ex(S1);
  L = L.contiguous();
  if (info.item<int>() != 0) return false;
  const double* l = L.data_ptr<double>();
  double dmin = l[0], dmax = l[0];
  for (int64_t i = 1; i < D; ++i) {
    dmin = std::min(dmin, l[i * D + i]);
    dmax = std::max(dmax, l[i * D + i]);
  }
  if (!(dmin / dmax > kCholeskyMinDiagRatio)) return false;  // NaN fails too

  st.base = 0.0;
  for (int64_t i = 0; i < D; ++i) {
    const double d = m1[i] - m2[i];
    st.base += d * d + S1.data_ptr<double>()[i * D + i] + S2.data_ptr<double>()[i * D + i];
  }
  const at::Tensor T = at::mm(S2, L);
  const at::Tensor LtT = at::mm(L.t(), T).contiguous();
  at::Tensor M = at::empty({D, D}, opts);
  symmetrise_into(M.data_ptr<double>(), LtT.data_ptr<double>(), D);

  if (want_vectors)
    std::tie(st.lm, st.V) = at::linalg_eigh(M);
  else
    st.lm = at::linalg_eigvalsh(M);
  st.lm = st.lm.clamp_min(0).contiguous();
  st.L = std::move(L);
  st.cholesky = true;
  return true;
}

// Step 2: W^2 and the wanted covariance gradients from the decomposition.
void w2_finish(const ClassState& st, int64_t D, bool cov1_grad, bool cov2_grad, double* w2, double* g1,
               double* g2) {
  const double* lam = st.lm.data_ptr<double>();
  double root_sum = 0.0, lmax = 0.0;
  for (int64_t i = 0; i < D; ++i) {
    root_sum += std::sqrt(lam[i]);
    lmax = std::max(lmax, lam[i]);
  }
  *w2 = std::max(st.base - 2.0 * root_sum, 0.0);  // rounding can leave -1e-16 for identical Gaussians

  std::vector<double> s(D);
  // dW2/dS2 = I - L M^{-1/2} L^T = I - W diag(f) W^T with W = L V and f the pseudo-inverse
  // square root (0 on the numerical null space of M)
  if (cov2_grad) {
    const double tol = pinv_tolerance(lmax, D);
    for (int64_t i = 0; i < D; ++i) s[i] = lam[i] > tol ? std::pow(lam[i], -0.25) : 0.0;
    at::Tensor W = at::mm(st.L, st.V).contiguous();
    identity_minus_gram(W, s.data(), g2, D);
  }
  // dW2/dS1 = I - L^{-T} M^{1/2} L^{-1} = I - U diag(sqrt(lm)) U^T with U = L^{-T} V
  if (cov1_grad) {
    for (int64_t i = 0; i < D; ++i) s[i] = std::pow(lam[i], 0.25);
    at::Tensor U = at::linalg_solve_triangular(st.L.t(), st.V, /*upper=*/true).contiguous();
    identity_minus_gram(U, s.data(), g1, D);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_w2_cpu(const at::Tensor& mean1, const at::Tensor& cov1,
                                                                const at::Tensor& mean2, const at::Tensor& cov2,
                                                                bool cov1_grad, bool cov2_grad) {
  const auto D = cov1.size(-1);
  const auto out_dtype = cov1.scalar_type();
  const at::Tensor m1 = mean1.to(at::kDouble).contiguous().view({-1, D}),
                   m2 = mean2.to(at::kDouble).contiguous().view({-1, D});
  const at::Tensor c1 = cov1.to(at::kDouble).contiguous().view({-1, D, D}),
                   c2 = cov2.to(at::kDouble).contiguous().view({-1, D, D});
  const int64_t n = c1.size(0);
  const auto opts = c1.options();
  at::Tensor w2 = at::empty({n}, opts);
  at::Tensor g1 = at::empty({cov1_grad ? n : 0, D, D}, opts), g2 = at::empty({cov2_grad ? n : 0, D, D}, opts);
  double* w2p = w2.data_ptr<double>();
  auto g1_of = [&](int64_t i) { return cov1_grad ? g1.data_ptr<double>() + i * D * D : nullptr; };
  auto g2_of = [&](int64_t i) { return cov2_grad ? g2.data_ptr<double>() + i * D * D : nullptr; };
  auto decompose = [&](int64_t i, ClassState& st) {
    if (w2_decompose(m1.data_ptr<double>() + i * D, c1.data_ptr<double>() + i * D * D, m2.data_ptr<double>() + i * D,
                     c2.data_ptr<double>() + i * D * D, D, cov1_grad || cov2_grad, st))
      return;
    // ill-conditioned S1: eigh on both matrices, pseudo-inverses on the null spaces. Results
    // are written through pointers: a worker thread is not in the caller's inference mode,
    // and an in-place copy into an inference tensor would raise there.
    auto [w, a, b] = gaussian_w2_batched(m1[i], c1[i], m2[i], c2[i], cov1_grad, cov2_grad);
    w2p[i] = w.item<double>();
    if (cov1_grad) std::copy_n(a.contiguous().data_ptr<double>(), D * D, g1_of(i));
    if (cov2_grad) std::copy_n(b.contiguous().data_ptr<double>(), D * D, g2_of(i));
  };
  // Every worker claims decompositions in class order until none is left, then finishing steps
  // in class order, waiting for a class whose decomposition another worker is still running.
  // No deadlock: a class's finish is claimed only after its decomposition was, by a worker that
  // is running it (or ran it, when parallel_for runs the workers one after another). Each class
  // is computed by one thread with the same calls, so the results do not depend on the schedule.
  // The classes go in windows, so that a large batch does not hold every class's L and V (2 D^2
  // doubles) at once: at most 32 MiB of them, and never fewer classes than workers.
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  const int64_t window = std::max<int64_t>(workers, (int64_t{32} << 20) / std::max<int64_t>(1, 16 * D * D));
  std::vector<ClassState> state(std::min(n, window));
  std::vector<std::atomic<bool>> decomposed(state.size());
  for (int64_t i0 = 0; i0 < n; i0 += window) {
    const int64_t m = std::min(window, n - i0);
    for (int64_t k = 0; k < m; ++k) decomposed[k].store(false, std::memory_order_relaxed);
    std::atomic<int64_t> next_decompose{0}, next_finish{0};
    std::atomic<bool> failed{false};  // a worker threw: the others stop waiting (parallel_for rethrows)
    at::parallel_for(0, std::min(workers, m), 1, [&](int64_t w0, int64_t w1) {
      for (int64_t worker = w0; worker < w1; ++worker) {
        for (int64_t k; (k = next_decompose.fetch_add(1)) < m;) {
          try {
            decompose(i0 + k, state[k]);
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
          if (state[k].cholesky) w2_finish(state[k], D, cov1_grad, cov2_grad, w2p + i, g1_of(i), g2_of(i));
          state[k] = ClassState();  // its matrices are not needed any more
        }
      }
    });
  }
  const auto batch = cov1.sizes().slice(0, cov1.dim() - 2);
  const at::Tensor none = at::empty({0}, cov1.options().dtype(out_dtype));
  return {w2.view(batch).to(out_dtype), cov1_grad ? g1.view(cov1.sizes()).to(out_dtype) : none,
          cov2_grad ? g2.view(cov1.sizes()).to(out_dtype) : none};
}

}  // namespace w2
}  // namespace dale_ext
