#include "gpu/backend.h"

#include <mutex>

#include "gpu/cpu/backend.h"
#include "gpu/null_backend.h"

namespace janus {
namespace {

std::mutex g_mu;
CudaBackendFactories g_cuda{};

Status cuda_missing(const Device& d) {
  return unsupported("device " + d.name() + ": this build of Janus has no CUDA backend (no CUDA toolkit at build time)");
}

}  // namespace

void register_cuda_backend(const CudaBackendFactories& f) {
  std::lock_guard<std::mutex> lk(g_mu);
  g_cuda = f;
}

Result<std::unique_ptr<AttentionBackend>> make_attention_backend(std::shared_ptr<const Model> model, const Device& d,
                                                                 const BackendOptions& o, bool null) {
  if (null) return make_null_attention_backend(std::move(model), o);
  if (d.is_cpu()) return make_cpu_attention_backend(std::move(model), o);
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_cuda.attention) return cuda_missing(d);
  return g_cuda.attention(std::move(model), d, o);
}

Result<std::unique_ptr<RouterBackend>> make_router_backend(std::shared_ptr<const Model> model, const Device& d, bool null) {
  if (null) return make_null_router_backend(std::move(model));
  if (d.is_cpu()) return make_cpu_router_backend(std::move(model));
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_cuda.router) return cuda_missing(d);
  return g_cuda.router(std::move(model), d);
}

Result<std::unique_ptr<ExpertBackend>> make_expert_backend(std::shared_ptr<const Model> model, const Device& d, bool null) {
  if (null) return make_null_expert_backend(std::move(model));
  if (d.is_cpu()) return make_cpu_expert_backend(std::move(model));
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_cuda.expert) return cuda_missing(d);
  return g_cuda.expert(std::move(model), d);
}

void accumulate_partial(const Tensor& partial, Tensor& acc) {
  const int64_t n = partial.rows * partial.cols;
  if (partial.dtype == DType::kF64) {
    const double* p = partial.as<double>();
    double* a = acc.as<double>();
    for (int64_t i = 0; i < n; ++i) a[i] += p[i];
  } else {
    const float* p = partial.as<float>();
    float* a = acc.as<float>();
    for (int64_t i = 0; i < n; ++i) a[i] += p[i];
  }
}

}  // namespace janus
