// Device tensors outside any backend: concat_rows and copy_to_host for "cuda:N" tensors,
// and host_to_device for tests and tools. Their memory is the device's shared_pool.
#include <algorithm>
#include <string>

#include "gpu/backend/cuda/backend.h"
#include "gpu/backend/cuda/backend_impl.h"
#include "gpu/cuda/device.h"

namespace janus::cuda {

Status concat_device_rows(const std::vector<Tensor>& parts, int64_t cols, Tensor* out) {
  const Tensor* first = nullptr;
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    if (p.rows == 0) continue;
    if (!first) first = &p;
    if (p.cols != cols || p.device != first->device || p.dtype != first->dtype || p.device.is_cpu())
      return invalid_argument("concat_rows: parts " + shape(*first) + " and " + shape(p) + " cannot be joined on a GPU");
    rows += p.rows;
  }
  if (!first) {
    *out = Tensor{};
    out->cols = cols;
    return Status::Ok();
  }
  const int ordinal = first->device.ordinal;
  DeviceGuard g(ordinal);
  JANUS_TRY(g.status());
  Tensor t;
  t.device = first->device;
  t.dtype = first->dtype;
  t.rows = rows;
  t.cols = cols;
  JANUS_ASSIGN_OR_RETURN(t.storage, shared_pool(ordinal)->alloc(std::max<size_t>(t.bytes(), 1)));
  t.data = t.storage.get();
  char* dst = static_cast<char*>(t.data);
  for (const Tensor& p : parts) {
    if (p.rows == 0) continue;
    JANUS_TRY(stream_wait_ready(p, cudaStreamPerThread));  // its producer may still be writing it
    JANUS_CUDA_TRY(cudaMemcpyAsync(dst, p.data, p.bytes(), cudaMemcpyDeviceToDevice, cudaStreamPerThread));
    dst += p.bytes();
  }
  JANUS_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread));
  *out = std::move(t);
  return Status::Ok();
}

Status device_to_host(const Tensor& in, Tensor* out) {
  if (in.device.is_cpu()) {
    *out = in;
    return Status::Ok();
  }
  Tensor t = Tensor::host(in.dtype, in.rows, in.cols);
  if (in.bytes() > 0) {
    DeviceGuard g(in.device.ordinal);
    JANUS_TRY(g.status());
    JANUS_TRY(host_wait_ready(in));  // the producers' streams are non-blocking: no implicit order with this copy
    JANUS_CUDA_TRY(cudaMemcpy(t.data, in.data, in.bytes(), cudaMemcpyDeviceToHost));
  }
  *out = std::move(t);
  return Status::Ok();
}

Status host_to_device(const Tensor& in, const Device& device, Tensor* out) {
  JANUS_TRY(check_device(device));
  DeviceGuard g(device.ordinal);
  JANUS_TRY(g.status());
  Tensor t;
  t.device = device;
  t.dtype = in.dtype;
  t.rows = in.rows;
  t.cols = in.cols;
  JANUS_ASSIGN_OR_RETURN(t.storage, shared_pool(device.ordinal)->alloc(std::max<size_t>(t.bytes(), 1)));
  t.data = t.storage.get();
  if (in.bytes() > 0) {
    if (in.device.is_cpu()) {
      JANUS_CUDA_TRY(cudaMemcpy(t.data, in.data, in.bytes(), cudaMemcpyHostToDevice));
    } else {
      JANUS_TRY(host_wait_ready(in));
      JANUS_CUDA_TRY(cudaMemcpyPeer(t.data, device.ordinal, in.data, in.device.ordinal, in.bytes()));
    }
  }
  *out = std::move(t);
  return Status::Ok();
}

}  // namespace janus::cuda
