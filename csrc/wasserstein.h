// Per-class Gaussian statistics (paper Eqs. 12-14): geometry and checks shared by the CPU and
// CUDA kernels. Features are read in place: element (b, d, p) lies at b*sB + d*sD + p*sP with
// p = y*W + x on an H x W pixel grid ((B, D, H, W) features; (N, D) features are one image of
// 1 x N pixels). Labels and weights are contiguous (B*P).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <limits>
#include <optional>
#include <tuple>

namespace dale_ext {
namespace stats {

struct Geometry {
  int64_t B, D, P;       // images, channels, pixels per image
  int64_t H, W;          // pixel grid, P = H * W
  int64_t sB, sD, sP;    // feature strides
  int64_t C;             // classes
  int64_t ignore_index;
};

// A pixel counts for class `label` when the label is in [0, C) and is not ignore_index.
C10_HOST_DEVICE inline bool counts_for(int64_t label, const Geometry& g) {
  return label >= 0 && label < g.C && label != g.ignore_index;
}

// Validates (features, labels, weights) and returns the geometry; `features` must already be
// in its final memory layout (the caller decides on contiguity). Errors name the argument.
Geometry check_inputs(const at::Tensor& features, const at::Tensor& labels,
                      const std::optional<at::Tensor>& weights, int64_t num_classes,
                      int64_t ignore_index, const char* op);

// Per-class coefficients of the one-pass feature gradient (float64, on the statistics' device):
// dL/dx = w * (scale_c * (Gs_c x) + bias_c), Gs_c = sym(grad_cov_c), scale_c = 2 / n_c,
// bias_c = (grad_mean_c - 2 Gs_c mu_c) / n_c, and for the weight gradient
// gmu_c = Gs_c mu_c and trace_c = <Gs_c, cov_c>. The CUDA path's; the CPU kernel computes the
// same per class in parallel (CpuStatsBackward::set_coefficients), as these serial ATen ops
// were ~15 % of its backward at 9 classes of D = 128.
struct BackwardCoefficients {
  at::Tensor G;      // (C, D, D) symmetrised grad_covs
  at::Tensor scale;  // (C,)
  at::Tensor bias;   // (C, D)
  at::Tensor gmu;    // (C, D)
  at::Tensor trace;  // (C,)
};
BackwardCoefficients backward_coefficients(const at::Tensor& counts, const at::Tensor& means,
                                           const at::Tensor& covs, const at::Tensor& grad_means,
                                           const at::Tensor& grad_covs);

}  // namespace stats

namespace w2 {
// Shared by both implementations, so a class takes the same route and the same null space in each:
// the Cholesky route is taken when S1's factor has min/max diagonal above this (condition number
// below ~1e12; a NaN ratio fails), and an eigenvalue counts as zero at or below pinv_tolerance.
constexpr double kCholeskyMinDiagRatio = 1e-6;
inline double pinv_tolerance(double max_eigenvalue, int64_t D) {
  return max_eigenvalue * static_cast<double>(D) * std::numeric_limits<double>::epsilon();
}

// _gaussian_w2's two implementations, both in float64 and returning (W^2, dW2/dcov1, dW2/dcov2)
// in cov1's dtype (an empty gradient where not wanted); shapes are checked by the op.
// The batched ATen formulation (any device; the CUDA path):
std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_w2_batched(const at::Tensor& mean1, const at::Tensor& cov1,
                                                                    const at::Tensor& mean2, const at::Tensor& cov2,
                                                                    bool cov1_grad, bool cov2_grad);
// The CPU one: a class per task (cpu/gaussian_w2_kernel.cpp).
std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_w2_cpu(const at::Tensor& mean1, const at::Tensor& cov1,
                                                                const at::Tensor& mean2, const at::Tensor& cov2,
                                                                bool cov1_grad, bool cov2_grad);
}  // namespace w2
}  // namespace dale_ext
