// class_gaussians on the CPU.
//
// Features are read in place (NCHW, or (N, D)) strip by strip: a strip is a band of whole
// image rows (or part of a row when rows are long), read channel by channel in contiguous
// segments (streaming) into a buffer that stays in L2, in the compute type (float; double for
// float64 features). Within a strip, each class's pixels form runs (lesions are blobs); the
// runs are copied, centred and weighted into a compact D x m matrix, so each pixel counts for
// its own class only (no one-hot) and the dense micro-kernels see long rows.
//   one pass: each class's pixels are collected across strips into a block (up to one strip's
//   worth), which is centred by its own mean, multiplied by a symmetric micro-kernel (upper
//   triangle), and merged into per-thread float64 moments (Chan, Golub and LeVeque's pairwise
//   update): the features are read once, not once for the means and again for the moments;
//   backward (one pass): dL/dx = w (2/n Gs x + (g_mu - 2 Gs mu)/n), Y = Gs X by a micro-kernel.
// Blocks accumulate in the compute type; the per-thread moments are merged in thread order:
// deterministic for a given thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu/microkernels.h"
#include "cpu/output_cache_tensor.h"
#include "wasserstein.h"

namespace dale_ext {
namespace stats {
namespace {

constexpr int64_t kStripBytes = 160 * 1024;  // strip buffer of features (per thread)
constexpr int64_t kChunk = 1024;  // terms summed in T before a double accumulation (a multiple of cpu::kColBlock)

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

template <typename scalar_t>
using compute_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Strips of `rows` image rows x `cols` columns (cols = W, or a part of a long row).
struct Striping {
  int64_t rows, cols, per_row, per_image;
  Striping(const Geometry& g, size_t elem) {
    const int64_t pixels = std::max<int64_t>(cpu::kColBlock, kStripBytes / (g.D * static_cast<int64_t>(elem)));
    if (g.W <= pixels) {
      cols = g.W;
      rows = std::max<int64_t>(1, std::min<int64_t>(g.H, pixels / g.W));
    } else {
      rows = 1;
      cols = pixels;
    }
    per_row = (g.W + cols - 1) / cols;
    per_image = ((g.H + rows - 1) / rows) * per_row;
  }
  int64_t length() const { return rows * cols; }
};

using Run = cpu::RunSpan;  // in strip coordinates (row-major over rows x cols)

// Per-thread buffers. X: the strip (D x L); Z/Y: compact class matrices (Dp x Lp).
template <typename T>
struct Strip {
  int64_t D, Dp, L, Lp;
  int64_t b = 0, y0 = 0, x0 = 0, nrows = 0, ncols = 0;
  std::vector<T> X, Z, Y, grad, w, gw;
  const T* xs = nullptr;  // the strip's features: X, or the input itself (see CpuStats::load)
  int64_t ldx = 0;        // channel stride of xs
  std::vector<int64_t> label;
  std::vector<std::vector<Run>> runs;  // per class
  std::vector<Run> uncounted;          // image pixels of no class (the backward zeroes their gradient)
  std::vector<int64_t> count;          // pixels per class in the strip
  std::vector<std::vector<T>> pending, pending_w;  // per class, the block's columns and weights
  std::vector<int64_t> fill;                       // columns in `pending`
  std::vector<double> block_wx;                    // per class, the block's sum of w x (D), for its shift
  std::vector<T> shift;                            // a block's first estimate of its mean (D)
  std::vector<double> centred_sum, delta;          // a block's sum of w (x - shift); mean step (D)
  std::vector<T> syrk_scratch;                     // see MicroKernelsFor::syrk_upper
  Strip(int64_t D_, int64_t C_, int64_t L_)
      : D(D_), Dp(round_up(D_, cpu::kRowBlock)), L(L_), Lp(round_up(L_, cpu::kColBlock)), X(D_ * L_),
        Z(Dp * Lp, T(0)), Y(Dp * Lp, T(0)), grad(D_ * L_), w(L_), gw(L_),
        label(L_), runs(C_), count(C_), shift(D_), centred_sum(D_), delta(D_),
        syrk_scratch(cpu::syrk_scratch_size(Dp, std::min(kChunk, Lp))) {}
};

// The calling thread's strip buffers, kept between calls (rebuilt when the shape changes): they
// are ~100 KB - 2 MB each, and glibc maps blocks of that size afresh on every allocation once its
// mmap threshold has followed them up, so per-call buffers cost ~1000 page faults per call
// (~3 us each on the development VM: most of the op's time at small shapes).
template <typename T>
Strip<T>& thread_strip(int64_t D, int64_t C, int64_t L) {
  thread_local std::unique_ptr<Strip<T>> strip;
  if (!strip || strip->D != D || strip->L != L || static_cast<int64_t>(strip->runs.size()) != C)
    strip = std::make_unique<Strip<T>>(D, C, L);
  std::fill(strip->fill.begin(), strip->fill.end(), 0);  // pending columns of an earlier call
  return *strip;
}

template <typename scalar_t>
struct CpuStats {
  using T = compute_t<scalar_t>;
  Geometry g;
  Striping sp;
  const scalar_t* x;
  const int64_t* labels;
  const T* weights;  // nullptr: all ones
  const cpu::MicroKernelsFor<T>& mk = cpu::microkernels().get<T>();
  std::atomic<bool> bad_weight{false};

