// fuzzy_split, CUDA: one block per patch for the statistics (histogram in shared memory, or in a
// per-block global slice for very many bins), one block per image for Eqs. 5-6, and one
// coalesced write pass over the pixels. The arithmetic is fuzzy_split.h's, shared with the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>

#include "fuzzy_split.h"

namespace dale_ext {
namespace fuzzy {
namespace {

constexpr int kThreads = 256;

// (cub::Min/Max were removed in CCCL 3; these work with every CUB.)
struct MinOp {
  __device__ double operator()(double a, double b) const { return fmin(a, b); }
};
struct MaxOp {
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};
constexpr int kSharedBins = 8192;       // 32 KiB of int32 counts
constexpr int kGlobalHistBlocks = 256;  // blocks (each with a global slice) when bins > kSharedBins

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kThreads)
    patch_stats_kernel(const scalar_t* __restrict__ img, const label_t* __restrict__ lab, Geometry g,
                       int* __restrict__ global_hist, double* __restrict__ r64, double* __restrict__ e64,
                       int* __restrict__ nan_flag) {
  extern __shared__ int shared_hist[];
  int* hist = global_hist ? global_hist + static_cast<int64_t>(blockIdx.x) * g.bins : shared_hist;
  using DoubleReduce = cub::BlockReduce<double, kThreads>;
  using IntReduce = cub::BlockReduce<int, kThreads>;
  __shared__ typename DoubleReduce::TempStorage dtemp;
  __shared__ typename IntReduce::TempStorage itemp;

  for (int k = threadIdx.x; k < g.bins; k += kThreads) hist[k] = 0;
  __syncthreads();

  const int64_t plane = g.H * g.W;
  const int64_t npatch = g.B * g.Lh * g.Lw;
  bool saw_nan = false;
  for (int64_t p = blockIdx.x; p < npatch; p += gridDim.x) {
    const int64_t b = p / (g.Lh * g.Lw), i = (p / g.Lw) % g.Lh, j = p % g.Lw;
    const int64_t y0 = i * g.ph, x0 = j * g.pw;
    const int64_t hh = patch_extent(i, g.ph, g.H), ww = patch_extent(j, g.pw, g.W);
    const int64_t n = hh * ww;
    const scalar_t* im = img + b * g.C * plane;
    const label_t* lb = lab + b * plane;

    int edges = 0;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      const int64_t y = y0 + k / ww, x = x0 + k % ww;
      atomicAdd(&hist[grey_bin(im + y * g.W + x, plane, g.C, g.bins, &saw_nan)], 1);
      edges += is_edge(lb, g.H, g.W, y, x);
    }
    __syncthreads();
    // sum over distinct values of c ln c: the first pixel of a value takes its count and
    // resets the bin, so every value is counted once and the histogram is clean afterwards.
    double clogc = 0.0;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      const int64_t y = y0 + k / ww, x = x0 + k % ww;
      bool unused = false;
      const int c = atomicExch(&hist[grey_bin(im + y * g.W + x, plane, g.C, g.bins, &unused)], 0);
      if (c > 0) clogc += static_cast<double>(c) * ::log(static_cast<double>(c));
    }
    const double sum = DoubleReduce(dtemp).Sum(clogc);
    const int edge_sum = IntReduce(itemp).Sum(edges);
    if (threadIdx.x == 0) {
      r64[p] = entropy_from_clogc(sum, n);
      e64[p] = static_cast<double>(edge_sum) / static_cast<double>(n);
    }
    __syncthreads();  // histogram and reduction storage are reused by the next patch
  }
  if (saw_nan) atomicOr(nan_flag, 1);
}

