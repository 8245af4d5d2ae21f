// Throughput of the Wasserstein statistics' dense micro-kernels (csrc/cpu/microkernels.cpp), one
// core, float32 and float64, at the shapes the statistics op hands them (D rows, T columns of a
// class's centred pixels), and of gaussian_w2's square products. Useful multiply-adds: syrk D(D+1)/2 T, gemm D^2 T. Build and run:
//   g++ -O3 -mavx2 -mfma -ffp-contract=fast -DDALE_MK_ISA=avx2 -Icsrc -c csrc/cpu/microkernels.cpp -o /tmp/mk.o
//   g++ -O3 -DDALE_EXT_HAVE_AVX2 -Icsrc benchmarks/microkernels_bench.cpp /tmp/mk.o -o /tmp/mk && /tmp/mk
// The AVX-512 set (ISA=avx512 picks it here):
//   g++ -O3 -mavx512f -mavx512vl -mavx512dq -mavx512bw -mavx2 -mfma -ffp-contract=fast -DDALE_MK_ISA=avx512 \
//       -DDALE_MK_VECTOR_BYTES=64 -Icsrc -c csrc/cpu/microkernels.cpp -o /tmp/mk512.o
//   g++ -O3 -DDALE_EXT_HAVE_AVX512 -DISA=avx512 -Icsrc benchmarks/microkernels_bench.cpp /tmp/mk512.o -o /tmp/mk512
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#ifndef ISA
#define ISA avx2
#define DALE_EXT_HAVE_AVX2
#endif

#include "cpu/microkernels.h"

template <typename Fn>
double median_s(Fn&& fn, int reps) {
  std::vector<double> ts;
  for (int r = 0; r < 15; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) fn();
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

template <typename T>
void run(const dale_ext::cpu::MicroKernelsFor<T>& k, const char* type) {
  for (int64_t D : {64, 128})
    for (int64_t T_ : {64, 128, 160, 320, 640}) {
      std::vector<T> Z(D * T_), G(D * D), Y(D * T_), S(dale_ext::cpu::syrk_scratch_size(D, T_));
      std::vector<double> A(D * D);
      std::mt19937 rng(0);
      std::normal_distribution<T> n;
      for (auto& v : Z) v = n(rng);
      for (auto& v : G) v = n(rng);
      const int reps = static_cast<int>(20000000 / (D * D * T_)) + 1;
      const double syrk = median_s([&] { k.syrk_upper(Z.data(), D, T_, T_, A.data(), D, D, S.data()); }, reps);
      const double gemm = median_s([&] { k.gemm(G.data(), Z.data(), D, T_, T_, Y.data(), T_); }, reps);
      std::printf("%s D=%3ld T=%3ld  syrk %5.1f GFMA/s  gemm %5.1f GFMA/s\n", type, static_cast<long>(D),
                  static_cast<long>(T_), D * (D + 1) / 2.0 * T_ / syrk / 1e9, static_cast<double>(D * D * T_) / gemm / 1e9);
    }
}

// gaussian_w2's n x n float64 products: full, and the structured ones it runs (time per call)
void run_square(const dale_ext::cpu::MicroKernels& k) {
  using dale_ext::cpu::Half;
  using dale_ext::cpu::SquareShape;
  for (int64_t n : {64, 128}) {
    std::vector<double> G(n * n), X(n * n), Y(n * n);
    std::mt19937 rng(0);
    std::normal_distribution<double> nd;
    for (auto& v : G) v = nd(rng);
    for (auto& v : X) v = nd(rng);
    const int reps = static_cast<int>(20000000 / (n * n * n)) + 1;
    const struct { const char* name; SquareShape shape; } cases[] = {
        {"full", {}},
        {"x_lower (S2 L)", {false, true, false, Half::kAll}},
        {"g_upper, y lower (L^T P)", {true, false, false, Half::kLower}},
        {"x_upper (E U)", {false, false, true, Half::kAll}},
        {"y upper (gram)", {false, false, false, Half::kUpper}},
    };
    for (const auto& c : cases) {
      const double t = median_s([&] { k.square_gemm(G.data(), X.data(), Y.data(), n, n, c.shape); }, reps);
      std::printf("square_gemm n=%3ld %-26s %7.1f us  (%5.1f GFMA/s as a full product)\n", static_cast<long>(n),
                  c.name, t * 1e6, static_cast<double>(n * n * n) / t / 1e9);
    }
  }
}

int main() {
  const auto& mk = dale_ext::cpu::ISA::kernels;
  run(mk.f32, "float32");
  run(mk.f64, "float64");
  run_square(mk);
}
