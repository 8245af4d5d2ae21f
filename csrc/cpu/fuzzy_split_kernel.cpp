// fuzzy_split, CPU: per-patch histogram entropy + edge ratio, then one write pass per image.
// When the batch has at least as many images as threads, one task handles a whole image
// (statistics, normalisation, writes) so the image is re-read from cache, not memory.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <cmath>
#include <vector>

#include "cpu/fuzzy_rows.h"
#include "fuzzy_split.h"

namespace dale_ext {
namespace fuzzy {
namespace {

template <typename scalar_t, typename label_t>
struct CpuFuzzySplit {
  using out_t = typename MaskedPixel<scalar_t>::out_t;
  Geometry g;
  const scalar_t* img;
  const label_t* lab;
  Outputs* out;
  std::vector<double> r64, e64;     // per-patch entropy and edge ratio, full precision
  std::vector<float> fm, nm;        // per-patch soft masks
  std::vector<double> clogc;        // c ln c for c = 0 .. ph*pw
  std::vector<double> dclogc;       // clogc[c + 1] - clogc[c]
  std::vector<uint16_t> u8_table;   // uint8: channel sum -> bin, exact (grey_bin<uint8_t>)
  std::atomic<bool> nan{false};
  const cpu::FuzzyRowKernels& rows = cpu::fuzzy_row_kernels();
  // Outputs larger than this are written with non-temporal stores: they would not stay in
  // cache for the caller anyway, and streaming skips reading each line before overwriting it
  // (~40 % less write time for the 38.5 MB of a 24 x 3 x 224 x 224 float32 batch here).
  static constexpr int64_t kStreamBytes = int64_t{8} << 20;
  bool stream = false;

  struct Scratch {
    std::vector<int32_t> hist;
    std::vector<uint16_t> q;         // bins of one strip (ph x W)
    std::vector<float> s;            // one row of channel sums (float16, bfloat16, float64 images)
    std::vector<int32_t> col_edges;  // edge pixels per column of the strip
    std::vector<float> frow, nrow;   // one row of mask values
    explicit Scratch(const Geometry& g)
        : hist(g.bins, 0), q(g.ph * g.W), s(g.W), col_edges(g.W), frow(g.W), nrow(g.W) {}
  };

  // output pointers, taken once (data_ptr checks its type on every call)
  float *fmask_, *nmask_;
  out_t *fimg_, *nimg_;

  CpuFuzzySplit(const Geometry& g_, const scalar_t* img_, const label_t* lab_, Outputs* out_)
      : g(g_), img(img_), lab(lab_), out(out_), fmask_(out_->fuzzy_mask.data_ptr<float>()),
        nmask_(out_->nonfuzzy_mask.data_ptr<float>()), fimg_(out_->fuzzy_image.template data_ptr<out_t>()),
        nimg_(out_->nonfuzzy_image.template data_ptr<out_t>()) {
    const int64_t n = g.B * g.Lh * g.Lw;
    r64.resize(n);
    e64.resize(n);
    fm.resize(n);
    nm.resize(n);
    const int64_t out_bytes = out->fuzzy_image.nbytes() * 2 + out->fuzzy_mask.nbytes() * 2;
    stream = out_bytes > kStreamBytes;
    const int64_t cmax = g.ph * g.pw;
    clogc.resize(cmax + 1);
    clogc[0] = 0.0;
    for (int64_t c = 1; c <= cmax; ++c) clogc[c] = c * std::log(static_cast<double>(c));
    dclogc.resize(cmax);
    for (int64_t c = 0; c < cmax; ++c) dclogc[c] = clogc[c + 1] - clogc[c];
    if constexpr (std::is_same_v<scalar_t, uint8_t>) {
      u8_table.resize(255 * g.C + 1);
      for (int64_t v = 0; v <= 255 * g.C; ++v) u8_table[v] = static_cast<uint16_t>(bin_of_u8_sum(v, g.C, g.bins));
    }
  }

