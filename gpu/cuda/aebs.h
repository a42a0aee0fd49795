// AEBS on the GPU (Janus Algorithm 1): the launcher of the kernel in gpu/cuda/aebs.cu,
// bit-for-bit the CPU reference in gpu/cpu/aebs.h (same table, same outputs, same visit
// order and tie-break; see gpu/cpu/aebs_table.h for the arrays).
//
// One kernel launch, one thread block: it reads the top-k ids from device memory and
// writes the assignment, the per-replica work lists, a_i and the summary to device
// memory. No host synchronisation, no allocation, no host copy in the launch path, so it
// can be captured in a CUDA graph; all scratch lives in shared memory.
//
// Kernel outline (W warps, W = clamp(T*k/256, 4, 32)):
//   0. stage the ids (validated, into shared memory when T*k fits) and the table;
//   1. each warp counts its contiguous segment of choices per expert (__match_any_sync
//      gives each choice its rank among equal experts: the stable order);
//   2. per expert, a prefix over the warps' counts; single-replica experts take their
//      instance (shared atomics: order-free sums);
//   3. one warp runs the sequential greedy over the multi-replica experts with the
//      per-instance (load, pending) in registers: one __reduce_min_sync per expert; then
//      the repair moves, each a breadth-first search over 64-bit instance sets (shared
//      atomicOr builds who-can-pass-to-whom, ballots expand the frontier);
//   4. one warp per instance: replica offsets and active lists by warp scans;
//   5. every choice is written to its place: items[offset + warp base + rank].
//
// Limits (refused by aebs_upload_table / aebs_launch with unsupported): n_e <= 64 (the
// per-instance state is one warp's registers), at most 4095 replicas on one instance,
// E <= 8192, T*k < 2^30. Shared memory grows with W*E (and T*k when staged); the launcher
// shrinks W or stops staging to fit the device's opt-in limit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "gpu/cpu/aebs_table.h"
#include "runtime/status.h"

namespace janus::cuda {

/// A replica table in device memory (one allocation).
struct AebsDeviceTable {
  AebsTableView view;  // device pointers
  void* storage = nullptr;
  size_t bytes = 0;
  int device = -1;
  int max_shared_bytes = 0;  // the device's opt-in limit per block
};

/// Copies a host table (AebsReplicaTable::view()) to the current device and prepares the
/// kernel for it (shared-memory opt-in). Allocates and copies: call it when the layout
/// changes, not per batch. unsupported outside the limits above.
Status aebs_upload_table(const AebsTableView& host, AebsDeviceTable* out);
void aebs_free_table(AebsDeviceTable* table);

/// Device output arrays for a table and up to max_choices = T*k choices (one allocation).
struct AebsDeviceOutputs {
  AebsOutputs out;
  void* storage = nullptr;
  size_t bytes = 0;
  int64_t max_choices = 0;
};
Status aebs_alloc_outputs(const AebsTableView& table, int64_t max_choices, AebsDeviceOutputs* out);
void aebs_free_outputs(AebsDeviceOutputs* outputs);

/// Launches AEBS for `tokens` rows of `k` expert ids (device memory, row-major) on
/// `stream`. Invalid ids are reported in out.summary[kAebsInvalidChoices] (device
/// memory), never as a launch error. Returns the launch error, if any.
Status aebs_launch(const AebsDeviceTable& table, const int32_t* expert_ids, int64_t tokens, int k, const AebsOutputs& out,
                   cudaStream_t stream);

/// The block size and dynamic shared memory a launch would use (for benchmarks).
struct AebsLaunchShape {
  int warps = 0;
  size_t shared_bytes = 0;
  bool staged = false;  // ids staged in shared memory
};
AebsLaunchShape aebs_launch_shape(const AebsDeviceTable& table, int64_t choices);

}  // namespace janus::cuda
