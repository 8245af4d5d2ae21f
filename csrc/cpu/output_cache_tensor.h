// empty_cached(): a CPU tensor whose storage comes from the output cache (output_cache.h).
#pragma once

#include <ATen/core/Tensor.h>

namespace dale_ext {
namespace cpu {

// Uninitialised contiguous CPU tensor; blocks below 256 KiB come from torch's CPU allocator.
at::Tensor empty_cached(at::IntArrayRef sizes, at::ScalarType dtype);

}  // namespace cpu
}  // namespace dale_ext
