// The three CUDA backends' construction (weights, KV cache, the Engine's stream and cuBLAS
// handle), the dispatch of the Backend interface into the op families (ops.h), and the
// factories that register_backends() installs.
#include "gpu/backend/cuda/backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "gpu/backend/cuda/backend_impl.h"
#include "gpu/backend/cuda/ops.h"
#include "gpu/cuda/device.h"
#include "gpu/cuda/gemm.h"

namespace janus::cuda {

std::string shape(const Tensor& t) {
  return "[" + std::to_string(t.rows) + ", " + std::to_string(t.cols) + "] " + dtype_name(t.dtype) + " on " + t.device.name();
}

Status check_device(const Device& d) {
  if (d.is_cpu()) return invalid_argument("the CUDA backend was asked for device cpu");
  const int n = device_count();
  if (d.ordinal >= n)
    return unavailable("device " + d.name() + ": this machine has " + std::to_string(n) + " usable CUDA device(s)");
  return Status::Ok();
}

namespace {

Status blas_status(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return internal_error(std::string("cuBLAS: ") + what + " failed: " + cublasGetStatusName(s));
}

Result<WeightRef> upload(int device, const WeightView& w) { return device_weight(device, w, device_dtype(w.dtype)); }

KvCacheShape host_only(KvCacheShape s) {
  s.allocate_storage = false;
  return s;
}

}  // namespace

// -- Engine ---------------------------------------------------------------------------------

Status Engine::init(const Device& d) {
  JANUS_TRY(check_device(d));
  device = d;
  ordinal = d.ordinal;
  DeviceGuard g(ordinal);
  JANUS_TRY(g.status());
  JANUS_CUDA_TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  JANUS_TRY(blas_status(cublasCreate(&blas), "cublasCreate"));
  // The default math mode: fp32 GEMMs stay fp32 (no TF32), as the twins require.
  JANUS_TRY(blas_status(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode"));
  JANUS_TRY(blas_status(cublasSetStream(blas, stream), "cublasSetStream"));
  pool = DevicePool::create(ordinal);
  return Status::Ok();
}

Engine::~Engine() {
  if (stream == nullptr) return;
  DeviceGuard g(ordinal);
  cudaStreamSynchronize(stream);
  pending_.clear();
  held_.clear();
  retained_.clear();
  if (blas) cublasDestroy(blas);
  cudaStreamDestroy(stream);
}

Result<void*> Engine::scratch(size_t bytes) {
  JANUS_ASSIGN_OR_RETURN(std::shared_ptr<void> b, pool->alloc(bytes));
  held_.push_back(b);
  return b.get();
}

Result<Tensor> Engine::tensor(DType dtype, int64_t rows, int64_t cols) {
  Tensor t;
  t.device = device;
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  JANUS_ASSIGN_OR_RETURN(t.storage, pool->alloc(std::max<size_t>(t.bytes(), 1)));
  t.data = t.storage.get();
  return t;
}

Result<void*> Engine::stage(size_t bytes) { return staging_->take(bytes); }

Status Engine::upload_to(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  JANUS_ASSIGN_OR_RETURN(void* stage, staging_->take(bytes));
  std::memcpy(stage, src, bytes);
  JANUS_CUDA_TRY(cudaMemcpyAsync(dst, stage, bytes, cudaMemcpyHostToDevice, stream));
  return Status::Ok();
}

Result<void*> Engine::upload(const void* src, size_t bytes) {
  JANUS_ASSIGN_OR_RETURN(void* d, scratch(bytes));
  JANUS_TRY(upload_to(d, src, bytes));
  return d;
}

Status Engine::input(const Tensor& t, Tensor* out) {
  retained_.push_back(t);
  if (t.rows == 0) {
    *out = t;
    return Status::Ok();
  }
  if (!t.device.is_cpu()) JANUS_TRY(stream_wait_ready(t, stream));
  if (t.device == device) {
    *out = t;
    out->ready.reset();  // ordered on this stream from here on
    return Status::Ok();
  }
  JANUS_ASSIGN_OR_RETURN(Tensor c, tensor(t.dtype, t.rows, t.cols));
  if (t.device.is_cpu()) {
    JANUS_TRY(upload_to(c.data, t.data, t.bytes()));
  } else {
    JANUS_CUDA_TRY(cudaMemcpyPeerAsync(c.data, ordinal, t.data, t.device.ordinal, t.bytes(), stream));
  }
  retained_.push_back(c);
  *out = c;
  return Status::Ok();
}

void Engine::touch(const Tensor& t) { retained_.push_back(t); }

void Engine::hold(std::shared_ptr<void> block) { held_.push_back(std::move(block)); }

Status Engine::linear(const void* x, DType xt, int64_t m, int64_t k, const DeviceWeight& w, void* y, DType yt, bool accumulate) {
  if (w.cols != k)
    return internal_error("linear: activations of width " + std::to_string(k) + " against a weight [" +
                          std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]");
  LinearArgs a;
  a.x = x;
  a.x_dtype = xt;
  a.m = m;
  a.k = k;
  a.w = w.data;
  a.w_dtype = w.dtype;
  a.n = w.rows;
  a.y = y;
  a.y_dtype = yt;
  a.accumulate = accumulate;
  const size_t ws = linear_workspace_bytes(m, k, xt, w.dtype);
  if (ws > 0) {
    JANUS_ASSIGN_OR_RETURN(a.workspace, scratch(ws));
    a.workspace_bytes = ws;
  }
  return cuda::linear(blas, a, stream);
}

void Engine::recycle(std::unique_ptr<PinnedArena> arena) {
  if (!arena) return;
  arena->reset();
  spare_staging_.push_back(std::move(arena));
}

void Engine::reclaim() {
  while (!pending_.empty()) {
    const cudaError_t e = cudaEventQuery(event_of(pending_.front().marker));
    if (e == cudaErrorNotReady) break;
    if (e != cudaSuccess) break;  // a device error: the next call's check reports it; keep the blocks
    recycle(std::move(pending_.front().staging));
    pending_.pop_front();
  }
}

Status Engine::finish(std::initializer_list<Tensor*> outputs) {
  JANUS_ASSIGN_OR_RETURN(std::shared_ptr<void> marker, record_stream_event(ordinal, stream));
  Pending p;
  p.marker = marker;
  p.held = std::move(held_);
  p.retained = std::move(retained_);
  held_.clear();
  retained_.clear();
  for (Tensor* t : outputs) {
    p.retained.push_back(*t);
    t->ready = marker;
  }
  if (staging_->used()) {
    p.staging = std::move(staging_);
    if (!spare_staging_.empty()) {
      staging_ = std::move(spare_staging_.back());
      spare_staging_.pop_back();
    } else {
      staging_ = std::make_unique<PinnedArena>();
    }
  }
  pending_.push_back(std::move(p));
  reclaim();
  return Status::Ok();
}

Status Engine::wait() {
  JANUS_CUDA_TRY(cudaStreamSynchronize(stream));
  while (!pending_.empty()) {
    recycle(std::move(pending_.front().staging));
    pending_.pop_front();
  }
  return Status::Ok();
}

void Engine::release() {
  held_.clear();
  retained_.clear();
  staging_->reset();
}

Status Engine::sync() {
  Status s = wait();
  release();
  return s;
}

// -- state ----------------------------------------------------------------------------------

AttentionState::AttentionState(std::shared_ptr<const Model> m, const KvCacheShape& kv_shape)
    : model(std::move(m)), kv(host_only(kv_shape)) {}

Status check_layer(const AttentionState& shard, int layer, const char* what) {
  if (layer < 0 || layer >= shard.model->config().num_layers)
    return invalid_argument(std::string(what) + ": layer " + std::to_string(layer) + " does not exist");
  return Status::Ok();
}

Status check_residual(const AttentionState& shard, const Tensor& x, const char* what) {
  if (x.device != shard.engine.device || x.dtype != kF32 || x.cols != shard.model->config().hidden_size)
    return invalid_argument(std::string(what) + ": the residual stream x is " + shape(x) + "; this shard's is F32 on " +
                            shard.engine.device.name() + " of width " + std::to_string(shard.model->config().hidden_size));
  return Status::Ok();
}

namespace {

// The attention-side features of the newer families that the CUDA kernels do not run yet:
// refused at construction, naming the config key, instead of computing something else.
// (Their gates, DeepSeek-V2's group-limited one and V3's noaux_tc one included, and their
// routed SwiGLU experts run here: a router or expert instance on the GPU serves them.)
Status check_attention_features(const ModelConfig& c) {
  std::vector<std::string> missing;
  if (c.qkv_bias)
    missing.push_back(c.family == ModelFamily::kGlm4Moe ? "'attention_bias' (q/k/v projection biases)"
                                                        : "'qkv_bias' (q/k/v projection biases)");
  if (c.qk_norm_full) missing.push_back("q_norm/k_norm over the whole projection (olmoe)");
  if (c.clip_qkv > 0) missing.push_back("'clip_qkv'");
  if (c.has_shared_expert())
    missing.push_back(c.shared_expert_gate ? "'shared_expert_intermediate_size' (the gated shared expert)"
                                           : "'n_shared_experts' (shared experts)");
  if (c.mla()) missing.push_back("'kv_lora_rank' (multi-head latent attention)");
  if (missing.empty()) return Status::Ok();
  std::string list;
  for (size_t i = 0; i < missing.size(); ++i) list += (i ? ", " : "") + missing[i];
  return unsupported(std::string("the CUDA attention backend does not implement ") + list + " of this " +
                     family_name(c.family) + " model yet; put the attention shards on the CPU (device \"cpu\")");
}

// -- the three backends: construction and dispatch into the op families (ops.h) -------------

class CudaAttention final : public AttentionBackend {
 public:
  CudaAttention(std::shared_ptr<const Model> model, const KvCacheShape& shape) : state_(std::move(model), shape) {}

  ~CudaAttention() override {
    DeviceGuard g(state_.engine.ordinal);
    if (state_.engine.stream) cudaStreamSynchronize(state_.engine.stream);
  }

  Status init(const Device& d) {
    JANUS_TRY(check_attention_features(state_.model->config()));
    JANUS_TRY(state_.engine.init(d));
    DeviceGuard g(state_.engine.ordinal);
    const ModelConfig& c = state_.model->config();
    const ModelWeights& w = state_.model->weights();
    const int dev = state_.engine.ordinal;
    JANUS_ASSIGN_OR_RETURN(state_.embed, upload(dev, w.embed));
    JANUS_ASSIGN_OR_RETURN(state_.final_norm, upload(dev, w.final_norm));
    JANUS_ASSIGN_OR_RETURN(state_.lm_head, upload(dev, w.lm_head));  // the same device copy as embed when tied
    state_.layers.resize(static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
      AttentionLayer& L = state_.layers[static_cast<size_t>(l)];
      JANUS_ASSIGN_OR_RETURN(L.input_norm, upload(dev, lw.input_norm));
      JANUS_ASSIGN_OR_RETURN(L.post_norm, upload(dev, lw.post_norm));
      JANUS_ASSIGN_OR_RETURN(L.q, upload(dev, lw.q));
      JANUS_ASSIGN_OR_RETURN(L.k, upload(dev, lw.k));
      JANUS_ASSIGN_OR_RETURN(L.v, upload(dev, lw.v));
      JANUS_ASSIGN_OR_RETURN(L.o, upload(dev, lw.o));
      if (c.qk_norm) {
        JANUS_ASSIGN_OR_RETURN(L.q_norm, upload(dev, lw.q_norm));
        JANUS_ASSIGN_OR_RETURN(L.k_norm, upload(dev, lw.k_norm));
      }
      if (c.is_sparse(l)) {
        // For route() (AGate on this shard's device); tiny, so uploaded eagerly.
        JANUS_ASSIGN_OR_RETURN(L.router, device_weight(dev, lw.router, kF32));
        if (c.sigmoid_gate) {
          JANUS_ASSIGN_OR_RETURN(L.router_bias, device_weight(dev, lw.router_bias, kF32));
        }
      } else {
        JANUS_ASSIGN_OR_RETURN(L.gate, upload(dev, lw.dense.gate));
        JANUS_ASSIGN_OR_RETURN(L.up, upload(dev, lw.dense.up));
        JANUS_ASSIGN_OR_RETURN(L.down, upload(dev, lw.dense.down));
      }
    }
    // Matmul inputs in the weights' dtype (BF16 models: no conversion pass before cuBLAS,
    // and the tensor-core kernels round to BF16 anyway); the residual stream, q/k/v and
    // everything handed to other actors stay F32.
    state_.adt = state_.layers.empty() ? kF32 : state_.layers[0].q->dtype;
    state_.kv_dtype = state_.layers.empty() ? kF32 : device_dtype(w.layers[0].k.dtype);

    // The paged KV cache: [layers][num_blocks, block_size, kv_heads, head_dim] for K and V.
    const KvCacheShape& s = state_.kv.shape();
    state_.layer_elems = static_cast<size_t>(s.num_blocks) * s.block_size * s.kv_heads * s.head_dim;
    const size_t cache_bytes = std::max<size_t>(state_.layer_elems * s.layers * dtype_size(state_.kv_dtype), 1);
    for (auto* cache : {&state_.k_cache, &state_.v_cache}) {
      void* p = nullptr;
      cudaError_t err = cudaMalloc(&p, cache_bytes);
      if (err != cudaSuccess) {
        cudaGetLastError();
        return resource_exhausted(d.name() + ": cannot allocate the KV cache (" + std::to_string(2 * cache_bytes) +
                                  " bytes for " + std::to_string(s.num_blocks) + " blocks of " + std::to_string(s.block_size) +
                                  " tokens): " + cudaGetErrorString(err) + "; lower attention.kv_blocks or max_seq_len");
      }
      const int ord = state_.engine.ordinal;
      *cache = std::shared_ptr<void>(p, [ord](void* q) {
        DeviceGuard gg(ord);
        cudaFree(q);
      });
      // Zeros, not garbage: the tensor-core kernel reads whole 16-token steps and masks
      // the positions past a row's end by their probability (0 * NaN would be NaN).
      JANUS_CUDA_TRY(cudaMemsetAsync(p, 0, cache_bytes, state_.engine.stream));
    }
    const cpu::PagedKvLayout L = state_.kv.layout();
    state_.table_elems = static_cast<size_t>(s.max_seqs) * L.max_blocks;
    state_.shadow.assign(state_.table_elems, -1);
    JANUS_ASSIGN_OR_RETURN(state_.tables, state_.engine.pool->alloc(std::max<size_t>(state_.table_elems, 1) * 4));
    JANUS_CUDA_TRY(cudaMemsetAsync(state_.tables.get(), 0xff, std::max<size_t>(state_.table_elems, 1) * 4, state_.engine.stream));
    std::vector<float> inv(static_cast<size_t>(c.head_dim / 2));
    cpu::rope_inv_freq(c.rope_theta, c.head_dim, inv.data());
    JANUS_ASSIGN_OR_RETURN(state_.inv_freq, state_.engine.pool->alloc(inv.size() * 4 + 4));
    JANUS_TRY(state_.engine.upload_to(state_.inv_freq.get(), inv.data(), inv.size() * 4));
    return state_.engine.sync();
  }

  Device device() const override { return state_.engine.device; }
  PagedKvCache& kv() override { return state_.kv; }

  Status embed(const std::vector<int32_t>& tokens, Tensor* x) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return embed_tokens(state_, tokens, x);
  }

  Status attention(int layer, Tensor& x, const std::vector<cpu::KvRow>& rows, Tensor* h) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return run_attention(state_, layer, x, rows, h);
  }

  Status dense_mlp(int layer, const Tensor& h_in, Tensor& x) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return run_dense_mlp(state_, layer, h_in, x);
  }

  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return route_on_shard(state_, layer, h, ids, w);
  }

