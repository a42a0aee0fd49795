// GPU payloads between GPUs: one NCCL communicator behind a thin host API.
//
// The transports of transport/transport.h move host bytes; where both ends of a transfer
// are GPUs that NCCL can connect (NVLink, PCIe, or an RDMA NIC with GPUDirect), staging
// through pinned host memory (transport/staging.h) only adds two copies. An NcclGroup
// moves device buffers directly: the exchange's per-peer payloads of one layer batch as
// grouped sends and receives (phase 2 of the two-phase exchange; phase 1, the byte counts,
// travels over the control plane so every receiver knows what to post), and the
// collectives the MoE side needs (all-gather, the reduce of partial sums).
//
// The API is DeepEP's kind of thin: raw device pointers, byte or element counts, and the
// caller's stream as a `void*` (a cudaStream_t; null is the legacy default stream). This
// header includes neither CUDA nor NCCL, so host code that only passes pointers through
// compiles without the toolkit. Where Janus was built without CUDA or without NCCL
// (nccl_available() is false) every call that would reach NCCL returns unavailable; the
// argument checks still run, so plans can be validated anywhere.
//
// Setting up a group of n ranks (one per GPU, in one or several processes):
//
//   rank 0:     auto id = nccl_unique_id();            // once per group
//               ship(*id);                              // control plane: 128 plain bytes
//   every rank: auto g = NcclGroup::create(id, n, rank, device);  // blocks until all n joined
//   per batch:  (*g)->send_recv(sends, recvs, stream);  // enqueued on stream, returns at once
//
// create() blocks until every rank has called it, so the ranks of one process create their
// groups from different threads, one per device.
//
// Operations are enqueued on `stream` and complete asynchronously, as NCCL's do: buffers
// must stay allocated, and send buffers unmodified, until the stream has passed them.
// Every rank must issue the same collectives in the same order; sends and receives
// between two ranks match in the order they were posted and must agree in size.
//
// Threading: one thread drives a group at a time. Groups on different devices may be
// driven by different threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::transport {

/// NCCL's rendezvous token (ncclUniqueId): 128 opaque bytes, made once by one rank and
/// handed to all the others over the control plane. Plain bytes, so it copies and
/// serialises like any other field. All zeros is never a valid id.
struct NcclUniqueId {
  uint8_t bytes[128] = {};
};

/// True where this build can reach NCCL (CUDA and NCCL were found at configure time).
/// Says nothing about whether a GPU exists.
bool nccl_available();

/// A fresh unique id for a new group (ncclGetUniqueId: it opens the bootstrap listener
/// on this host, so call it on the rank that will be part of the group).
Result<NcclUniqueId> nccl_unique_id();

/// One payload for send_recv: `bytes` bytes of device memory at `data` go to rank `peer`.
struct NcclSend {
  int peer = -1;
  const void* data = nullptr;
  size_t bytes = 0;
};

/// One payload for send_recv: `bytes` bytes from rank `peer` land at device memory `data`.
struct NcclRecv {
  int peer = -1;
  void* data = nullptr;
  size_t bytes = 0;
};

/// The checks each call below makes before it touches NCCL, as free functions so that a
/// planner can validate a batch where no group (or no GPU) exists. invalid_argument,
/// naming the offending entry, or ok.
///
/// create(): nranks >= 1, 0 <= rank < nranks, device >= 0, id not all zeros.
Status nccl_check_create(const NcclUniqueId& id, int nranks, int rank, int device);
/// send_recv(): every peer in [0, nranks); no null pointer with nonzero bytes; the sends
/// to self and the receives from self pair up in order with equal sizes (an unmatched
/// self transfer would hang the group, and only self transfers can be checked locally).
Status nccl_check_send_recv(int nranks, int rank, const std::vector<NcclSend>& sends,
                            const std::vector<NcclRecv>& recvs);
/// reduce() / all_reduce(): a dtype NCCL can sum (f32, bf16, f16, f64); `root` in
/// [0, nranks) for reduce, -1 meaning all_reduce (every rank receives); no null buffer with
/// nonzero count, except `recv` on a reduce's non-root ranks, which NCCL never writes.
Status nccl_check_reduce(int nranks, int rank, const void* send, const void* recv, size_t count, DType dtype,
                         int root);

/// One NCCL communicator: `nranks` ranks, this process being `rank`, on CUDA device
/// `device`. Move-only through its unique_ptr; destroying it frees the communicator
/// (ncclCommFinalize + ncclCommDestroy, or ncclCommAbort once an operation has failed,
/// since a failed communicator may never finish its outstanding work).
class NcclGroup {
 public:
  /// Joins the group named by `id` (ncclCommInitRank on `device`, which becomes this
  /// thread's current device). Blocks until all `nranks` ranks have joined.
  static Result<std::unique_ptr<NcclGroup>> create(const NcclUniqueId& id, int nranks, int rank, int device);

  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  int device() const { return device_; }

  /// Enqueues every send and receive as one NCCL group (ncclGroupStart ... ncclGroupEnd),
  /// so that NCCL schedules all peers at once and two ranks sending to each other cannot
  /// deadlock. Entries of zero bytes are skipped. A rank may send to and receive from
  /// itself (a device copy; with nranks == 1 everything is self). Payloads are bytes: the
  /// receiver's size for a pair must equal the sender's, which phase 1 of the exchange
  /// guarantees and NCCL does not check across ranks.
  Status send_recv(const std::vector<NcclSend>& sends, const std::vector<NcclRecv>& recvs, void* stream);

  /// recv[r * bytes_per_rank, +bytes_per_rank) = rank r's send, for every rank r. recv
  /// holds nranks * bytes_per_rank bytes; send may be recv + rank * bytes_per_rank (in place).
  Status all_gather(const void* send, void* recv, size_t bytes_per_rank, void* stream);

  /// Sums `count` elements of `dtype` over all ranks into `recv` on rank `root` (the
  /// MoE-side reduce of partial sums). NCCL accumulates in `dtype`: bf16 and f16 sums of
  /// many ranks round at every step, so reduce partials in f32 where accuracy matters.
  Status reduce(const void* send, void* recv, size_t count, DType dtype, int root, void* stream);

  /// As reduce, with the sum written to `recv` on every rank (recv == send: in place).
  Status all_reduce(const void* send, void* recv, size_t count, DType dtype, void* stream);

  /// An error NCCL found after an operation was enqueued (a peer lost, a network error;
  /// ncclCommGetAsyncError), or ok. After one, the group is unusable: destroy it and
  /// build a new one.
  Status async_error();

 private:
  NcclGroup(void* comm, int nranks, int rank, int device)
      : comm_(comm), nranks_(nranks), rank_(rank), device_(device) {}

  void* comm_;          // ncclComm_t
  int nranks_;
  int rank_;
  int device_;
  bool failed_ = false;  // an NCCL call failed: abort, not finalize, on destruction
};

}  // namespace janus::transport
