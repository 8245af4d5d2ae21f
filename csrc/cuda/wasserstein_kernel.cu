// class_gaussians on CUDA. Deterministic: no floating-point atomics. A fixed grid of blocks
// walks chunks of K pixels (within one image) in a fixed order; every block owns a slice of a
// partial-sum buffer that only its threads write; small kernels then reduce the slices in block
// order in float64.
//   sums, moments: a chunk is staged in shared memory as rows (one per counted pixel) sorted by
//            class with a stable counting sort (warp votes up to 32 classes), one thread
//            loading one pixel's channels with many loads in flight, so each class is a run of
//            rows (bounds from the sort) that a thread sums in registers; sums: thread per
//            channel; moments: rows centred by the class mean and scaled by sqrt(w), thread per
//            4 x 4 tile of the upper triangle;
//   backward: thread per (pixel k, 8 output channels i): w_k (scale_c (Gs_c x_k)_i + bias_c,i),
//            one pass; Gs in shared memory when it is at most 32 KB.
// class_gaussians: one host sync (the weight and finiteness flags together); its _with_status
// variant none (the caller reads the flags); the backward none. Few launches: the forward is five
// (flags memset, sums, their reduction into counts and means, moments, their reduction into the
// covariances), the backward two (coefficients, gradient); the host thread that issues them was
// the bottleneck at small shapes (H200 machine, 0003555: ~35 ATen ops a forward).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "wasserstein.h"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#error "dale_ext's class_gaussians kernels need sm_70 or newer (__match_any_sync); set TORCH_CUDA_ARCH_LIST accordingly"
#endif

