// Wasserstein alignment ops: schemas, the checks and small float64 matrix steps shared by the CPU
// and CUDA kernels, and _gaussian_w2, the matrix functions in float64: its checks, and the batched
// ATen formulation that runs on CUDA (cuSOLVER) and for an ill-conditioned class on the CPU (the
// CPU's per-class loop is cpu/gaussian_w2_kernel.cpp).
#include "wasserstein.h"

#include <ATen/ATen.h>
#include <torch/library.h>


namespace dale_ext {
namespace stats {

namespace {
bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}
}  // namespace

Geometry check_inputs(const at::Tensor& features, const at::Tensor& labels,
                      const std::optional<at::Tensor>& weights, int64_t num_classes,
                      int64_t ignore_index, const char* op) {
  TORCH_CHECK_VALUE(features.dim() == 4 || features.dim() == 2, op,
                    ": `features` must be (B, D, H, W) or (N, D); got shape ", features.sizes());
  TORCH_CHECK_TYPE(is_float_type(features.scalar_type()), op,
                   ": `features` must be float32, float64, float16 or bfloat16; got ", features.scalar_type());
  TORCH_CHECK_TYPE(at::isIntegralType(labels.scalar_type(), /*includeBool=*/true), op,
                   ": `labels` must be an integer class map; got ", labels.scalar_type());
  TORCH_CHECK_VALUE(num_classes >= 1, op, ": `num_classes` must be >= 1; got ", num_classes);
  TORCH_CHECK_VALUE(labels.device() == features.device(), op,
                    ": `labels` must be on the device of `features` (", features.device(), "); got ",
                    labels.device());
  Geometry g;
  g.C = num_classes;
  g.ignore_index = ignore_index;
  if (features.dim() == 4) {
    const auto B = features.size(0), D = features.size(1), H = features.size(2), W = features.size(3);
    TORCH_CHECK_VALUE(labels.dim() == 3 && labels.size(0) == B && labels.size(1) == H && labels.size(2) == W,
                      op, ": `labels` must be (B, H, W) = (", B, ", ", H, ", ", W, ") for features of shape ",
                      features.sizes(), "; got ", labels.sizes());
    // (a size-1 dimension's stride is arbitrary in a contiguous tensor, and never used here)
    TORCH_CHECK_VALUE(features.numel() == 0 || ((W == 1 || features.stride(3) == 1) && (H == 1 || features.stride(2) == W)), op,
                      ": internal error: `features` must be contiguous over (H, W)");
    g.B = B;
    g.D = D;
    g.P = H * W;
    g.H = H;
    g.W = W;
    g.sB = features.stride(0);
    g.sD = features.stride(1);
    g.sP = 1;
  } else {
    const auto N = features.size(0), D = features.size(1);
    TORCH_CHECK_VALUE(labels.dim() == 1 && labels.size(0) == N, op, ": `labels` must be (N,) = (", N,
                      ",) for features of shape ", features.sizes(), "; got ", labels.sizes());
    g.B = 1;
    g.D = D;
    g.P = N;
    g.H = 1;
    g.W = N;
    g.sB = 0;
    g.sD = features.stride(1);
    g.sP = features.stride(0);
  }
  TORCH_CHECK_VALUE(g.D >= 1, op, ": `features` needs at least one channel; got shape ", features.sizes());
  if (weights.has_value()) {
    const auto& w = *weights;
    TORCH_CHECK_TYPE(is_float_type(w.scalar_type()), op, ": `weights` must be a floating tensor; got ",
                     w.scalar_type());
    TORCH_CHECK_VALUE(w.sizes() == labels.sizes(), op, ": `weights` must have the shape of `labels` ",
                      labels.sizes(), "; got ", w.sizes());
    TORCH_CHECK_VALUE(w.device() == features.device(), op, ": `weights` must be on the device of `features` (",
                      features.device(), "); got ", w.device());
  }
  return g;
}

BackwardCoefficients backward_coefficients(const at::Tensor& counts, const at::Tensor& means,
                                           const at::Tensor& covs, const at::Tensor& grad_means,
                                           const at::Tensor& grad_covs) {
  BackwardCoefficients k;
  const at::Tensor pos = counts > 0;
  const at::Tensor safe = at::where(pos, counts, at::ones_like(counts));
  k.G = 0.5 * (grad_covs + grad_covs.transpose(1, 2));
  k.gmu = at::matmul(k.G, means.unsqueeze(2)).squeeze(2);
  k.scale = at::where(pos, 2.0 / safe, at::zeros_like(safe));
  k.bias = at::where(pos.unsqueeze(1), (grad_means - 2.0 * k.gmu) / safe.unsqueeze(1), at::zeros_like(grad_means));
  k.trace = (k.G * covs).sum({1, 2});
  return k;
}

}  // namespace stats

