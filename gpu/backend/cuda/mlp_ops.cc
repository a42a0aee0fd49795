// Dense layers' MLP on an attention shard: x += down(silu(gate(h)) * up(h)).
#include <string>

#include "gpu/backend/cuda/ops.h"
#include "gpu/cuda/backend_kernels.h"

namespace janus::cuda {

Status run_dense_mlp(AttentionState& shard, int layer, const Tensor& h_in, Tensor& x) {
  const ModelConfig& c = shard.model->config();
  JANUS_TRY(check_layer(shard, layer, "dense_mlp"));
  if (c.is_sparse(layer)) return invalid_argument("dense_mlp: layer " + std::to_string(layer) + " is a MoE layer");
  JANUS_TRY(check_residual(shard, x, "dense_mlp"));
  if (h_in.rows != x.rows || h_in.cols != x.cols) return invalid_argument("dense_mlp: h " + shape(h_in) + " against x " + shape(x));
  const int64_t n = x.rows, H = c.hidden_size, I = c.intermediate_size;
  if (n == 0) return Status::Ok();
  const AttentionLayer& w = shard.layers[static_cast<size_t>(layer)];
  Tensor h;
  JANUS_TRY(shard.engine.input(h_in, &h));
  JANUS_ASSIGN_OR_RETURN(void* gu, shard.engine.scratch(static_cast<size_t>(2 * n * I) * 4));
  float* gate_out = static_cast<float*>(gu);
  float* up_out = gate_out + n * I;
  JANUS_TRY(shard.engine.linear(h.data, h.dtype, n, H, *w.gate, gate_out, kF32, false));
  JANUS_TRY(shard.engine.linear(h.data, h.dtype, n, H, *w.up, up_out, kF32, false));
  const DType act_dt = w.down->dtype;
  JANUS_ASSIGN_OR_RETURN(void* act, shard.engine.scratch(static_cast<size_t>(n * I) * dtype_size(act_dt)));
  JANUS_TRY(silu_mul(gate_out, up_out, n * I, act, act_dt, shard.engine.stream));
  JANUS_TRY(shard.engine.linear(act, act_dt, n, I, *w.down, x.data, kF32, true));
  shard.engine.touch(x);
  return shard.engine.finish({&x});
}

}  // namespace janus::cuda
