#include "gpu/backend/backend.h"

#include <cstring>
#include <mutex>

#include "gpu/backend/cpu_backend.h"
#include "gpu/backend/null_backend.h"

namespace janus {
namespace {

std::mutex g_mu;
CudaBackendFactories g_cuda{};

Status cuda_missing(const Device& d) {
  return unsupported("device " + d.name() + ": this build of Janus has no CUDA backend (no CUDA toolkit at build time)");
}

// Features of the newer families that no GPU attention kernel computes yet. The CUDA
// backend checks its own list; these are refused here, for every GPU backend, before one
// is built, so that a model the GPU would silently compute differently (plain RoPE for
// YaRN or for a partial rotary) never runs there. Routers (every family's gate, the
// noaux_tc one included) and routed experts (plain SwiGLU) may run on a GPU.
Status check_gpu_attention(const ModelConfig& c, const Device& d) {
  if (c.rotary_dim() != c.head_dim)
    return unsupported("device " + d.name() + ": the GPU attention does not implement partial rotary ('partial_rotary_factor': RoPE over " + std::to_string(c.rotary_dim()) + " of the " +
                       std::to_string(c.head_dim) + " values of each head) of this " + std::string(family_name(c.family)) +
                       " model yet; put the attention shards on the CPU (device \"cpu\")");
  if (c.rope_yarn)
    return unsupported("device " + d.name() + ": the GPU attention does not implement YaRN RoPE scaling ('rope_parameters' / "
                       "'rope_scaling' type \"yarn\") of this " + std::string(family_name(c.family)) +
                       " model yet; put the attention shards on the CPU (device \"cpu\")");
  if (c.family == ModelFamily::kDeepseekV3)
    return unsupported("device " + d.name() + ": the GPU attention does not implement deepseek_v3 ('kv_lora_rank' multi-head "
                       "latent attention, 'n_shared_experts') yet; put the attention shards on the CPU (device \"cpu\")");
  return Status::Ok();
}

// Mixed graphs (shards on a GPU and experts on the CPU, or the reverse) hand CPU
// backends activations and partial sums that live on a GPU. These adapters copy such
// tensors to the host before the CPU kernels see them; host tensors pass untouched.
// Installed only when the CUDA backend is registered (the copy needs it).
using ToHost = Status (*)(const Tensor&, Tensor*);

Status host_view(ToHost to_host, const Tensor& t, Tensor* out) {
  if (t.device.is_cpu()) {
    *out = t;
    return Status::Ok();
  }
  return to_host(t, out);
}

class HostInputAttention final : public AttentionBackend {
 public:
  HostInputAttention(std::unique_ptr<AttentionBackend> b, ToHost h) : b_(std::move(b)), to_host_(h) {}
  Device device() const override { return b_->device(); }
  PagedKvCache& kv() override { return b_->kv(); }
  Status embed(const std::vector<int32_t>& tokens, Tensor* x) override { return b_->embed(tokens, x); }
  Status attention(int layer, Tensor& x, const std::vector<cpu::KvRow>& rows, Tensor* h) override {
    return b_->attention(layer, x, rows, h);
  }
  Status dense_mlp(int layer, const Tensor& h, Tensor& x) override {
    Tensor hh;
    JANUS_TRY(host_view(to_host_, h, &hh));
    return b_->dense_mlp(layer, hh, x);
  }
  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    Tensor hh;
    JANUS_TRY(host_view(to_host_, h, &hh));
    return b_->route(layer, hh, ids, w);
  }
  Status shared_expert(int layer, const Tensor& h, Tensor* partial) override {
    Tensor hh;
    JANUS_TRY(host_view(to_host_, h, &hh));
    return b_->shared_expert(layer, hh, partial);
  }
  Status add_moe_output(const std::vector<Tensor>& partials, Tensor& x) override {
    std::vector<Tensor> hp(partials.size());
    for (size_t i = 0; i < partials.size(); ++i) JANUS_TRY(host_view(to_host_, partials[i], &hp[i]));
    return b_->add_moe_output(hp, x);
  }
  Status sample(const Tensor& x, const std::vector<SampleRow>& rows, std::vector<int32_t>* tokens,
                std::vector<std::vector<float>>* logits) override {
    return b_->sample(x, rows, tokens, logits);
  }

 private:
  std::unique_ptr<AttentionBackend> b_;
  ToHost to_host_;
};

class HostInputRouter final : public RouterBackend {
 public:
  HostInputRouter(std::unique_ptr<RouterBackend> b, ToHost h) : b_(std::move(b)), to_host_(h) {}
  Device device() const override { return b_->device(); }
  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    Tensor hh;
    JANUS_TRY(host_view(to_host_, h, &hh));
    return b_->route(layer, hh, ids, w);
  }

