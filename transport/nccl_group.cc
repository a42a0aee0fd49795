// NcclGroup (transport/nccl_group.h). The argument checks are plain C++ and always built;
// the NCCL calls are compiled only where CMake found CUDA and NCCL (JANUS_HAVE_NCCL,
// transport/CMakeLists.txt). Elsewhere the same entry points return unavailable, so a CPU
// build links callers unchanged and fails at run time with a message saying why.
#include "transport/nccl_group.h"

#include <cstring>
#include <string>

#ifdef JANUS_HAVE_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace janus::transport {
namespace {

std::string entry(const char* kind, size_t i, int peer, size_t bytes) {
  return std::string(kind) + "[" + std::to_string(i) + "] (peer " + std::to_string(peer) + ", " +
         std::to_string(bytes) + " bytes)";
}

bool known_dtype(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16 || t == DType::kF64;
}

}  // namespace

Status nccl_check_create(const NcclUniqueId& id, int nranks, int rank, int device) {
  if (nranks < 1) return invalid_argument("NCCL group: nranks " + std::to_string(nranks) + " < 1");
  if (rank < 0 || rank >= nranks)
    return invalid_argument("NCCL group: rank " + std::to_string(rank) + " outside [0, " + std::to_string(nranks) +
                            ")");
  if (device < 0) return invalid_argument("NCCL group: CUDA device " + std::to_string(device) + " < 0");
  bool zero = true;
  for (uint8_t b : id.bytes) zero = zero && b == 0;
  // A default-constructed id that never went through nccl_unique_id() would make NCCL dial
  // address 0 and wait for its bootstrap timeout; refuse it at once instead.
  if (zero) return invalid_argument("NCCL group: unique id is all zeros (not made by nccl_unique_id())");
  return Status::Ok();
}

Status nccl_check_send_recv(int nranks, int rank, const std::vector<NcclSend>& sends,
                            const std::vector<NcclRecv>& recvs) {
  std::vector<size_t> to_self, from_self;
  for (size_t i = 0; i < sends.size(); ++i) {
    const NcclSend& s = sends[i];
    if (s.peer < 0 || s.peer >= nranks)
      return invalid_argument("NCCL send_recv: " + entry("send", i, s.peer, s.bytes) + ": peer outside [0, " +
                              std::to_string(nranks) + ")");
    if (s.data == nullptr && s.bytes > 0)
      return invalid_argument("NCCL send_recv: " + entry("send", i, s.peer, s.bytes) + ": null buffer");
    if (s.peer == rank && s.bytes > 0) to_self.push_back(s.bytes);
  }
  for (size_t i = 0; i < recvs.size(); ++i) {
    const NcclRecv& r = recvs[i];
    if (r.peer < 0 || r.peer >= nranks)
      return invalid_argument("NCCL send_recv: " + entry("recv", i, r.peer, r.bytes) + ": peer outside [0, " +
                              std::to_string(nranks) + ")");
    if (r.data == nullptr && r.bytes > 0)
      return invalid_argument("NCCL send_recv: " + entry("recv", i, r.peer, r.bytes) + ": null buffer");
    if (r.peer == rank && r.bytes > 0) from_self.push_back(r.bytes);
  }
  // NCCL pairs the k-th send to a peer with the k-th receive from it; for self both sides
  // are here, so a mismatch is caught now rather than as a hang or a truncated copy.
  if (to_self.size() != from_self.size())
    return invalid_argument("NCCL send_recv: " + std::to_string(to_self.size()) + " sends to self (rank " +
                            std::to_string(rank) + ") but " + std::to_string(from_self.size()) +
                            " receives from self");
  for (size_t k = 0; k < to_self.size(); ++k)
    if (to_self[k] != from_self[k])
      return invalid_argument("NCCL send_recv: send " + std::to_string(k) + " to self is " +
                              std::to_string(to_self[k]) + " bytes but receive " + std::to_string(k) +
                              " from self is " + std::to_string(from_self[k]) + " bytes");
  return Status::Ok();
}

