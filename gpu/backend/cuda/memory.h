// Memory on CUDA devices, below everything else in gpu/backend/cuda: a caching device
// allocator, pinned host staging for small per-call uploads and downloads, and the
// process-wide cache of uploaded checkpoint weights. Plain C++ over the CUDA runtime API
// (no kernels); it knows nothing of the backends that use it.
//
// The one rule that makes the caching allocator safe without stream-ordered frees, and
// that its users keep: a block goes back to its pool only when no queued GPU work can
// still touch it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/base/dtype.h"
#include "runtime/base/tensor.h"
#include "runtime/model/model.h"
#include "runtime/base/status.h"

namespace janus::cuda {

/// Makes `device` current for the scope (and restores the previous one): actors run on
/// whatever CAF worker thread is free.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  /// The error of switching, if any (cudaSetDevice failed).
  Status status() const { return status_; }

 private:
  int previous_ = -1, device_ = -1;
  Status status_;
};

/// A caching device allocator: blocks of a size class (1/4 power-of-two steps, at least
/// 256 bytes, 256-byte aligned) are kept on a free list when released and handed out
/// again; cudaMalloc only on a miss (warm-up), never cudaFree while serving. Thread-safe:
/// a block may be released by whichever actor drops its last reference.
class DevicePool : public std::enable_shared_from_this<DevicePool> {
 public:
  static std::shared_ptr<DevicePool> create(int device);
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  /// A block of at least `bytes` on the pool's device (the caller's current device must
  /// be it), released to the pool when the last reference goes. On cudaMalloc failure
  /// the cached blocks are freed and the allocation retried once.
  Result<std::shared_ptr<void>> alloc(size_t bytes);

  int device() const { return device_; }
  struct Stats {
    size_t reserved_bytes = 0;  // held from cudaMalloc (in use + cached)
    size_t in_use_bytes = 0;
    uint64_t allocations = 0;   // alloc() calls
    uint64_t misses = 0;        // of which needed a cudaMalloc
  };
  Stats stats() const;
  /// cudaFree of every cached (unused) block.
  void trim();

  static size_t size_class(size_t bytes);

 private:
  explicit DevicePool(int device) : device_(device) {}
  void give_back(void* p, size_t cls);

  const int device_;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  Stats stats_;
};

/// The process-wide pool of one device, for device memory that belongs to no owner with
/// a pool of its own. Never destroyed (it may be referenced until the process exits).
std::shared_ptr<DevicePool> shared_pool(int device);

/// Pinned host memory for one call's small transfers: take() hands out 256-byte-aligned
/// pieces; reset() makes everything reusable and may only be called when no transfer
/// from or to the arena is in flight (after the owner's stream synchronisation). Grows
/// by adding chunks, so pieces taken earlier in a call stay valid; reset() merges them.
class PinnedArena {
 public:
  PinnedArena() = default;
  ~PinnedArena();
  PinnedArena(const PinnedArena&) = delete;
  PinnedArena& operator=(const PinnedArena&) = delete;

  Result<void*> take(size_t bytes);
  void reset();
  /// Whether anything was taken since the last reset.
  bool used() const { return high_water_ > 0; }

 private:
  struct Chunk {
    char* data = nullptr;
    size_t bytes = 0, used = 0;
  };
  std::vector<Chunk> chunks_;
  size_t high_water_ = 0;  // bytes taken since the last reset
};

/// Pinned host memory that outlives a backend call (a device-to-host copy the host reads
/// later, DeviceRouting::host): blocks of DevicePool's size classes from a process-wide
/// pool, back in the pool when the last holder lets go.
Result<std::shared_ptr<void>> pinned_block(size_t bytes);

/// Completion markers (Tensor::ready, and the end of a backend call's queued work): an
/// event recorded on a stream, from a process-wide pool of events (creating one per call
/// would cost more than the record). The event goes back to the pool when the last
/// holder lets go, so a marker is never re-recorded while anyone still waits on it.
Result<std::shared_ptr<void>> record_stream_event(int device, cudaStream_t stream);
/// The CUDA event of a marker made by record_stream_event.
cudaEvent_t event_of(const std::shared_ptr<void>& marker);
/// Makes `stream` wait (on the device) until t's producer has written it; nothing when
/// t.ready is null.
Status stream_wait_ready(const Tensor& t, cudaStream_t stream);
/// Blocks the calling thread until t's producer has written it.
Status host_wait_ready(const Tensor& t);

/// A checkpoint tensor's copy in device memory.
struct DeviceWeight {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0, cols = 0;
  int device = 0;
  size_t bytes = 0;
  ~DeviceWeight();
};
using WeightRef = std::shared_ptr<const DeviceWeight>;

/// The dtype a checkpoint dtype is kept in on the GPU: BF16 stays BF16, F32 stays F32,
/// F16 becomes F32 (exact; the kernels take F32 or BF16 only).
DType device_dtype(DType checkpoint_dtype);

/// The copy of `w` on `device` in `dtype` (F32 or BF16; converted on the host while
/// staging), uploaded on first use and shared by every caller on that device that asks
/// for the same tensor in the same dtype (e.g. two shards, or the embedding and a tied
/// LM head). Freed when the last holder lets go, unless retention is on. Uploads go
/// through double-buffered pinned staging filled by several threads.
Result<WeightRef> device_weight(int device, const WeightView& w, DType dtype);

/// While on, every weight uploaded stays on its device after its last holder is gone,
/// so a later deployment in the same process starts without uploading (benchmarks that
/// build several deployments on one checkpoint). Turning it off drops those extra holds.
void retain_weights(bool on);

/// Bytes of weights currently on `device`, and the seconds spent uploading so far.
size_t device_weight_bytes(int device);
double weight_upload_seconds();

}  // namespace janus::cuda
