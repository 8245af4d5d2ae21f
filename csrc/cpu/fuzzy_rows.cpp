// The row kernels of fuzzy_rows.h. Plain loops that GCC/Clang vectorise for the instruction
// set of the build (baseline SSE2 or AVX2), plus explicit non-temporal stores. This file must
// not include torch headers (see microkernels.h for why).
#include "cpu/fuzzy_rows.h"

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

template <typename U>
void edges(const U* up, const U* cur, const U* down, int64_t W, uint8_t* e) {
  if (W == 1) {
    e[0] = (cur[0] != up[0]) | (cur[0] != down[0]);
    return;
  }
  // interior: a pure map over x (no loop-carried writes), so it vectorises
  for (int64_t x = 1; x + 1 < W; ++x) {
    const U c = cur[x];
    e[x] = static_cast<uint8_t>((c != up[x]) | (c != down[x]) | (c != cur[x - 1]) | (c != cur[x + 1]));
  }
  e[0] = (cur[0] != up[0]) | (cur[0] != down[0]) | (cur[0] != cur[1]);
  const int64_t l = W - 1;
  e[l] = (cur[l] != up[l]) | (cur[l] != down[l]) | (cur[l] != cur[l - 1]);
}

// Vector width for the streamed path: 8 floats with AVX, 4 with SSE; 0 where neither exists
// (the plain loops below then do all the work).
#if defined(__AVX2__)
constexpr int kLanes = 8;
using vf = __m256;
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
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
    for (; x + kLanes <= n; x += kLanes) {
      vf v;
      if constexpr (sizeof(S) == 1) v = vload_u8(src + x); else v = vload(src + x);
      vstream(fo + x, vmul(vload(fm + x), v));
      vstream(no + x, vmul(vload(nm + x), v));
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
    &edges<uint8_t>, &edges<uint16_t>, &edges<uint32_t>, &edges<uint64_t>,
    &mask<float>,    &mask<uint8_t>,   &copy,            &fence,
};

}  // namespace DALE_MK_ISA
}  // namespace cpu
}  // namespace dale_ext
