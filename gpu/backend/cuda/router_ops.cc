// The gate of a MoE layer, on an attention shard (AGate) or on a router.
#include <string>

#include "gpu/backend/cuda/ops.h"
#include "gpu/cuda/device.h"
#include "gpu/cuda/gate.h"

namespace janus::cuda {
namespace {

/// The selection of a layer's gate from its fp32 logits, per family exactly as
/// CpuForward::route chooses it (runtime/model/cpu_forward.cc), so that a token's experts
/// and weights do not depend on whether the router ran on the CPU or here: DeepSeek-V3's
/// sigmoid noaux_tc gate with its correction bias; DeepSeek-V2's softmax gate within the
/// best groups, scaled and never renormalised (transformers ignores its norm_topk_prob);
/// every other family's plain softmax top-k.
Status select_experts(Engine& e, const ModelConfig& c, const float* logits, const DeviceWeight* bias, int64_t n, int32_t* ids,
                      float* weights) {
  const int k = c.top_k, E = c.num_experts;
  const float scale = static_cast<float>(c.routed_scaling_factor);
  if (c.sigmoid_gate) {
    if (bias == nullptr) return internal_error("route: the sigmoid gate's e_score_correction_bias is not on the device");
    return gate_topk_sigmoid_grouped(logits, static_cast<const float*>(bias->data), n, E, k, c.n_group, c.topk_group,
                                     c.norm_topk_prob, scale, ids, weights, e.stream);
  }
  if (c.family == ModelFamily::kDeepseekV2)
    return gate_topk_grouped(logits, n, E, k, c.n_group > 0 ? c.n_group : 1, c.n_group > 0 ? c.topk_group : 1, false, scale,
                             ids, weights, e.stream);
  return gate_topk(logits, n, E, k, c.norm_topk_prob, ids, weights, e.stream);
}

/// The router of one layer: logits in exact fp32 (router weights are kept in F32 on the
/// device whatever the checkpoint's dtype, as the CPU twin computes them: a BF16 rounding
/// of h here could flip a near-tie in the top-k), then the selection on the GPU into `out`
/// ([n * k] ids, then [n * k] weights).
Status queue_gate(Engine& e, const ModelConfig& c, const DeviceWeight& router, const DeviceWeight* bias, const Tensor& h_in,
                  void* out) {
  const int64_t n = h_in.rows;
  const int k = c.top_k, E = c.num_experts;
  if (h_in.cols != c.hidden_size) return invalid_argument("route: activations " + shape(h_in) + ", want width " + std::to_string(c.hidden_size));
  if (h_in.dtype != kF32 && h_in.dtype != DType::kBF16) return invalid_argument("route: activations " + shape(h_in) + " (F32 or BF16)");
  Tensor h;
  JANUS_TRY(e.input(h_in, &h));
  JANUS_ASSIGN_OR_RETURN(void* logits, e.scratch(static_cast<size_t>(n * E) * 4));
  JANUS_TRY(e.linear(h.data, h.dtype, n, c.hidden_size, router, logits, kF32, false));
  const size_t nk = static_cast<size_t>(n) * k;
  auto* d_ids = static_cast<int32_t*>(out);
  return select_experts(e, c, static_cast<const float*>(logits), bias, n, d_ids, reinterpret_cast<float*>(d_ids + nk));
}

/// The gate with ids and weights back to the host (AGate, and host scheduling).
Status gate(Engine& e, const ModelConfig& c, const DeviceWeight& router, const DeviceWeight* bias, const Tensor& h_in,
            std::vector<int32_t>* ids, std::vector<float>* weights) {
  const int64_t n = h_in.rows;
  ids->clear();
  weights->clear();
  if (n == 0) return Status::Ok();
  const size_t nk = static_cast<size_t>(n) * c.top_k;
  JANUS_ASSIGN_OR_RETURN(void* out, e.scratch(nk * 8));
  JANUS_TRY(queue_gate(e, c, router, bias, h_in, out));
  JANUS_ASSIGN_OR_RETURN(void* host, e.stage(nk * 8));
  JANUS_CUDA_TRY(cudaMemcpyAsync(host, out, nk * 8, cudaMemcpyDeviceToHost, e.stream));
  // The wait of a MoE layer whose scheduling runs on the host: the policy needs the ids.
  JANUS_TRY(e.wait());
  ids->assign(static_cast<const int32_t*>(host), static_cast<const int32_t*>(host) + nk);
  const float* hw = reinterpret_cast<const float*>(static_cast<const int32_t*>(host) + nk);
  weights->assign(hw, hw + nk);
  e.release();
  return Status::Ok();
}

/// The gate without a host wait: ids and weights stay on the device (a tensor of the
/// engine's pool, marked ready when the gate ran), and are copied behind it to pinned
/// host memory whose own marker the host can wait on or poll.
Status gate_on_device(Engine& e, const ModelConfig& c, const DeviceWeight& router, const DeviceWeight* bias, const Tensor& h_in,
                      DeviceRouting* r) {
  const int64_t n = h_in.rows;
  const int64_t nk = n * c.top_k;
  *r = DeviceRouting{};
  r->rows = n;
  r->top_k = c.top_k;
  JANUS_ASSIGN_OR_RETURN(r->device, e.tensor(kF32, 2, nk));
  JANUS_ASSIGN_OR_RETURN(std::shared_ptr<void> pinned, pinned_block(static_cast<size_t>(nk) * 8));
  r->host.dtype = kF32;
  r->host.rows = 2;
  r->host.cols = nk;
  r->host.data = pinned.get();
  r->host.storage = pinned;
  if (n > 0) {
    JANUS_TRY(queue_gate(e, c, router, bias, h_in, r->device.data));
    JANUS_CUDA_TRY(cudaMemcpyAsync(r->host.data, r->device.data, static_cast<size_t>(nk) * 8, cudaMemcpyDeviceToHost, e.stream));
  }
  e.hold(pinned);  // the copy writes it even if every reader lets go first
  JANUS_TRY(e.finish({&r->device}));
  // One marker covers both: the copy is queued after the gate on the same stream.
  std::shared_ptr<void> marker = r->device.ready;
  r->wait_host = [marker]() -> Status {
    if (!marker) return Status::Ok();
    JANUS_CUDA_TRY(cudaEventSynchronize(event_of(marker)));
    return Status::Ok();
  };
  r->host_written = [marker]() { return !marker || cudaEventQuery(event_of(marker)) != cudaErrorNotReady; };
  return Status::Ok();
}

const DeviceWeight* layer_bias(const RouterState& router, int layer) {
  return static_cast<size_t>(layer) < router.bias.size() ? router.bias[static_cast<size_t>(layer)].get() : nullptr;
}

}  // namespace

Status route_on_shard(AttentionState& shard, int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) {
  JANUS_TRY(check_layer(shard, layer, "route"));
  const AttentionLayer& L = shard.layers[static_cast<size_t>(layer)];
  if (!L.router) return invalid_argument("route: layer " + std::to_string(layer) + " is a dense layer");
  return gate(shard.engine, shard.model->config(), *L.router, L.router_bias.get(), h, ids, w);
}

Status route_on_router(RouterState& router, int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) {
  if (layer < 0 || layer >= router.model->config().num_layers || !router.weights[static_cast<size_t>(layer)])
    return invalid_argument("route: layer " + std::to_string(layer) + " is not a MoE layer");
  return gate(router.engine, router.model->config(), *router.weights[static_cast<size_t>(layer)], layer_bias(router, layer), h,
              ids, w);
}

Status route_on_router_device(RouterState& router, int layer, const Tensor& h, DeviceRouting* out) {
  if (layer < 0 || layer >= router.model->config().num_layers || !router.weights[static_cast<size_t>(layer)])
    return invalid_argument("route: layer " + std::to_string(layer) + " is not a MoE layer");
  return gate_on_device(router.engine, router.model->config(), *router.weights[static_cast<size_t>(layer)],
                        layer_bias(router, layer), h, out);
}

}  // namespace janus::cuda
