#include "gpu/backend/cuda/backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "gpu/cuda/attention.h"
#include "gpu/cuda/backend_kernels.h"
#include "gpu/cuda/device.h"
#include "gpu/cuda/embedding.h"
#include "gpu/cuda/gate.h"
#include "gpu/cuda/gemm.h"
#include "gpu/backend/cuda/memory.h"
#include "gpu/cuda/moe.h"
#include "gpu/cuda/norm_rope.h"
#include "gpu/cuda/sampling.h"

namespace janus::cuda {
namespace {

constexpr DType kF32 = DType::kF32;

Status blas_status(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return internal_error(std::string("cuBLAS: ") + what + " failed: " + cublasGetStatusName(s));
}

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

// -- Engine: what every backend has ---------------------------------------------------------
//
// Its device, stream, cuBLAS handle, caching allocator and pinned staging, and the blocks
// and tensors the current call holds until it synchronises. Every backend call ends in
// wait() + release() (one cudaStreamSynchronize), except AttentionBackend::add_moe_output,
// which only queues its kernel: its output is the shard's own residual, read next by the
// same shard on the same stream, and the partial sums it reads stay in `retained` until
// that next call's synchronisation.
class Engine {
 public:
  Status init(const Device& d) {
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

  ~Engine() {
    if (stream == nullptr) return;
    DeviceGuard g(ordinal);
    cudaStreamSynchronize(stream);
    held.clear();
    retained.clear();
    if (blas) cublasDestroy(blas);
    cudaStreamDestroy(stream);
  }

  /// Device scratch for this call, held until release().
  Result<void*> scratch(size_t bytes) {
    JANUS_ASSIGN_OR_RETURN(std::shared_ptr<void> b, pool->alloc(bytes));
    held.push_back(b);
    return b.get();
  }

  /// A device tensor of this backend's pool (the caller owns it; not held).
  Result<Tensor> tensor(DType dtype, int64_t rows, int64_t cols) {
    Tensor t;
    t.device = device;
    t.dtype = dtype;
    t.rows = rows;
    t.cols = cols;
    JANUS_ASSIGN_OR_RETURN(t.storage, pool->alloc(std::max<size_t>(t.bytes(), 1)));
    t.data = t.storage.get();
    return t;
  }

  /// Copies host bytes to device memory through pinned staging, on the stream.
  Status upload_to(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return Status::Ok();
    JANUS_ASSIGN_OR_RETURN(void* stage, staging.take(bytes));
    std::memcpy(stage, src, bytes);
    JANUS_CUDA_TRY(cudaMemcpyAsync(dst, stage, bytes, cudaMemcpyHostToDevice, stream));
    return Status::Ok();
  }
  Result<void*> upload(const void* src, size_t bytes) {
    JANUS_ASSIGN_OR_RETURN(void* d, scratch(bytes));
    JANUS_TRY(upload_to(d, src, bytes));
    return d;
  }

  /// `t` as a tensor on this device: itself when it is here, else a copy (from the host
  /// through staging, from another GPU peer to peer). Both are held until release(), so
  /// that even a call that fails half-way (returning before its synchronisation) cannot
  /// let another actor's pool reuse memory its queued work still reads.
  Status input(const Tensor& t, Tensor* out) {
    retained.push_back(t);
    if (t.device == device || t.rows == 0) {
      *out = t;
      return Status::Ok();
    }
    JANUS_ASSIGN_OR_RETURN(Tensor c, tensor(t.dtype, t.rows, t.cols));
    if (t.device.is_cpu()) {
      JANUS_TRY(upload_to(c.data, t.data, t.bytes()));
    } else {
      JANUS_CUDA_TRY(cudaMemcpyPeerAsync(c.data, ordinal, t.data, t.device.ordinal, t.bytes(), stream));
    }
    retained.push_back(c);
    *out = c;
    return Status::Ok();
  }

  /// y = x · Wᵀ (or y += with accumulate); converts x to W's dtype in scratch if needed.
  Status linear(const void* x, DType xt, int64_t m, int64_t k, const DeviceWeight& w, void* y, DType yt, bool accumulate) {
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

  Status wait() {
    JANUS_CUDA_TRY(cudaStreamSynchronize(stream));
    return Status::Ok();
  }
  void release() {
    held.clear();
    retained.clear();
    staging.reset();
  }
  Status sync() {
    Status s = wait();
    release();
    return s;
  }

  Device device;
  int ordinal = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  std::shared_ptr<DevicePool> pool;
  PinnedArena staging;
  std::vector<std::shared_ptr<void>> held;
  std::vector<Tensor> retained;
};

Result<WeightRef> upload(int device, const WeightView& w) { return device_weight(device, w, device_dtype(w.dtype)); }

/// The router of one layer: logits in exact fp32 (router weights are kept in F32 on the
/// device whatever the checkpoint's dtype, as the CPU twin computes them: a BF16 rounding
/// of h here could flip a near-tie in the top-k), top-k on the GPU, ids and weights back
/// to the host (the scheduler needs them there).
Status gate(Engine& e, const ModelConfig& c, const DeviceWeight& router, const Tensor& h_in, std::vector<int32_t>* ids,
            std::vector<float>* weights) {
  const int64_t n = h_in.rows;
  const int k = c.top_k, E = c.num_experts;
  ids->clear();
  weights->clear();
  if (n == 0) return Status::Ok();
  if (h_in.cols != c.hidden_size) return invalid_argument("route: activations " + shape(h_in) + ", want width " + std::to_string(c.hidden_size));
  if (h_in.dtype != kF32 && h_in.dtype != DType::kBF16) return invalid_argument("route: activations " + shape(h_in) + " (F32 or BF16)");
  Tensor h;
  JANUS_TRY(e.input(h_in, &h));
  JANUS_ASSIGN_OR_RETURN(void* logits, e.scratch(static_cast<size_t>(n * E) * 4));
  JANUS_TRY(e.linear(h.data, h.dtype, n, c.hidden_size, router, logits, kF32, false));
  const size_t nk = static_cast<size_t>(n) * k;
  JANUS_ASSIGN_OR_RETURN(void* out, e.scratch(nk * 8));
  auto* d_ids = static_cast<int32_t*>(out);
  auto* d_w = reinterpret_cast<float*>(d_ids + nk);
  JANUS_TRY(gate_topk(static_cast<const float*>(logits), n, E, k, c.norm_topk_prob, d_ids, d_w, e.stream));
  JANUS_ASSIGN_OR_RETURN(void* host, e.staging.take(nk * 8));
  JANUS_CUDA_TRY(cudaMemcpyAsync(host, out, nk * 8, cudaMemcpyDeviceToHost, e.stream));
  JANUS_TRY(e.wait());
  ids->assign(static_cast<const int32_t*>(host), static_cast<const int32_t*>(host) + nk);
  const float* hw = reinterpret_cast<const float*>(static_cast<const int32_t*>(host) + nk);
  weights->assign(hw, hw + nk);
  e.release();
  return Status::Ok();
}

// -- attention ------------------------------------------------------------------------------

class CudaAttention final : public AttentionBackend {
 public:
  CudaAttention(std::shared_ptr<const Model> model, const KvCacheShape& shape)
      : model_(std::move(model)), kv_(host_only(shape)) {}

  ~CudaAttention() override {
    DeviceGuard g(e_.ordinal);
    if (e_.stream) cudaStreamSynchronize(e_.stream);
  }

  Status init(const Device& d) {
    JANUS_TRY(e_.init(d));
    DeviceGuard g(e_.ordinal);
    const ModelConfig& c = model_->config();
    const ModelWeights& w = model_->weights();
    const int dev = e_.ordinal;
    JANUS_ASSIGN_OR_RETURN(embed_, upload(dev, w.embed));
    JANUS_ASSIGN_OR_RETURN(final_norm_, upload(dev, w.final_norm));
    JANUS_ASSIGN_OR_RETURN(lm_head_, upload(dev, w.lm_head));  // the same device copy as embed_ when tied
    layers_.resize(static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
      Layer& L = layers_[static_cast<size_t>(l)];
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
      } else {
        JANUS_ASSIGN_OR_RETURN(L.gate, upload(dev, lw.dense.gate));
        JANUS_ASSIGN_OR_RETURN(L.up, upload(dev, lw.dense.up));
        JANUS_ASSIGN_OR_RETURN(L.down, upload(dev, lw.dense.down));
      }
    }
    // Matmul inputs in the weights' dtype (BF16 models: no conversion pass before cuBLAS,
    // and the tensor-core kernels round to BF16 anyway); the residual stream, q/k/v and
    // everything handed to other actors stay F32.
    adt_ = layers_.empty() ? kF32 : layers_[0].q->dtype;
    kv_dtype_ = layers_.empty() ? kF32 : device_dtype(w.layers[0].k.dtype);

    // The paged KV cache: [layers][num_blocks, block_size, kv_heads, head_dim] for K and V.
    const KvCacheShape& s = kv_.shape();
    layer_elems_ = static_cast<size_t>(s.num_blocks) * s.block_size * s.kv_heads * s.head_dim;
    const size_t cache_bytes = std::max<size_t>(layer_elems_ * s.layers * dtype_size(kv_dtype_), 1);
    for (auto* cache : {&k_cache_, &v_cache_}) {
      void* p = nullptr;
      cudaError_t err = cudaMalloc(&p, cache_bytes);
      if (err != cudaSuccess) {
        cudaGetLastError();
        return resource_exhausted(d.name() + ": cannot allocate the KV cache (" + std::to_string(2 * cache_bytes) +
                                  " bytes for " + std::to_string(s.num_blocks) + " blocks of " + std::to_string(s.block_size) +
                                  " tokens): " + cudaGetErrorString(err) + "; lower attention.kv_blocks or max_seq_len");
      }
      const int ord = e_.ordinal;
      *cache = std::shared_ptr<void>(p, [ord](void* q) {
        DeviceGuard gg(ord);
        cudaFree(q);
      });
      // Zeros, not garbage: the tensor-core kernel reads whole 16-token steps and masks
      // the positions past a row's end by their probability (0 * NaN would be NaN).
      JANUS_CUDA_TRY(cudaMemsetAsync(p, 0, cache_bytes, e_.stream));
    }
    const cpu::PagedKvLayout L = kv_.layout();
    table_elems_ = static_cast<size_t>(s.max_seqs) * L.max_blocks;
    shadow_.assign(table_elems_, -1);
    JANUS_ASSIGN_OR_RETURN(tables_, e_.pool->alloc(std::max<size_t>(table_elems_, 1) * 4));
    JANUS_CUDA_TRY(cudaMemsetAsync(tables_.get(), 0xff, std::max<size_t>(table_elems_, 1) * 4, e_.stream));
    std::vector<float> inv(static_cast<size_t>(c.head_dim / 2));
    cpu::rope_inv_freq(c.rope_theta, c.head_dim, inv.data());
    JANUS_ASSIGN_OR_RETURN(inv_freq_, e_.pool->alloc(inv.size() * 4 + 4));
    JANUS_TRY(e_.upload_to(inv_freq_.get(), inv.data(), inv.size() * 4));
    return e_.sync();
  }

  Device device() const override { return e_.device; }
  PagedKvCache& kv() override { return kv_; }

  Status embed(const std::vector<int32_t>& tokens, Tensor* x) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    const ModelConfig& c = model_->config();
    const int64_t n = static_cast<int64_t>(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
        return invalid_argument("embed: token " + std::to_string(tokens[i]) + " (position " + std::to_string(i) +
                                ") is outside the vocabulary of " + std::to_string(c.vocab_size));
    JANUS_ASSIGN_OR_RETURN(Tensor out, e_.tensor(kF32, n, c.hidden_size));
    if (n > 0) {
      JANUS_ASSIGN_OR_RETURN(void* ids, e_.upload(tokens.data(), tokens.size() * 4));
      JANUS_TRY(embedding(static_cast<const int32_t*>(ids), n, embed_->data, embed_->dtype, c.vocab_size, c.hidden_size,
                          out.data, kF32, e_.stream));
    }
    JANUS_TRY(e_.sync());
    *x = std::move(out);
    return Status::Ok();
  }

  Status attention(int layer, Tensor& x, const std::vector<cpu::KvRow>& rows, Tensor* h) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    const ModelConfig& c = model_->config();
    JANUS_TRY(check_layer(layer, "attention"));
    JANUS_TRY(check_x(x, "attention"));
    if (static_cast<size_t>(x.rows) != rows.size())
      return invalid_argument("attention: " + std::to_string(x.rows) + " activation rows but " + std::to_string(rows.size()) +
                              " KV rows");
    const int64_t n = x.rows, H = c.hidden_size, QD = c.q_dim(), KD = c.kv_dim();
    const float eps = static_cast<float>(c.rms_norm_eps);
    const Layer& w = layers_[static_cast<size_t>(layer)];
    JANUS_ASSIGN_OR_RETURN(Tensor out, e_.tensor(kF32, n, H));
    if (n == 0) {
      *h = std::move(out);
      return Status::Ok();
    }
    int max_context = 0;
    JANUS_TRY(sync_block_table(rows, &max_context));
    JANUS_ASSIGN_OR_RETURN(const cpu::KvRow* d_rows, device_rows(rows));

    JANUS_ASSIGN_OR_RETURN(void* hn, e_.scratch(static_cast<size_t>(n * H) * dtype_size(adt_)));
    JANUS_TRY(rms_norm(x.data, kF32, n, H, w.input_norm->data, w.input_norm->dtype, eps, hn, adt_, e_.stream));
    JANUS_ASSIGN_OR_RETURN(void* qkv, e_.scratch(static_cast<size_t>(n * (QD + 2 * KD)) * 4));
    float* q = static_cast<float*>(qkv);
    float* k = q + n * QD;
    float* v = k + n * KD;
    JANUS_TRY(e_.linear(hn, adt_, n, H, *w.q, q, kF32, false));
    JANUS_TRY(e_.linear(hn, adt_, n, H, *w.k, k, kF32, false));
    JANUS_TRY(e_.linear(hn, adt_, n, H, *w.v, v, kF32, false));
    JANUS_TRY(qk_norm_rope(q, k, kF32, n, c.num_heads, c.num_kv_heads, c.head_dim, c.qk_norm ? w.q_norm->data : nullptr,
                           c.qk_norm ? w.k_norm->data : nullptr, c.qk_norm ? w.q_norm->dtype : kF32, eps, d_rows,
                           static_cast<const float*>(inv_freq_.get()), e_.stream));
    cpu::PagedKvLayout L = kv_.layout();
    L.block_tables = static_cast<const int32_t*>(tables_.get());
    void* kc = cache_at(k_cache_, layer);
    void* vc = cache_at(v_cache_, layer);
    JANUS_TRY(kv_write(k, v, kF32, n, d_rows, L, kc, vc, kv_dtype_, e_.stream));
    JANUS_ASSIGN_OR_RETURN(void* a, e_.scratch(static_cast<size_t>(n * QD) * dtype_size(adt_)));
    PagedAttentionArgs pa;
    pa.q = q;
    pa.q_dtype = kF32;
    pa.rows = n;
    pa.row = d_rows;
    pa.heads = c.num_heads;
    pa.layout = L;
    pa.k_cache = kc;
    pa.v_cache = vc;
    pa.kv_dtype = kv_dtype_;
    pa.sliding_window = c.sliding_window;
    pa.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    pa.out = a;
    pa.out_dtype = adt_;
    pa.max_context = max_context;
    pa.workspace_bytes = paged_attention_workspace_bytes(n, c.num_heads, c.num_kv_heads, c.head_dim, max_context);
    if (pa.workspace_bytes > 0) {
      JANUS_ASSIGN_OR_RETURN(pa.workspace, e_.scratch(pa.workspace_bytes));
    }
    JANUS_TRY(paged_attention(pa, e_.stream));
    // x += o(a), then h = post_norm(x).
    JANUS_TRY(e_.linear(a, adt_, n, QD, *w.o, x.data, kF32, true));
    JANUS_TRY(rms_norm(x.data, kF32, n, H, w.post_norm->data, w.post_norm->dtype, eps, out.data, kF32, e_.stream));
    JANUS_TRY(e_.sync());
    *h = std::move(out);
    return Status::Ok();
  }

