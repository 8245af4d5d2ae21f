// The row kernels of fuzzy_rows.h. Plain loops that GCC/Clang vectorise for the instruction
// set of the build (baseline SSE2 or AVX2), plus explicit non-temporal stores. This file must
// not include torch headers (see microkernels.h for why).
#include "cpu/fuzzy_rows.h"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#ifndef DALE_MK_ISA
#error "compile with -DDALE_MK_ISA=<namespace>"
#endif

namespace dale_ext {
namespace cpu {
namespace DALE_MK_ISA {
namespace {

// Adds 1 to col[x] for each pixel x of row `cur` that has a 4-neighbour with another label.
template <typename U>
inline int32_t edge_at(const U* up, const U* cur, const U* down, int64_t W, int64_t x) {
  const U c = cur[x];
  bool e = (c != up[x]) | (c != down[x]);
  if (x > 0) e |= c != cur[x - 1];
  if (x + 1 < W) e |= c != cur[x + 1];
  return e;
}

template <typename U>
void edge_counts(const U* up, const U* cur, const U* down, int64_t W, int32_t* col) {
  int64_t x = 1;
#if defined(__AVX2__)
  if constexpr (sizeof(U) == 8) {
    // int64 labels (torch's default): 8 pixels a step; the four 64-bit "all neighbours equal"
    // masks of each half are narrowed to 32 bits and added to the column counts
    const auto ld = [](const U* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); };
    const auto same = [&](int64_t i) {
      const __m256i c = ld(cur + i);
      const __m256i a = _mm256_and_si256(_mm256_cmpeq_epi64(c, ld(up + i)), _mm256_cmpeq_epi64(c, ld(down + i)));
      const __m256i b = _mm256_and_si256(_mm256_cmpeq_epi64(c, ld(cur + i - 1)), _mm256_cmpeq_epi64(c, ld(cur + i + 1)));
      return _mm256_and_si256(a, b);
    };
    const __m256i one = _mm256_set1_epi32(1);
    for (; x + 9 <= W; x += 8) {
      const __m256 lo = _mm256_castsi256_ps(same(x)), hi = _mm256_castsi256_ps(same(x + 4));
      // low 32 bits of each 64-bit lane, in pixel order
      const __m256i eq = _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))),
                                                  _MM_SHUFFLE(3, 1, 2, 0));
      __m256i* cp = reinterpret_cast<__m256i*>(col + x);
      _mm256_storeu_si256(cp, _mm256_add_epi32(_mm256_loadu_si256(cp), _mm256_andnot_si256(eq, one)));
    }
  }
#endif
  // interior: a pure map over x, so it vectorises for the narrower label types
  for (; x + 1 < W; ++x) {
    const U c = cur[x];
    col[x] += static_cast<int32_t>((c != up[x]) | (c != down[x]) | (c != cur[x - 1]) | (c != cur[x + 1]));
  }
  col[0] += edge_at(up, cur, down, W, 0);
  if (W > 1) col[W - 1] += edge_at(up, cur, down, W, W - 1);
}

// The bin of a float32 channel sum: bin_of_sum() in fuzzy_split.h, which this file may not
// include (torch headers); the tests compare both instruction sets with the float64 oracle.
inline int bin_of_sum(float s, float C, float bins) {
  float t = (s / C) * bins;
  t = t > 0.f ? t : 0.f;  // negative and NaN -> 0
  const float last = bins - 1.f;
  t = t < last ? t : last;
  return static_cast<int>(t);
}

