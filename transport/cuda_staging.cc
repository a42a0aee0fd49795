// The CUDA copier for transport/staging.h: pinned host buffers from cudaMallocHost, copies
// with cudaMemcpyAsync on the caller's stream followed by a synchronize (the staging
// buffer must be full before its send is posted, and the device buffer complete before
// the receive is reported). Built only where the CUDA toolkit exists (transport/CMakeLists.txt).
#ifdef JANUS_HAVE_CUDA

#include <cuda_runtime.h>

#include "runtime/base/log.h"
#include "transport/staging.h"

namespace janus::transport {
namespace {

int check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return JANUS_TRANSPORT_OK;
  log_error("transport staging", std::string(what) + ": " + cudaGetErrorString(e));
  return JANUS_TRANSPORT_IO;
}

void* cuda_alloc_pinned(size_t n) {
  void* p = nullptr;
  return check(cudaMallocHost(&p, n), "cudaMallocHost") == JANUS_TRANSPORT_OK ? p : nullptr;
}

void cuda_free_pinned(void* p) { (void)check(cudaFreeHost(p), "cudaFreeHost"); }

void* cuda_alloc_device(size_t n) {
  void* p = nullptr;
  return check(cudaMalloc(&p, n), "cudaMalloc") == JANUS_TRANSPORT_OK ? p : nullptr;
}

void cuda_free_device(void* p) { (void)check(cudaFree(p), "cudaFree"); }

int copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (int rc = check(cudaMemcpyAsync(dst, src, n, kind, s), "cudaMemcpyAsync"); rc != JANUS_TRANSPORT_OK) return rc;
  return check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}

int cuda_to_host(void* host, const void* device, size_t n, void* stream) {
  return copy(host, device, n, cudaMemcpyDeviceToHost, stream);
}

int cuda_to_device(void* device, const void* host, size_t n, void* stream) {
  return copy(device, host, n, cudaMemcpyHostToDevice, stream);
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

}  // namespace

const StagingCopier* cuda_copier() {
  static const StagingCopier c{"cuda",          cuda_alloc_pinned, cuda_free_pinned, cuda_alloc_device,
                               cuda_free_device, cuda_to_host,      cuda_to_device,   cuda_device_count};
  return &c;
}

}  // namespace janus::transport

#endif  // JANUS_HAVE_CUDA