namespace dale_ext {
namespace stats {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxD = 256;               // larger D: the Python wrapper uses the reference
constexpr int64_t kSharedBytes = 40 * 1024;  // chunk of centred features in shared memory
constexpr int64_t kPartialBytes = int64_t{256} << 20;  // each forward pass's per-block partial sums, at most

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

struct Chunks {
  int64_t K, per_image, total;
  int64_t blocks;
};

__device__ inline void chunk_origin(const Chunks& ch, int64_t chunk, const Geometry& g, int64_t* b, int64_t* p0,
                                    int64_t* n) {
  *b = chunk / ch.per_image;
  *p0 = (chunk % ch.per_image) * ch.K;
  *n = min(ch.K, g.P - *p0);
}

// ---- the staged chunk: the forward passes see a chunk's pixels as rows of a shared-memory
// matrix Z (row r, channel d at Z[r * S + d]), rows sorted by class (stable, so the summation
// order is fixed), so that each class is a run of rows that a thread sums in registers.
constexpr int kTile = 4;  // the moments pass: each thread owns 4 x 4 blocks of the D x D moments
constexpr int kWarps = kThreads / 32;
constexpr int64_t kVoteClasses = 32;  // up to this many classes a chunk is sorted by warp votes
constexpr int kLoadBatch = 16;        // loads a thread keeps in flight while staging its pixel
static_assert(kWarps * 32 == kThreads && kWarps * kVoteClasses == kThreads, "one scratch int per thread");

// Row stride: D rounded up to the tile, plus one tile, so that a warp writing 32 consecutive
// rows at one channel meets 4-way rather than 32-way bank conflicts; a multiple of 4 elements
// keeps every tile's row segment 16-byte aligned.
__host__ __device__ inline int64_t row_stride(int64_t D) { return (D + kTile - 1) / kTile * kTile + kTile; }

// Shared memory per pixel of a chunk: its Z row, its factor and its class; plus per block
// kThreads ints of scratch (the per-warp class counts, or the labels for the many-classes sort)
// and the kVoteClasses + 1 run bounds.
inline int64_t staged_row_bytes(const Geometry& g, int64_t elem) { return row_stride(g.D) * elem + elem + 4; }
constexpr int64_t kScratchBytes = (kThreads + kVoteClasses + 1) * 4;

// Chunks of as many pixels as `room` bytes of shared memory hold at `pixel_bytes` each, at least
// 16 and at most kThreads (one thread stages one pixel); a grid of 4 blocks an SM walks them.
Chunks make_chunks(const Geometry& g, int64_t room, int64_t pixel_bytes, int sms) {
  Chunks c;
  c.K = std::max<int64_t>(16, std::min<int64_t>(kThreads, room / pixel_bytes));
  c.per_image = (g.P + c.K - 1) / c.K;
  c.total = g.B * c.per_image;
  c.blocks = std::max<int64_t>(1, std::min<int64_t>(c.total, 4 * static_cast<int64_t>(sms)));
  return c;
}

Chunks make_staged_chunks(const Geometry& g, int64_t elem, int sms) {
  return make_chunks(g, kSharedBytes - kScratchBytes, staged_row_bytes(g, elem), sms);
}

inline size_t staged_shared_bytes(const Chunks& ch, const Geometry& g, int64_t elem) {
  return static_cast<size_t>(ch.K * staged_row_bytes(g, elem) + kScratchBytes);
}

template <typename T>
struct Staged {
  T* Z;          // K x S: the chunk's rows, sorted by class; channels D..S-1 stay zero
  T* factor;     // K: the factor of sorted row r (the pixel's weight for the sums)
  int* sorted;   // K: class of sorted row r, -1 past the last counted pixel
  int* scratch;  // kThreads ints
  int* bounds;   // up to kVoteClasses classes: class c's rows are [bounds[c], bounds[c + 1])
};

template <typename T>
__device__ inline Staged<T> staged_layout(unsigned char* smem, int64_t K, int64_t S) {
  Staged<T> s;
  s.Z = reinterpret_cast<T*>(smem);
  s.factor = s.Z + K * S;
  s.sorted = reinterpret_cast<int*>(s.factor + K);
  s.scratch = s.sorted + K;
  s.bounds = s.scratch + kThreads;
  return s;
}

// Zero the padding channels of every row once: the chunks only ever write channels < D.
template <typename T>
__device__ inline void zero_padding(const Staged<T>& s, int64_t K, int64_t S, int64_t D) {
  const int pad = static_cast<int>(S - D);
  for (int idx = threadIdx.x; idx < K * pad; idx += kThreads) s.Z[(idx / pad) * S + D + idx % pad] = T(0);
}

// The sorted row of this thread's pixel (class l, -1: does not count; every thread of the block
// calls this): the number of counted pixels of a smaller class plus those of its class before it,
// i.e. a stable counting sort of the chunk by class. Contains barriers.
__device__ inline int sorted_row(int l, int n, int64_t C, int* scratch, int* bounds) {
  const int k = threadIdx.x;
  if (C <= kVoteClasses) {
    // scratch[w * 32 + c]: warp w's count of class c, then the first row of warp w's pixels of class c
    const int lane = k & 31, warp = k >> 5;
    scratch[k] = 0;
    __syncthreads();
    const unsigned peers = __match_any_sync(0xffffffffu, l);  // the lanes of this warp with this class
    const int before = __popc(peers & ((1u << lane) - 1u));
    if (l >= 0 && before == 0) scratch[warp * 32 + l] = __popc(peers);
    __syncthreads();
    if (warp == 0) {  // lane c: exclusive scan of the class totals, then over the warps
      int total = 0;
      for (int w = 0; w < kWarps; ++w) total += scratch[w * 32 + lane];
      int incl = total;
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      int run = incl - total;
      bounds[lane] = run;
      if (lane == 31) bounds[32] = incl;
      for (int w = 0; w < kWarps; ++w) {
        const int cnt = scratch[w * 32 + lane];
        scratch[w * 32 + lane] = run;
        run += cnt;
      }
    }
    __syncthreads();
    return l >= 0 ? scratch[warp * 32 + l] + before : -1;
  }
  // many classes: count over the chunk's labels, O(n) a pixel
  if (k < n) scratch[k] = l;
  __syncthreads();
  int r = -1;
  if (l >= 0) {
    r = 0;
    for (int j = 0; j < n; ++j) {
      const int lj = scratch[j];
      r += (lj >= 0) & ((lj < l) | ((lj == l) & (j < k)));
    }
  }
  return r;
}

// Pixel x_k's D channels (xk: its channel 0), kLoadBatch loads in flight; store(d, value) for
// each. Consecutive threads load consecutive pixels, so each load is coalesced across a warp.
template <typename T, typename scalar_t, typename Store>
__device__ inline void load_pixel(const scalar_t* __restrict__ xk, const Geometry& g, Store&& store) {
  for (int64_t d0 = 0; d0 < g.D; d0 += kLoadBatch) {
    T v[kLoadBatch];
#pragma unroll
    for (int u = 0; u < kLoadBatch; ++u) v[u] = d0 + u < g.D ? static_cast<T>(xk[(d0 + u) * g.sD]) : T(0);
#pragma unroll
    for (int u = 0; u < kLoadBatch; ++u)
      if (d0 + u < g.D) store(d0 + u, v[u]);
  }
}

// Stage one chunk: row Z[r] = (x_k - mean_c) * f_k over channels < D for every counted pixel k
// (thread k) of class c, sorted row r, where f_k = w_k (sums; mean = 0) or sqrt(w_k) (moments).
// Starts and ends with a barrier. `bad_weight` (when given) is raised for a negative or NaN
// weight.
template <typename scalar_t, typename T>
__device__ inline void stage_chunk(const Staged<T>& s, const scalar_t* __restrict__ x,
                                   const int64_t* __restrict__ labels, const T* __restrict__ w,
                                   const T* __restrict__ means, bool sqrt_weight, const Geometry& g, int64_t S,
                                   int64_t b, int64_t p0, int n, bool* __restrict__ bad_weight) {
  const int k = threadIdx.x;
  __syncthreads();  // the previous chunk's readers are done
  int l = -1;
  if (k < n) {
    const int64_t lk = labels[b * g.P + p0 + k];
    l = counts_for(lk, g) ? static_cast<int>(lk) : -1;
    s.sorted[k] = -1;
  }
  const int r = sorted_row(l, n, g.C, s.scratch, s.bounds);  // its barriers also order the -1s before the writes below
  if (r >= 0) {
    const T wk = w ? w[b * g.P + p0 + k] : T(1);
    if (bad_weight && !(wk >= T(0))) *bad_weight = true;  // every writer stores the same value
    const T f = sqrt_weight ? (wk > T(0) ? sqrt(wk) : T(0)) : wk;
    s.factor[r] = f;
    s.sorted[r] = l;
    const T* mu = means ? means + static_cast<int64_t>(l) * g.D : nullptr;
    T* zr = s.Z + r * S;
    load_pixel<T>(x + b * g.sB + (p0 + k) * g.sP, g,
                  [&](int64_t d, T v) { zr[d] = (mu ? v - mu[d] : v) * f; });
  }
  __syncthreads();
}

// f(c, r0, r1) for each class c with rows in the staged chunk, in class order: its rows [r0, r1).
// Up to kVoteClasses classes the bounds come from the sort, so the loops over rows need no load of
// the rows' classes (and can be unrolled); beyond, the runs are found by their classes.
template <typename T, typename F>
__device__ inline void for_each_run(const Staged<T>& s, int n, int64_t C, F&& f) {
  if (C <= kVoteClasses) {
    for (int c = 0; c < C; ++c) {
      const int r0 = s.bounds[c], r1 = s.bounds[c + 1];
      if (r0 < r1) f(c, r0, r1);
    }
    return;
  }
  int r = 0;
  while (r < n && s.sorted[r] >= 0) {
    const int c = s.sorted[r];
    int e = r + 1;
    while (e < n && s.sorted[e] == c) ++e;
    f(c, r, e);
    r = e;
  }
}

__device__ inline void load4(const float* p, float v[4]) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ inline void load4(const double* p, double v[4]) {
  const double2 a = *reinterpret_cast<const double2*>(p), b = *reinterpret_cast<const double2*>(p + 2);
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}

// Pass 1: partial[blk][c][0..D) = sum of w x, partial[blk][c][D] = sum of w. Thread d sums
// channel d (d = D: the weights) over each class's run of rows.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    sums_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ labels, const acc_t<scalar_t>* __restrict__ w,
                Geometry g, Chunks ch, acc_t<scalar_t>* __restrict__ partial, bool* __restrict__ bad_weight) {
  using T = acc_t<scalar_t>;
  extern __shared__ __align__(16) unsigned char staged_smem[];
  const int64_t S = row_stride(g.D);
  const Staged<T> s = staged_layout<T>(staged_smem, ch.K, S);
  T* out = partial + blockIdx.x * g.C * (g.D + 1);
  for (int64_t e = threadIdx.x; e < g.C * (g.D + 1); e += kThreads) out[e] = T(0);
  for (int64_t chunk = blockIdx.x; chunk < ch.total; chunk += gridDim.x) {
    int64_t b, p0, n64;
    chunk_origin(ch, chunk, g, &b, &p0, &n64);
    const int n = static_cast<int>(n64);
    stage_chunk<scalar_t, T>(s, x, labels, w, nullptr, /*sqrt_weight=*/false, g, S, b, p0, n, bad_weight);
    for (int64_t d = threadIdx.x; d <= g.D; d += kThreads) {
      for_each_run(s, n, g.C, [&](int c, int r0, int r1) {
        T acc = 0;
        if (d < g.D)
          for (int r = r0; r < r1; ++r) acc += s.Z[r * S + d];
        else
          for (int r = r0; r < r1; ++r) acc += s.factor[r];
        out[c * (g.D + 1) + d] += acc;
      });
    }
  }
}

// Sums of the blocks' slices in block order, in float64, and from them counts and means: thread
// per (class c, entry d <= D). Each thread also sums its class's weights (entry D, the same order
// as the thread that writes the count, so the same value). means_t: the means in the moments
// pass's type. The zero-count and finiteness rules are the CPU kernel's
// (csrc/cpu/wasserstein_kernel.cpp): zero for a class with no weight; the status flag is raised
// for a non-finite final mean.
template <typename T>
__global__ void sums_reduce_kernel(const T* __restrict__ partial, int64_t blocks, Geometry g,
                                   double* __restrict__ counts, double* __restrict__ means,
                                   T* __restrict__ means_t, bool* __restrict__ not_finite) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t row = g.D + 1, entries = g.C * row;
  if (e >= entries) return;
  const int64_t c = e / row, d = e - c * row;
  double s = 0, n = 0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const T* slice = partial + blk * entries + c * row;
    s += static_cast<double>(slice[d]);
    n += static_cast<double>(slice[g.D]);
  }
  if (d == g.D) {
    counts[c] = s;
    return;
  }
  const double m = n > 0 ? s / n : 0.0;
  means[c * g.D + d] = m;
  means_t[c * g.D + d] = static_cast<T>(m);
  if (!isfinite(m)) *not_finite = true;  // every writer stores the same value
}