Status nccl_check_reduce(int nranks, int rank, const void* send, const void* recv, size_t count, DType dtype,
                         int root) {
  if (!known_dtype(dtype))
    return invalid_argument("NCCL reduce: unknown dtype " + std::to_string(static_cast<int>(dtype)) +
                            " (f32, bf16, f16, f64 can be summed)");
  if (root != -1 && (root < 0 || root >= nranks))
    return invalid_argument("NCCL reduce: root " + std::to_string(root) + " outside [0, " + std::to_string(nranks) +
                            ")");
  if (count == 0) return Status::Ok();
  if (send == nullptr)
    return invalid_argument("NCCL reduce: null send buffer for " + std::to_string(count) + " elements");
  bool writes_recv = root == -1 || root == rank;
  if (writes_recv && recv == nullptr)
    return invalid_argument("NCCL reduce: null receive buffer for " + std::to_string(count) + " elements on rank " +
                            std::to_string(rank) + (root == -1 ? "" : " (the root)"));
  return Status::Ok();
}

#ifdef JANUS_HAVE_NCCL

static_assert(sizeof(NcclUniqueId) == sizeof(ncclUniqueId) && NCCL_UNIQUE_ID_BYTES == 128,
              "NcclUniqueId must hold an ncclUniqueId byte for byte");

namespace {

ErrorCode nccl_error_code(ncclResult_t r) {
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage: return ErrorCode::kInvalidArgument;
    case ncclSystemError:
    case ncclRemoteError: return ErrorCode::kUnavailable;  // a socket, a peer, the network
    default: return ErrorCode::kInternal;                   // CUDA errors, NCCL internal errors
  }
}

/// The Status for a failed NCCL call: which call, where, NCCL's name for the result and
/// its own last message (which usually says what was wrong, e.g. which peer).
Status nccl_status(ncclResult_t r, const char* what, ncclComm_t comm, const char* file, int line) {
  const char* last = ncclGetLastError(comm);
  std::string msg = std::string("NCCL: ") + what + " failed at " + file + ":" + std::to_string(line) + ": " +
                    ncclGetErrorString(r) + " (ncclResult_t " + std::to_string(static_cast<int>(r)) + ")";
  if (last != nullptr && last[0] != '\0') msg += ": " + std::string(last);
  return {nccl_error_code(r), std::move(msg)};
}

ncclDataType_t nccl_dtype(DType t) {
  switch (t) {
    case DType::kF32: return ncclFloat32;
    case DType::kBF16: return ncclBfloat16;
    case DType::kF16: return ncclFloat16;
    case DType::kF64: return ncclFloat64;
  }
  return ncclFloat32;  // unreachable: nccl_check_reduce refused it
}

}  // namespace

