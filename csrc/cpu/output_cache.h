// A small cache of freed CPU output blocks, for the large outputs the ops write on every call.
//
// Why: glibc serves each allocation at or above its mmap threshold (dynamic, at most 32 MiB) with
// a fresh mmap, and an allocation of exactly the threshold size stays above it, so an op called
// every iteration with the same shapes gets new pages each time; the kernel zeroes each one on
// its first touch. On the development VM that cost ~2 us per 4 KiB page, up to ~19 ms for the
// 28.8 MB of masked images of one fuzzy_split call at B=24, 3x224x224 (the writes themselves
// take ~1.5 ms). Blocks freed by the caller go back to this cache (bounded: limit below) and the
// next call of the same shape reuses them.
//
// Plain functions only: module.cpp includes this header without torch's.
#pragma once

#include <cstdint>

namespace dale_ext {
namespace cpu {

// Bytes of freed blocks the cache may hold (default 256 MiB, or DALE_EXT_CPU_CACHE_MB); 0 turns
// the cache off (every block is freed at once). Lowering it frees blocks beyond the new limit.
int64_t output_cache_limit();
void set_output_cache_limit(int64_t bytes);
// Bytes of freed blocks held right now.
int64_t output_cache_bytes();
// Frees every cached block.
void empty_output_cache();

}  // namespace cpu
}  // namespace dale_ext
