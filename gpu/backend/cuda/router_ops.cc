// The gate of a MoE layer, on an attention shard (AGate) or on a router.
#include <string>

#include "gpu/backend/cuda/ops.h"
#include "gpu/cuda/device.h"
#include "gpu/cuda/gate.h"

namespace janus::cuda {
namespace {

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
  JANUS_ASSIGN_OR_RETURN(void* host, e.stage(nk * 8));
  JANUS_CUDA_TRY(cudaMemcpyAsync(host, out, nk * 8, cudaMemcpyDeviceToHost, e.stream));
  // The one wait of a MoE layer: the Scheduler's policy runs on the host and needs the ids.
  JANUS_TRY(e.wait());
  ids->assign(static_cast<const int32_t*>(host), static_cast<const int32_t*>(host) + nk);
  const float* hw = reinterpret_cast<const float*>(static_cast<const int32_t*>(host) + nk);
  weights->assign(hw, hw + nk);
  e.release();
  return Status::Ok();
}

}  // namespace

Status route_on_shard(AttentionState& shard, int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) {
  JANUS_TRY(check_layer(shard, layer, "route"));
  const AttentionLayer& L = shard.layers[static_cast<size_t>(layer)];
  if (!L.router) return invalid_argument("route: layer " + std::to_string(layer) + " is a dense layer");
  return gate(shard.engine, shard.model->config(), *L.router, h, ids, w);
}

Status route_on_router(RouterState& router, int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) {
  if (layer < 0 || layer >= router.model->config().num_layers || !router.weights[static_cast<size_t>(layer)])
    return invalid_argument("route: layer " + std::to_string(layer) + " is not a MoE layer");
  return gate(router.engine, router.model->config(), *router.weights[static_cast<size_t>(layer)], h, ids, w);
}

}  // namespace janus::cuda