namespace w2 {
namespace {

at::Tensor sym(const at::Tensor& a) { return 0.5 * (a + a.transpose(-1, -2)); }

// V diag(f) V^T
at::Tensor eig_fn(const at::Tensor& vecs, const at::Tensor& f) {
  return at::matmul(vecs * f.unsqueeze(-2), vecs.transpose(-1, -2));
}

// 1/sqrt(v) on the numerical range, 0 on the null space (a pseudo-inverse square root).
at::Tensor pinv_rsqrt(const at::Tensor& vals) {
  const at::Tensor tol = std::get<0>(vals.max(-1, true)).clamp_min(0) * pinv_tolerance(1.0, vals.size(-1));
  const at::Tensor ok = vals > tol;
  return at::where(ok, at::where(ok, vals, at::ones_like(vals)).rsqrt(), at::zeros_like(vals));
}

}  // namespace

namespace {
void check_w2_shapes(const at::Tensor& mean1, const at::Tensor& cov1, const at::Tensor& mean2,
                     const at::Tensor& cov2) {
  const char* op = "gaussian_w2";
  TORCH_CHECK_VALUE(cov1.dim() >= 2 && cov1.size(-1) == cov1.size(-2), op,
                    ": `cov1` must be (..., D, D); got ", cov1.sizes());
  TORCH_CHECK_VALUE(cov2.sizes() == cov1.sizes(), op, ": `cov2` must have the shape of `cov1` ", cov1.sizes(),
                    "; got ", cov2.sizes());
  // the means' leading dims are the covariances' (as dale_ext.gaussian_w2 checks): the CPU
  // kernel indexes them per class
  const auto want = cov1.sizes().slice(0, cov1.dim() - 1);
  TORCH_CHECK_VALUE(mean1.sizes() == want && mean2.sizes() == want, op, ": `mean1`/`mean2` must have shape ",
                    want, " (the covariances' ", cov1.sizes(), " without the last dim); got ", mean1.sizes(),
                    " and ", mean2.sizes());
  for (const auto* t : {&mean1, &mean2, &cov2})
    TORCH_CHECK_VALUE(t->device() == cov1.device(), op, ": all inputs must be on the device of `cov1` (",
                      cov1.device(), "); got ", t->device());
}
}  // namespace

// CPU: one class at a time, classes in parallel (cpu/gaussian_w2_kernel.cpp); CUDA (the
// matrix_device="cuda" path): the batched ATen formulation below, on cuSOLVER.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_w2(const at::Tensor& mean1, const at::Tensor& cov1,
                                                            const at::Tensor& mean2, const at::Tensor& cov2,
                                                            bool cov1_grad, bool cov2_grad) {
  check_w2_shapes(mean1, cov1, mean2, cov2);
  if (cov1.device().is_cpu() && cov1.numel() > 0) return gaussian_w2_cpu(mean1, cov1, mean2, cov2, cov1_grad, cov2_grad);
  return gaussian_w2_batched(mean1, cov1, mean2, cov2, cov1_grad, cov2_grad);
}