  Status dense_mlp(int layer, const Tensor& h_in, Tensor& x) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    const ModelConfig& c = model_->config();
    JANUS_TRY(check_layer(layer, "dense_mlp"));
    if (c.is_sparse(layer)) return invalid_argument("dense_mlp: layer " + std::to_string(layer) + " is a MoE layer");
    JANUS_TRY(check_x(x, "dense_mlp"));
    if (h_in.rows != x.rows || h_in.cols != x.cols) return invalid_argument("dense_mlp: h " + shape(h_in) + " against x " + shape(x));
    const int64_t n = x.rows, H = c.hidden_size, I = c.intermediate_size;
    if (n == 0) return Status::Ok();
    const Layer& w = layers_[static_cast<size_t>(layer)];
    Tensor h;
    JANUS_TRY(e_.input(h_in, &h));
    JANUS_ASSIGN_OR_RETURN(void* gu, e_.scratch(static_cast<size_t>(2 * n * I) * 4));
    float* gate_out = static_cast<float*>(gu);
    float* up_out = gate_out + n * I;
    JANUS_TRY(e_.linear(h.data, h.dtype, n, H, *w.gate, gate_out, kF32, false));
    JANUS_TRY(e_.linear(h.data, h.dtype, n, H, *w.up, up_out, kF32, false));
    const DType act_dt = w.down->dtype;
    JANUS_ASSIGN_OR_RETURN(void* act, e_.scratch(static_cast<size_t>(n * I) * dtype_size(act_dt)));
    JANUS_TRY(silu_mul(gate_out, up_out, n * I, act, act_dt, e_.stream));
    JANUS_TRY(e_.linear(act, act_dt, n, I, *w.down, x.data, kF32, true));
    return e_.sync();
  }

  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    JANUS_TRY(check_layer(layer, "route"));
    const Layer& L = layers_[static_cast<size_t>(layer)];
    if (!L.router) return invalid_argument("route: layer " + std::to_string(layer) + " is a dense layer");
    return gate(e_, model_->config(), *L.router, h, ids, w);
  }