  CpuStats(const Geometry& g_, const scalar_t* x_, const int64_t* l_, const T* w_)
      : g(g_), sp(g_, sizeof(T)), x(x_), labels(l_), weights(w_) {}

  int64_t strips() const { return g.B * sp.per_image; }

  // Whole-width strips of contiguous float rows are read (and the backward's gradient written)
  // where they lie: each channel's segment is contiguous, in strip order.
  bool in_place() const { return std::is_same<scalar_t, T>::value && g.sP == 1 && sp.cols == g.W; }

  // Asks for strip `item`'s features (read in place: see load) to come into L2 while the current
  // strip is worked on; the first touch of each channel's segment was a third of the gathers.
  void prefetch(int64_t item) const {
    if (item >= strips() || !in_place()) return;
    const int64_t r = item % sp.per_image, b = item / sp.per_image, y0 = (r / sp.per_row) * sp.rows;
    const int64_t bytes = std::min(sp.rows, g.H - y0) * g.W * static_cast<int64_t>(sizeof(scalar_t));
    for (int64_t d = 0; d < g.D; ++d) {
      const char* p = reinterpret_cast<const char*>(x + b * g.sB + d * g.sD + y0 * g.W);
      for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 2);
    }
  }

  // Reads strip `item`: features, labels, weights, and the runs of every class.
  void load(int64_t item, Strip<T>& s) {
    const int64_t r = item % sp.per_image;
    s.b = item / sp.per_image;
    s.y0 = (r / sp.per_row) * sp.rows;
    s.x0 = (r % sp.per_row) * sp.cols;
    s.nrows = std::min(sp.rows, g.H - s.y0);
    s.ncols = std::min(sp.cols, g.W - s.x0);
    const int64_t L = sp.length();
    const bool in_place = this->in_place();  // the copy into X was ~1/3 of load()
    s.xs = in_place ? reinterpret_cast<const T*>(x + s.b * g.sB + s.y0 * g.W) : s.X.data();
    s.ldx = in_place ? g.sD : L;
    for (int64_t d = 0; d < g.D && !in_place; ++d) {
      const scalar_t* src = x + s.b * g.sB + d * g.sD;
      T* dst = s.X.data() + d * L;
      for (int64_t ry = 0; ry < s.nrows; ++ry) {
        const scalar_t* in = src + ((s.y0 + ry) * g.W + s.x0) * g.sP;
        T* out = dst + ry * sp.cols;
        if (g.sP == 1) {
          // Each channel's segment is short (a strip of rows); ask for the one two channels on
          // now, so the reads overlap: 7-14 % off the statistics at D = 64 on the 2-core VM
          // (benchmarks/results/2026-11-27-cpu-prefetch-ab.txt).
          if (d + 2 < g.D) {
            const char* ahead = reinterpret_cast<const char*>(in + 2 * g.sD);
            for (int64_t o = 0; o < s.ncols * static_cast<int64_t>(sizeof(scalar_t)); o += 64)
              __builtin_prefetch(ahead + o);
          }
          for (int64_t k = 0; k < s.ncols; ++k) out[k] = static_cast<T>(in[k]);
        } else {
          for (int64_t k = 0; k < s.ncols; ++k) out[k] = static_cast<T>(in[k * g.sP]);
        }
      }
    }
    for (auto& rl : s.runs) rl.clear();
    s.uncounted.clear();
    std::fill(s.count.begin(), s.count.end(), 0);
    bool bad = false;
    int64_t prev = -1;
    for (int64_t ry = 0; ry < sp.rows; ++ry) {
      const bool row_in = ry < s.nrows;
      const int64_t p0 = s.b * g.P + (s.y0 + ry) * g.W + s.x0;
      for (int64_t rx = 0; rx < sp.cols; ++rx) {
        const int64_t k = ry * sp.cols + rx;
        int64_t l = -1;
        T wk = T(0);
        if (row_in && rx < s.ncols) {
          l = labels[p0 + rx];
          if (counts_for(l, g)) {
            wk = weights ? weights[p0 + rx] : T(1);
            bad |= !(wk >= T(0));  // negative or NaN
          } else {
            l = -1;
            std::vector<Run>& none = s.uncounted;
            if (!none.empty() && none.back().start + none.back().length == k)
              ++none.back().length;
            else
              none.push_back({k, 1});
          }
        }
        s.label[k] = l;
        s.w[k] = wk;
        if (l >= 0) {
          ++s.count[l];
          if (l == prev) {
            ++s.runs[l].back().length;
          } else {
            s.runs[l].push_back({k, 1});
          }
        }
        prev = l;
      }
    }
    if (bad) bad_weight.store(true, std::memory_order_relaxed);
  }