 private:
  std::unique_ptr<RouterBackend> b_;
  ToHost to_host_;
};

class HostInputExperts final : public ExpertBackend {
 public:
  HostInputExperts(std::unique_ptr<ExpertBackend> b, ToHost h) : b_(std::move(b)), to_host_(h) {}
  Device device() const override { return b_->device(); }
  Status set_experts(const std::vector<int32_t>& experts) override { return b_->set_experts(experts); }
  DType partial_dtype() const override { return b_->partial_dtype(); }
  Status run(int layer, const Tensor& h, const std::vector<ExpertWork>& work, Tensor* partial) override {
    Tensor hh;
    JANUS_TRY(host_view(to_host_, h, &hh));
    return b_->run(layer, hh, work, partial);
  }

 private:
  std::unique_ptr<ExpertBackend> b_;
  ToHost to_host_;
};

ToHost registered_to_host() {
  std::lock_guard<std::mutex> lk(g_mu);
  return g_cuda.to_host;
}

}  // namespace

Status copy_to_host(const Tensor& in, Tensor* out) {
  if (in.device.is_cpu()) {
    *out = in;
    return Status::Ok();
  }
  ToHost h = registered_to_host();
  if (h == nullptr) return cuda_missing(in.device);
  return h(in, out);
}

void register_cuda_backend(const CudaBackendFactories& f) {
  std::lock_guard<std::mutex> lk(g_mu);
  g_cuda = f;
}

Result<std::unique_ptr<AttentionBackend>> make_attention_backend(std::shared_ptr<const Model> model, const Device& d,
                                                                 const BackendOptions& o, bool null) {
  if (null) return make_null_attention_backend(std::move(model), o);
  if (d.is_cpu()) {
    std::unique_ptr<AttentionBackend> b = make_cpu_attention_backend(std::move(model), o);
    if (ToHost h = registered_to_host()) return std::unique_ptr<AttentionBackend>(new HostInputAttention(std::move(b), h));
    return b;
  }
  JANUS_TRY(check_gpu_attention(model->config(), d));
  // Call outside the lock: a factory uploads weights (seconds for a large model).
  auto make = [] {
    std::lock_guard<std::mutex> lk(g_mu);
    return g_cuda.attention;
  }();
  if (!make) return cuda_missing(d);
  return make(std::move(model), d, o);
}

Result<std::unique_ptr<RouterBackend>> make_router_backend(std::shared_ptr<const Model> model, const Device& d, bool null) {
  if (null) return make_null_router_backend(std::move(model));
  if (d.is_cpu()) {
    std::unique_ptr<RouterBackend> b = make_cpu_router_backend(std::move(model));
    if (ToHost h = registered_to_host()) return std::unique_ptr<RouterBackend>(new HostInputRouter(std::move(b), h));
    return b;
  }
  auto make = [] {
    std::lock_guard<std::mutex> lk(g_mu);
    return g_cuda.router;
  }();
  if (!make) return cuda_missing(d);
  return make(std::move(model), d);
}

Result<std::unique_ptr<ExpertBackend>> make_expert_backend(std::shared_ptr<const Model> model, const Device& d,
                                                           const std::vector<int32_t>& experts, bool null) {
  std::unique_ptr<ExpertBackend> b;
  if (null) b = make_null_expert_backend(std::move(model));
  else if (d.is_cpu()) {
    b = make_cpu_expert_backend(std::move(model));
    if (ToHost h = registered_to_host()) b.reset(new HostInputExperts(std::move(b), h));
  } else {
    auto make = [] {
      std::lock_guard<std::mutex> lk(g_mu);
      return g_cuda.expert;
    }();
    if (!make) return cuda_missing(d);
    return make(std::move(model), d, experts);
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
    auto concat = [] {
      std::lock_guard<std::mutex> lk(g_mu);
      return g_cuda.concat_rows;
    }();
    if (!concat) return cuda_missing(dev);
    return concat(parts, cols, out);
  }
  *out = Tensor::host(only->dtype, rows, cols);
  char* dst = static_cast<char*>(out->data);
  for (const Tensor& p : parts) {
    if (p.bytes() == 0) continue;  // an empty part may have no data at all (memcpy from null is UB)
    std::memcpy(dst, p.data, p.bytes());
    dst += p.bytes();
  }
  return Status::Ok();
}

}  // namespace janus
