// GPU payloads over transports that take host memory only.
//
// Debian's libfabric is built without CUDA memory support (docs/dependencies.md §3.1: FI_HMEM_CUDA
// registration returns -FI_ENOSYS), so device bytes cannot be handed to shm or tcp. They
// are staged: a send copies device -> a pinned host buffer (cudaMallocHost) and posts the
// send from there; a receive lands in a pinned host buffer and is copied host -> device
// when it completes. The pinned buffers are allocated and registered once, at init(), and
// reused. The copy is synchronous on the caller's stream in this version; overlapping the
// copy of chunk k+1 with the wire transfer of chunk k is the next step where it pays.
//
// The staging logic does not know about CUDA: a StagingCopier says how to move bytes. The
// CUDA copier (transport/cuda_staging.cc) exists where the toolkit does; the host copier
// (memcpy, ordinary memory standing in for device memory) runs the same code on CPU-only
// machines and in the tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/base/status.h"
#include "transport/transport.h"

namespace janus::transport {

/// How bytes move between "device" memory and pinned host memory. Every function returns
/// a janus_transport_result_t; copies are complete when they return.
struct StagingCopier {
  const char* name;
  void* (*alloc_pinned)(size_t bytes);  // page-locked host memory; null on failure
  void (*free_pinned)(void* p);
  void* (*alloc_device)(size_t bytes);  // device memory (tests, tools); null on failure
  void (*free_device)(void* p);
  int (*to_host)(void* host, const void* device, size_t bytes, void* stream);
  int (*to_device)(void* device, const void* host, size_t bytes, void* stream);
  int (*device_count)(void);            // usable devices; 0 when none
};

/// memcpy and ordinary host memory: the CPU twin of the CUDA copier.
const StagingCopier* host_copier();
/// cudaMallocHost / cudaMemcpyAsync + cudaStreamSynchronize; null when built without CUDA.
const StagingCopier* cuda_copier();

/// Sends and receives device buffers through one endpoint via pinned staging buffers.
/// Driven by the endpoint's thread; completions of other operations on the endpoint pass
/// through poll() untouched.
class StagingChannel {
 public:
  /// `buffers` staging buffers of `buffer_bytes` each (the largest payload); `stream` is
  /// handed to the copier (a cudaStream_t, or null for the default stream).
  StagingChannel(Endpoint& endpoint, const StagingCopier& copier, size_t buffer_bytes, int buffers,
                 void* stream = nullptr);
  ~StagingChannel();
  StagingChannel(const StagingChannel&) = delete;
  StagingChannel& operator=(const StagingChannel&) = delete;

  /// Allocates the pinned buffers and registers each with the endpoint, once.
  Status init();

  /// Copies [device_src, +bytes) to a free staging buffer and posts its send. The device
  /// buffer is free again when this returns. resource_exhausted when every staging buffer
  /// is in flight (poll, then retry).
  Status send(Peer peer, uint64_t tag, const void* device_src, size_t bytes, void* user_context = nullptr);

  /// Posts a receive into a staging buffer; when it arrives, poll() copies it to
  /// device_dst and reports a completion whose data is device_dst.
  Status recv(Peer peer, uint64_t tag, void* device_dst, size_t capacity, void* user_context = nullptr);

  /// Polls the endpoint. Staging operations are finished here (copy to device, buffer back
  /// to the pool) and reported with the caller's context and device pointer.
  Result<int> poll(Completion* out, int max);

  int free_buffers() const { return static_cast<int>(free_.size()); }

 private:
  struct Slot {
    void* host = nullptr;
    void* device = nullptr;   // recv: where the bytes go
    size_t capacity = 0;
    void* user_context = nullptr;
    bool busy = false;
  };

  Endpoint& ep_;
  const StagingCopier& copier_;
  size_t buffer_bytes_;
  int count_;
  void* stream_;
  std::vector<Slot> slots_;
  std::vector<int> free_;
  std::vector<void*> regions_;
};

}  // namespace janus::transport