bool bins_f32(const float* src, int64_t plane, int64_t C, int64_t W, int bins, uint16_t* q) {
  const float Cf = static_cast<float>(C), bf = static_cast<float>(bins);
  int64_t x = 0;
  bool nan = false;
#if defined(__AVX2__)
  // one pass: channel sum, NaN flag, bin, narrowing (the scalar loop below, 8 pixels at a time;
  // max(t, 0) maps NaN to 0 as the scalar form does)
  const __m256 vC = _mm256_set1_ps(Cf), vb = _mm256_set1_ps(bf), vlast = _mm256_set1_ps(bf - 1.f),
               zero = _mm256_setzero_ps();
  __m256 unordered = zero;
  for (; x + 8 <= W; x += 8) {
    __m256 s = _mm256_loadu_ps(src + x);
    for (int64_t c = 1; c < C; ++c) s = _mm256_add_ps(s, _mm256_loadu_ps(src + c * plane + x));
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(s, s, _CMP_UNORD_Q));
    __m256 t = _mm256_mul_ps(_mm256_div_ps(s, vC), vb);
    t = _mm256_min_ps(_mm256_max_ps(t, zero), vlast);
    const __m256i v = _mm256_cvttps_epi32(t);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + x), packed);
  }
  nan = _mm256_movemask_ps(unordered) != 0;
#endif
  for (; x < W; ++x) {
    float s = src[x];
    for (int64_t c = 1; c < C; ++c) s += src[c * plane + x];
    nan |= (s != s);
    q[x] = static_cast<uint16_t>(bin_of_sum(s, Cf, bf));
  }
  return nan;
}

void bins_u8(const uint8_t* src, int64_t plane, int64_t C, int64_t W, int bins, const uint16_t* table,
             uint16_t* q) {
  int64_t done = 0;
#if defined(__AVX2__)
  // floor(s * bins / (255 C)) in float32, 8 pixels at a time: exact while s * bins < 2^24 (a
  // quotient of integers below 2^24 that is not whole lies >= 1/(255 C) from the next integer,
  // more than its rounding error), so it equals the table; otherwise the table does all.
  if (255 * C * static_cast<int64_t>(bins) < (int64_t{1} << 24)) {
    const __m256 vb = _mm256_set1_ps(static_cast<float>(bins)), vd = _mm256_set1_ps(static_cast<float>(255 * C));
    const __m256i last = _mm256_set1_epi32(bins - 1);
    const auto px = [](const uint8_t* p) {
      return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    };
    for (; done + 8 <= W; done += 8) {
      __m256i sum = px(src + done);
      for (int64_t c = 1; c < C; ++c) sum = _mm256_add_epi32(sum, px(src + c * plane + done));
      const __m256 t = _mm256_div_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sum), vb), vd);
      const __m256i v = _mm256_min_epi32(_mm256_cvttps_epi32(t), last);
      const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + done), packed);
    }
  }
#else
  (void)bins;
#endif
  src += done;
  q += done;
  W -= done;
  constexpr int64_t kChunk = 256;  // channel sums of a chunk of pixels, then the table lookups
  int32_t s[kChunk];
  for (int64_t x0 = 0; x0 < W; x0 += kChunk) {
    const int64_t n = W - x0 < kChunk ? W - x0 : kChunk;
    const uint8_t* p = src + x0;
    for (int64_t x = 0; x < n; ++x) s[x] = p[x];
    for (int64_t c = 1; c < C; ++c)
      for (int64_t x = 0; x < n; ++x) s[x] += p[c * plane + x];
    for (int64_t x = 0; x < n; ++x) q[x0 + x] = table[s[x]];
  }
}

double patch_clogc(const uint16_t* q, int64_t stride, int64_t rows, int64_t cols, int32_t* hist,
                   const double* clogc, const double* dclogc) {
  // the patch's range of bins, in a loop of its own so that it vectorises
  uint16_t lo = 0xFFFF, hi = 0;
  int64_t x0 = 0;
#if defined(__AVX2__)
  // 16 columns at a time, min/max across rows in registers and one horizontal step at the end
  // (the plain loop reduces every row horizontally)
  if (cols >= 16) {
    __m256i vlo = _mm256_set1_epi16(-1), vhi = _mm256_setzero_si256();
    for (; x0 + 16 <= cols; x0 += 16)
      for (int64_t r = 0; r < rows; ++r) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + r * stride + x0));
        vlo = _mm256_min_epu16(vlo, v);
        vhi = _mm256_max_epu16(vhi, v);
      }
    const __m128i l = _mm_min_epu16(_mm256_castsi256_si128(vlo), _mm256_extracti128_si256(vlo, 1));
    const __m128i h = _mm_max_epu16(_mm256_castsi256_si128(vhi), _mm256_extracti128_si256(vhi, 1));
    lo = static_cast<uint16_t>(_mm_cvtsi128_si32(_mm_minpos_epu16(l)));
    hi = static_cast<uint16_t>(~_mm_cvtsi128_si32(_mm_minpos_epu16(_mm_xor_si128(h, _mm_set1_epi16(-1)))));
  }