/// Inside NcclGroup's members: evaluates an NCCL call on this group's communicator; on
/// failure marks the group failed (so the destructor aborts) and returns the Status.
#define JANUS_NCCL_TRY(call)                                                                       \
  do {                                                                                             \
    ncclResult_t janus_nccl_res_ = (call);                                                         \
    if (janus_nccl_res_ != ncclSuccess) {                                                          \
      failed_ = true;                                                                              \
      return nccl_status(janus_nccl_res_, #call, static_cast<ncclComm_t>(comm_), __FILE__, __LINE__); \
    }                                                                                              \
  } while (0)

bool nccl_available() { return true; }

Result<NcclUniqueId> nccl_unique_id() {
  ncclUniqueId raw;
  ncclResult_t r = ncclGetUniqueId(&raw);
  if (r != ncclSuccess) return nccl_status(r, "ncclGetUniqueId(&raw)", nullptr, __FILE__, __LINE__);
  NcclUniqueId id;
  std::memcpy(id.bytes, raw.internal, sizeof id.bytes);
  return id;
}

Result<std::unique_ptr<NcclGroup>> NcclGroup::create(const NcclUniqueId& id, int nranks, int rank, int device) {
  JANUS_TRY(nccl_check_create(id, nranks, rank, device));
  // ncclCommInitRank binds the communicator to the calling thread's current device.
  // (janus_transport does not link janus_cuda, so the CUDA error is spelled out here the
  // way gpu/cuda/device.h's JANUS_CUDA_TRY does.)
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    (void)cudaGetLastError();
    ErrorCode code = e == cudaErrorInvalidDevice                                    ? ErrorCode::kInvalidArgument
                     : e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ? ErrorCode::kUnavailable
                                                                                  : ErrorCode::kInternal;
    return Status(code, "CUDA: cudaSetDevice(" + std::to_string(device) + ") failed at " + __FILE__ + ":" +
                          std::to_string(__LINE__) + ": " + cudaGetErrorString(e) + " (NCCL group rank " +
                          std::to_string(rank) + ")");
  }
  ncclUniqueId raw;
  std::memcpy(raw.internal, id.bytes, sizeof raw.internal);
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRank(&comm, nranks, raw, rank);
  if (r != ncclSuccess) {
    Status s = nccl_status(r, "ncclCommInitRank(&comm, nranks, raw, rank)", comm, __FILE__, __LINE__);
    // A communicator that failed half-way may hold sockets and device memory; abort frees
    // them without waiting for peers that may never arrive.
    if (comm != nullptr) (void)ncclCommAbort(comm);
    return s.with_context("rank " + std::to_string(rank) + " of " + std::to_string(nranks) + " on device " +
                          std::to_string(device));
  }
  return std::unique_ptr<NcclGroup>(new NcclGroup(comm, nranks, rank, device));
}

NcclGroup::~NcclGroup() {
  auto comm = static_cast<ncclComm_t>(comm_);
  if (comm == nullptr) return;
  // Finalize waits for the communicator's outstanding work; after a failure that work may
  // wait on a peer that is gone, so abort instead. Destructors report nothing: a failure
  // here leaks at worst.
  if (failed_ || ncclCommFinalize(comm) != ncclSuccess) {
    (void)ncclCommAbort(comm);
    return;
  }
  (void)ncclCommDestroy(comm);
}

Status NcclGroup::send_recv(const std::vector<NcclSend>& sends, const std::vector<NcclRecv>& recvs, void* stream) {
  JANUS_TRY(nccl_check_send_recv(nranks_, rank_, sends, recvs));
  auto comm = static_cast<ncclComm_t>(comm_);
  auto s = static_cast<cudaStream_t>(stream);
  JANUS_NCCL_TRY(ncclGroupStart());
  for (const NcclSend& x : sends) {
    if (x.bytes == 0) continue;
    ncclResult_t r = ncclSend(x.data, x.bytes, ncclUint8, x.peer, comm, s);
    if (r != ncclSuccess) {
      // Close the group so this thread's NCCL group depth is back to zero: a later call
      // must not land inside the broken group.
      (void)ncclGroupEnd();
      failed_ = true;
      return nccl_status(r, "ncclSend(x.data, x.bytes, ncclUint8, x.peer, comm, s)", comm, __FILE__, __LINE__)
          .with_context("send to peer " + std::to_string(x.peer) + " of " + std::to_string(x.bytes) + " bytes");
    }
  }
  for (const NcclRecv& x : recvs) {
    if (x.bytes == 0) continue;
    ncclResult_t r = ncclRecv(x.data, x.bytes, ncclUint8, x.peer, comm, s);
    if (r != ncclSuccess) {
      (void)ncclGroupEnd();
      failed_ = true;
      return nccl_status(r, "ncclRecv(x.data, x.bytes, ncclUint8, x.peer, comm, s)", comm, __FILE__, __LINE__)
          .with_context("receive from peer " + std::to_string(x.peer) + " of " + std::to_string(x.bytes) + " bytes");
    }
  }
  JANUS_NCCL_TRY(ncclGroupEnd());
  return Status::Ok();
}