  // Z (Dp x m padded) = class c's pixels; returns the padded column count. Rows D..Dp-1 stay zero.
  // (gather_runs's weighted sum is unused here.)
  int64_t compact(Strip<T>& s, int64_t c, std::vector<T>& Z) {
    const int64_t m = s.count[c], cols = round_up(m, cpu::kColBlock);
    for (int64_t d = 0; d < g.D; ++d) {
      T* z = Z.data() + d * s.Lp;
      mk.gather_runs(s.xs + d * s.ldx, s.runs[c].data(), static_cast<int64_t>(s.runs[c].size()), s.w.data(), z);
      std::fill(z + m, z + cols, T(0));
    }
    return cols;
  }

  // Per slot and class: weighted count n, mean (D) and centred second moments (D x D, upper
  // triangle), float64, accumulated block by block in one read of the features.
  void pass_moments(int64_t slots, double* n, double* mean, double* m2) {
    run_strips(
        slots,
        [&](int64_t slot, Strip<T>& s) {
          if (s.pending.empty()) {
            s.pending.assign(g.C, std::vector<T>(s.Dp * s.Lp, T(0)));
            s.pending_w.assign(g.C, std::vector<T>(s.Lp, T(0)));
            s.fill.assign(g.C, 0);
            s.block_wx.assign(g.C * g.D, 0.0);
          }
          for (int64_t c = 0; c < g.C; ++c) {
            if (s.count[c] == 0) continue;
            if (s.fill[c] + s.count[c] > s.Lp) flush(slot, s, c, n, mean, m2);
            T* pw = s.pending_w[c].data() + s.fill[c];
            for (const Run& run : s.runs[c]) pw = std::copy_n(s.w.data() + run.start, run.length, pw);
            const int64_t nruns = static_cast<int64_t>(s.runs[c].size());
            for (int64_t d = 0; d < g.D; ++d)
              s.block_wx[c * g.D + d] += mk.gather_runs(s.xs + d * s.ldx, s.runs[c].data(), nruns, s.w.data(),
                                                        s.pending[c].data() + d * s.Lp + s.fill[c]);
            s.fill[c] += s.count[c];
          }
        },
        [&](int64_t slot, Strip<T>& s) {
          for (int64_t c = 0; c < g.C && !s.pending.empty(); ++c) flush(slot, s, c, n, mean, m2);
        });
  }