// Second moments summed over the blocks' slices (float64, block order) into the full symmetric
// covariances: thread per (class c, upper-triangle entry e = (i, j), i <= j, row-major), writing
// (i, j) and (j, i); zero for a class with no weight; the flag raised for a non-finite value.
template <typename T>
__global__ void finish_covs_kernel(const T* __restrict__ partial, int64_t blocks, Geometry g,
                                   const double* __restrict__ counts, double* __restrict__ covs,
                                   bool* __restrict__ not_finite) {
  const int64_t E = g.D * (g.D + 1) / 2;
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= g.C * E) return;
  const int64_t c = idx / E, e = idx - c * E;
  double s = 0;
  for (int64_t blk = 0; blk < blocks; ++blk) s += static_cast<double>(partial[blk * g.C * E + idx]);
  // unrank e: row i starts at i * D - i (i - 1) / 2; estimate i in closed form, then correct
  const double twoD1 = 2.0 * g.D + 1.0;
  int64_t i = static_cast<int64_t>((twoD1 - sqrt(twoD1 * twoD1 - 8.0 * static_cast<double>(e))) / 2.0);
  auto start = [&](int64_t r) { return r * g.D - r * (r - 1) / 2; };
  while (i > 0 && start(i) > e) --i;
  while (i + 1 < g.D && start(i + 1) <= e) ++i;
  const int64_t j = i + (e - start(i));
  const double n = counts[c];
  const double v = n > 0 ? s / n : 0.0;
  covs[(c * g.D + i) * g.D + j] = v;
  covs[(c * g.D + j) * g.D + i] = v;
  if (!isfinite(v)) *not_finite = true;
}