  Status add_moe_output(const std::vector<Tensor>& partials, Tensor& x) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    JANUS_TRY(check_x(x, "add_moe_output"));
    if (partials.empty() || x.rows == 0) return Status::Ok();
    std::vector<PartialRef> refs;
    refs.reserve(partials.size());
    for (const Tensor& p : partials) {
      if (p.rows != x.rows || p.cols != x.cols)
        return internal_error("add_moe_output: partial sums " + shape(p) + " do not match the activations " + shape(x));
      if (p.dtype != kF32 && p.dtype != DType::kF64)
        return invalid_argument("add_moe_output: partial sums " + shape(p) + " (F32 or F64)");
      Tensor d;
      JANUS_TRY(e_.input(p, &d));  // retained: read by the queued kernel, kept until the next synchronisation
      refs.push_back({d.data, d.dtype});
    }
    // No synchronisation (see Engine): the next call on this shard synchronises.
    return add_partials(static_cast<float*>(x.data), x.rows, x.cols, refs.data(), static_cast<int>(refs.size()), e_.stream);
  }

  Status sample(const Tensor& x, const std::vector<SampleRow>& rows, std::vector<int32_t>* tokens,
                std::vector<std::vector<float>>* logits) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    const ModelConfig& c = model_->config();
    JANUS_TRY(check_x(x, "sample"));
    tokens->clear();
    logits->clear();
    const int64_t n = static_cast<int64_t>(rows.size()), H = c.hidden_size, V = c.vocab_size;
    if (n == 0) return Status::Ok();
    bool identity = n == x.rows, any_sampling = false, any_logits = false;
    std::vector<int32_t> index(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const SampleRow& r = rows[static_cast<size_t>(i)];
      if (r.row < 0 || r.row >= x.rows)
        return invalid_argument("sample: row " + std::to_string(r.row) + " of activations with " + std::to_string(x.rows) + " rows");
      index[static_cast<size_t>(i)] = static_cast<int32_t>(r.row);
      identity = identity && r.row == i;
      any_sampling = any_sampling || !r.params.greedy();
      any_logits = any_logits || r.want_logits;
    }
    const float eps = static_cast<float>(c.rms_norm_eps);
    const void* xs = x.data;
    if (!identity) {  // prefill: the last row of each prompt
      JANUS_ASSIGN_OR_RETURN(void* d_index, e_.upload(index.data(), index.size() * 4));
      JANUS_ASSIGN_OR_RETURN(void* gathered, e_.scratch(static_cast<size_t>(n * H) * 4));
      JANUS_TRY(gather_rows(static_cast<const float*>(x.data), H, static_cast<const int32_t*>(d_index), n,
                            static_cast<float*>(gathered), e_.stream));
      xs = gathered;
    }
    JANUS_ASSIGN_OR_RETURN(void* hn, e_.scratch(static_cast<size_t>(n * H) * dtype_size(adt_)));
    JANUS_TRY(rms_norm(xs, kF32, n, H, final_norm_->data, final_norm_->dtype, eps, hn, adt_, e_.stream));
    JANUS_ASSIGN_OR_RETURN(void* lg, e_.scratch(static_cast<size_t>(n * V) * 4));
    JANUS_TRY(e_.linear(hn, adt_, n, H, *lm_head_, lg, kF32, false));
    JANUS_ASSIGN_OR_RETURN(void* d_tokens, e_.scratch(static_cast<size_t>(n) * 4));
    const SamplingRow* d_params = nullptr;
    void* ws = nullptr;
    size_t ws_bytes = 0;
    if (any_sampling) {
      std::vector<SamplingRow> params(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        const SampleRow& r = rows[static_cast<size_t>(i)];
        SamplingRow& p = params[static_cast<size_t>(i)];
        p.temperature = r.params.temperature;
        p.top_p = r.params.top_p;
        p.top_k = r.params.top_k;
        p.seed = r.params.seed;
        p.step = r.step;
      }
      JANUS_ASSIGN_OR_RETURN(void* dp, e_.upload(params.data(), params.size() * sizeof(SamplingRow)));
      d_params = static_cast<const SamplingRow*>(dp);
      ws_bytes = sampling_workspace_bytes(static_cast<int>(n), static_cast<int>(V));
      JANUS_ASSIGN_OR_RETURN(ws, e_.scratch(ws_bytes));
    }
    JANUS_TRY(sample_tokens(static_cast<const float*>(lg), static_cast<int>(n), static_cast<int>(V), d_params, any_sampling,
                            static_cast<int32_t*>(d_tokens), ws, ws_bytes, e_.stream));
    JANUS_ASSIGN_OR_RETURN(void* h_tokens, e_.staging.take(static_cast<size_t>(n) * 4));
    JANUS_CUDA_TRY(cudaMemcpyAsync(h_tokens, d_tokens, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost, e_.stream));
    std::vector<float*> h_logits;
    if (any_logits) {
      for (int64_t i = 0; i < n; ++i) {
        if (!rows[static_cast<size_t>(i)].want_logits) continue;
        JANUS_ASSIGN_OR_RETURN(void* dst, e_.staging.take(static_cast<size_t>(V) * 4));
        JANUS_CUDA_TRY(cudaMemcpyAsync(dst, static_cast<const float*>(lg) + i * V, static_cast<size_t>(V) * 4,
                                       cudaMemcpyDeviceToHost, e_.stream));
        h_logits.push_back(static_cast<float*>(dst));
      }
    }
    JANUS_TRY(e_.wait());
    tokens->assign(static_cast<const int32_t*>(h_tokens), static_cast<const int32_t*>(h_tokens) + n);
    for (float* l : h_logits) logits->emplace_back(l, l + V);
    e_.release();
    return Status::Ok();
  }

 private:
  struct Layer {
    WeightRef input_norm, post_norm, q, k, v, o, q_norm, k_norm, router, gate, up, down;
  };

  static KvCacheShape host_only(KvCacheShape s) {
    s.allocate_storage = false;
    return s;
  }

  Status check_layer(int layer, const char* what) const {
    if (layer < 0 || layer >= model_->config().num_layers)
      return invalid_argument(std::string(what) + ": layer " + std::to_string(layer) + " does not exist");
    return Status::Ok();
  }

  Status check_x(const Tensor& x, const char* what) const {
    if (x.device != e_.device || x.dtype != kF32 || x.cols != model_->config().hidden_size)
      return invalid_argument(std::string(what) + ": the residual stream x is " + shape(x) + "; this shard's is F32 on " +
                              e_.device.name() + " of width " + std::to_string(model_->config().hidden_size));
    return Status::Ok();
  }

  void* cache_at(const std::shared_ptr<void>& cache, int layer) const {
    return static_cast<char*>(cache.get()) + layer_elems_ * static_cast<size_t>(layer) * dtype_size(kv_dtype_);
  }

  // The block table lives on the host (PagedKvCache, bookkeeping only) and is mirrored on
  // the device. The shard changes it between steps (admission, release); before each call
  // the entries this call's rows use are compared with the mirror (a few ints per row) and
  // the whole table is uploaded when any differs.
  Status sync_block_table(const std::vector<cpu::KvRow>& rows, int* max_context) {
    const KvCacheShape& s = kv_.shape();
    const cpu::PagedKvLayout L = kv_.layout();
    const int mb = L.max_blocks;
    bool dirty = false;
    int mc = 0;
    for (const cpu::KvRow& r : rows) {
      if (r.seq < 0 || r.seq >= s.max_seqs || r.pos < 0 || r.pos >= mb * s.block_size)
        return invalid_argument("attention: KV row (seq " + std::to_string(r.seq) + ", pos " + std::to_string(r.pos) +
                                ") is outside the cache (" + std::to_string(s.max_seqs) + " sequences of " +
                                std::to_string(mb * s.block_size) + " positions)");
      const int used = r.pos / s.block_size + 1;
      const int32_t* host = L.block_tables + static_cast<size_t>(r.seq) * mb;
      if (host[used - 1] < 0)
        return internal_error("attention: position " + std::to_string(r.pos) + " of KV sequence " + std::to_string(r.seq) +
                              " has no block reserved");
      if (!dirty && std::memcmp(host, shadow_.data() + static_cast<size_t>(r.seq) * mb, static_cast<size_t>(used) * 4) != 0)
        dirty = true;
      mc = std::max(mc, r.pos + 1);
    }
    if (dirty) {
      std::memcpy(shadow_.data(), L.block_tables, table_elems_ * 4);
      JANUS_TRY(e_.upload_to(tables_.get(), shadow_.data(), table_elems_ * 4));
    }
    *max_context = mc;
    return Status::Ok();
  }

  // The (seq, pos) rows of a micro-batch are the same for every layer of a step: they are
  // uploaded once and found again by content (a few recent sets, for micro-batches).
  Result<const cpu::KvRow*> device_rows(const std::vector<cpu::KvRow>& rows) {
    ++tick_;
    const size_t bytes = rows.size() * sizeof(cpu::KvRow);
    for (RowsEntry& e : rows_cache_)
      if (e.dev && e.rows.size() == rows.size() && std::memcmp(e.rows.data(), rows.data(), bytes) == 0) {
        e.used = tick_;
        return static_cast<const cpu::KvRow*>(e.dev.get());
      }
    RowsEntry* victim = &rows_cache_[0];
    for (RowsEntry& e : rows_cache_)
      if (e.used < victim->used) victim = &e;
    if (victim->capacity < bytes) {
      JANUS_ASSIGN_OR_RETURN(victim->dev, e_.pool->alloc(bytes));
      victim->capacity = DevicePool::size_class(bytes);
    }
    victim->rows = rows;
    victim->used = tick_;
    JANUS_TRY(e_.upload_to(victim->dev.get(), rows.data(), bytes));
    return static_cast<const cpu::KvRow*>(victim->dev.get());
  }

  struct RowsEntry {
    std::vector<cpu::KvRow> rows;
    std::shared_ptr<void> dev;
    size_t capacity = 0;
    uint64_t used = 0;
  };

  std::shared_ptr<const Model> model_;
  PagedKvCache kv_;
  Engine e_;
  WeightRef embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  DType adt_ = kF32, kv_dtype_ = kF32;
  size_t layer_elems_ = 0, table_elems_ = 0;
  std::shared_ptr<void> k_cache_, v_cache_, tables_, inv_freq_;
  std::vector<int32_t> shadow_;
  std::array<RowsEntry, 4> rows_cache_;
  uint64_t tick_ = 0;
};