  // Merges class c's block (the raw columns in pending[c]) into the slot's moments. The block is
  // centred by a first estimate of its mean (the float sums' quotient), and the small rest of the
  // mean is then taken from the centred values: M2_b = sum w (x - s)(x - s)^T - n_b e e^T with
  // e = sum w (x - s) / n_b, so a large offset of the features costs no accuracy. A block of zero
  // weight adds nothing, unless its features are not finite (0 * NaN): then the mean is poisoned
  // and the caller's finiteness check raises, as for any pixel that counts.
  void flush(int64_t slot, Strip<T>& s, int64_t c, double* n, double* mean, double* m2) {
    const int64_t fill = s.fill[c], cols = round_up(fill, cpu::kColBlock), D = g.D;
    if (fill == 0) return;
    s.fill[c] = 0;
    T* Z = s.pending[c].data();
    T* pw = s.pending_w[c].data();
    double nb = 0.0;
    for (int64_t j = 0; j < fill; ++j) nb += pw[j];
    double* wx = s.block_wx.data() + c * D;  // sum w x, taken by gather_runs
    for (int64_t d = 0; d < D; ++d) {
      s.shift[d] = nb > 0 ? static_cast<T>(wx[d] / nb) : T(0);
      wx[d] = 0.0;
    }
    for (int64_t j = 0; j < fill; ++j) pw[j] = pw[j] > T(0) ? std::sqrt(pw[j]) : T(0);  // sqrt(w), in place
    bool finite = true;
    for (int64_t d = 0; d < D; ++d) {
      T* z = Z + d * s.Lp;
      const double e = mk.centre_row(z, fill, s.shift[d], pw);  // sum w (x - shift)
      std::fill(z + fill, z + cols, T(0));
      finite &= std::isfinite(e);
      s.centred_sum[d] = e;
    }
    const int64_t k = slot * g.C + c;
    double* mu = mean + k * D;
    if (!finite) {
      mu[0] = std::numeric_limits<double>::quiet_NaN();
      return;
    }
    if (!(nb > 0)) return;
    const double na = n[k], tot = na + nb, f = na * nb / tot;
    std::vector<double>& e = s.centred_sum;
    std::vector<double>& delta = s.delta;
    for (int64_t d = 0; d < D; ++d) {
      e[d] /= nb;                                   // block mean = shift + e
      delta[d] = static_cast<double>(s.shift[d]) + e[d] - mu[d];  // block mean - running mean
    }
    double* a = m2 + k * D * D;
    for (int64_t i = 0; i < D; ++i) {
      const double ei = nb * e[i], di = f * delta[i];
      for (int64_t j = i; j < D; ++j) a[i * D + j] += di * delta[j] - ei * e[j];
    }
    // the block's sum of squares, a chunk of columns at a time into double: a float
    // accumulator then adds at most ~128 products (kChunk / 8 per lane for the dot-product
    // micro-kernels, 128 per entry for the AVX-512 outer products; a small-D strip holds up to
    // 40,960 pixels, and 5,000 float additions of quantised squares were off by 1e-5
    // relative; now ~1e-8)
    const int64_t chunk = std::min(kChunk, mk.syrk_max_cols);
    for (int64_t c0 = 0; c0 < cols; c0 += chunk)
      mk.syrk_upper(Z + c0, s.Dp, std::min(chunk, cols - c0), s.Lp, a, D, D, s.syrk_scratch.data());
    for (int64_t d = 0; d < D; ++d) mu[d] += delta[d] * (nb / tot);
    n[k] = tot;
  }

  // Runs fn(slot, strip) over all strips; each slot is one contiguous chunk of strips, run by
  // one thread, so per-slot sums do not depend on scheduling.
  template <typename Fn, typename SlotDone>
  void run_strips(int64_t slots, Fn&& fn, SlotDone&& slot_done) {
    const int64_t n = strips();
    const int64_t chunk = (n + slots - 1) / slots;
    at::parallel_for(0, slots, 1, [&](int64_t s0, int64_t s1) {
      Strip<T>& s = thread_strip<T>(g.D, g.C, sp.length());
      for (int64_t slot = s0; slot < s1; ++slot) {
        for (int64_t item = slot * chunk; item < std::min(n, (slot + 1) * chunk); ++item) {
          load(item, s);
          if (item + 1 < std::min(n, (slot + 1) * chunk)) prefetch(item + 1);
          fn(slot, s);
        }
        slot_done(slot, s);
      }
    });
  }
  template <typename Fn>
  void run_strips(int64_t slots, Fn&& fn) {
    run_strips(slots, std::forward<Fn>(fn), [](int64_t, Strip<T>&) {});
  }
};

int64_t thread_slots(int64_t items) { return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), items)); }

