// The compute interface the actors call: the pieces of a decode step, each implemented by
// a backend per device kind (gpu/cpu: the reference, gpu/cuda: the fast path, and a null
// backend that does no math, for measuring orchestration alone).
//
// An AttentionShard owns one AttentionBackend (its device, its weights' view, its KV
// cache); each ExpertInstance owns one ExpertBackend; each Router one RouterBackend.
// Tensors passed in may live on another device: backends copy what they must (the CPU
// kernels read host tensors; when a CUDA backend is registered, the CPU backends copy
// device tensors to the host first, so mixed graphs work). No CAF here: plain C++ for
// every layer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gpu/cpu/kernels.h"
#include "gpu/backend/device_routing.h"
#include "gpu/cpu/expert_work.h"
#include "runtime/base/tensor.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/model.h"
#include "runtime/model/sampling.h"
#include "runtime/base/status.h"

namespace janus {

/// What to produce for one row at the end of a step.
struct SampleRow {
  int64_t row;             // row of the step's activations
  SamplingParams params;
  uint64_t step;           // index of the token being generated (counter of the draw)
  bool want_logits;        // also return this row's logits
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual Device device() const = 0;
  /// The shard's KV cache: block bookkeeping is host-side, storage where the backend keeps it.
  virtual PagedKvCache& kv() = 0;

  /// x [n, H] f32 = embeddings of tokens.
  virtual Status embed(const std::vector<int32_t>& tokens, Tensor* x) = 0;
  /// The attention half of a layer: x (residual, [n, H]) gains the attention output, h
  /// receives the post-attention norm of x (the MoE or dense MLP input).
  virtual Status attention(int layer, Tensor& x, const std::vector<cpu::KvRow>& rows, Tensor* h) = 0;
  /// Dense layers: x += mlp(h).
  virtual Status dense_mlp(int layer, const Tensor& h, Tensor& x) = 0;
  /// Gate on the attention side (AGate): top-k ids and weights [n, k], on the host.
  virtual Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* weights) = 0;
  /// The shared expert of a sparse layer (Qwen2-MoE) on this side: *partial [n, H] is
  /// its gated output for each row of h, a partial sum that add_moe_output adds with the
  /// routed experts'. Called only when the model has a shared expert.
  virtual Status shared_expert(int layer, const Tensor& h, Tensor* partial) = 0;
  /// x[r] += sum of partials[i][r] for every row: the MoE output of the layer, as the
  /// expert instances' partial sums ([n, H] each, in instance order; host or device).
  virtual Status add_moe_output(const std::vector<Tensor>& partials, Tensor& x) = 0;
  /// Final norm, LM head and sampling for the given rows of x; tokens on the host, and
  /// for rows that want them, logits ([vocab] each, in `logits` in row order).
  virtual Status sample(const Tensor& x, const std::vector<SampleRow>& rows, std::vector<int32_t>* tokens,
                        std::vector<std::vector<float>>* logits) = 0;
};

class RouterBackend {
 public:
  virtual ~RouterBackend() = default;
  virtual Device device() const = 0;
  virtual Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* weights) = 0;
  /// The gate without a host wait (device_routing.h): the ids and weights stay on the
  /// device, their host copy follows. unsupported where the router computes on the host
  /// (use route()).
  virtual Status route_on_device(int layer, const Tensor& h, DeviceRouting* out) {
    (void)layer, (void)h, (void)out;
    return unsupported("route_on_device: this router computes on the host");
  }
};

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;
  virtual Device device() const = 0;
  /// The experts this instance holds from now on (loads their weights, frees others').
  /// Called before a placement takes effect, so decode never waits on it.
  virtual Status set_experts(const std::vector<int32_t>& experts) = 0;
  /// The accumulator type of partial sums this backend produces (F64 on the CPU).
  virtual DType partial_dtype() const = 0;
  /// Runs work items (rows of h) and returns partial sums for `rows` rows of h: row r of
  /// *partial is sum over items with row r of weight * expert(h[r]) (zero elsewhere).
  virtual Status run(int layer, const Tensor& h, const std::vector<ExpertWork>& work, Tensor* partial) = 0;
  /// Whether run_routed works here (the CUDA backend): the instance then reads its work
  /// from the router's device routing; otherwise it builds a work list from the host copy.
  virtual bool runs_device_routing() const { return false; }
  /// As run() for every (row, choice) of `routing` whose expert this instance holds, each
  /// expert having one replica (so the assignment is the routing itself).
  virtual Status run_routed(int layer, const Tensor& h, const DeviceRouting& routing, Tensor* partial) {
    (void)layer, (void)h, (void)routing, (void)partial;
    return unsupported("run_routed: this expert backend reads host work lists");
  }
};

/// How to build backends for a deployment on one model.
struct BackendOptions {
  KvCacheShape kv;  // for attention backends: the shard's cache
};

/// Backends for a device: "cpu" (the reference kernels), "cuda:N" (when built with CUDA
/// and a GPU exists), or the null backend (`null = true`): no math, deterministic
/// pseudo-random routing and tokens, for orchestration benchmarks.
Result<std::unique_ptr<AttentionBackend>> make_attention_backend(std::shared_ptr<const Model> model, const Device& device,
                                                                 const BackendOptions& options, bool null = false);
Result<std::unique_ptr<RouterBackend>> make_router_backend(std::shared_ptr<const Model> model, const Device& device,
                                                           bool null = false);
/// An expert instance's backend holding `experts` (its slots).
Result<std::unique_ptr<ExpertBackend>> make_expert_backend(std::shared_ptr<const Model> model, const Device& device,
                                                           const std::vector<int32_t>& experts, bool null = false);

/// Joins tensors of one device and dtype row-wise (the shards' parts of a layer batch).
/// One part is shared, not copied.
Status concat_rows(const std::vector<Tensor>& parts, int64_t cols, Tensor* out);

/// A host tensor with the contents of `in`: `in` itself when it is on the host, else a
/// copy (needs the CUDA backend registered).
Status copy_to_host(const Tensor& in, Tensor* out);

/// Registers the CUDA backend factories (janus::cuda::register_backends() in
/// gpu/backend/cuda/backend.h, called by Deployment::create in CUDA builds).
struct CudaBackendFactories {
  Result<std::unique_ptr<AttentionBackend>> (*attention)(std::shared_ptr<const Model>, const Device&, const BackendOptions&);
  Result<std::unique_ptr<RouterBackend>> (*router)(std::shared_ptr<const Model>, const Device&);
  Result<std::unique_ptr<ExpertBackend>> (*expert)(std::shared_ptr<const Model>, const Device&, const std::vector<int32_t>&);
  Status (*concat_rows)(const std::vector<Tensor>& parts, int64_t cols, Tensor* out);
  /// Device tensor -> new host tensor (complete when it returns). With it registered,
  /// CPU backends made afterwards accept device tensors (copied to the host).
  Status (*to_host)(const Tensor& in, Tensor* out) = nullptr;
};
void register_cuda_backend(const CudaBackendFactories& factories);

}  // namespace janus