// Pass 2: partial[blk][c][e] over the upper-triangle entries e = (i, j), i <= j (row-major).
// Each thread owns 4 x 4 tiles of the D x D moments (the tiles on or above the diagonal) and
// accumulates z_i z_j over each class's run of centred rows in registers: two 16-byte loads
// from shared memory per 16 multiply-adds.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    moments_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ labels,
                   const acc_t<scalar_t>* __restrict__ w, const acc_t<scalar_t>* __restrict__ means, Geometry g,
                   Chunks ch, acc_t<scalar_t>* __restrict__ partial) {
  using T = acc_t<scalar_t>;
  extern __shared__ __align__(16) unsigned char staged_smem[];
  const int64_t S = row_stride(g.D);
  const Staged<T> s = staged_layout<T>(staged_smem, ch.K, S);
  const int64_t E = g.D * (g.D + 1) / 2;
  const int Dt = static_cast<int>((g.D + kTile - 1) / kTile);
  const int tiles = Dt * (Dt + 1) / 2;
  T* out = partial + blockIdx.x * g.C * E;
  for (int64_t e = threadIdx.x; e < g.C * E; e += kThreads) out[e] = T(0);
  zero_padding(s, ch.K, S, g.D);
  for (int64_t chunk = blockIdx.x; chunk < ch.total; chunk += gridDim.x) {
    int64_t b, p0, n64;
    chunk_origin(ch, chunk, g, &b, &p0, &n64);
    const int n = static_cast<int>(n64);
    stage_chunk<scalar_t, T>(s, x, labels, w, means, /*sqrt_weight=*/true, g, S, b, p0, n, nullptr);
    for (int t = threadIdx.x; t < tiles; t += kThreads) {
      int ti = 0, rest = t;  // unrank t -> (ti, tj), ti <= tj, row-major over the upper triangle
      while (rest >= Dt - ti) {
        rest -= Dt - ti;
        ++ti;
      }
      const int tj = ti + rest;
      const T* zi = s.Z + ti * kTile;
      const T* zj = s.Z + tj * kTile;
      for_each_run(s, n, g.C, [&](int c, int r0, int r1) {
        T acc[kTile][kTile] = {};
#pragma unroll 2
        for (int r = r0; r < r1; ++r) {
          T a[kTile], bv[kTile];
          load4(zi + r * S, a);
          load4(zj + r * S, bv);
#pragma unroll
          for (int p = 0; p < kTile; ++p)
#pragma unroll
            for (int q = 0; q < kTile; ++q) acc[p][q] += a[p] * bv[q];
        }
        T* oc = out + c * E;
#pragma unroll
        for (int p = 0; p < kTile; ++p) {
          const int64_t i = static_cast<int64_t>(ti) * kTile + p;
#pragma unroll
          for (int q = 0; q < kTile; ++q) {
            const int64_t j = static_cast<int64_t>(tj) * kTile + q;
            if (i <= j && j < g.D) oc[i * g.D - i * (i - 1) / 2 + (j - i)] += acc[p][q];
          }
        }
      });
    }
  }
}

