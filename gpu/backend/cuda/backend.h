// The CUDA backend: AttentionBackend, RouterBackend and ExpertBackend (gpu/backend/backend.h) on
// one GPU each ("cuda:N"), built from the kernel launchers of this folder. Design notes
// in gpu/cuda/README.md ("The backend"). Plain C++: no CUDA, CAF or Cap'n Proto header.
//
//   janus::cuda::register_backends();   // once; Deployment::create does it in CUDA builds
//   auto b = janus::make_attention_backend(model, *janus::Device::parse("cuda:0"), options);
//
// Every backend owns a CUDA stream, a cuBLAS handle and a caching device allocator;
// several backends (actors) share one GPU, each on its own stream. Tensors it returns
// live on its device (Tensor::device = cuda:N) in memory of its allocator, complete when
// the call returns; tensors it is given may live on the host or on another device and are
// copied as needed.
#pragma once

#include <memory>
#include <vector>

#include "gpu/backend/backend.h"

namespace janus::cuda {

/// Installs the factories below behind janus::make_*_backend, janus::concat_rows and
/// janus::copy_to_host for "cuda:N" devices. Idempotent and thread-safe.
void register_backends();

Result<std::unique_ptr<AttentionBackend>> make_cuda_attention_backend(std::shared_ptr<const Model> model, const Device& device,
                                                                      const BackendOptions& options);
Result<std::unique_ptr<RouterBackend>> make_cuda_router_backend(std::shared_ptr<const Model> model, const Device& device);
Result<std::unique_ptr<ExpertBackend>> make_cuda_expert_backend(std::shared_ptr<const Model> model, const Device& device,
                                                                const std::vector<int32_t>& experts);

/// Joins device tensors of one device and dtype row-wise into a new device tensor.
Status concat_device_rows(const std::vector<Tensor>& parts, int64_t cols, Tensor* out);
/// A host copy of a device tensor (host tensors are shared, not copied).
Status device_to_host(const Tensor& in, Tensor* out);
/// A device copy (on `device`) of a host or device tensor; for tests and tools.
Status host_to_device(const Tensor& in, const Device& device, Tensor* out);

}  // namespace janus::cuda
