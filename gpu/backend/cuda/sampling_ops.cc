// The end of a step on an attention shard: the rows to sample gathered, the final norm, the
// LM head, greedy or sampled tokens, and tokens and wanted logits back to the host.
#include <string>

#include "gpu/backend/cuda/ops.h"
#include "gpu/cuda/backend_kernels.h"
#include "gpu/cuda/device.h"
#include "gpu/cuda/norm_rope.h"
#include "gpu/cuda/sampling.h"

namespace janus::cuda {

Status sample_rows(AttentionState& shard, const Tensor& x, const std::vector<SampleRow>& rows, std::vector<int32_t>* tokens,
                   std::vector<std::vector<float>>* logits) {
  const ModelConfig& c = shard.model->config();
  JANUS_TRY(check_residual(shard, x, "sample"));
  tokens->clear();
  logits->clear();
  const int64_t n = static_cast<int64_t>(rows.size()), H = c.hidden_size, V = c.vocab_size;
  if (n == 0) return Status::Ok();
  bool identity = n == x.rows, any_sampling = false, any_logits = false;
  std::vector<int32_t> index(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const SampleRow& r = rows[static_cast<size_t>(i)];
    if (r.row < 0 || r.row >= x.rows)
      return invalid_argument("sample: row " + std::to_string(r.row) + " of activations with " + std::to_string(x.rows) + " rows");
    index[static_cast<size_t>(i)] = static_cast<int32_t>(r.row);
    identity = identity && r.row == i;
    any_sampling = any_sampling || !r.params.greedy();
    any_logits = any_logits || r.want_logits;
  }
  const float eps = static_cast<float>(c.rms_norm_eps);
  const void* xs = x.data;
  if (!identity) {  // prefill: the last row of each prompt
    JANUS_ASSIGN_OR_RETURN(void* d_index, shard.engine.upload(index.data(), index.size() * 4));
    JANUS_ASSIGN_OR_RETURN(void* gathered, shard.engine.scratch(static_cast<size_t>(n * H) * 4));
    JANUS_TRY(gather_rows(static_cast<const float*>(x.data), H, static_cast<const int32_t*>(d_index), n,
                          static_cast<float*>(gathered), shard.engine.stream));
    xs = gathered;
  }
  JANUS_ASSIGN_OR_RETURN(void* hn, shard.engine.scratch(static_cast<size_t>(n * H) * dtype_size(shard.adt)));
  JANUS_TRY(rms_norm(xs, kF32, n, H, shard.final_norm->data, shard.final_norm->dtype, eps, hn, shard.adt, shard.engine.stream));
  JANUS_ASSIGN_OR_RETURN(void* lg, shard.engine.scratch(static_cast<size_t>(n * V) * 4));
  JANUS_TRY(shard.engine.linear(hn, shard.adt, n, H, *shard.lm_head, lg, kF32, false));
  JANUS_ASSIGN_OR_RETURN(void* d_tokens, shard.engine.scratch(static_cast<size_t>(n) * 4));
  const SamplingRow* d_params = nullptr;
  void* ws = nullptr;
  size_t ws_bytes = 0;
  if (any_sampling) {
    std::vector<SamplingRow> params(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const SampleRow& r = rows[static_cast<size_t>(i)];
      SamplingRow& p = params[static_cast<size_t>(i)];
      p.temperature = r.params.temperature;
      p.top_p = r.params.top_p;
      p.top_k = r.params.top_k;
      p.seed = r.params.seed;
      p.step = r.step;
    }
    JANUS_ASSIGN_OR_RETURN(void* dp, shard.engine.upload(params.data(), params.size() * sizeof(SamplingRow)));
    d_params = static_cast<const SamplingRow*>(dp);
    ws_bytes = sampling_workspace_bytes(static_cast<int>(n), static_cast<int>(V));
    JANUS_ASSIGN_OR_RETURN(ws, shard.engine.scratch(ws_bytes));
  }
  JANUS_TRY(sample_tokens(static_cast<const float*>(lg), static_cast<int>(n), static_cast<int>(V), d_params, any_sampling,
                          static_cast<int32_t*>(d_tokens), ws, ws_bytes, shard.engine.stream));
  JANUS_ASSIGN_OR_RETURN(void* h_tokens, shard.engine.stage(static_cast<size_t>(n) * 4));
  JANUS_CUDA_TRY(cudaMemcpyAsync(h_tokens, d_tokens, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost, shard.engine.stream));
  std::vector<float*> h_logits;
  if (any_logits) {
    for (int64_t i = 0; i < n; ++i) {
      if (!rows[static_cast<size_t>(i)].want_logits) continue;
      JANUS_ASSIGN_OR_RETURN(void* dst, shard.engine.stage(static_cast<size_t>(V) * 4));
      JANUS_CUDA_TRY(cudaMemcpyAsync(dst, static_cast<const float*>(lg) + i * V, static_cast<size_t>(V) * 4,
                                     cudaMemcpyDeviceToHost, shard.engine.stream));
      h_logits.push_back(static_cast<float*>(dst));
    }
  }
  // The step's one wait that must stay: the Frontend needs the tokens on the host.
  JANUS_TRY(shard.engine.wait());
  tokens->assign(static_cast<const int32_t*>(h_tokens), static_cast<const int32_t*>(h_tokens) + n);
  for (float* l : h_logits) logits->emplace_back(l, l + V);
  shard.engine.release();
  return Status::Ok();
}

}  // namespace janus::cuda