// W^2 = |m1 - m2|^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2}) in float64, with the gradient
// matrices dW2/dS2 = I - S1^{1/2} M^{-1/2} S1^{1/2} and dW2/dS1 = I - S1^{-1/2} M^{1/2} S1^{-1/2}.
// When S1 = L L^T is well conditioned, M is replaced by L^T S2 L (same eigenvalues) and every
// A^{1/2} X A^{1/2} by L X L^T: one Cholesky instead of one eigh. Otherwise eigh on both, with
// pseudo-inverses on null spaces.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_w2_batched(const at::Tensor& mean1, const at::Tensor& cov1,
                                                                    const at::Tensor& mean2, const at::Tensor& cov2,
                                                                    bool cov1_grad, bool cov2_grad) {
  const auto D = cov1.size(-1);
  const auto out_dtype = cov1.scalar_type();
  const at::Tensor m1 = mean1.to(at::kDouble), m2 = mean2.to(at::kDouble);
  const at::Tensor S1 = sym(cov1.to(at::kDouble)), S2 = sym(cov2.to(at::kDouble));
  const at::Tensor diff = m1 - m2;
  const at::Tensor base = (diff * diff).sum(-1) + S1.diagonal(0, -2, -1).sum(-1) + S2.diagonal(0, -2, -1).sum(-1);
  const at::Tensor eye = at::eye(D, S1.options());

  at::Tensor L, info;
  std::tie(L, info) = at::linalg_cholesky_ex(S1);
  // Cholesky succeeded everywhere and the condition number of S1 is below 1e12 (ratio of L's
  // diagonal extremes above 1e-6; NaN where the factorisation failed): one host sync for both.
  bool use_cholesky = false;
  if (S1.numel() > 0) {
    const at::Tensor diag = L.diagonal(0, -2, -1);
    const at::Tensor ratio = std::get<0>(diag.min(-1)) / std::get<0>(diag.max(-1));
    use_cholesky = (info.eq(0).all() & ratio.gt(kCholeskyMinDiagRatio).all()).item<bool>();
  }

  at::Tensor w2, g1, g2;
  if (use_cholesky) {
    const at::Tensor Lt = L.transpose(-1, -2);
    const at::Tensor M = sym(at::matmul(Lt, at::matmul(S2, L)));
    at::Tensor lm, V;
    // without gradients the eigenvalues suffice (2-3x cheaper than eigh with vectors on a CPU)
    if (cov1_grad || cov2_grad)
      std::tie(lm, V) = at::linalg_eigh(M);
    else
      lm = at::linalg_eigvalsh(M);
    lm = lm.clamp_min(0);
    w2 = base - 2.0 * lm.sqrt().sum(-1);
    // L M^{-1/2} L^T = W diag(f) W^T with W = L V: two products rather than three
    if (cov2_grad) {
      const at::Tensor W = at::matmul(L, V);
      g2 = eye - sym(at::matmul(W * pinv_rsqrt(lm).unsqueeze(-2), W.transpose(-1, -2)));
    }
    // L^{-T} M^{1/2} L^{-1} = U diag(sqrt(lm)) U^T with U = L^{-T} V: one triangular solve
    if (cov1_grad) {
      const at::Tensor U = at::linalg_solve_triangular(Lt, V, /*upper=*/true);
      g1 = eye - sym(at::matmul(U * lm.sqrt().unsqueeze(-2), U.transpose(-1, -2)));
    }
  } else {
    at::Tensor l1, V1, lm, Vm;
    std::tie(l1, V1) = at::linalg_eigh(S1);
    l1 = l1.clamp_min(0);
    const at::Tensor a_half = eig_fn(V1, l1.sqrt());
    const at::Tensor M = sym(at::matmul(a_half, at::matmul(S2, a_half)));
    if (cov1_grad || cov2_grad)
      std::tie(lm, Vm) = at::linalg_eigh(M);
    else
      lm = at::linalg_eigvalsh(M);
    lm = lm.clamp_min(0);
    w2 = base - 2.0 * lm.sqrt().sum(-1);
    if (cov2_grad) g2 = eye - sym(at::matmul(a_half, at::matmul(eig_fn(Vm, pinv_rsqrt(lm)), a_half)));
    if (cov1_grad) {
      const at::Tensor a_ihalf = eig_fn(V1, pinv_rsqrt(l1));
      g1 = eye - sym(at::matmul(a_ihalf, at::matmul(eig_fn(Vm, lm.sqrt()), a_ihalf)));
    }
  }
  // W^2 >= 0; rounding can leave -1e-16 for identical Gaussians
  w2 = w2.clamp_min(0).to(out_dtype);
  const at::Tensor none = at::empty({0}, cov1.options().dtype(out_dtype));
  return {w2, cov1_grad ? g1.to(out_dtype) : none, cov2_grad ? g2.to(out_dtype) : none};
}

}  // namespace w2
}  // namespace dale_ext

