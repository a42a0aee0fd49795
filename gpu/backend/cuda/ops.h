// The op families of the CUDA backend (private to gpu/backend/cuda), one source file each,
// into which backend.cc dispatches the Backend interface (gpu/backend/backend.h). Each runs
// with the backend's device current (the caller holds a DeviceGuard), validates its
// arguments, queues its kernels on the engine's stream through the launchers of gpu/cuda
// and synchronises as the Engine's comment (backend_impl.h) says.
#pragma once

#include <cstdint>
#include <vector>

#include "gpu/backend/cuda/backend_impl.h"

namespace janus::cuda {

// attention_ops.cc: embedding; input norm, QKV, q/k norm and RoPE, KV write, paged
// attention, o-proj and the post-attention norm.
Status embed_tokens(AttentionState& shard, const std::vector<int32_t>& tokens, Tensor* x);
Status run_attention(AttentionState& shard, int layer, Tensor& x, const std::vector<cpu::KvRow>& rows, Tensor* h);

// mlp_ops.cc: the dense layers' MLP (gate and up, SiLU-and-multiply, down into x).
Status run_dense_mlp(AttentionState& shard, int layer, const Tensor& h_in, Tensor& x);

// router_ops.cc: the gate (logits in fp32, top-k on the GPU, ids and weights to the host
// or left on the device), on an attention shard (AGate) or a router.
Status route_on_shard(AttentionState& shard, int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w);
Status route_on_router(RouterState& router, int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w);
// The same on a router, the ids and weights left on the device (no host wait).
Status route_on_router_device(RouterState& router, int layer, const Tensor& h, DeviceRouting* out);

// expert_ops.cc: the experts an instance holds (weights and device slot table), and the
// grouped FFN over a work list.
Status load_experts(ExpertState& instance, const std::vector<int32_t>& experts);
Status run_experts(ExpertState& instance, int layer, const Tensor& h_in, const std::vector<ExpertWork>& work, Tensor* partial);
// The grouped FFN over the router's device routing (every expert one replica).
Status run_routed_experts(ExpertState& instance, int layer, const Tensor& h_in, const DeviceRouting& routing, Tensor* partial);

// combine_ops.cc: x += the expert instances' partial sums.
Status combine_moe_output(AttentionState& shard, const std::vector<Tensor>& partials, Tensor& x);

// sampling_ops.cc: final norm, LM head, sampling, tokens and logits to the host.
Status sample_rows(AttentionState& shard, const Tensor& x, const std::vector<SampleRow>& rows, std::vector<int32_t>* tokens,
                   std::vector<std::vector<float>>* logits);

// copy_ops.cc: concat_device_rows, device_to_host and host_to_device (declared in backend.h).

}  // namespace janus::cuda
