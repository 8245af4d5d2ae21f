// Dense micro-kernels of the Wasserstein statistics and of gaussian_w2's D x D products (CPU). They are compiled once per
// instruction set (baseline and, on x86-64, AVX2+FMA and AVX-512) in microkernels.cpp, a file that includes
// no torch header, so that no inline function compiled for AVX2 can be picked by the linker
// for code that runs on older CPUs. microkernels() returns the best set for this CPU.
//
// Shapes are padded by the caller: D to a multiple of kRowBlock, T to a multiple of kColBlock,
// with zeros in the padding.
#pragma once

#include <cstdint>

namespace dale_ext {
namespace cpu {

constexpr int64_t kRowBlock = 4;
constexpr int64_t kColBlock = 16;

// A run of one class's pixels in a strip of the statistics (strip coordinates).
struct RunSpan {
  int64_t start, length;
};

// Terms a float lane of gather_runs / centre_row adds before its sum goes into double.
constexpr int64_t kSumChunk = 1024;

// Scratch elements syrk_upper needs for D rows and T columns (D rounded up to 16 lanes).
inline int64_t syrk_scratch_size(int64_t D, int64_t T_) { return (D + 15) / 16 * 16 * T_; }

template <typename T>
struct MicroKernelsFor {
  // acc[i][j] += sum_t Z[i][t] Z[j][t] for j >= i, i, j < Dout (each sum taken in T, added in
  // double); Z is D x T with row stride ldz (D >= Dout, padded), acc has row stride ldacc.
  // `scratch` holds syrk_scratch_size(D, T) elements (the AVX-512 set transposes Z there).
  void (*syrk_upper)(const T* Z, int64_t D, int64_t T_, int64_t ldz, double* acc, int64_t Dout, int64_t ldacc,
                     T* scratch);
  // Y = G X; G is D x D row-major, X is D x T (row stride ldx), Y is D x T (row stride ldy).
  void (*gemm)(const T* G, const T* X, int64_t D, int64_t T_, int64_t ldx, T* Y, int64_t ldy);
  // out = the runs of `row`, one after another; returns the sum of f[k] row[k] over them (f is
  // indexed as row), partial sums in T lanes added into double every kSumChunk terms.
  double (*gather_runs)(const T* row, const RunSpan* runs, int64_t nruns, const T* f, T* out);
  // z[j] = (z[j] - shift) f[j] for j < n; returns the sum of the new z[j] f[j] (as gather_runs).
  double (*centre_row)(T* z, int64_t n, T shift, const T* f);
  // The backward's epilogue: out[k] = w[k] (scale y[j] + bias) for the k of the runs in order,
  // j counting from 0 (w and out are indexed as the strip, y as the compact columns).
  void (*scatter_runs)(const T* y, const RunSpan* runs, int64_t nruns, const T* w, T scale, T bias, T* out);
  // The most columns one syrk_upper call should take: the set's float accumulators then add at
  // most ~128 products each (1024 for 8-lane dot products, 128 for outer products).
  int64_t syrk_max_cols;
};

// gaussian_w2's float64 products of n x n row-major matrices (n a multiple of kSquareBlock, row
// stride ld): terms that a factor's triangle of stored zeros makes vanish are skipped, and so,
// where asked, are the blocks of Y wholly on one side of the diagonal (a symmetric result); such
// blocks are not written. On the AMD EPYC development VM MKL's dgemm ran 128^3 in 108 us against
// this kernel's 77 (not measured on the Intel one, where MKL's took 48 us); torch exports no
// dtrmm or dsyrk, and the structured products here do half a full product's work or less.
constexpr int64_t kSquareBlock = 16;
enum class Half : int8_t { kAll, kUpper, kLower };
struct SquareShape {
  bool g_upper = false;  // G[i][d] = 0 for d < i
  bool x_lower = false;  // X[d][t] = 0 for t > d
  bool x_upper = false;  // X[d][t] = 0 for t < d
  Half y = Half::kAll;   // kUpper: entries t >= i are right (and more); kLower: t <= i
};

// gaussian_w2's symmetric eigensolver (symmetric_eigen.cpp): the D x D matrix in the n x n
// buffer A (both triangles, zero padding; destroyed) gives its eigenvalues, ascending, in w (D)
// and its eigenvectors as the rows of Z (n x n, zero padding). `work` holds work_size doubles,
// at least symmetric_eigen_work_size(n); more lets the QL record more rotations between the
// passes that apply them. Returns false, leaving w and Z unspecified, where A holds inf or NaN
// or an eigenvalue took more than max_sweeps QL sweeps (callers then use LAPACK; kQlMaxSweeps
// is what they pass, twice LAPACK's dsteqr's 30 an eigenvalue).
constexpr int kQlMaxSweeps = 60;
inline int64_t symmetric_eigen_work_size(int64_t n) { return (6 + 32 + 3) * n + 2 * n * n + 3 * n * n + 4 * n; }

struct MicroKernels {
  MicroKernelsFor<float> f32;
  MicroKernelsFor<double> f64;
  // Y = G X (Y distinct from G and X)
  void (*square_gemm)(const double* G, const double* X, double* Y, int64_t n, int64_t ld, SquareShape shape);
  // A = U^T U for the D x D symmetric matrix in A (row stride ld, a multiple of the vector width;
  // the upper triangle is read): U into the upper triangle, the entries below the diagonal left
  // unspecified. False where a pivot is not positive (or NaN): not positive definite.
  bool (*cholesky_upper)(double* A, int64_t D, int64_t ld);
  bool (*symmetric_eigen)(double* A, int64_t D, int64_t n, double* w, double* Z, double* work, int64_t work_size,
                          int max_sweeps);
  // Whether symmetric_eigen beats LAPACK's dsyevd with this set (at D = 128 on one core: AVX-512
  // 0.70 against 1.1 ms, AVX2 0.73 against 1.1; the SSE2 build 6.5, its products being slow).
  bool symmetric_eigen_preferred;
  const char* isa;
  template <typename T>
  const MicroKernelsFor<T>& get() const;
};
template <>
inline const MicroKernelsFor<float>& MicroKernels::get<float>() const { return f32; }
template <>
inline const MicroKernelsFor<double>& MicroKernels::get<double>() const { return f64; }

const MicroKernels& microkernels();
// The name of the set microkernels() returns ("baseline", "avx2" or "avx512"), for build_info().
const char* microkernels_isa();

// One set per instruction set, defined in microkernels.cpp.
namespace baseline { extern const MicroKernels kernels; }
#ifdef DALE_EXT_HAVE_AVX2
namespace avx2 { extern const MicroKernels kernels; }
#endif
#ifdef DALE_EXT_HAVE_AVX512
namespace avx512 { extern const MicroKernels kernels; }
#endif

}  // namespace cpu
}  // namespace dale_ext
