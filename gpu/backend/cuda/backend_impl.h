// What the files of the CUDA backend share (private to gpu/backend/cuda): the Engine every
// backend runs on and the state of each of the three backends. backend.cc builds them and
// dispatches the Backend interface (gpu/backend/backend.h) into the op families (ops.h,
// one *_ops.cc each), which call the kernel launchers of gpu/cuda and take their memory
// from memory.h through the Engine.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gpu/backend/backend.h"
#include "gpu/backend/cuda/memory.h"

namespace janus::cuda {

constexpr DType kF32 = DType::kF32;

/// "[rows, cols] dtype on device", for error messages.
std::string shape(const Tensor& t);
/// invalid_argument for "cpu", unavailable for an ordinal this machine does not have.
Status check_device(const Device& d);

// -- Engine: what every backend has ---------------------------------------------------------
//
// Its device, stream, cuBLAS handle, caching allocator and pinned staging, and what the
// current call's queued work touches. A call that hands its results to another actor does
// not wait for the GPU: it ends in finish(), which records a completion marker on the
// stream, puts it on the output tensors (Tensor::ready: a consumer on another stream waits
// on it on the device, a host reader on the host) and keeps everything the queued work
// reads or writes (scratch, inputs, outputs, in-place arguments, pinned staging) in a
// pending batch until the marker has completed. Only then can a block return to its pool,
// which is DevicePool's rule (memory.h) without a host synchronisation. A call whose
// answer the host must read (the gate's ids for the scheduler, the sampled tokens) waits
// for its stream: wait(), after which nothing is pending.
//
// A call that fails half-way keeps what it took in the current lists; the next finish()
// or wait() covers them, and the destructor synchronises.
class Engine {
 public:
  Status init(const Device& d);
  ~Engine();

  /// Device scratch for this call, held until its work completes.
  Result<void*> scratch(size_t bytes);
  /// A device tensor of this backend's pool (the caller owns it; finish() keeps it alive
  /// until the work writing it completes).
  Result<Tensor> tensor(DType dtype, int64_t rows, int64_t cols);
  /// Pinned host memory for this call's transfers, valid until its work completes.
  Result<void*> stage(size_t bytes);
  /// Copies host bytes to device memory through pinned staging, on the stream.
  Status upload_to(void* dst, const void* src, size_t bytes);
  Result<void*> upload(const void* src, size_t bytes);
  /// `t` as a tensor on this device, ready to read on this stream: itself after a device
  /// wait on its producer's marker when it is here, else a copy (from the host through
  /// staging, from another GPU peer to peer after that wait). Held until this call's work
  /// completes.
  Status input(const Tensor& t, Tensor* out);
  /// Keeps `t` (an in-place argument) alive until this call's work completes.
  void touch(const Tensor& t);
  /// Keeps a block alive until this call's work completes (a buffer being replaced).
  void hold(std::shared_ptr<void> block);
  /// y = x · Wᵀ (or y += with accumulate); converts x to W's dtype in scratch if needed.
  Status linear(const void* x, DType xt, int64_t m, int64_t k, const DeviceWeight& w, void* y, DType yt, bool accumulate);

  /// Ends a call without waiting: marks `outputs` ready with a marker recorded now and
  /// keeps this call's blocks and tensors (and the outputs) until it completes.
  Status finish(std::initializer_list<Tensor*> outputs);
  /// Blocks until the stream's queued work completed; everything pending is let go
  /// (the current call's blocks stay until release(), so its staging can still be read).
  Status wait();
  void release();
  Status sync();  // wait() + release()

  Device device;
  int ordinal = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  std::shared_ptr<DevicePool> pool;

 private:
  struct Pending {
    std::shared_ptr<void> marker;
    std::vector<std::shared_ptr<void>> held;
    std::vector<Tensor> retained;
    std::unique_ptr<PinnedArena> staging;
  };
  /// Lets go of the pending batches whose markers completed (oldest first: one stream).
  void reclaim();
  void recycle(std::unique_ptr<PinnedArena> arena);

  std::vector<std::shared_ptr<void>> held_;
  std::vector<Tensor> retained_;
  std::unique_ptr<PinnedArena> staging_ = std::make_unique<PinnedArena>();
  std::vector<std::unique_ptr<PinnedArena>> spare_staging_;
  std::deque<Pending> pending_;
};

// -- the attention shard --------------------------------------------------------------------

/// One layer's weights on a shard's device (router on MoE layers, with its
/// e_score_correction_bias for a sigmoid gate; gate/up/down on dense ones).
struct AttentionLayer {
  WeightRef input_norm, post_norm, q, k, v, o, q_norm, k_norm, router, router_bias, gate, up, down;
};

/// One micro-batch's (seq, pos) rows on the device, found again by content.
struct KvRowsEntry {
  std::vector<cpu::KvRow> rows;
  std::shared_ptr<void> dev;
  size_t capacity = 0;
  uint64_t used = 0;
};

/// An AttentionBackend's state: its weights, the KV cache's device storage and block table
/// mirror, and the KV rows of recent micro-batches.
struct AttentionState {
  AttentionState(std::shared_ptr<const Model> m, const KvCacheShape& kv_shape);

  std::shared_ptr<const Model> model;
  PagedKvCache kv;  // bookkeeping only: the storage is k_cache / v_cache
  Engine engine;
  WeightRef embed, final_norm, lm_head;
  std::vector<AttentionLayer> layers;
  DType adt = kF32, kv_dtype = kF32;  // matmul inputs; the KV cache
  size_t layer_elems = 0, table_elems = 0;
  std::shared_ptr<void> k_cache, v_cache, tables, inv_freq;
  std::vector<int32_t> shadow;  // the host copy of the device block table
  std::array<KvRowsEntry, 4> rows_cache;
  uint64_t tick = 0;
};

/// invalid_argument unless `layer` is one of the model's.
Status check_layer(const AttentionState& shard, int layer, const char* what);
/// invalid_argument unless x is this shard's residual stream (F32 on its device, hidden wide).
Status check_residual(const AttentionState& shard, const Tensor& x, const char* what);

// -- the router and the expert instance -----------------------------------------------------

/// A RouterBackend's state.
struct RouterState {
  explicit RouterState(std::shared_ptr<const Model> m) : model(std::move(m)) {}

  std::shared_ptr<const Model> model;
  Engine engine;
  std::vector<WeightRef> weights;  // [layer]: the router, F32; empty on dense layers
  std::vector<WeightRef> bias;     // [layer]: e_score_correction_bias, F32, for a sigmoid gate; else empty
};

/// An ExpertBackend's state: the experts it holds, in slot order, and their device table.
struct ExpertState {
  explicit ExpertState(std::shared_ptr<const Model> m) : model(std::move(m)) {}

  std::shared_ptr<const Model> model;
  Engine engine;
  DType wdt = DType::kBF16;
  std::map<int32_t, std::vector<std::array<WeightRef, 3>>> held;  // expert -> per layer (gate, up, down)
  std::vector<int32_t> experts;  // slot order
  std::vector<int32_t> slot_of;  // [E]: slot of each expert here, -1 elsewhere
  std::shared_ptr<void> table;   // device [layers][3][slots] weight pointers
  std::shared_ptr<void> slot_of_device;  // slot_of in device memory (run_routed_experts)
  std::vector<int> fill;
};

}  // namespace janus::cuda
