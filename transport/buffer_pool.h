// Payload buffers registered with one endpoint once and reused for every message.
//
// Blocks come in power-of-two size classes (4 KiB and up) carved from slabs that are
// mapped and registered once (reg_mr); a freed block goes back to its class's free list,
// never back to the system, so a steady stream of layer batches registers nothing after
// the first few. What a node sends is copied into a block (that copy is the phase-1
// aggregation: the node's shards' rows land side by side in one payload) and what it
// receives lands in one; received blocks are handed to local actors as the storage of
// Tensor views (hold()), so the bytes are not copied again, and come back to the pool when
// the last view is dropped, from whatever thread drops it.
//
// Threading: acquire() may register a new slab with the endpoint, so it runs on the
// endpoint's thread; release (directly or through a holder) is safe from any thread. The
// slabs stay mapped until the pool and every block handed out are gone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "runtime/base/status.h"
#include "transport/transport.h"

namespace janus::transport {

/// A block of a BufferPool: [data, data + capacity), inside a registered region.
struct PoolBlock {
  char* data = nullptr;
  size_t capacity = 0;
  void* mr = nullptr;  // the region's handle, for posts
};

struct PoolStats {
  uint64_t slabs = 0;          // regions mapped and registered
  uint64_t slab_bytes = 0;     // their total size
  uint64_t acquired = 0;       // blocks handed out so far
  uint64_t reused = 0;         // of those, taken from a free list
  uint64_t in_use = 0;         // blocks out now
};

class BufferPool {
 public:
  /// `slab_bytes`: size of the regions small blocks are cut from (a block larger than a
  /// slab gets a region of its own, reused like any other block afterwards).
  explicit BufferPool(Endpoint& endpoint, size_t slab_bytes = size_t{32} << 20);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  /// A block of at least `bytes` (>= 1), 4 KiB aligned. On the endpoint's thread.
  Result<PoolBlock> acquire(size_t bytes);
  /// Gives a block back (any thread).
  void release(const PoolBlock& b);
  /// A shared owner of `b`: the block returns to the pool when the last copy is dropped.
  std::shared_ptr<void> hold(const PoolBlock& b);

  PoolStats stats() const;

 private:
  struct Core;
  Endpoint& endpoint_;
  size_t slab_bytes_ = 0;
  std::shared_ptr<Core> core_;
};

}  // namespace janus::transport