// Backward: grad[b, i, p] = w (scale_c (Gs_c x)_i + bias_c,i) for the pixel's class c. A chunk's
// pixels are staged channel-major in shared memory; each thread then computes kOut consecutive
// output channels of one pixel: per channel d one shared load of x_d and two 16-byte loads of
// row d of Gs_c (symmetric, so row d holds column d; the same address across the warp, a
// broadcast) for kOut multiply-adds. G sits in shared memory when it is small (kSharedG): read
// from global memory the rows stalled the kernel on L1 misses (Nsight Compute, 7c4a2d5: 64 % of
// the cycles between instructions, L1 hit rate 75 %, the features streaming through L1).
constexpr int kOut = 8;
__host__ __device__ inline int64_t padded_channels(int64_t D) { return (D + kOut - 1) / kOut * kOut; }
constexpr int64_t kSharedGBytes = 32 * 1024;         // G at most this large goes to shared memory
constexpr int64_t kBackwardSharedBytes = 55 * 1024;  // then G + chunk: 4 blocks of 256 threads an SM

inline int64_t backward_g_bytes(const Geometry& g, int64_t elem) { return g.C * g.D * padded_channels(g.D) * elem; }

Chunks make_backward_chunks(const Geometry& g, int64_t elem, int sms, bool shared_g) {
  // per pixel: D staged channels, its weight and its class
  const int64_t room = shared_g ? kBackwardSharedBytes - backward_g_bytes(g, elem) : kSharedBytes;
  return make_chunks(g, room, g.D * elem + elem + 4, sms);
}

