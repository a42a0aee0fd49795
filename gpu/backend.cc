#include "gpu/backend.h"

#include <cstring>
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

Result<std::unique_ptr<ExpertBackend>> make_expert_backend(std::shared_ptr<const Model> model, const Device& d,
                                                           const std::vector<int32_t>& experts, bool null) {
  std::unique_ptr<ExpertBackend> b;
  if (null) b = make_null_expert_backend(std::move(model));
  else if (d.is_cpu()) b = make_cpu_expert_backend(std::move(model));
  else {
    std::lock_guard<std::mutex> lk(g_mu);
    if (!g_cuda.expert) return cuda_missing(d);
    return g_cuda.expert(std::move(model), d, experts);
  }
  JANUS_TRY(b->set_experts(experts));
  return b;
}

Status concat_rows(const std::vector<Tensor>& parts, int64_t cols, Tensor* out) {
  size_t nonempty = 0;
  const Tensor* only = nullptr;
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    rows += p.rows;
    if (p.rows > 0) {
      ++nonempty;
      only = &p;
    }
  }
  if (nonempty <= 1) {  // nothing to join: share the one part (or an empty tensor)
    if (only) *out = *only;
    else {
      *out = Tensor{};
      out->cols = cols;
    }
    return Status::Ok();
  }
  const Device dev = only->device;
  for (const Tensor& p : parts)
    if (p.rows > 0 && (p.device != dev || p.dtype != only->dtype))
      return invalid_argument("concat_rows: parts on different devices or of different dtypes");
  if (!dev.is_cpu()) {
    std::lock_guard<std::mutex> lk(g_mu);
    if (!g_cuda.concat_rows) return cuda_missing(dev);
    return g_cuda.concat_rows(parts, cols, out);
  }
  *out = Tensor::host(only->dtype, rows, cols);
  char* dst = static_cast<char*>(out->data);
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data, p.bytes());
    dst += p.bytes();
  }
  return Status::Ok();
}

}  // namespace janus