#endif
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t x = x0; x < cols; ++x) {
      const uint16_t v = q[r * stride + x];
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
  const int64_t n = rows * cols, range = static_cast<int64_t>(hi) - lo + 1;
  if (2 * range <= n) {
    // few bins in range (smooth patches): count, then one sequential scan of the range, which
    // also resets it; two partial sums shorten the floating-point dependency chain
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t x = 0; x < cols; ++x) ++hist[q[r * stride + x]];
    double sum0 = 0.0, sum1 = 0.0;
    int32_t v = lo;
    for (; v < hi; v += 2) {
      sum0 += clogc[hist[v]];
      sum1 += clogc[hist[v + 1]];
      hist[v] = 0;
      hist[v + 1] = 0;
    }
    if (v == hi) {
      sum0 += clogc[hist[v]];
      hist[v] = 0;
    }
    return sum0 + sum1;
  }
  // wide range (noisy patches): a scan of it would visit about as many bins as there are
  // pixels, so the sum is taken while counting instead, pixel by pixel, as the increments
  // dclogc[c] = (c+1) ln(c+1) - c ln c; four partial sums, as the loads of neighbouring pixels
  // seldom hit one bin here. In-process A/B on the benchmark's noisy batch, two threads:
  // uint8 2.27 -> 2.13 ms, float32 2.56 -> 2.42 (benchmarks/results/2026-12-06-cpu-fuzzy-rows-ab.txt)
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* qr = q + r * stride;
    int64_t x = 0;
    for (; x + 4 <= cols; x += 4) {
      int32_t c = hist[qr[x]];
      s0 += dclogc[c];
      hist[qr[x]] = c + 1;
      c = hist[qr[x + 1]];
      s1 += dclogc[c];
      hist[qr[x + 1]] = c + 1;
      c = hist[qr[x + 2]];
      s2 += dclogc[c];
      hist[qr[x + 2]] = c + 1;
      c = hist[qr[x + 3]];
      s3 += dclogc[c];
      hist[qr[x + 3]] = c + 1;
    }
    for (; x < cols; ++x) {
      const int32_t c = hist[qr[x]];
      s0 += dclogc[c];
      hist[qr[x]] = c + 1;
    }
  }
  if (range <= 8 * n) {
    std::memset(hist + lo, 0, static_cast<size_t>(range) * sizeof(int32_t));  // a few vector stores
  } else {
    // more bins than pixels (e.g. bins = 65536): reset the pixels' own bins
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t x = 0; x < cols; ++x) hist[q[r * stride + x]] = 0;
  }
  return (s0 + s1) + (s2 + s3);
}

// Vector width for the streamed path: 8 floats with AVX, 4 with SSE; 0 where neither exists
// (the plain loops below then do all the work).
#if defined(__AVX2__)
constexpr int kLanes = 8;
using vf = __m256;
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline void vstream(float* p, vf v) { _mm256_stream_ps(p, v); }
inline vf vload_u8(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_div_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), _mm256_set1_ps(255.f));
}
#elif defined(__SSE2__)
constexpr int kLanes = 4;
using vf = __m128;
inline vf vload(const float* p) { return _mm_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm_storeu_ps(p, v); }
inline vf vmul(vf a, vf b) { return _mm_mul_ps(a, b); }
inline void vstream(float* p, vf v) { _mm_stream_ps(p, v); }
inline vf vload_u8(const uint8_t* p) {
  int32_t w;
  __builtin_memcpy(&w, p, 4);
  const __m128i z = _mm_setzero_si128();
  const __m128i b = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(w), z), z);
  return _mm_div_ps(_mm_cvtepi32_ps(b), _mm_set1_ps(255.f));
}
#else
constexpr int kLanes = 0;
#endif

