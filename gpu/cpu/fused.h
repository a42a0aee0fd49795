// CPU twins of the fused GPU kernels (gpu/cuda/norm_rope.h), composed from the reference
// kernels in kernels.h so that they compute exactly what the unfused reference path does.
#pragma once

#include <cstdint>

#include "gpu/cpu/kernels.h"
#include "runtime/base/dtype.h"

namespace janus::cpu {

/// residual[r] += delta[r], then y[r] = rms_norm(residual[r]) (fp32).
void add_rms_norm(float* residual, const float* delta, int64_t rows, int64_t dim, const void* w, DType w_dtype, float eps,
                  float* y);

/// In place on q [rows, heads, head_dim] and k [rows, kv_heads, head_dim] (k may be
/// null): rms_norm of each head with q_norm / k_norm (skipped when null), then rope at
/// row[r].pos.
void qk_norm_rope(float* q, float* k, int64_t rows, int heads, int kv_heads, int head_dim, const void* q_norm,
                  const void* k_norm, DType norm_dtype, float eps, const KvRow* row, const float* inv_freq);

}  // namespace janus::cpu