at::Tensor weights_as(const std::optional<at::Tensor>& weights, at::ScalarType t) {
  return weights.has_value() ? weights->to(t).contiguous() : at::Tensor();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> class_gaussians_cpu(const at::Tensor& features_,
                                                                   const at::Tensor& labels_,
                                                                   int64_t num_classes,
                                                                   const std::optional<at::Tensor>& weights,
                                                                   int64_t ignore_index) {
  const char* op = "class_gaussians";
  const at::Tensor features = features_.dim() == 4 ? features_.contiguous() : features_;
  const Geometry g = check_inputs(features, labels_, weights, num_classes, ignore_index, op);
  const at::Tensor labels = labels_.to(at::kLong).contiguous();
  const auto f64 = features.options().dtype(at::kDouble);
  at::Tensor counts = at::zeros({g.C}, f64), means, covs = cpu::empty_cached({g.C, g.D, g.D}, at::kDouble);
  if (g.B * g.P == 0) return {counts, at::zeros({g.C, g.D}, f64), covs.zero_()};  // no pixels: empty classes
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "class_gaussians_cpu", [&] {
    using T = compute_t<scalar_t>;
    const at::Tensor w = weights_as(weights, c10::CppTypeToScalarType<T>::value);
    CpuStats<scalar_t> k(g, features.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(),
                         w.defined() ? w.data_ptr<T>() : nullptr);
    const int64_t slots = thread_slots(k.strips());
    // per slot: counts, means, upper triangles of the centred moments; the moments from the
    // output cache, as they are large (C D^2 per slot)
    std::vector<double> cnt(slots * g.C, 0.0), mom(slots * g.C * g.D, 0.0);
    at::Tensor acc_t = cpu::empty_cached({slots * g.C * g.D * g.D}, at::kDouble);
    double* acc = acc_t.data_ptr<double>();
    // zeroed by the threads (a serial memset of 2.4 MB at 9 classes of D = 128 took ~0.1 ms)
    at::parallel_for(0, acc_t.numel(), int64_t{1} << 16, [&](int64_t b, int64_t e) { std::fill(acc + b, acc + e, 0.0); });
    k.pass_moments(slots, cnt.data(), mom.data(), acc);
    TORCH_CHECK_VALUE(!k.bad_weight.load(), op, ": `weights` must be >= 0 and not NaN");
    // the slots merged in slot order (deterministic) by the same pairwise update, into slot 0's
    // place, then divided by the count and mirrored (on CUDA: sums_reduce_kernel and
    // finish_covs_kernel); the classes in parallel (C D^2 doubles per slot: at 9 classes of
    // D = 128 a serial loop here left the other thread idle for ~10 % of the op)
    const int64_t DD = g.D * g.D;
    means = at::zeros({g.C, g.D}, f64);
    double* pc = counts.data_ptr<double>();
    double* pm = means.data_ptr<double>();
    double* out = covs.data_ptr<double>();
    std::vector<char> class_finite(g.C, 1);
    at::parallel_for(0, g.C, 1, [&](int64_t c0, int64_t c1) {
      std::vector<double> delta(g.D);
      for (int64_t c = c0; c < c1; ++c) {
        bool ok = true;
        double* n0 = &cnt[c];
        double* mu0 = &mom[c * g.D];
        double* a0 = acc + c * DD;
        for (int64_t s = 0; s < slots; ++s)
          for (int64_t d = 0; d < g.D; ++d) ok &= std::isfinite(mom[(s * g.C + c) * g.D + d]);
        for (int64_t s = 1; s < slots; ++s) {
          const double nb = cnt[s * g.C + c];
          if (!(nb > 0)) continue;
          const double tot = *n0 + nb, f = *n0 * nb / tot;
          const double* mub = &mom[(s * g.C + c) * g.D];
          const double* ab = acc + (s * g.C + c) * DD;
          for (int64_t d = 0; d < g.D; ++d) delta[d] = mub[d] - mu0[d];
          for (int64_t i = 0; i < g.D; ++i)
            for (int64_t j = i; j < g.D; ++j) a0[i * g.D + j] += ab[i * g.D + j] + f * delta[i] * delta[j];
          for (int64_t d = 0; d < g.D; ++d) mu0[d] += delta[d] * (nb / tot);
          *n0 = tot;
        }
        const double n = cnt[c];
        pc[c] = n;
        for (int64_t d = 0; d < g.D; ++d) pm[c * g.D + d] = n > 0 ? mom[c * g.D + d] : 0.0;
        // the upper triangle row by row (contiguous, vectorisable), then mirrored in tiles: one
        // element-by-element pass with a strided write per entry cost ~0.1 ms at D = 128, 9 classes
        const double* a = acc + c * DD;
        double* o = out + c * DD;
        int bad = 0;
        for (int64_t i = 0; i < g.D; ++i) {
          const double* ar = a + i * g.D;
          double* orow = o + i * g.D;
          if (n > 0) {
            for (int64_t j = i; j < g.D; ++j) orow[j] = ar[j] / n;
          } else {
            for (int64_t j = i; j < g.D; ++j) orow[j] = 0.0;
          }
          for (int64_t j = i; j < g.D; ++j) bad |= !(std::fabs(orow[j]) <= std::numeric_limits<double>::max());
        }
        constexpr int64_t kTile = 8;
        for (int64_t i0 = 0; i0 < g.D; i0 += kTile)
          for (int64_t j0 = 0; j0 <= i0; j0 += kTile)
            for (int64_t i = i0; i < std::min(i0 + kTile, g.D); ++i)
              for (int64_t j = j0; j < std::min(j0 + kTile, i); ++j) o[i * g.D + j] = o[j * g.D + i];
        class_finite[c] = ok && !bad;
      }
    });
    for (const char ok : class_finite) finite &= ok != 0;
  });
  TORCH_CHECK_VALUE(finite, op, ": `features` (or `weights`) contain NaN or infinity");
  return {counts, means, covs};
}