template <typename scalar_t, bool kSharedG>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ labels,
                    const acc_t<scalar_t>* __restrict__ G, const acc_t<scalar_t>* __restrict__ w,
                    const acc_t<scalar_t>* __restrict__ scale, const acc_t<scalar_t>* __restrict__ bias, Geometry g,
                    Chunks ch, scalar_t* __restrict__ grad) {
  using T = acc_t<scalar_t>;
  // G: (C, D, Dp) and bias: (C, Dp), zero-padded to Dp (a multiple of kOut) channels
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t Dp = padded_channels(g.D);
  const int64_t g_size = kSharedG ? g.C * g.D * Dp : 0;
  T* Gs = reinterpret_cast<T*>(smem);  // the copy of G (kSharedG), 16-byte aligned rows
  T* X = Gs + g_size;                  // X[d * K + k]
  T* wk = X + g.D * ch.K;
  int* lab = reinterpret_cast<int*>(wk + ch.K);
  if (kSharedG)
    for (int64_t i = threadIdx.x; i < g_size; i += kThreads) Gs[i] = G[i];  // read after the barriers below
  const T* Gsrc = kSharedG ? Gs : G;
  const int groups = static_cast<int>(Dp / kOut);
  const int k = threadIdx.x;
  for (int64_t chunk = blockIdx.x; chunk < ch.total; chunk += gridDim.x) {
    int64_t b, p0, n64;
    chunk_origin(ch, chunk, g, &b, &p0, &n64);
    const int n = static_cast<int>(n64);
    __syncthreads();  // the previous chunk's readers are done
    if (k < n) {
      const int64_t l = labels[b * g.P + p0 + k];
      const bool ok = counts_for(l, g);
      lab[k] = ok ? static_cast<int>(l) : -1;
      wk[k] = ok ? (w ? w[b * g.P + p0 + k] : T(1)) : T(0);
      // written out rather than through load_pixel: with the helper the compiler scheduled the
      // loop below differently and the kernel ran 1.11 ms instead of 0.84 (H200, 0003555 vs 50ad14e)
      const scalar_t* xk = x + b * g.sB + (p0 + k) * g.sP;
      for (int64_t d0 = 0; d0 < g.D; d0 += kLoadBatch) {
        T v[kLoadBatch];
#pragma unroll
        for (int u = 0; u < kLoadBatch; ++u) v[u] = d0 + u < g.D ? static_cast<T>(xk[(d0 + u) * g.sD]) : T(0);
#pragma unroll
        for (int u = 0; u < kLoadBatch; ++u)
          if (d0 + u < g.D) X[(d0 + u) * ch.K + k] = v[u];
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < groups * n; idx += kThreads) {
      const int gi = idx / n, p = idx - gi * n;  // consecutive threads: consecutive pixels, one channel group
      const int c = lab[p];
      const int64_t i0 = static_cast<int64_t>(gi) * kOut;
      T acc[kOut] = {};
      if (c >= 0) {
        const T* Gc = Gsrc + static_cast<int64_t>(c) * g.D * Dp + i0;
        for (int64_t d = 0; d < g.D; ++d) {
          const T xd = X[d * ch.K + p];
          T gv[kOut];
          load4(Gc + d * Dp, gv);
          load4(Gc + d * Dp + 4, gv + 4);
#pragma unroll
          for (int q = 0; q < kOut; ++q) acc[q] += gv[q] * xd;
        }
        const T sc = scale[c], wp = wk[p];
        const T* bc = bias + static_cast<int64_t>(c) * Dp + i0;
#pragma unroll
        for (int q = 0; q < kOut; ++q) acc[q] = wp * (sc * acc[q] + bc[q]);
      }
      scalar_t* gp = grad + b * g.sB + (p0 + p) * g.sP;
#pragma unroll
      for (int q = 0; q < kOut; ++q)
        if (i0 + q < g.D) gp[(i0 + q) * g.sD] = static_cast<scalar_t>(acc[q]);
    }
  }
}

template <typename scalar_t, bool kSharedG>
void launch_backward(const Geometry& g, const Chunks& ch, size_t sh, cudaStream_t stream, const scalar_t* x,
                     const int64_t* labels, const acc_t<scalar_t>* G, const acc_t<scalar_t>* w,
                     const acc_t<scalar_t>* scale, const acc_t<scalar_t>* bias, scalar_t* grad) {
  if (sh > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(backward_kernel<scalar_t, kSharedG>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(sh)));
  backward_kernel<scalar_t, kSharedG><<<ch.blocks, kThreads, sh, stream>>>(x, labels, G, w, scale, bias, g, ch, grad);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The feature gradient's coefficients (backward_coefficients in csrc/wasserstein.cpp, in one
// launch instead of a dozen small ones): block per class c, in float64, stored in the kernel's
// type: G_c = (gC_c + gC_c^T) / 2 zero-padded to Dp columns, scale_c = 2 / n_c and
// bias_c = (g_mu_c - 2 G_c mu_c) / n_c (zero-padded), both zero for a class with no weight.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_coefficients_kernel(const double* __restrict__ counts, const double* __restrict__ means,
                                 const double* __restrict__ grad_means, const double* __restrict__ grad_covs,
                                 Geometry g, int64_t Dp, T* __restrict__ G, T* __restrict__ scale,
                                 T* __restrict__ bias) {
  const int64_t c = blockIdx.x, D = g.D;
  const double n = counts[c];
  const bool pos = n > 0;
  const double* gC = grad_covs + c * D * D;
  const double* mu = means + c * D;
  for (int64_t idx = threadIdx.x; idx < D * Dp; idx += kThreads) {
    const int64_t i = idx / Dp, j = idx - i * Dp;
    G[c * D * Dp + idx] = static_cast<T>(j < D ? 0.5 * (gC[i * D + j] + gC[j * D + i]) : 0.0);
  }
  for (int64_t i = threadIdx.x; i < Dp; i += kThreads) {
    double b = 0;
    if (i < D && pos) {
      double gmu = 0;
      for (int64_t j = 0; j < D; ++j) gmu += 0.5 * (gC[i * D + j] + gC[j * D + i]) * mu[j];
      b = (grad_means[c * D + i] - 2.0 * gmu) / n;
    }
    bias[c * Dp + i] = static_cast<T>(b);
  }
  if (threadIdx.x == 0) scale[c] = static_cast<T>(pos ? 2.0 / n : 0.0);
}

// Weight gradient, one thread per pixel: g_count + (g_mu . u + u^T Gs u - <Gs, cov>) / n.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    weight_grad_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ labels, const double* __restrict__ G,
                       const double* __restrict__ means, const double* __restrict__ grad_means,
                       const double* __restrict__ grad_counts, const double* __restrict__ counts,
                       const double* __restrict__ trace, Geometry g, double* __restrict__ grad_w) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (idx >= g.B * g.P) return;
  const int64_t b = idx / g.P, p = idx % g.P;
  const int64_t c = labels[idx];
  if (!counts_for(c, g)) {
    grad_w[idx] = 0;
    return;
  }
  const double n = counts[c];
  double quad = 0, lin = 0;
  for (int64_t i = 0; i < g.D; ++i) {
    const double ui = static_cast<double>(x[b * g.sB + i * g.sD + p * g.sP]) - means[c * g.D + i];
    double gu = 0;
    for (int64_t d = 0; d < g.D; ++d)
      gu += G[(c * g.D + i) * g.D + d] * (static_cast<double>(x[b * g.sB + d * g.sD + p * g.sP]) - means[c * g.D + d]);
    quad += ui * gu;
    lin += ui * grad_means[c * g.D + i];
  }
  grad_w[idx] = grad_counts[c] + (n > 0 ? (lin + quad - trace[c]) / n : 0.0);
}

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

void check_cuda_inputs(const Geometry& g, const char* op) {
  TORCH_CHECK_VALUE(g.D <= kMaxD, op, ": the CUDA kernel supports up to ", kMaxD, " feature channels; got ", g.D,
                    " (dale_ext.class_gaussians falls back to the reference implementation)");
}

