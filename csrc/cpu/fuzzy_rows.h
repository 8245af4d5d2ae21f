// Row kernels of fuzzy_split (CPU): grey-level bins, the edge map, the patch histograms' entropy
// sums and the output writes, the parts of the op that are pure arithmetic on rows. Like the
// Wasserstein micro-kernels (microkernels.h) they are compiled once per instruction set in
// fuzzy_rows.cpp, a file that includes no torch header, and fuzzy_row_kernels() returns the set
// for this CPU.
#pragma once

#include <cstdint>

namespace dale_ext {
namespace cpu {

struct FuzzyRowKernels {
  // q[x] = grey-level bin of pixel x of one float32 image row whose C channels lie `plane`
  // elements apart: grey_bin()'s arithmetic (fuzzy_split.h), channels summed in order in float32.
  // Returns true when a pixel is NaN (its bin is then 0).
  bool (*bins_f32)(const float* src, int64_t plane, int64_t C, int64_t W, int bins, uint16_t* q);
  // uint8 rows: q[x] = table[sum of the pixel's C channels] (the exact bins of bin_of_u8_sum for
  // `bins`; the AVX2 build computes most of them instead of looking them up).
  void (*bins_u8)(const uint8_t* src, int64_t plane, int64_t C, int64_t W, int bins, const uint16_t* table,
                  uint16_t* q);
  // Sum over the bins v of one patch of c_v ln c_v (clogc[c] = c ln c for c = 0 .. rows*cols,
  // dclogc[c] = clogc[c + 1] - clogc[c]), its rows `stride` apart in q. `hist` has `bins` zeros
  // on entry and on exit.
  double (*patch_clogc)(const uint16_t* q, int64_t stride, int64_t rows, int64_t cols, int32_t* hist,
                        const double* clogc, const double* dclogc);
  // col[x] += 1 when pixel x of row `cur` has a 4-neighbour with another label. `up` and
  // `down` are the rows above and below (the row itself at the image border). Labels are
  // compared by their bits, so one kernel serves every integer type of a given width.
  void (*edge_counts_u8)(const uint8_t* up, const uint8_t* cur, const uint8_t* down, int64_t W, int32_t* col);
  void (*edge_counts_u16)(const uint16_t* up, const uint16_t* cur, const uint16_t* down, int64_t W, int32_t* col);
  void (*edge_counts_u32)(const uint32_t* up, const uint32_t* cur, const uint32_t* down, int64_t W, int32_t* col);
  void (*edge_counts_u64)(const uint64_t* up, const uint64_t* cur, const uint64_t* down, int64_t W, int32_t* col);
  // fo[x] = fm[x] * src[x] and no[x] = nm[x] * src[x]; uint8 sources are scaled by 1/255 first,
  // as v / 255.f (MaskedPixel in fuzzy_split.h). `stream`: non-temporal stores for outputs that
  // do not fit in cache (they bypass it instead of first reading every line they overwrite);
  // streamed, fo is written whole before no (see fuzzy_rows.cpp).
  void (*mask_f32)(const float* src, const float* fm, const float* nm, float* fo, float* no, int64_t n,
                   bool stream);
  void (*mask_u8)(const uint8_t* src, const float* fm, const float* nm, float* fo, float* no, int64_t n,
                  bool stream);
  void (*copy_f32)(const float* src, float* dst, int64_t n, bool stream);
  // Call once after the last streamed store of a thread (orders them before later reads).
  void (*fence)();

  template <typename U>
  void edge_counts(const U* up, const U* cur, const U* down, int64_t W, int32_t* col) const;
};

// Picks the kernel of a label width (callers only: the per-ISA file must not instantiate
// inline code that other files could share).
#ifndef DALE_MK_ISA
template <typename U>
inline void FuzzyRowKernels::edge_counts(const U* up, const U* cur, const U* down, int64_t W,
                                         int32_t* col) const {
  static_assert(sizeof(U) == 1 || sizeof(U) == 2 || sizeof(U) == 4 || sizeof(U) == 8, "label width");
  if constexpr (sizeof(U) == 1) edge_counts_u8(up, cur, down, W, col);
  else if constexpr (sizeof(U) == 2) edge_counts_u16(up, cur, down, W, col);
  else if constexpr (sizeof(U) == 4) edge_counts_u32(up, cur, down, W, col);
  else edge_counts_u64(up, cur, down, W, col);
}
#endif

const FuzzyRowKernels& fuzzy_row_kernels();

namespace baseline { extern const FuzzyRowKernels fuzzy_rows; }
#ifdef DALE_EXT_HAVE_AVX2
namespace avx2 { extern const FuzzyRowKernels fuzzy_rows; }
#endif

}  // namespace cpu
}  // namespace dale_ext