// The checks above need no device sync on the CPU: they raise at once, and the flags are false.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> class_gaussians_with_status_cpu(
    const at::Tensor& features, const at::Tensor& labels, int64_t num_classes,
    const std::optional<at::Tensor>& weights, int64_t ignore_index) {
  auto [counts, means, covs] = class_gaussians_cpu(features, labels, num_classes, weights, ignore_index);
  return {counts, means, covs, at::zeros({2}, features.options().dtype(at::kBool))};
}

template <typename scalar_t>
struct CpuStatsBackward : CpuStats<scalar_t> {
  using T = compute_t<scalar_t>;
  using Base = CpuStats<scalar_t>;
  using Base::g;
  using Base::sp;
  int64_t Dp;
  std::vector<T> G, bias, gmu, mu, gmean, scale;
  std::vector<double> gcount, trace, count;
  scalar_t* grad_x;
  T* grad_w;

  CpuStatsBackward(const Geometry& g_, const scalar_t* x_, const int64_t* l_, const T* w_, scalar_t* gx, T* gw)
      : Base(g_, x_, l_, w_), Dp(round_up(g_.D, cpu::kRowBlock)), grad_x(gx), grad_w(gw) {}

  // The coefficients of the feature gradient, per class in parallel (the ATen formulation,
  // backward_coefficients, is serial and allocates five C x D x D temporaries: ~15 % of the op at
  // 9 classes of D = 128): Gs = sym(grad_covs) in T (padded), gmu = Gs mu, <Gs, cov>, and
  // scale = 2 / n, bias = (g_mu - 2 Gs mu) / n (0 for an empty class), in float64.
  void set_coefficients(const at::Tensor& counts, const at::Tensor& means, const at::Tensor& covs,
                        const at::Tensor& grad_means, const at::Tensor& grad_covs, const at::Tensor& grad_counts) {
    const int64_t C = g.C, D = g.D;
    G.assign(C * Dp * Dp, T(0));  // padded rows/columns stay zero for the micro-kernel
    bias.resize(C * D);
    gmu.resize(C * D);
    scale.resize(C);
    trace.resize(C);
    const double *n = counts.data_ptr<double>(), *mu_d = means.data_ptr<double>(), *cov = covs.data_ptr<double>(),
                 *gm = grad_means.data_ptr<double>(), *gC = grad_covs.data_ptr<double>();
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const double* gc = gC + c * D * D;
        const double* cv = cov + c * D * D;
        const double* m = mu_d + c * D;
        const bool pos = n[c] > 0;
        const double safe = pos ? n[c] : 1.0;
        double tr = 0.0;
        for (int64_t i = 0; i < D; ++i) {
          double gi = 0.0;
          for (int64_t j = 0; j < D; ++j) {
            const double v = 0.5 * (gc[i * D + j] + gc[j * D + i]);
            G[(c * Dp + i) * Dp + j] = static_cast<T>(v);
            gi += v * m[j];
            tr += v * cv[i * D + j];
          }
          gmu[c * D + i] = static_cast<T>(gi);
          bias[c * D + i] = static_cast<T>(pos ? (gm[c * D + i] - 2.0 * gi) / safe : 0.0);
        }
        scale[c] = static_cast<T>(pos ? 2.0 / safe : 0.0);
        trace[c] = tr;
      }
    });
    auto copy = [](const at::Tensor& t, std::vector<T>& v) {
      const double* p = t.data_ptr<double>();
      v.assign(p, p + t.numel());
    };
    copy(means, mu);
    copy(grad_means, gmean);
    gcount.assign(grad_counts.data_ptr<double>(), grad_counts.data_ptr<double>() + C);
    count.assign(n, n + C);
  }

  void run() {
    // in place, the strip buffer's clearing and copy-out are not needed
    const bool in_place = this->in_place();
    this->run_strips(thread_slots(this->strips()), [&](int64_t, Strip<T>& s) {
      const int64_t L = sp.length();
      T* out = nullptr;  // channel 0 of the strip's gradient; channel stride ldo
      int64_t ldo = L;
      if (grad_x && in_place) {
        out = reinterpret_cast<T*>(grad_x + s.b * g.sB + s.y0 * g.W);
        ldo = g.sD;
        // pixels of no class get a zero gradient (the block may be reused: cpu/output_cache.h);
        // the classes' runs write the others
        for (int64_t d = 0; d < g.D && !s.uncounted.empty(); ++d)
          for (const Run& r : s.uncounted) std::fill_n(out + d * ldo + r.start, r.length, T(0));
      } else if (grad_x) {
        // the classes' runs overwrite a cleared strip, copied out below
        std::fill(s.grad.begin(), s.grad.end(), T(0));
        out = s.grad.data();
      }
      for (int64_t c = 0; c < g.C; ++c)
        if (s.count[c] > 0) backward_class(s, c, out, ldo);
      for (int64_t ry = 0; ry < s.nrows && grad_w; ++ry)
        for (int64_t rx = 0; rx < s.ncols; ++rx) {
          const int64_t k = ry * sp.cols + rx;
          grad_w[s.b * g.P + (s.y0 + ry) * g.W + s.x0 + rx] = s.label[k] >= 0 ? s.gw[k] : T(0);
        }
      if (!grad_x || in_place) return;
      // write the strip: channel by channel, row segment by row segment
      for (int64_t d = 0; d < g.D; ++d) {
        scalar_t* dst = grad_x + s.b * g.sB + d * g.sD;
        const T* src = s.grad.data() + d * L;
        for (int64_t ry = 0; ry < s.nrows; ++ry) {
          scalar_t* o = dst + ((s.y0 + ry) * g.W + s.x0) * g.sP;
          const T* in = src + ry * sp.cols;
          if (g.sP == 1) {
            for (int64_t k = 0; k < s.ncols; ++k) o[k] = static_cast<scalar_t>(in[k]);
          } else {
            for (int64_t k = 0; k < s.ncols; ++k) o[k * g.sP] = static_cast<scalar_t>(in[k]);
          }
        }
      }
    });
  }

  // Class c's pixels: Y = Gs Xc over the compacted pixels, then dL/dx = w (scale Y + bias) and,
  // for the weights, dL/dw = g_count + (g_mu . u + u^T Gs u - <Gs, cov>) / n with u = x - mu.
  void backward_class(Strip<T>& s, int64_t c, T* out, int64_t ldo) {
    const int64_t m = s.count[c];
    const int64_t cols = this->compact(s, c, s.Z);  // raw x
    this->mk.gemm(G.data() + c * Dp * Dp, s.Z.data(), s.Dp, cols, s.Lp, s.Y.data(), s.Lp);
    const T sc = scale[c];
    if (out) {
      const int64_t nruns = static_cast<int64_t>(s.runs[c].size());
      for (int64_t d = 0; d < g.D; ++d)
        this->mk.scatter_runs(s.Y.data() + d * s.Lp, s.runs[c].data(), nruns, s.w.data(), sc, bias[c * g.D + d],
                              out + d * ldo);
    }
    if (grad_w) {
      const T* muc = mu.data() + c * g.D;
      const T* gmc = gmu.data() + c * g.D;
      const T* gm = gmean.data() + c * g.D;
      const double n = count[c];
      std::vector<double> quad(m, 0.0), lin(m, 0.0);
      for (int64_t d = 0; d < g.D; ++d) {
        const T* xr = s.Z.data() + d * s.Lp;
        const T* yr = s.Y.data() + d * s.Lp;
        for (int64_t j = 0; j < m; ++j) {
          const double u = static_cast<double>(xr[j]) - muc[d];
          quad[j] += u * (static_cast<double>(yr[j]) - gmc[d]);
          lin[j] += u * gm[d];
        }
      }
      int64_t j = 0;
      for (const Run& run : s.runs[c])
        for (int64_t k = run.start; k < run.start + run.length; ++k, ++j)
          s.gw[k] = static_cast<T>(gcount[c] + (n > 0 ? (lin[j] + quad[j] - trace[c]) / n : 0.0));
    }
  }
};