Status NcclGroup::all_gather(const void* send, void* recv, size_t bytes_per_rank, void* stream) {
  if (bytes_per_rank == 0) return Status::Ok();
  if (send == nullptr || recv == nullptr)
    return invalid_argument(std::string("NCCL all_gather: null ") + (send == nullptr ? "send" : "receive") +
                            " buffer for " + std::to_string(bytes_per_rank) + " bytes per rank");
  auto comm = static_cast<ncclComm_t>(comm_);
  auto s = static_cast<cudaStream_t>(stream);
  JANUS_NCCL_TRY(ncclAllGather(send, recv, bytes_per_rank, ncclUint8, comm, s));
  return Status::Ok();
}

Status NcclGroup::reduce(const void* send, void* recv, size_t count, DType dtype, int root, void* stream) {
  if (root == -1) return invalid_argument("NCCL reduce: root -1 outside [0, " + std::to_string(nranks_) + ")");
  JANUS_TRY(nccl_check_reduce(nranks_, rank_, send, recv, count, dtype, root));
  if (count == 0) return Status::Ok();
  auto comm = static_cast<ncclComm_t>(comm_);
  auto s = static_cast<cudaStream_t>(stream);
  JANUS_NCCL_TRY(ncclReduce(send, recv, count, nccl_dtype(dtype), ncclSum, root, comm, s));
  return Status::Ok();
}

Status NcclGroup::all_reduce(const void* send, void* recv, size_t count, DType dtype, void* stream) {
  JANUS_TRY(nccl_check_reduce(nranks_, rank_, send, recv, count, dtype, -1));
  if (count == 0) return Status::Ok();
  auto comm = static_cast<ncclComm_t>(comm_);
  auto s = static_cast<cudaStream_t>(stream);
  JANUS_NCCL_TRY(ncclAllReduce(send, recv, count, nccl_dtype(dtype), ncclSum, comm, s));
  return Status::Ok();
}

Status NcclGroup::async_error() {
  auto comm = static_cast<ncclComm_t>(comm_);
  ncclResult_t async = ncclSuccess;
  JANUS_NCCL_TRY(ncclCommGetAsyncError(comm, &async));
  if (async != ncclSuccess && async != ncclInProgress) {
    failed_ = true;
    return nccl_status(async, "ncclCommGetAsyncError (an enqueued operation)", comm, __FILE__, __LINE__);
  }
  return Status::Ok();
}

#else  // !JANUS_HAVE_NCCL

namespace {
Status no_nccl() { return unavailable("NCCL group: built without CUDA/NCCL (transport/CMakeLists.txt)"); }
}  // namespace

bool nccl_available() { return false; }

Result<NcclUniqueId> nccl_unique_id() { return no_nccl(); }

Result<std::unique_ptr<NcclGroup>> NcclGroup::create(const NcclUniqueId& id, int nranks, int rank, int device) {
  JANUS_TRY(nccl_check_create(id, nranks, rank, device));
  return no_nccl();
}

// No group can exist in this build; these only keep the class linkable.
NcclGroup::~NcclGroup() = default;
Status NcclGroup::send_recv(const std::vector<NcclSend>&, const std::vector<NcclRecv>&, void*) { return no_nccl(); }
Status NcclGroup::all_gather(const void*, void*, size_t, void*) { return no_nccl(); }
Status NcclGroup::reduce(const void*, void*, size_t, DType, int, void*) { return no_nccl(); }
Status NcclGroup::all_reduce(const void*, void*, size_t, DType, void*) { return no_nccl(); }
Status NcclGroup::async_error() { return no_nccl(); }

#endif  // JANUS_HAVE_NCCL

}  // namespace janus::transport