// Eqs. 5-6 for one image per block.
__global__ void __launch_bounds__(kThreads)
    normalise_kernel(const double* __restrict__ r64, const double* __restrict__ e64, int64_t L, double tau,
                     float* __restrict__ entropy, float* __restrict__ edge_ratio, float* __restrict__ score,
                     float* __restrict__ fm, float* __restrict__ nm) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ double bounds[4];
  const int64_t p0 = blockIdx.x * L;
  double rlo = r64[p0], rhi = rlo, elo = e64[p0], ehi = elo;
  for (int64_t k = threadIdx.x; k < L; k += kThreads) {
    rlo = fmin(rlo, r64[p0 + k]);
    rhi = fmax(rhi, r64[p0 + k]);
    elo = fmin(elo, e64[p0 + k]);
    ehi = fmax(ehi, e64[p0 + k]);
  }
  const double values[4] = {rlo, rhi, elo, ehi};
  for (int v = 0; v < 4; ++v) {
    const double r = (v % 2 == 0) ? Reduce(temp).Reduce(values[v], MinOp())
                                  : Reduce(temp).Reduce(values[v], MaxOp());
    if (threadIdx.x == 0) bounds[v] = r;
    __syncthreads();
  }
  for (int64_t k = threadIdx.x; k < L; k += kThreads) {
    const int64_t p = p0 + k;
    const double m = fmax(normalise(r64[p], bounds[0], bounds[1]), normalise(e64[p], bounds[2], bounds[3]));
    entropy[p] = static_cast<float>(r64[p]);
    edge_ratio[p] = static_cast<float>(e64[p]);
    score[p] = static_cast<float>(m);
    soft_masks(m, tau, &fm[p], &nm[p]);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    write_kernel(const scalar_t* __restrict__ img, const float* __restrict__ fm, const float* __restrict__ nm,
                 Geometry g, float* __restrict__ fmask, float* __restrict__ nmask,
                 typename MaskedPixel<scalar_t>::out_t* __restrict__ fimg,
                 typename MaskedPixel<scalar_t>::out_t* __restrict__ nimg) {
  const int64_t plane = g.H * g.W, total = g.B * plane;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t b = idx / plane, yx = idx % plane, y = yx / g.W, x = yx % g.W;
    const int64_t p = (b * g.Lh + y / g.ph) * g.Lw + x / g.pw;
    const float f = fm[p], n = nm[p];
    fmask[idx] = f;
    nmask[idx] = n;
    const int64_t base = b * g.C * plane + yx;
    for (int64_t c = 0; c < g.C; ++c) {
      const scalar_t v = img[base + c * plane];
      fimg[base + c * plane] = MaskedPixel<scalar_t>::apply(f, v);
      nimg[base + c * plane] = MaskedPixel<scalar_t>::apply(n, v);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
fuzzy_split_cuda(const at::Tensor& image_, const at::Tensor& label_, at::IntArrayRef patch_size,
                 double tau, int64_t bins) {
  const Geometry g = check_inputs(image_, label_, patch_size, tau, bins);
  TORCH_CHECK_VALUE(image_.is_cuda(), "fuzzy_split (CUDA kernel): `image` must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(image_.device());
  const at::Tensor image = image_.contiguous();
  const at::Tensor label = label_map(label_);
  Outputs out = allocate_outputs(image, g);
  if (g.B == 0) return out.as_tuple();

  const int64_t npatch = g.B * g.Lh * g.Lw;
  const auto opts = image.options();
  at::Tensor r64 = at::empty({npatch}, opts.dtype(at::kDouble));
  at::Tensor e64 = at::empty({npatch}, opts.dtype(at::kDouble));
  at::Tensor fm = at::empty({npatch}, opts.dtype(at::kFloat));
  at::Tensor nm = at::empty({npatch}, opts.dtype(at::kFloat));
  at::Tensor nan_flag = at::zeros({1}, opts.dtype(at::kInt));
  const bool shared = g.bins <= kSharedBins;
  const int64_t stats_blocks = shared ? std::min<int64_t>(npatch, 1 << 30) : std::min<int64_t>(npatch, kGlobalHistBlocks);
  at::Tensor global_hist;
  if (!shared) global_hist = at::empty({stats_blocks * g.bins}, opts.dtype(at::kInt));
  const size_t shmem = shared ? g.bins * sizeof(int) : 0;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, image.scalar_type(), "fuzzy_split_cuda", [&] {
    using image_t = scalar_t;
    AT_DISPATCH_INTEGRAL_TYPES_AND(at::kBool, label.scalar_type(), "fuzzy_split_cuda_label", [&] {
      patch_stats_kernel<image_t, scalar_t><<<stats_blocks, kThreads, shmem, stream>>>(
          image.data_ptr<image_t>(), label.data_ptr<scalar_t>(), g,
          shared ? nullptr : global_hist.data_ptr<int>(), r64.data_ptr<double>(), e64.data_ptr<double>(),
          nan_flag.data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    normalise_kernel<<<g.B, kThreads, 0, stream>>>(
        r64.data_ptr<double>(), e64.data_ptr<double>(), g.Lh * g.Lw, g.tau, out.entropy.data_ptr<float>(),
        out.edge_ratio.data_ptr<float>(), out.score.data_ptr<float>(), fm.data_ptr<float>(), nm.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    using out_t = typename MaskedPixel<image_t>::out_t;
    const int64_t total = g.B * g.H * g.W;
    const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
    write_kernel<image_t><<<blocks, kThreads, 0, stream>>>(
        image.data_ptr<image_t>(), fm.data_ptr<float>(), nm.data_ptr<float>(), g,
        out.fuzzy_mask.data_ptr<float>(), out.nonfuzzy_mask.data_ptr<float>(),
        out.fuzzy_image.data_ptr<out_t>(), out.nonfuzzy_image.data_ptr<out_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // NaN pixels raise: one 4-byte read back, hence one stream synchronisation per call.
  TORCH_CHECK_VALUE(nan_flag.item<int>() == 0, "fuzzy_split: `image` contains NaN");
  return out.as_tuple();
}

}  // namespace
}  // namespace fuzzy
}  // namespace dale_ext

TORCH_LIBRARY_IMPL(dale_ext, CUDA, m) { m.impl("fuzzy_split", &dale_ext::fuzzy::fuzzy_split_cuda); }