std::tuple<at::Tensor, at::Tensor> class_gaussians_backward_cpu(
    const at::Tensor& grad_counts, const at::Tensor& grad_means, const at::Tensor& grad_covs,
    const at::Tensor& features_, const at::Tensor& labels_, const std::optional<at::Tensor>& weights,
    const at::Tensor& counts, const at::Tensor& means, const at::Tensor& covs, int64_t num_classes,
    int64_t ignore_index, bool features_grad, bool weights_grad) {
  const char* op = "class_gaussians (backward)";
  const at::Tensor features = features_.contiguous();
  const Geometry g = check_inputs(features, labels_, weights, num_classes, ignore_index, op);
  const at::Tensor labels = labels_.to(at::kLong).contiguous();
  auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble).contiguous(); };
  const at::Tensor gc = f64(grad_counts), gm = f64(grad_means), gC = f64(grad_covs);
  const at::Tensor n = f64(counts), mu = f64(means), cov = f64(covs);
  // the feature gradient is as large as the features: reuse freed blocks (cpu/output_cache.h)
  at::Tensor grad_x = features_grad ? cpu::empty_cached(features.sizes(), features.scalar_type()) : at::Tensor();
  at::Tensor grad_w;
  weights_grad = weights_grad && weights.has_value();
  const auto none = features.options();
  if (g.B * g.P == 0)  // no pixels: the (empty) gradients need no strip
    return {features_grad ? grad_x : at::empty({0}, none), weights_grad ? at::zeros_like(*weights) : at::empty({0}, none)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "class_gaussians_backward_cpu", [&] {
    using T = compute_t<scalar_t>;
    const at::Tensor w = weights_as(weights, c10::CppTypeToScalarType<T>::value);
    at::Tensor gw = weights_grad ? at::zeros(labels.sizes(), features.options().dtype(c10::CppTypeToScalarType<T>::value))
                                 : at::Tensor();
    CpuStatsBackward<scalar_t> b(g, features.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(),
                                 w.defined() ? w.data_ptr<T>() : nullptr,
                                 features_grad ? grad_x.data_ptr<scalar_t>() : nullptr,
                                 weights_grad ? gw.data_ptr<T>() : nullptr);
    b.set_coefficients(n, mu, cov, gm, gC, gc);
    b.run();
    if (weights_grad) grad_w = gw.to(weights->scalar_type()).view(weights->sizes());
  });
  return {features_grad ? grad_x : at::empty({0}, none), weights_grad ? grad_w : at::empty({0}, none)};
}

}  // namespace
}  // namespace stats
}  // namespace dale_ext

TORCH_LIBRARY_IMPL(dale_ext, CPU, m) {
  m.impl("class_gaussians", &dale_ext::stats::class_gaussians_cpu);
  m.impl("_class_gaussians_with_status", &dale_ext::stats::class_gaussians_with_status_cpu);
  m.impl("_class_gaussians_backward", &dale_ext::stats::class_gaussians_backward_cpu);
}
