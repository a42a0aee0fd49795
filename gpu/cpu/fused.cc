#include "gpu/cpu/fused.h"

#include <vector>

namespace janus::cpu {

void add_rms_norm(float* residual, const float* delta, int64_t rows, int64_t dim, const void* w, DType w_dtype, float eps,
                  float* y) {
  for (int64_t i = 0; i < rows * dim; ++i) residual[i] += delta[i];
  rms_norm(residual, rows, dim, w, w_dtype, eps, y);
}

void qk_norm_rope(float* q, float* k, int64_t rows, int heads, int kv_heads, int head_dim, const void* q_norm,
                  const void* k_norm, DType norm_dtype, float eps, const KvRow* row, const float* inv_freq) {
  if (q_norm) rms_norm(q, rows * heads, head_dim, q_norm, norm_dtype, eps, q);
  if (k && k_norm) rms_norm(k, rows * kv_heads, head_dim, k_norm, norm_dtype, eps, k);
  std::vector<int32_t> pos(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) pos[static_cast<size_t>(r)] = row[r].pos;
  rope(q, rows, heads, head_dim, head_dim, pos.data(), inv_freq);
  if (k) rope(k, rows, kv_heads, head_dim, head_dim, pos.data(), inv_freq);
}

}  // namespace janus::cpu