  Status shared_expert(int, const Tensor&, Tensor*) override {
    // Never reached: init refuses models with a shared expert.
    return check_attention_features(state_.model->config());
  }

  Status add_moe_output(const std::vector<Tensor>& partials, Tensor& x) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return combine_moe_output(state_, partials, x);
  }

  Status sample(const Tensor& x, const std::vector<SampleRow>& rows, std::vector<int32_t>* tokens,
                std::vector<std::vector<float>>* logits) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return sample_rows(state_, x, rows, tokens, logits);
  }

 private:
  AttentionState state_;
};

class CudaRouter final : public RouterBackend {
 public:
  explicit CudaRouter(std::shared_ptr<const Model> model) : state_(std::move(model)) {}

  Status init(const Device& d) {
    JANUS_TRY(state_.engine.init(d));
    const ModelConfig& c = state_.model->config();
    state_.weights.resize(static_cast<size_t>(c.num_layers));
    state_.bias.resize(static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      if (!c.is_sparse(l)) continue;
      const LayerWeights& lw = state_.model->weights().layers[static_cast<size_t>(l)];
      JANUS_ASSIGN_OR_RETURN(state_.weights[static_cast<size_t>(l)], device_weight(state_.engine.ordinal, lw.router, kF32));
      // The noaux_tc gate's correction bias ([E], selection only), F32 as the CPU converts it.
      if (c.sigmoid_gate) {
        JANUS_ASSIGN_OR_RETURN(state_.bias[static_cast<size_t>(l)], device_weight(state_.engine.ordinal, lw.router_bias, kF32));
      }
    }
    return Status::Ok();
  }