  // Grey-level bins of one image row into q[0, W): grey_bin()'s arithmetic (fuzzy_split.h), which
  // the CUDA kernel calls per pixel; float32 and uint8 rows go to the per-ISA row kernels.
  void row_bins(const scalar_t* src, int64_t plane, float* s, uint16_t* q, bool* saw_nan) {
    if constexpr (std::is_same_v<scalar_t, uint8_t>) {
      rows.bins_u8(src, plane, g.C, g.W, g.bins, u8_table.data(), q);
    } else if constexpr (std::is_same_v<scalar_t, float>) {
      if (rows.bins_f32(src, plane, g.C, g.W, g.bins, q)) *saw_nan = true;
    } else {
      for (int64_t x = 0; x < g.W; ++x) s[x] = static_cast<float>(src[x]);
      for (int64_t c = 1; c < g.C; ++c)
        for (int64_t x = 0; x < g.W; ++x) s[x] += static_cast<float>(src[c * plane + x]);
      const float Cf = static_cast<float>(g.C), bf = static_cast<float>(g.bins);
      int nan_seen = 0;
      for (int64_t x = 0; x < g.W; ++x) nan_seen |= (s[x] != s[x]);
      for (int64_t x = 0; x < g.W; ++x) q[x] = static_cast<uint16_t>(bin_of_sum(s[x], Cf, bf));
      if (nan_seen) *saw_nan = true;
    }
  }

  // Edge flags of row y (see is_edge()) added to col[0, W); labels compared by their bits.
  void row_edges(const label_t* lb, int64_t y, int32_t* col) {
    using bits_t = std::conditional_t<sizeof(label_t) == 1, uint8_t,
                   std::conditional_t<sizeof(label_t) == 2, uint16_t,
                   std::conditional_t<sizeof(label_t) == 4, uint32_t, uint64_t>>>;
    static_assert(sizeof(bits_t) == sizeof(label_t), "label width");
    const auto* cur = reinterpret_cast<const bits_t*>(lb + y * g.W);
    const auto* up = y > 0 ? cur - g.W : cur;  // out-of-image neighbours: the pixel itself
    const auto* down = y + 1 < g.H ? cur + g.W : cur;
    rows.edge_counts(up, cur, down, g.W, col);
  }

  // Statistics of one strip of patches (patch row i of image b). `hist` has g.bins zeros on
  // entry and on exit.
  void stats_strip(int64_t b, int64_t i, Scratch& t) {
    const int64_t plane = g.H * g.W;
    const int64_t y0 = i * g.ph, hh = patch_extent(i, g.ph, g.H);
    const scalar_t* im = img + b * g.C * plane;
    const label_t* lb = lab + b * plane;
    bool saw_nan = false;
    int32_t* col = t.col_edges.data();  // edge pixels of each column of the strip
    std::fill(col, col + g.W, 0);
    for (int64_t r = 0; r < hh; ++r) {
      const int64_t y = y0 + r;
      row_bins(im + y * g.W, plane, t.s.data(), t.q.data() + r * g.W, &saw_nan);
      row_edges(lb, y, col);
    }
    if (saw_nan) nan.store(true, std::memory_order_relaxed);
    for (int64_t j = 0; j < g.Lw; ++j) {
      const int64_t x0 = j * g.pw, ww = patch_extent(j, g.pw, g.W);
      int64_t edges = 0;
      for (int64_t x = x0; x < x0 + ww; ++x) edges += col[x];
      const double sum = rows.patch_clogc(t.q.data() + x0, g.W, hh, ww, t.hist.data(), clogc.data(),
                                          dclogc.data());
      const int64_t n = hh * ww;
      const int64_t p = (b * g.Lh + i) * g.Lw + j;
      r64[p] = entropy_from_clogc(sum, n);
      e64[p] = static_cast<double>(edges) / static_cast<double>(n);
    }
  }

  // Eq. 5-6 over the patches of image b.
  void normalise_image(int64_t b) {
    const int64_t L = g.Lh * g.Lw, p0 = b * L;
    double rlo = r64[p0], rhi = r64[p0], elo = e64[p0], ehi = e64[p0];
    for (int64_t p = p0 + 1; p < p0 + L; ++p) {
      rlo = std::min(rlo, r64[p]);
      rhi = std::max(rhi, r64[p]);
      elo = std::min(elo, e64[p]);
      ehi = std::max(ehi, e64[p]);
    }
    float* ent = out->entropy.data_ptr<float>();
    float* edr = out->edge_ratio.data_ptr<float>();
    float* sco = out->score.data_ptr<float>();
    for (int64_t p = p0; p < p0 + L; ++p) {
      const double m = std::max(normalise(r64[p], rlo, rhi), normalise(e64[p], elo, ehi));
      ent[p] = static_cast<float>(r64[p]);
      edr[p] = static_cast<float>(e64[p]);
      sco[p] = static_cast<float>(m);
      soft_masks(m, g.tau, &fm[p], &nm[p]);
    }
  }

