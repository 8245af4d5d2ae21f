// fuzzy_split: the per-pixel and per-patch arithmetic of paper Eqs. 3-7, written once and
// called by both the CPU loop and the CUDA kernel, so the CPU tests exercise the GPU's math.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <tuple>

namespace dale_ext {
namespace fuzzy {

struct Geometry {
  int64_t B, C, H, W;  // image shape
  int64_t ph, pw;      // patch size (the last row/column of patches may be smaller)
  int64_t Lh, Lw;      // patches per column / row
  int bins;
  double tau;
};

// Bin of a grey level given the float32 sum `s` of a pixel's C channels:
// q = clamp(floor((s / C) * bins), 0, bins - 1); NaN maps to 0 (callers detect it: s != s).
// Branch-free so the CPU row loop vectorises.
C10_HOST_DEVICE inline int bin_of_sum(float s, float C, float bins) {
  float t = (s / C) * bins;
  t = t > 0.f ? t : 0.f;  // negative and NaN -> 0 (the max/min forms vectorise)
  const float last = bins - 1.f;
  t = t < last ? t : last;
  return static_cast<int>(t);  // t >= 0: truncation is floor
}

// uint8: the exact value of floor(mean(x / 255) * bins) from the integer channel sum (the float32
// formula can round an exact bin edge down; this cannot).
C10_HOST_DEVICE inline int bin_of_u8_sum(int64_t s, int64_t C, int bins) {
  const int64_t q = (s * bins) / (255 * C);
  return q >= bins ? bins - 1 : static_cast<int>(q);
}

// Grey-level bin of one pixel (channels `plane` elements apart): g = mean over channels, the
// channels summed in order in float32. NaN sets *nan.
template <typename scalar_t>
C10_HOST_DEVICE inline int grey_bin(const scalar_t* px, int64_t plane, int64_t C, int bins,
                                    bool* nan) {
  float s = 0.f;
  for (int64_t c = 0; c < C; ++c) s += static_cast<float>(px[c * plane]);
  if (s != s) *nan = true;
  return bin_of_sum(s, static_cast<float>(C), static_cast<float>(bins));
}

template <>
C10_HOST_DEVICE inline int grey_bin<uint8_t>(const uint8_t* px, int64_t plane, int64_t C, int bins,
                                             bool* /*nan*/) {
  int64_t s = 0;
  for (int64_t c = 0; c < C; ++c) s += px[c * plane];
  return bin_of_u8_sum(s, C, bins);
}

// A pixel is an edge pixel when one of its 4-neighbours inside the image has another label
// (== skimage.segmentation.find_boundaries(connectivity=1, mode="thick")).
template <typename label_t>
C10_HOST_DEVICE inline bool is_edge(const label_t* lab, int64_t H, int64_t W, int64_t y, int64_t x) {
  const label_t v = lab[y * W + x];
  return (y > 0 && lab[(y - 1) * W + x] != v) || (y + 1 < H && lab[(y + 1) * W + x] != v) ||
         (x > 0 && lab[y * W + x - 1] != v) || (x + 1 < W && lab[y * W + x + 1] != v);
}

// Entropies and edge ratios closer than this are one value: rounding residues (a constant patch's
// ln n - (n ln n) / n can be +4e-16; the CUDA histogram's summation order varies between runs)
// must not be stretched to 1 by Eq. 5. Far below any real difference: a patch of n <= 2^31
// pixels that is not constant has entropy > 1e-8, and distinct edge ratios differ by >= 1/n^2.
constexpr double kTieTolerance = 1e-12;

// Eq. 5: min-max normalisation over an image's patches; 0 everywhere when max == min (up to
// kTieTolerance).
C10_HOST_DEVICE inline double normalise(double v, double lo, double hi) {
  return hi - lo > kTieTolerance ? (v - lo) / (hi - lo) : 0.0;
}

// Eq. 6 with the soft complement for the non-fuzzy mask (DESIGN.md, departure 2).
C10_HOST_DEVICE inline void soft_masks(double m, double tau, float* fuzzy, float* nonfuzzy) {
  *fuzzy = static_cast<float>(m > tau ? 1.0 : m);
  *nonfuzzy = static_cast<float>(m < tau ? 1.0 : 1.0 - m);
}

// Shannon entropy from sum_v c_v ln c_v over a patch of n pixels: ln n - (1/n) sum c ln c.
C10_HOST_DEVICE inline double entropy_from_clogc(double sum_clogc, int64_t n) {
  const double e = ::log(static_cast<double>(n)) - sum_clogc / static_cast<double>(n);
  return e > kTieTolerance ? e : 0.0;  // a constant patch gives 0 up to a rounding residue
}

// Masked image value: mask * image, uint8 scaled to [0, 1] first; computed in float (double for
// float64 images) and stored in the output dtype.
template <typename scalar_t>
struct MaskedPixel {
  using out_t = scalar_t;
  C10_HOST_DEVICE static out_t apply(float mask, scalar_t v) {
    return static_cast<out_t>(mask * static_cast<float>(v));
  }
};
template <>
struct MaskedPixel<double> {
  using out_t = double;
  C10_HOST_DEVICE static double apply(float mask, double v) { return static_cast<double>(mask) * v; }
};
template <>
struct MaskedPixel<uint8_t> {
  using out_t = float;
  C10_HOST_DEVICE static float apply(float mask, uint8_t v) {
    return mask * (static_cast<float>(v) / 255.f);
  }
};

C10_HOST_DEVICE inline int64_t patch_extent(int64_t index, int64_t size, int64_t total) {
  const int64_t start = index * size;
  return (start + size <= total ? size : total - start);
}

// Validates the inputs of every kernel (CPU and CUDA); errors name the argument.
// Returns the geometry; `label` is accepted as (B, H, W) or (B, 1, H, W).
Geometry check_inputs(const at::Tensor& image, const at::Tensor& label, at::IntArrayRef patch_size,
                      double tau, int64_t bins);

// The label map the kernels read: (B, H, W), contiguous, with unsigned 16/32/64-bit labels viewed
// as the signed type of their width (labels are only compared for equality, bit for bit).
at::Tensor label_map(const at::Tensor& label);

// Output tensors, allocated once by the caller's device.
struct Outputs {
  at::Tensor entropy, edge_ratio, score;     // (B, Lh, Lw) float32
  at::Tensor fuzzy_mask, nonfuzzy_mask;      // (B, 1, H, W) float32
  at::Tensor fuzzy_image, nonfuzzy_image;    // (B, C, H, W) image dtype, float32 for uint8
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
  as_tuple() const {
    return {entropy, edge_ratio, score, fuzzy_mask, nonfuzzy_mask, fuzzy_image, nonfuzzy_image};
  }
};
Outputs allocate_outputs(const at::Tensor& image, const Geometry& g);

}  // namespace fuzzy
}  // namespace dale_ext
