// The CPU output cache (output_cache.h): an at::Allocator whose freed blocks go to a free list
// (oldest evicted first when the limit is reached) instead of back to malloc. Blocks come from
// c10::alloc_cpu (torch's alignment and allocation policy) and are returned with c10::free_cpu.
// The DataPtr's context is the data pointer itself (a "simple" data pointer, as torch's own CPU
// allocator makes), so copy-on-write clones work; sizes live in a map.
#include "cpu/output_cache.h"
#include "cpu/output_cache_tensor.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dale_ext {
namespace cpu {
namespace {

constexpr size_t kMinBytes = size_t{256} << 10;  // smaller blocks: malloc's heap reuses them already
constexpr int64_t kDefaultMiB = 256;
constexpr int64_t kMaxMiB = int64_t{1} << 30;  // clamp for DALE_EXT_CPU_CACHE_MB

// DALE_EXT_CPU_CACHE_MB as bytes: a non-negative integer, else the default.
size_t limit_from_env() {
  const char* text = std::getenv("DALE_EXT_CPU_CACHE_MB");
  int64_t mib = kDefaultMiB;
  if (text != nullptr && *text != '\0') {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(text, &end, 10);
    if (errno == 0 && end != text && *end == '\0' && v >= 0) mib = v < kMaxMiB ? v : kMaxMiB;
  }
  return static_cast<size_t>(mib) << 20;
}

// Tells torch's memory profiler (profile_memory=True) about a block handed out (+) or freed (-).
void report(void* p, int64_t delta, size_t live_bytes, size_t held) {
  if (c10::memoryProfilingEnabled())
    c10::reportMemoryUsageToProfiler(p, delta, live_bytes, live_bytes + held, c10::Device(c10::DeviceType::CPU));
}

struct Cache {
  std::mutex mu;
  std::list<std::pair<size_t, void*>> free_blocks;  // oldest first
  std::multimap<size_t, std::list<std::pair<size_t, void*>>::iterator> by_size;
  std::unordered_map<void*, size_t> live;  // blocks handed out, with their real sizes
  size_t held = 0, live_bytes = 0;
  std::atomic<size_t> limit{limit_from_env()};

  // A freed block of at least `n` bytes and at most n + n/4 (same-shape calls reuse exactly).
  void* take(size_t n) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = by_size.lower_bound(n);
    if (it == by_size.end() || it->first > n + n / 4) return nullptr;
    void* p = it->second->second;
    const size_t bytes = it->first;
    free_blocks.erase(it->second);
    by_size.erase(it);
    held -= bytes;
    live.emplace(p, bytes);
    live_bytes += bytes;
    report(p, static_cast<int64_t>(bytes), live_bytes, held);
    return p;
  }

  void track(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    live.emplace(p, bytes);
    live_bytes += bytes;
    report(p, static_cast<int64_t>(bytes), live_bytes, held);
  }

  // Unlinks the oldest held block; the caller frees it outside the lock.
  void* evict_oldest_locked() {
    auto& [bytes, p] = free_blocks.front();
    void* out = p;
    for (auto it = by_size.find(bytes); it != by_size.end() && it->first == bytes; ++it)
      if (it->second == free_blocks.begin()) {
        by_size.erase(it);
        break;
      }
    held -= bytes;
    free_blocks.pop_front();
    return out;
  }

  // Keeps the freed block `p` if it fits under the limit (evicting the oldest blocks to make
  // room); frees what does not stay.
  void give_back(void* p) {
    std::vector<void*> drop;
    size_t bytes, live_now, held_now;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = live.find(p);
      bytes = it->second;
      live.erase(it);
      live_bytes -= bytes;
      const size_t cap = limit.load();
      if (bytes > cap) {
        drop.push_back(p);
      } else {
        while (held + bytes > cap && !free_blocks.empty()) drop.push_back(evict_oldest_locked());
        free_blocks.emplace_back(bytes, p);
        by_size.emplace(bytes, std::prev(free_blocks.end()));
        held += bytes;
      }
      live_now = live_bytes;
      held_now = held;
    }
    report(p, -static_cast<int64_t>(bytes), live_now, held_now);
    for (void* q : drop) c10::free_cpu(q);
  }

  // Frees blocks, oldest first, until at most `keep` bytes are held.
  void trim(size_t keep) {
    std::vector<void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu);
      while (held > keep && !free_blocks.empty()) drop.push_back(evict_oldest_locked());
    }
    for (void* q : drop) c10::free_cpu(q);
  }
};

// Never destroyed: tensors may be freed after static destructors have run (interpreter exit).
Cache* g_cache = nullptr;
std::once_flag g_once;

// A child forked while another thread held the lock would wait on it forever: the child gets a
// fresh, unlocked mutex (the blocks it inherited are its own copies).
void reset_lock_in_child() {
  if (g_cache != nullptr) new (&g_cache->mu) std::mutex();
}

Cache& cache() {
  std::call_once(g_once, [] {
    g_cache = new Cache();
    pthread_atfork(nullptr, nullptr, &reset_lock_in_child);
  });
  return *g_cache;
}

void release(void* p) { cache().give_back(p); }

struct CachingCpuAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    Cache& c = cache();
    if (n < kMinBytes || c.limit.load() == 0) return c10::GetCPUAllocator()->allocate(n);
    void* p = c.take(n);
    if (p == nullptr) {
      p = c10::alloc_cpu(n);
      c.track(p, n);
    }
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
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
  c.limit.store(bytes > 0 ? static_cast<size_t>(bytes) : 0);
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
