// The MoE router's selection on the GPU: softmax over the router logits (fp32), the
// top_k experts in descending order (ties to the lower expert id), optionally
// renormalised. CPU twin: cpu::gate_topk (gpu/cpu/kernels.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "runtime/base/status.h"

namespace janus::cuda {

/// logits [rows, experts] fp32 -> ids, weights [rows, top_k]. experts <= 1024, top_k <= 32.
Status gate_topk(const float* logits, int64_t rows, int experts, int top_k, bool renormalize, int32_t* ids, float* weights,
                 cudaStream_t stream);

}  // namespace janus::cuda
