// RMSNorm (optionally fused with the residual add) and rotary embeddings (optionally
// fused with Qwen3's per-head q/k norm) on the GPU. Math in fp32 as the CPU twins:
// cpu::rms_norm, cpu::add_rms_norm, cpu::qk_norm_rope. Tensors are F32 or BF16.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "gpu/cpu/kernels.h"
#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::cuda {

/// y[r] = w * x[r] / sqrt(mean(x[r]^2) + eps) for rows of `dim`. y may alias x when the
/// dtypes match.
Status rms_norm(const void* x, DType x_dtype, int64_t rows, int64_t dim, const void* w, DType w_dtype, float eps, void* y,
                DType y_dtype, cudaStream_t stream);

/// residual[r] += delta[r], stored in the residual's dtype, then y[r] = rms_norm of the
/// stored row: a sublayer's output joins the residual stream and the next norm reads it
/// in the same pass.
Status add_rms_norm(void* residual, DType residual_dtype, const void* delta, DType delta_dtype, int64_t rows, int64_t dim,
                    const void* w, DType w_dtype, float eps, void* y, DType y_dtype, cudaStream_t stream);

/// In place on q [rows, heads, head_dim] and k [rows, kv_heads, head_dim] (k may be
/// null): per-head RMSNorm with q_norm / k_norm (skipped when null), then RoPE in the
/// rotate_half layout at position row[r].pos with inv_freq [head_dim / 2] (device
/// memory, cpu::rope_inv_freq). head_dim even, at most 512.
Status qk_norm_rope(void* q, void* k, DType dtype, int64_t rows, int heads, int kv_heads, int head_dim, const void* q_norm,
                    const void* k_norm, DType norm_dtype, float eps, const cpu::KvRow* row, const float* inv_freq,
                    cudaStream_t stream);

}  // namespace janus::cuda
