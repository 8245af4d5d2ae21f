// The CPU output cache (output_cache.h): an at::Allocator whose blocks return to a size-keyed
// free list instead of to malloc. Blocks come from c10::alloc_cpu (torch's alignment and
// allocation policy) and go back to c10::free_cpu when they do not fit under the limit.
#include "cpu/output_cache.h"
#include "cpu/output_cache_tensor.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>

namespace dale_ext {
namespace cpu {
namespace {

constexpr size_t kMinBytes = size_t{256} << 10;  // smaller blocks: malloc's heap reuses them already

struct Block {
  void* ptr;
  size_t bytes;
};

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;
  size_t held = 0;
  std::atomic<size_t> limit;

  Cache() {
    const char* mb = std::getenv("DALE_EXT_CPU_CACHE_MB");
    limit = mb != nullptr ? static_cast<size_t>(std::strtoll(mb, nullptr, 10)) << 20 : size_t{256} << 20;
  }

  // A freed block of at least `n` bytes and at most n + n/4 (same-shape calls reuse exactly).
  Block take(size_t n) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = free_blocks.lower_bound(n);
    if (it == free_blocks.end() || it->first > n + n / 4) return {nullptr, 0};
    Block b{it->second, it->first};
    held -= it->first;
    free_blocks.erase(it);
    return b;
  }

  void give_back(Block b) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (held + b.bytes <= limit.load()) {
        free_blocks.emplace(b.bytes, b.ptr);
        held += b.bytes;
        return;
      }
    }
    c10::free_cpu(b.ptr);
  }

  // Frees blocks, largest first, until at most `keep` bytes are held.
  void trim(size_t keep) {
    std::multimap<size_t, void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu);
      while (held > keep && !free_blocks.empty()) {
        auto last = std::prev(free_blocks.end());
        held -= last->first;
        drop.insert(*last);
        free_blocks.erase(last);
      }
    }
    for (auto& kv : drop) c10::free_cpu(kv.second);
  }
};

// Never destroyed: tensors may be freed after static destructors have run (interpreter exit).
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

void release(void* ctx) {
  Block* b = static_cast<Block*>(ctx);
  cache().give_back(*b);
  delete b;
}

struct CachingCpuAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    Cache& c = cache();
    if (n < kMinBytes || c.limit.load() == 0) return c10::GetCPUAllocator()->allocate(n);
    Block b = c.take(n);
    if (b.ptr == nullptr) b = Block{c10::alloc_cpu(n), n};
    return {b.ptr, new Block(b), &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CachingCpuAllocator& allocator() {
  static CachingCpuAllocator* a = new CachingCpuAllocator();
  return *a;
}

}  // namespace

int64_t output_cache_limit() { return static_cast<int64_t>(cache().limit.load()); }

void set_output_cache_limit(int64_t bytes) {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.limit = bytes > 0 ? static_cast<size_t>(bytes) : 0;
  }
  c.trim(c.limit.load());
}

int64_t output_cache_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return static_cast<int64_t>(c.held);
}

void empty_output_cache() { cache().trim(0); }

at::Tensor empty_cached(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::detail::empty_generic(sizes, &allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                   std::nullopt);
}

}  // namespace cpu
}  // namespace dale_ext