inline float scaled(float v) { return v; }
inline float scaled(uint8_t v) { return static_cast<float>(v) / 255.f; }

// Elements to write one by one before `p` is aligned for streaming (or all of n when it can
// never be, e.g. a float pointer that is not 4-byte aligned).
inline int64_t head_count(const float* p, int64_t n) {
  if constexpr (kLanes == 0) return n;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), bytes = (kLanes > 0 ? kLanes : 1) * sizeof(float);
  if (a % sizeof(float) != 0) return n;
  const int64_t h = static_cast<int64_t>(((bytes - a % bytes) % bytes) / sizeof(float));
  return h < n ? h : n;
}

template <typename S>
void mask(const S* src, const float* fm, const float* nm, float* fo, float* no, int64_t n, bool stream) {
  int64_t x = 0;
  if (stream && head_count(fo, n) == head_count(no, n)) {
    for (const int64_t h = head_count(fo, n); x < h; ++x) {
      const float v = scaled(src[x]);
      fo[x] = fm[x] * v;
      no[x] = nm[x] * v;
    }
#if defined(__AVX2__) || defined(__SSE2__)
    // fo's row, then no's: alternating the two streams store by store left the write-combining
    // buffers half full on the development VM's AMD EPYC (a write-only run of the op's pattern
    // took ~4x as long as writing each row whole)
    // (uint8 rows go through a float buffer, a chunk at a time, so each value is divided once)
    constexpr int64_t kChunk = 512;
    alignas(32) float scaled_src[sizeof(S) == 1 ? kChunk : 1];
    while (x + kLanes <= n) {
      const int64_t x0 = x, end = x0 + ((n - x0) / kLanes) * kLanes;
      const int64_t stop = sizeof(S) == 1 && end - x0 > kChunk ? x0 + kChunk : end;
      for (; x < stop; x += kLanes) {
        vf v;
        if constexpr (sizeof(S) == 1) {
          v = vload_u8(src + x);
          vstore(scaled_src + (x - x0), v);
        } else {
          v = vload(src + x);
        }
        vstream(fo + x, vmul(vload(fm + x), v));
      }
      for (x = x0; x < stop; x += kLanes) {
        vf v;
        if constexpr (sizeof(S) == 1) v = vload(scaled_src + (x - x0)); else v = vload(src + x);
        vstream(no + x, vmul(vload(nm + x), v));
      }
    }
#endif
  }
  for (; x < n; ++x) {
    const float v = scaled(src[x]);
    fo[x] = fm[x] * v;
    no[x] = nm[x] * v;
  }
}

void copy(const float* src, float* dst, int64_t n, bool stream) {
  int64_t x = 0;
  if (stream) {
    for (const int64_t h = head_count(dst, n); x < h; ++x) dst[x] = src[x];
#if defined(__AVX2__) || defined(__SSE2__)
    for (; x + kLanes <= n; x += kLanes) vstream(dst + x, vload(src + x));
#endif
  }
  for (; x < n; ++x) dst[x] = src[x];
}

void fence() {
#if defined(__SSE2__) || defined(__AVX2__)
  _mm_sfence();
#endif
}

}  // namespace

extern const FuzzyRowKernels fuzzy_rows = {
    &bins_f32,       &bins_u8,          &patch_clogc,
    &edge_counts<uint8_t>, &edge_counts<uint16_t>, &edge_counts<uint32_t>, &edge_counts<uint64_t>,
    &mask<float>,    &mask<uint8_t>,   &copy,            &fence,
};

}  // namespace DALE_MK_ISA
}  // namespace cpu
}  // namespace dale_ext