  void write_strip(int64_t b, int64_t i, Scratch& t) {
    const int64_t plane = g.H * g.W, W = g.W;
    const int64_t y0 = i * g.ph, hh = patch_extent(i, g.ph, g.H);
    float* frow = t.frow.data();
    float* nrow = t.nrow.data();
    for (int64_t j = 0; j < g.Lw; ++j) {
      const int64_t p = (b * g.Lh + i) * g.Lw + j;
      const int64_t x0 = j * g.pw, ww = patch_extent(j, g.pw, g.W);
      std::fill(frow + x0, frow + x0 + ww, fm[p]);
      std::fill(nrow + x0, nrow + x0 + ww, nm[p]);
    }
    for (int64_t r = 0; r < hh; ++r) {
      const int64_t o = b * plane + (y0 + r) * W;
      rows.copy_f32(frow, fmask_ + o, W, stream);
      rows.copy_f32(nrow, nmask_ + o, W, stream);
      for (int64_t c = 0; c < g.C; ++c) {
        const int64_t oc = (b * g.C + c) * plane + (y0 + r) * W;
        const scalar_t* src = img + oc;
        if constexpr (std::is_same_v<scalar_t, float>) {
          rows.mask_f32(src, frow, nrow, fimg_ + oc, nimg_ + oc, W, stream);
        } else if constexpr (std::is_same_v<scalar_t, uint8_t>) {
          rows.mask_u8(src, frow, nrow, fimg_ + oc, nimg_ + oc, W, stream);
        } else {
          out_t* fd = fimg_ + oc;
          out_t* nd = nimg_ + oc;
          for (int64_t x = 0; x < W; ++x) {
            fd[x] = MaskedPixel<scalar_t>::apply(frow[x], src[x]);
            nd[x] = MaskedPixel<scalar_t>::apply(nrow[x], src[x]);
          }
        }
      }
    }
  }

  void run() {
    const int64_t threads = at::get_num_threads();
    if (g.B >= threads) {
      // One image per task: statistics, normalisation and writes while the image is cached.
      at::parallel_for(0, g.B, 1, [&](int64_t begin, int64_t end) {
        Scratch t(g);
        for (int64_t b = begin; b < end; ++b) {
          for (int64_t i = 0; i < g.Lh; ++i) stats_strip(b, i, t);
          normalise_image(b);
          for (int64_t i = 0; i < g.Lh; ++i) write_strip(b, i, t);
        }
        if (stream) rows.fence();
      });
    } else {
      at::parallel_for(0, g.B * g.Lh, 1, [&](int64_t begin, int64_t end) {
        Scratch t(g);
        for (int64_t s = begin; s < end; ++s) stats_strip(s / g.Lh, s % g.Lh, t);
      });
      for (int64_t b = 0; b < g.B; ++b) normalise_image(b);
      at::parallel_for(0, g.B * g.Lh, 1, [&](int64_t begin, int64_t end) {
        Scratch t(g);
        for (int64_t s = begin; s < end; ++s) write_strip(s / g.Lh, s % g.Lh, t);
        if (stream) rows.fence();
      });
    }
    TORCH_CHECK_VALUE(!nan.load(), "fuzzy_split: `image` contains NaN");
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
fuzzy_split_cpu(const at::Tensor& image_, const at::Tensor& label_, at::IntArrayRef patch_size,
                double tau, int64_t bins) {
  const Geometry g = check_inputs(image_, label_, patch_size, tau, bins);
  TORCH_CHECK_VALUE(image_.device().is_cpu(), "fuzzy_split (CPU kernel): `image` must be on the CPU");
  const at::Tensor image = image_.contiguous();
  const at::Tensor label = label_map(label_);
  Outputs out = allocate_outputs(image, g);
  if (g.B == 0) return out.as_tuple();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, image.scalar_type(), "fuzzy_split_cpu", [&] {
    using image_t = scalar_t;
    AT_DISPATCH_INTEGRAL_TYPES_AND(at::kBool, label.scalar_type(), "fuzzy_split_cpu_label", [&] {
      CpuFuzzySplit<image_t, scalar_t> k(g, image.data_ptr<image_t>(), label.data_ptr<scalar_t>(), &out);
      k.run();
    });
  });
  return out.as_tuple();
}

}  // namespace
}  // namespace fuzzy
}  // namespace dale_ext

TORCH_LIBRARY_IMPL(dale_ext, CPU, m) { m.impl("fuzzy_split", &dale_ext::fuzzy::fuzzy_split_cpu); }