// The statistics and, without waiting for the device, their status flags (see the schema). Five
// launches: a memset of the flags, sums, their reduction (counts, means), moments, their
// reduction (covariances); the host work between them is a few allocations (the calls run on a
// slow host thread, and ~35 small ATen ops here once cost more than the kernels at small shapes).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> class_gaussians_with_status_cuda(
    const at::Tensor& features_, const at::Tensor& labels_, int64_t num_classes,
    const std::optional<at::Tensor>& weights, int64_t ignore_index) {
  const char* op = "class_gaussians";
  c10::cuda::CUDAGuard guard(features_.device());
  const at::Tensor features = features_.dim() == 4 ? features_.contiguous() : features_;
  const Geometry g = check_inputs(features, labels_, weights, num_classes, ignore_index, op);
  check_cuda_inputs(g, op);
  const at::Tensor labels = labels_.to(at::kLong).contiguous();
  const auto f64 = features.options().dtype(at::kDouble);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor counts = at::empty({g.C}, f64), means = at::empty({g.C, g.D}, f64);
  const at::Tensor covs = at::empty({g.C, g.D, g.D}, f64);
  // [0]: a negative or NaN weight (the sums pass); [1]: a non-finite mean or covariance
  const at::Tensor status = at::empty({2}, features.options().dtype(at::kBool));
  C10_CUDA_CHECK(cudaMemsetAsync(status.data_ptr<bool>(), 0, 2 * sizeof(bool), stream));
  bool* flags = status.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "class_gaussians_cuda", [&] {
    using T = acc_t<scalar_t>;
    const auto tdt = c10::CppTypeToScalarType<T>::value;
    const at::Tensor w = weights.has_value() ? weights->to(tdt).contiguous() : at::Tensor();
    const T* wp = w.defined() ? w.data_ptr<T>() : nullptr;
    const Chunks ch = make_staged_chunks(g, sizeof(T), sm_count());
    // per-block slices of C x (D + 1) sums: with very many classes, fewer blocks (each walks
    // more chunks) keep them within kPartialBytes, as for the moments below
    const int64_t slice1 = g.C * (g.D + 1) * static_cast<int64_t>(sizeof(T));
    const int64_t blocks1 = std::max<int64_t>(1, std::min<int64_t>(ch.blocks, kPartialBytes / std::max<int64_t>(1, slice1)));
    at::Tensor part1 = at::empty({blocks1, g.C, g.D + 1}, features.options().dtype(tdt));
    const size_t sh1 = staged_shared_bytes(ch, g, sizeof(T));  // the moments pass uses the same layout
    if (sh1 > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(sums_kernel<scalar_t>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(sh1)));
      C10_CUDA_CHECK(cudaFuncSetAttribute(moments_kernel<scalar_t>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(sh1)));
    }
    sums_kernel<scalar_t><<<blocks1, kThreads, sh1, stream>>>(features.data_ptr<scalar_t>(),
                                                               labels.data_ptr<int64_t>(), wp, g, ch,
                                                               part1.data_ptr<T>(), flags);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor means_t = at::empty({g.C, g.D}, features.options().dtype(tdt));
    const int64_t e1 = g.C * (g.D + 1);
    sums_reduce_kernel<T><<<(e1 + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        part1.data_ptr<T>(), blocks1, g, counts.data_ptr<double>(), means.data_ptr<double>(), means_t.data_ptr<T>(),
        flags + 1);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t E = g.D * (g.D + 1) / 2;
    // one C x E slice of partial moments per block: with many classes and a large D that is
    // C x D^2 / 2 x 4 bytes per block, so fewer blocks (each loops over more chunks) keep it
    // within kPartialBytes
    const int64_t slice = g.C * E * static_cast<int64_t>(sizeof(T));
    const int64_t blocks2 = std::max<int64_t>(1, std::min<int64_t>(ch.blocks, kPartialBytes / std::max<int64_t>(1, slice)));
    at::Tensor part2 = at::empty({blocks2, g.C, E}, features.options().dtype(tdt));
    moments_kernel<scalar_t><<<blocks2, kThreads, sh1, stream>>>(features.data_ptr<scalar_t>(),
                                                                  labels.data_ptr<int64_t>(), wp,
                                                                  means_t.data_ptr<T>(), g, ch, part2.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t e2 = g.C * E;  // >= 1: check_inputs wants C >= 1 and D >= 1
    finish_covs_kernel<T><<<(e2 + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        part2.data_ptr<T>(), blocks2, g, counts.data_ptr<double>(), covs.data_ptr<double>(), flags + 1);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {counts, means, covs, status};
}

// class_gaussians: the same, checked (one host sync for both flags).
std::tuple<at::Tensor, at::Tensor, at::Tensor> class_gaussians_cuda(const at::Tensor& features,
                                                                    const at::Tensor& labels,
                                                                    int64_t num_classes,
                                                                    const std::optional<at::Tensor>& weights,
                                                                    int64_t ignore_index) {
  auto [n, mu, cov, status] = class_gaussians_with_status_cuda(features, labels, num_classes, weights, ignore_index);
  const at::Tensor flags = status.cpu();
  TORCH_CHECK_VALUE(!flags[0].item<bool>(), "class_gaussians: `weights` must be >= 0 and not NaN");
  TORCH_CHECK_VALUE(!flags[1].item<bool>(), "class_gaussians: `features` (or `weights`) contain NaN or infinity");
  return {n, mu, cov};
}

std::tuple<at::Tensor, at::Tensor> class_gaussians_backward_cuda(
    const at::Tensor& grad_counts, const at::Tensor& grad_means, const at::Tensor& grad_covs,
    const at::Tensor& features_, const at::Tensor& labels_, const std::optional<at::Tensor>& weights,
    const at::Tensor& counts, const at::Tensor& means, const at::Tensor& covs, int64_t num_classes,
    int64_t ignore_index, bool features_grad, bool weights_grad) {
  const char* op = "class_gaussians (backward)";
  c10::cuda::CUDAGuard guard(features_.device());
  const at::Tensor features = features_.contiguous();
  const Geometry g = check_inputs(features, labels_, weights, num_classes, ignore_index, op);
  check_cuda_inputs(g, op);
  const at::Tensor labels = labels_.to(at::kLong).contiguous();
  auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble).contiguous(); };
  const at::Tensor gm = f64(grad_means), gC = f64(grad_covs);
  const at::Tensor n = f64(counts), mu = f64(means);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_x = features_grad ? at::empty_like(features) : at::empty({0}, features.options());
  at::Tensor grad_w = at::empty({0}, features.options());
  weights_grad = weights_grad && weights.has_value();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "class_gaussians_backward_cuda", [&] {
    using T = acc_t<scalar_t>;
    const auto tdt = c10::CppTypeToScalarType<T>::value;
    const at::Tensor w = weights.has_value() ? weights->to(tdt).contiguous() : at::Tensor();
    const T* wp = w.defined() ? w.data_ptr<T>() : nullptr;
    if (features_grad) {
      const int64_t elem = sizeof(T);
      const bool shared_g = backward_g_bytes(g, elem) <= kSharedGBytes;
      const Chunks ch = make_backward_chunks(g, elem, sm_count(), shared_g);
      // zero-padded to Dp channels: every thread's two 16-byte loads stay inside its class's rows
      const int64_t Dp = padded_channels(g.D);
      const auto opts = features.options().dtype(tdt);
      const at::Tensor G = at::empty({g.C, g.D, Dp}, opts), bias = at::empty({g.C, Dp}, opts);
      const at::Tensor scale = at::empty({g.C}, opts);
      backward_coefficients_kernel<T><<<g.C, kThreads, 0, stream>>>(
          n.data_ptr<double>(), mu.data_ptr<double>(), gm.data_ptr<double>(), gC.data_ptr<double>(), g, Dp,
          G.data_ptr<T>(), scale.data_ptr<T>(), bias.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const size_t sh = (shared_g ? backward_g_bytes(g, elem) : 0) + ch.K * (g.D * elem + elem + sizeof(int));
      auto* launch = shared_g ? &launch_backward<scalar_t, true> : &launch_backward<scalar_t, false>;
      launch(g, ch, sh, stream, features.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(), G.data_ptr<T>(), wp,
             scale.data_ptr<T>(), bias.data_ptr<T>(), grad_x.data_ptr<scalar_t>());
    }
    if (weights_grad) {  // rare (weights that need a gradient): the coefficients from ATen ops
      const at::Tensor gc = f64(grad_counts), cov = f64(covs);
      const BackwardCoefficients k = backward_coefficients(n, mu, cov, gm, gC);
      at::Tensor gw = at::empty({g.B * g.P}, features.options().dtype(at::kDouble));
      const int64_t total = g.B * g.P;
      if (total > 0) {  // a grid of 0 blocks is a launch error
        weight_grad_kernel<scalar_t><<<(total + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
            features.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(), k.G.contiguous().data_ptr<double>(),
            mu.data_ptr<double>(), gm.data_ptr<double>(), gc.data_ptr<double>(), n.data_ptr<double>(),
            k.trace.contiguous().data_ptr<double>(), g, gw.data_ptr<double>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      grad_w = gw.to(weights->scalar_type()).view(weights->sizes());
    }
  });
  return {grad_x, grad_w};
}

}  // namespace
}  // namespace stats
}  // namespace dale_ext

TORCH_LIBRARY_IMPL(dale_ext, CUDA, m) {
  m.impl("class_gaussians", &dale_ext::stats::class_gaussians_cuda);
  m.impl("_class_gaussians_with_status", &dale_ext::stats::class_gaussians_with_status_cuda);
  m.impl("_class_gaussians_backward", &dale_ext::stats::class_gaussians_backward_cuda);
}
