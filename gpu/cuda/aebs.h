// AEBS on the GPU (Janus Algorithm 1): the launcher of the kernel in gpu/cuda/aebs.cu,
// bit-for-bit the CPU reference in gpu/cpu/aebs.h (same table, same outputs, same visit
// order and tie-break; see gpu/cpu/aebs_table.h for the arrays).
//
// One kernel launch per call: one thread block for small batches, a thread-block cluster
// of up to 16 blocks (distributed shared memory, sm_90) for large ones. It reads the top-k
// ids from device memory and writes the assignment, the per-replica work lists, a_i and
// the summary to device memory. No host synchronisation, no allocation, no memset, no
// host copy in the launch path, so it can be captured in a CUDA graph; all scratch lives
// in shared memory.
//
// Kernel outline (P blocks, W warps each; block b owns the choices
// [b*W*seg, (b+1)*W*seg), warp w of it the seg = 32*strips choices after w*seg):
//   0. the packed table (AebsDeviceTable::blob) and the block's ids are copied to shared
//      memory with cp.async (16-byte pieces, all in flight at once) while the per-warp
//      counters are zeroed;
//   1. each warp ranks its strips: a ballot per key bit gives each lane the lanes with
//      the same expert (the stable order among equal experts), the first of them adds the
//      count to the warp's counter row; invalid ids count under the extra key E;
//   2. per expert, an exclusive prefix over the block's warps; with P > 1 the blocks read
//      each other's per-expert counts through distributed shared memory (one cluster
//      barrier) to get the totals and the prefix over lower blocks; the activated
//      single-replica experts add their instance's load (shared atomics: order-free);
//   3. warp 0 of every block (redundantly, identical inputs give identical results) runs
//      the greedy over the activated multi-replica experts in visit order with the
//      per-instance (load, pending) in registers: one __reduce_min_sync per expert; then
//      the repair moves, breadth-first searches over 64-bit instance sets built from
//      per-instance bit sets of visit positions (ballots, no atomics);
//   4. a block-wide scan over the replicas in id order gives the replica offsets, the
//      active lists and each expert's list base;
//   5. each choice goes to items[base + prefix + rank]; the block first sorts its items
//      into list order in shared memory and then writes them out in runs (fewer scattered
//      stores). Block 0 writes the small outputs (offsets, a_i, summary). Batches too
//      large for shared memory read the ids twice from global memory instead.
//
// Limits (refused by aebs_upload_table / aebs_launch with unsupported): n_e <= 64 (the
// per-instance state is one warp's registers), at most 4095 replicas on one instance,
// E <= 8192, T*k < 2^30, and the table plus one warp's counters must fit in shared memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gpu/cpu/aebs_table.h"
#include "runtime/base/status.h"

namespace janus::cuda {

/// The kernel's packed table, int32 words, every section starting at a multiple of 4
/// words (16 bytes): built once by aebs_upload_table (aebs_build_blob), copied to shared
/// memory by every block.
///   etab[E]        the instance of a single-replica expert, -1 for a multi-replica one
///   vmask[2*M]     visit position v's instance mask (uint64, little-endian word pairs)
///   vexp[M]        visit position v's expert (visit_order)
///   hostv[MC*G]    word c*G + g: bit j set when instance g hosts visit position 32c+j
///   rexp[R], rinst[R], ioff[G+1]   replica_expert, replica_instance, instance_offsets
/// MC = ceil(M / 32).
struct AebsBlobLayout {
  int etab = 0, vmask = 0, vexp = 0, hostv = 0, rexp = 0, rinst = 0, ioff = 0, words = 0;
};
constexpr int aebs_round4(int x) { return (x + 3) & ~3; }
constexpr AebsBlobLayout aebs_blob_layout(int E, int G, int R, int M) {
  AebsBlobLayout b{};
  int o = 0;
  b.etab = o;
  o += aebs_round4(E);
  b.vmask = o;
  o += aebs_round4(2 * M);
  b.vexp = o;
  o += aebs_round4(M);
  b.hostv = o;
  o += aebs_round4((M + 31) / 32 * G);
  b.rexp = o;
  o += aebs_round4(R);
  b.rinst = o;
  o += aebs_round4(R);
  b.ioff = o;
  o += aebs_round4(G + 1);
  b.words = o;
  return b;
}
/// The packed table of a host table view (n_e <= 64). Exposed for the CPU emulation test.
std::vector<int32_t> aebs_build_blob(const AebsTableView& host);

/// A replica table in device memory (one allocation).
struct AebsDeviceTable {
  AebsTableView view;  // device pointers
  const int32_t* blob = nullptr;  // the kernel's packed table (AebsBlobLayout), device memory
  int blob_words = 0;
  void* storage = nullptr;
  size_t bytes = 0;
  int device = -1;
  int max_shared_bytes = 0;  // the device's opt-in limit per block, less the kernel's static shared memory
  int max_cluster = 1;       // the largest thread-block cluster a launch uses (1: clusters unavailable)
};

/// Copies a host table (AebsReplicaTable::view()) to the current device and prepares the
/// kernel for it (shared-memory opt-in, cluster size). Allocates and copies: call it when
/// the layout changes, not per batch. unsupported outside the limits above.
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

/// Overrides for tests and benchmarks; the defaults are what production uses.
constexpr int kAebsClockStamps = 10;
struct AebsLaunchOptions {
  int blocks = 0;  // 0: chosen from the choice count; n > 0: min(n, max_cluster) blocks
  int sorted = 1;  // 1: items go through the shared-memory sort when it fits; 0: never
  // Instrumented runs: device array of kAebsClockStamps clock64() values taken by thread
  // 0 of block 0 at the phase boundaries (start, table+ids staged, ranked, prefix and
  // activation, greedy, repair, replica scan, items sorted in shared memory (sorted only),
  // items written, end). Null: no stamps.
  long long* clocks = nullptr;
};

/// Launches AEBS for `tokens` rows of `k` expert ids (device memory, row-major) on
/// `stream`. Invalid ids are reported in out.summary[kAebsInvalidChoices] (device
/// memory), never as a launch error. Returns the launch error, if any.
Status aebs_launch(const AebsDeviceTable& table, const int32_t* expert_ids, int64_t tokens, int k, const AebsOutputs& out,
                   cudaStream_t stream, const AebsLaunchOptions& options = {});

/// The grid, block size and dynamic shared memory a launch would use (for benchmarks).
struct AebsLaunchShape {
  int blocks = 1;  // the cluster size (1: a plain one-block launch)
  int warps = 0;
  int seg = 0;     // choices per warp, a multiple of 32
  size_t shared_bytes = 0;
  bool staged = false;  // the block's ids staged in shared memory (else read twice from global memory)
  bool sorted = false;  // items written through the shared-memory sort (needs staged)
};
AebsLaunchShape aebs_launch_shape(const AebsDeviceTable& table, int64_t choices, const AebsLaunchOptions& options = {});

/// The planner behind aebs_launch_shape, for a table view, a shared-memory limit and a
/// cluster limit (exposed for the CPU emulation test).
AebsLaunchShape aebs_plan(const AebsTableView& table, int64_t choices, int shared_limit, int max_cluster,
                          const AebsLaunchOptions& options = {});

}  // namespace janus::cuda