  Device device() const override { return state_.engine.device; }

  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return route_on_router(state_, layer, h, ids, w);
  }

  Status route_on_device(int layer, const Tensor& h, DeviceRouting* out) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return route_on_router_device(state_, layer, h, out);
  }

 private:
  RouterState state_;
};

class CudaExperts final : public ExpertBackend {
 public:
  explicit CudaExperts(std::shared_ptr<const Model> model) : state_(std::move(model)) {}

  Status init(const Device& d) {
    JANUS_TRY(state_.engine.init(d));
    const ModelConfig& c = state_.model->config();
    state_.slot_of.assign(static_cast<size_t>(c.num_experts), -1);
    for (int l = 0; l < c.num_layers; ++l)
      if (c.is_sparse(l)) {
        state_.wdt = device_dtype(state_.model->weights().layers[static_cast<size_t>(l)].experts.at(0).gate.dtype);
        break;
      }
    return Status::Ok();
  }

  Device device() const override { return state_.engine.device; }
  DType partial_dtype() const override { return kF32; }

  Status set_experts(const std::vector<int32_t>& experts) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return load_experts(state_, experts);
  }

  Status run(int layer, const Tensor& h_in, const std::vector<ExpertWork>& work, Tensor* partial) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return run_experts(state_, layer, h_in, work, partial);
  }

  bool runs_device_routing() const override { return true; }
  Status run_routed(int layer, const Tensor& h_in, const DeviceRouting& routing, Tensor* partial) override {
    DeviceGuard g(state_.engine.ordinal);
    JANUS_TRY(g.status());
    return run_routed_experts(state_, layer, h_in, routing, partial);
  }

 private:
  ExpertState state_;
};

}  // namespace

