// fuzzy_split: schema and the input checks shared by the CPU and CUDA kernels.
#include "fuzzy_split.h"

#include "cpu/output_cache_tensor.h"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace dale_ext {
namespace fuzzy {

namespace {
std::string shape_str(const at::Tensor& t) { return c10::str(t.sizes()); }
}  // namespace

Geometry check_inputs(const at::Tensor& image, const at::Tensor& label, at::IntArrayRef patch_size,
                      double tau, int64_t bins) {
  TORCH_CHECK_VALUE(image.dim() == 4, "fuzzy_split: `image` must be 4-D (B, C, H, W); got shape ",
                    shape_str(image));
  const auto dt = image.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16 ||
                       dt == at::kByte,
                   "fuzzy_split: `image` must be float32, float64, float16, bfloat16 or uint8; got ",
                   dt);
  const int64_t B = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  TORCH_CHECK_VALUE(C >= 1 && H >= 1 && W >= 1,
                    "fuzzy_split: `image` needs at least one channel, row and column; got shape ",
                    shape_str(image));
  TORCH_CHECK_VALUE(
      label.dim() == 3 || (label.dim() == 4 && label.size(1) == 1),
      "fuzzy_split: `label` must be (B, H, W) or (B, 1, H, W); got shape ", shape_str(label));
  TORCH_CHECK_VALUE(label.size(0) == B && label.size(-2) == H && label.size(-1) == W,
                    "fuzzy_split: `label` shape ", shape_str(label),
                    " does not match `image` (B, H, W) = (", B, ", ", H, ", ", W, ")");
  TORCH_CHECK_TYPE(at::isIntegralType(label.scalar_type(), /*includeBool=*/true),
                   "fuzzy_split: `label` must be an integer or bool class map; got ",
                   label.scalar_type());
  TORCH_CHECK_VALUE(image.device() == label.device(),
                    "fuzzy_split: `image` and `label` must be on the same device; got ",
                    image.device(), " and ", label.device());
  TORCH_CHECK_VALUE(patch_size.size() == 2, "fuzzy_split: `patch_size` must have 2 entries (ph, pw)");
  const int64_t ph = patch_size[0], pw = patch_size[1];
  TORCH_CHECK_VALUE(ph >= 1 && pw >= 1 && ph <= H && pw <= W,
                    "fuzzy_split: `patch_size` must be within [1, (H, W)] = [1, (", H, ", ", W,
                    ")]; got (", ph, ", ", pw, ")");
  TORCH_CHECK_VALUE(bins >= 2 && bins <= 65536, "fuzzy_split: `bins` must be in [2, 65536]; got ",
                    bins);
  TORCH_CHECK_VALUE(tau >= 0.0 && tau <= 1.0, "fuzzy_split: `tau` must be in [0, 1]; got ", tau);
  Geometry g;
  g.B = B;
  g.C = C;
  g.H = H;
  g.W = W;
  g.ph = ph;
  g.pw = pw;
  g.Lh = (H + ph - 1) / ph;
  g.Lw = (W + pw - 1) / pw;
  g.bins = static_cast<int>(bins);
  g.tau = tau;
  return g;
}

at::Tensor label_map(const at::Tensor& label) {
  at::Tensor l = (label.dim() == 4 ? label.squeeze(1) : label).contiguous();
  switch (l.scalar_type()) {
    case at::kUInt16: return l.view(at::kShort);
    case at::kUInt32: return l.view(at::kInt);
    case at::kUInt64: return l.view(at::kLong);
    default: return l;
  }
}

Outputs allocate_outputs(const at::Tensor& image, const Geometry& g) {
  const auto f32 = image.options().dtype(at::kFloat);
  const auto img_opts = image.scalar_type() == at::kByte ? f32 : image.options();
  const bool cpu = image.device().is_cpu();
  // the four pixel-resolution outputs are large and written on every call: on the CPU they
  // reuse freed blocks (cpu/output_cache.h)
  auto big = [&](at::IntArrayRef sizes, const at::TensorOptions& opts) {
    return cpu ? cpu::empty_cached(sizes, opts.dtype().toScalarType()) : at::empty(sizes, opts);
  };
  Outputs o;
  o.entropy = at::empty({g.B, g.Lh, g.Lw}, f32);
  o.edge_ratio = at::empty({g.B, g.Lh, g.Lw}, f32);
  o.score = at::empty({g.B, g.Lh, g.Lw}, f32);
  o.fuzzy_mask = big({g.B, 1, g.H, g.W}, f32);
  o.nonfuzzy_mask = big({g.B, 1, g.H, g.W}, f32);
  o.fuzzy_image = big({g.B, g.C, g.H, g.W}, img_opts);
  o.nonfuzzy_image = big({g.B, g.C, g.H, g.W}, img_opts);
  return o;
}

}  // namespace fuzzy
}  // namespace dale_ext

TORCH_LIBRARY_FRAGMENT(dale_ext, m) {
  m.def(
      "fuzzy_split(Tensor image, Tensor label, int[2] patch_size, float tau, int bins) -> "
      "(Tensor entropy, Tensor edge_ratio, Tensor score, Tensor fuzzy_mask, Tensor nonfuzzy_mask, "
      "Tensor fuzzy_image, Tensor nonfuzzy_image)");
}
