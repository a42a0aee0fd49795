// The MoE router's selection on the GPU, one warp per row, for every family's gate:
//  - gate_topk: softmax over the router logits (fp32), the top_k experts in descending
//    order (ties to the lower expert id), optionally renormalised. CPU twin:
//    cpu::gate_topk (gpu/cpu/kernels.h).
//  - gate_topk_grouped: DeepSeek-V2's greedy / group_limited_greedy gate: the same softmax,
//    the experts split into n_group groups scored by their best expert, only the
//    topk_group best groups kept (the others' experts score 0), then the top_k, optionally
//    renormalised, times scale. CPU twin: cpu::gate_topk_grouped (renormalize false; with
//    n_group 1 and scale 1 it is cpu::gate_topk).
//  - gate_topk_sigmoid_grouped: DeepSeek-V3's noaux_tc gate: sigmoid scores, chosen by
//    score + bias (e_score_correction_bias), groups scored by the sum of their two best,
//    weights from the plain scores, renormalised (+1e-20) when asked, times scale. CPU
//    twin: cpu::gate_topk_sigmoid_grouped.
// The output is the same for all three (the GPU router's DeviceRouting layout): ids and
// weights [rows, top_k], choice j of row r at r * top_k + j in the CPU twin's order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "runtime/base/status.h"

namespace janus::cuda {

/// logits [rows, experts] fp32 -> ids, weights [rows, top_k]. experts <= 1024, top_k <= 32.
Status gate_topk(const float* logits, int64_t rows, int experts, int top_k, bool renormalize, int32_t* ids, float* weights,
                 cudaStream_t stream);

/// As gate_topk with a group limit and a scale. experts <= 1024 and a multiple of n_group,
/// 1 <= topk_group <= n_group <= 32 (n_group 1: no limit), top_k <= min(32, experts).
Status gate_topk_grouped(const float* logits, int64_t rows, int experts, int top_k, int n_group, int topk_group,
                         bool renormalize, float scale, int32_t* ids, float* weights, cudaStream_t stream);

/// The noaux_tc gate: bias [experts] fp32 on the device; limits as gate_topk_grouped.
Status gate_topk_sigmoid_grouped(const float* logits, const float* bias, int64_t rows, int experts, int top_k, int n_group,
                                 int topk_group, bool renormalize, float scale, int32_t* ids, float* weights,
                                 cudaStream_t stream);

}  // namespace janus::cuda
