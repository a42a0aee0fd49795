#include "transport/buffer_pool.h"

#include <sys/mman.h>

#include <bit>
#include <mutex>
#include <vector>

namespace janus::transport {

namespace {
constexpr size_t kMinBlock = 4096;
constexpr int kClasses = 48;

int class_of(size_t bytes) {
  const size_t b = std::max(bytes, kMinBlock);
  return static_cast<int>(std::bit_width(b - 1));  // 2^class >= bytes
}
}  // namespace

// The part blocks' holders keep alive: slabs and free lists (the endpoint is not touched
// here, so a Tensor may outlive the bridge that received it).
struct BufferPool::Core {
  struct Slab {
    char* base = nullptr;
    size_t bytes = 0;
    void* mr = nullptr;
    size_t used = 0;  // carved so far (small-block slabs)
  };
  mutable std::mutex mu;
  std::vector<Slab> slabs;
  std::vector<PoolBlock> free[kClasses];
  PoolStats stats;

  ~Core() {
    for (Slab& s : slabs) munmap(s.base, s.bytes);
  }
};

BufferPool::BufferPool(Endpoint& endpoint, size_t slab_bytes) : endpoint_(endpoint), core_(std::make_shared<Core>()) {
  // The slab size is a power of two, so every class up to it tiles a slab exactly.
  slab_bytes_ = std::bit_ceil(std::max(slab_bytes, size_t{1} << 20));
}

BufferPool::~BufferPool() = default;

Result<PoolBlock> BufferPool::acquire(size_t bytes) {
  if (bytes == 0) bytes = 1;
  const int c = class_of(bytes);
  if (c >= kClasses) return resource_exhausted("buffer pool: a block of " + std::to_string(bytes) + " bytes");
  const size_t size = size_t{1} << c;
  std::lock_guard<std::mutex> lk(core_->mu);
  Core& k = *core_;
  ++k.stats.acquired;
  ++k.stats.in_use;
  if (!k.free[c].empty()) {
    PoolBlock b = k.free[c].back();
    k.free[c].pop_back();
    ++k.stats.reused;
    return b;
  }
  // Carve from the newest small-block slab with room, else map and register a new one.
  if (size <= slab_bytes_) {
    for (auto it = k.slabs.rbegin(); it != k.slabs.rend(); ++it) {
      if (it->bytes != slab_bytes_ || it->used + size > it->bytes) continue;
      PoolBlock b{it->base + it->used, size, it->mr};
      it->used += size;
      return b;
    }
  }
  const size_t slab = std::max(size, slab_bytes_);
  void* p = mmap(nullptr, slab, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    --k.stats.in_use;
    return resource_exhausted("buffer pool: cannot map " + std::to_string(slab) + " bytes");
  }
  auto mr = endpoint_.register_memory(p, slab);
  if (!mr.ok()) {
    munmap(p, slab);
    --k.stats.in_use;
    return mr.status().with_context("buffer pool");
  }
  k.slabs.push_back({static_cast<char*>(p), slab, *mr, size});
  ++k.stats.slabs;
  k.stats.slab_bytes += slab;
  return PoolBlock{static_cast<char*>(p), size, *mr};
}

void BufferPool::release(const PoolBlock& b) {
  if (b.data == nullptr) return;
  std::lock_guard<std::mutex> lk(core_->mu);
  core_->free[class_of(b.capacity)].push_back(b);
  --core_->stats.in_use;
}

std::shared_ptr<void> BufferPool::hold(const PoolBlock& b) {
  std::shared_ptr<Core> core = core_;
  return std::shared_ptr<void>(b.data, [core, b](void*) {
    std::lock_guard<std::mutex> lk(core->mu);
    core->free[class_of(b.capacity)].push_back(b);
    --core->stats.in_use;
  });
}

PoolStats BufferPool::stats() const {
  std::lock_guard<std::mutex> lk(core_->mu);
  return core_->stats;
}

}  // namespace janus::transport