// -- router ---------------------------------------------------------------------------------

class CudaRouter final : public RouterBackend {
 public:
  explicit CudaRouter(std::shared_ptr<const Model> model) : model_(std::move(model)) {}

  Status init(const Device& d) {
    JANUS_TRY(e_.init(d));
    const ModelConfig& c = model_->config();
    router_.resize(static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      if (!c.is_sparse(l)) continue;
      JANUS_ASSIGN_OR_RETURN(router_[static_cast<size_t>(l)],
                             device_weight(e_.ordinal, model_->weights().layers[static_cast<size_t>(l)].router, kF32));
    }
    return Status::Ok();
  }

  Device device() const override { return e_.device; }

  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    if (layer < 0 || layer >= model_->config().num_layers || !router_[static_cast<size_t>(layer)])
      return invalid_argument("route: layer " + std::to_string(layer) + " is not a MoE layer");
    return gate(e_, model_->config(), *router_[static_cast<size_t>(layer)], h, ids, w);
  }

 private:
  std::shared_ptr<const Model> model_;
  Engine e_;
  std::vector<WeightRef> router_;
};

// -- experts --------------------------------------------------------------------------------

class CudaExperts final : public ExpertBackend {
 public:
  explicit CudaExperts(std::shared_ptr<const Model> model) : model_(std::move(model)) {}