TORCH_LIBRARY_FRAGMENT(dale_ext, m) {
  m.def(
      "class_gaussians(Tensor features, Tensor labels, int num_classes, Tensor? weights, int ignore_index) -> "
      "(Tensor counts, Tensor means, Tensor covs)");
  // class_gaussians without waiting for its checks: status (2,) bool on the features' device,
  // [0] a counted pixel's weight is negative or NaN, [1] the statistics are not finite. The caller
  // must read it (dale_ext.wasserstein_loss does, with its one copy to the host); kernels that
  // need no device sync to check (CPU) raise at once and return false flags.
  m.def(
      "_class_gaussians_with_status(Tensor features, Tensor labels, int num_classes, Tensor? weights, "
      "int ignore_index) -> (Tensor counts, Tensor means, Tensor covs, Tensor status)");
  m.def(
      "_class_gaussians_backward(Tensor grad_counts, Tensor grad_means, Tensor grad_covs, Tensor features, "
      "Tensor labels, Tensor? weights, Tensor counts, Tensor means, Tensor covs, int num_classes, "
      "int ignore_index, bool features_grad, bool weights_grad) -> (Tensor grad_features, Tensor grad_weights)");
  m.def(
      "_gaussian_w2(Tensor mean1, Tensor cov1, Tensor mean2, Tensor cov2, bool cov1_grad, bool cov2_grad) -> "
      "(Tensor w2, Tensor grad_cov1, Tensor grad_cov2)");
  // wasserstein_loss's host part from both sides' float64 statistics, in one call (CPU only):
  // the regularised covariances (target + perturbation 11^T + eps I, input + eps I), W^2 of the
  // classes whose counts reach min_count on both sides (the others are skipped: 0, no gradient),
  // the reduced loss, and the gradients of the loss for an incoming gradient of 1:
  // grad_mu_t (= -grad_mu_in) and the covariance gradients of the sides asked for.
  m.def(
      "_w2_loss_host(Tensor n_in, Tensor mu_in, Tensor cov_in, Tensor n_t, Tensor mu_t, Tensor cov_t, "
      "float perturbation, float eps, float min_count, str reduction, bool need_in, bool need_t) -> "
      "(Tensor loss, Tensor valid, Tensor grad_mu_t, Tensor grad_cov_in, Tensor grad_cov_t)");
  // the CPU eigensolver of _gaussian_w2's Cholesky route on one float64 matrix, for the tests
  m.def("_symmetric_eigen(Tensor matrix, int max_sweeps) -> (Tensor eigenvalues, Tensor eigenvectors, Tensor converged)");
}

TORCH_LIBRARY_IMPL(dale_ext, CompositeExplicitAutograd, m) { m.impl("_gaussian_w2", &dale_ext::w2::gaussian_w2); }
