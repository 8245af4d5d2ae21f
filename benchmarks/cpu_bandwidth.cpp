// Memory bandwidth of this machine as fuzzy_split sees it: read 64 MB, and write 38.5 MB (the
// op's float32 outputs at B=24, 3x224x224) with plain and with non-temporal stores, into a buffer
// allocated once (no page faults). Built and run by benchmarks/profile_memory.py:
//   g++ -O2 -mavx2 -fopenmp benchmarks/cpu_bandwidth.cpp -o /tmp/cpu_bandwidth && /tmp/cpu_bandwidth
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

template <typename Fn>
double median_ms(Fn&& fn, int reps = 21) {
  std::vector<double> ts;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ts.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts[reps / 2];
}

int main() {
  const size_t nread = (64u << 20) / 4, nwrite = 38535168 / 4, block = 1024;
  float* a = static_cast<float*>(std::aligned_alloc(64, nread * 4));
  float* d = static_cast<float*>(std::aligned_alloc(64, nwrite * 4));
  for (size_t i = 0; i < nread; ++i) a[i] = 1.f;
  for (size_t i = 0; i < nwrite; ++i) d[i] = 0.f;
  volatile float sink = 0.f;
  for (int threads = 1; threads <= 2; ++threads) {
    const double r = median_ms([&] {
      float s = 0.f;
#pragma omp parallel for num_threads(threads) reduction(+ : s)
      for (long b = 0; b < static_cast<long>(nread / block); ++b) {
        __m256 acc = _mm256_setzero_ps();
        for (size_t i = 0; i < block; i += 8) acc = _mm256_add_ps(acc, _mm256_load_ps(a + b * block + i));
        float t[8];
        _mm256_storeu_ps(t, acc);
        s += t[0] + t[7];
      }
      sink = sink + s;
    });
    std::printf("threads %d: read 64 MB %.2f ms (%.1f GB/s)\n", threads, r, 64.0 * 1.048576 / r);
    for (int stream = 0; stream <= 1; ++stream) {
      const double w = median_ms([&] {
#pragma omp parallel for num_threads(threads)
        for (long b = 0; b < static_cast<long>(nwrite / block); ++b) {
          const float* s = a + (b % 4096) * block;
          float* o = d + b * block;
          for (size_t i = 0; i < block; i += 8) {
            const __m256 v = _mm256_mul_ps(_mm256_load_ps(s + i), _mm256_set1_ps(0.5f));
            if (stream) _mm256_stream_ps(o + i, v); else _mm256_store_ps(o + i, v);
          }
        }
        _mm_sfence();
      });
      std::printf("threads %d: write 38.5 MB, %s stores %.2f ms\n", threads, stream ? "non-temporal" : "plain", w);
    }
  }
  std::free(a);
  std::free(d);
  return 0;
}