// -- factories ------------------------------------------------------------------------------

Result<std::unique_ptr<AttentionBackend>> make_cuda_attention_backend(std::shared_ptr<const Model> model, const Device& device,
                                                                      const BackendOptions& options) {
  JANUS_TRY(check_device(device));
  auto b = std::make_unique<CudaAttention>(std::move(model), options.kv);
  Status s = b->init(device);
  if (!s.ok()) return s.with_context("attention backend on " + device.name());
  return std::unique_ptr<AttentionBackend>(std::move(b));
}

Result<std::unique_ptr<RouterBackend>> make_cuda_router_backend(std::shared_ptr<const Model> model, const Device& device) {
  JANUS_TRY(check_device(device));
  auto b = std::make_unique<CudaRouter>(std::move(model));
  Status s = b->init(device);
  if (!s.ok()) return s.with_context("router backend on " + device.name());
  return std::unique_ptr<RouterBackend>(std::move(b));
}

Result<std::unique_ptr<ExpertBackend>> make_cuda_expert_backend(std::shared_ptr<const Model> model, const Device& device,
                                                                const std::vector<int32_t>& experts) {
  JANUS_TRY(check_device(device));
  auto b = std::make_unique<CudaExperts>(std::move(model));
  Status s = b->init(device);
  if (s.ok()) s = b->set_experts(experts);
  if (!s.ok()) return s.with_context("expert backend on " + device.name());
  return std::unique_ptr<ExpertBackend>(std::move(b));
}

void register_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    CudaBackendFactories f;
    f.attention = &make_cuda_attention_backend;
    f.router = &make_cuda_router_backend;
    f.expert = &make_cuda_expert_backend;
    f.concat_rows = &concat_device_rows;
    f.to_host = &device_to_host;
    register_cuda_backend(f);
  });
}

}  // namespace janus::cuda