  Status init(const Device& d) {
    JANUS_TRY(e_.init(d));
    const ModelConfig& c = model_->config();
    slot_of_.assign(static_cast<size_t>(c.num_experts), -1);
    for (int l = 0; l < c.num_layers; ++l)
      if (c.is_sparse(l)) {
        wdt_ = device_dtype(model_->weights().layers[static_cast<size_t>(l)].experts.at(0).gate.dtype);
        break;
      }
    return Status::Ok();
  }

  Device device() const override { return e_.device; }
  DType partial_dtype() const override { return kF32; }

  Status set_experts(const std::vector<int32_t>& experts) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    const ModelConfig& c = model_->config();
    std::vector<bool> seen(static_cast<size_t>(c.num_experts), false);
    for (int32_t e : experts) {
      if (e < 0 || e >= c.num_experts)
        return invalid_argument("set_experts: expert " + std::to_string(e) + " does not exist (the model has " +
                                std::to_string(c.num_experts) + ")");
      if (seen[static_cast<size_t>(e)]) return invalid_argument("set_experts: expert " + std::to_string(e) + " is listed twice");
      seen[static_cast<size_t>(e)] = true;
    }
    if (table_ && experts == experts_) return Status::Ok();
    // Load the new experts first (the old ones stay usable until the switch).
    std::map<int32_t, std::vector<std::array<WeightRef, 3>>> next;
    for (int32_t e : experts) {
      auto it = held_.find(e);
      if (it != held_.end()) {
        next[e] = it->second;
        continue;
      }
      std::vector<std::array<WeightRef, 3>> per_layer(static_cast<size_t>(c.num_layers));
      for (int l = 0; l < c.num_layers; ++l) {
        if (!c.is_sparse(l)) continue;
        const ExpertWeights& w = model_->weights().layers[static_cast<size_t>(l)].experts[static_cast<size_t>(e)];
        auto& s = per_layer[static_cast<size_t>(l)];
        JANUS_ASSIGN_OR_RETURN(s[0], device_weight(e_.ordinal, w.gate, wdt_));
        JANUS_ASSIGN_OR_RETURN(s[1], device_weight(e_.ordinal, w.up, wdt_));
        JANUS_ASSIGN_OR_RETURN(s[2], device_weight(e_.ordinal, w.down, wdt_));
      }
      next[e] = std::move(per_layer);
    }
    // Slot pointer arrays: [layer][gate, up, down][slot] device pointers.
    const size_t C = experts.size(), L = static_cast<size_t>(c.num_layers);
    std::vector<const void*> ptrs(std::max<size_t>(L * 3 * C, 1), nullptr);
    for (size_t s = 0; s < C; ++s) {
      const auto& per_layer = next.at(experts[s]);
      for (size_t l = 0; l < L; ++l)
        for (size_t m = 0; m < 3; ++m)
          if (per_layer[l][m]) ptrs[(l * 3 + m) * C + s] = per_layer[l][m]->data;
    }
    JANUS_ASSIGN_OR_RETURN(std::shared_ptr<void> table, e_.pool->alloc(ptrs.size() * sizeof(void*)));
    JANUS_TRY(e_.upload_to(table.get(), ptrs.data(), ptrs.size() * sizeof(void*)));
    JANUS_TRY(e_.sync());
    table_ = std::move(table);
    held_.swap(next);  // dropped experts are freed with `next`
    experts_ = experts;
    std::fill(slot_of_.begin(), slot_of_.end(), -1);
    for (size_t s = 0; s < C; ++s) slot_of_[static_cast<size_t>(experts[s])] = static_cast<int32_t>(s);
    return Status::Ok();
  }

  Status run(int layer, const Tensor& h_in, const std::vector<ExpertWork>& work, Tensor* partial) override {
    DeviceGuard g(e_.ordinal);
    JANUS_TRY(g.status());
    const ModelConfig& c = model_->config();
    if (layer < 0 || layer >= c.num_layers || !c.is_sparse(layer))
      return invalid_argument("experts: layer " + std::to_string(layer) + " is not a MoE layer");
    const int64_t n = h_in.rows, H = c.hidden_size;
    if (h_in.cols != H || (h_in.dtype != kF32 && h_in.dtype != DType::kBF16))
      return invalid_argument("experts: activations " + shape(h_in) + ", want F32 or BF16 of width " + std::to_string(H));
    JANUS_ASSIGN_OR_RETURN(Tensor out, e_.tensor(kF32, n, H));
    if (n == 0) {
      *partial = std::move(out);
      return Status::Ok();
    }
    if (work.empty() || experts_.empty()) {
      if (!work.empty()) return invalid_argument("experts: work for an instance that holds no experts");
      JANUS_CUDA_TRY(cudaMemsetAsync(out.data, 0, out.bytes(), e_.stream));
      JANUS_TRY(e_.sync());
      *partial = std::move(out);
      return Status::Ok();
    }
    // The work list as the kernel wants it: per (row, choice) this instance's slot (-1:
    // none) and gate weight, each row's items in the order given (the combine sums them
    // in that order).
    const int k = c.top_k;
    const size_t nk = static_cast<size_t>(n) * k;
    JANUS_ASSIGN_OR_RETURN(void* stage, e_.staging.take(nk * 8));
    auto* slot = static_cast<int32_t*>(stage);
    auto* weight = reinterpret_cast<float*>(slot + nk);
    std::fill(slot, slot + nk, -1);
    std::fill(weight, weight + nk, 0.f);
    fill_.assign(static_cast<size_t>(n), 0);
    for (const ExpertWork& w : work) {
      if (w.row < 0 || w.row >= n)
        return invalid_argument("experts: work item for row " + std::to_string(w.row) + " of a batch of " + std::to_string(n));
      const int32_t s = w.expert >= 0 && w.expert < c.num_experts ? slot_of_[static_cast<size_t>(w.expert)] : -1;
      if (s < 0) return invalid_argument("experts: expert " + std::to_string(w.expert) + " is not held by this instance");
      int& f = fill_[static_cast<size_t>(w.row)];
      if (f >= k)
        return invalid_argument("experts: row " + std::to_string(w.row) + " has more than top_k = " + std::to_string(k) +
                                " work items");
      slot[static_cast<size_t>(w.row) * k + f] = s;
      weight[static_cast<size_t>(w.row) * k + f] = w.weight;
      ++f;
    }
    JANUS_ASSIGN_OR_RETURN(void* choice, e_.scratch(nk * 8));
    JANUS_CUDA_TRY(cudaMemcpyAsync(choice, stage, nk * 8, cudaMemcpyHostToDevice, e_.stream));
    Tensor h;
    JANUS_TRY(e_.input(h_in, &h));
    const int C = static_cast<int>(experts_.size());
    const int64_t I = c.moe_intermediate_size;
    MoeArgs a;
    a.x = h.data;
    a.x_dtype = h.dtype;
    a.rows = n;
    a.choice_slot = static_cast<const int32_t*>(choice);
    a.choice_weight = reinterpret_cast<const float*>(static_cast<const int32_t*>(choice) + nk);
    a.top_k = k;
    const void* const* table = static_cast<const void* const*>(table_.get());
    a.experts.gate = table + (static_cast<size_t>(layer) * 3 + 0) * C;
    a.experts.up = table + (static_cast<size_t>(layer) * 3 + 1) * C;
    a.experts.down = table + (static_cast<size_t>(layer) * 3 + 2) * C;
    a.experts.dtype = wdt_;
    a.experts.num_slots = C;
    a.experts.hidden = H;
    a.experts.inter = I;
    a.out = out.data;
    a.out_dtype = kF32;
    a.accumulate = false;
    a.workspace_bytes = moe_workspace_bytes(n, k, C, H, I);
    JANUS_ASSIGN_OR_RETURN(a.workspace, e_.scratch(a.workspace_bytes));
    JANUS_TRY(moe_expert_layer(a, e_.stream));
    JANUS_TRY(e_.sync());
    *partial = std::move(out);
    return Status::Ok();
  }

 private:
  std::shared_ptr<const Model> model_;
  Engine e_;
  DType wdt_ = DType::kBF16;
  std::map<int32_t, std::vector<std::array<WeightRef, 3>>> held_;  // expert -> per layer (gate, up, down)
  std::vector<int32_t> experts_;  // slot order
  std::vector<int32_t> slot_of_;  // [E]: slot of each expert here, -1 elsewhere
  std::shared_ptr<void> table_;   // device [layers][3][slots] weight pointers
  std::vector<int> fill_;
};

}  // namespace

// -- factories and free functions -----------------------------------------------------------

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
      JANUS_CUDA_TRY(cudaMemcpyPeer(t.data, device.ordinal, in.data, in.device.ordinal, in.bytes()));
    }
  }
  *out = std::move(t);
  return Status::Ok();
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
