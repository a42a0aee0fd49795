// The model's forward pass on the CPU, cut into the pieces the disaggregated graph
// distributes: the attention half of a layer (an AttentionShard's work), the router,
// the experts (an ExpertInstance's work) and the combine. The reference engine calls
// them in sequence; the actors call the same functions on their own rows, so both
// compute bit-identical activations.
//
// The MoE output of a token is accumulated in double: sum over its top-k slots of
// weight * expert(h). Instances that each hold some of a token's experts produce
// partial sums that are added in whatever order they arrive; in double the order moves
// the sum by ~1e-16 relative, far below the float rounding that follows, so the actor
// graph reproduces the reference engine's tokens exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "gpu/cpu/kernels.h"
#include "gpu/cpu/expert_work.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/model.h"

namespace janus {

class CpuForward {
 public:
  explicit CpuForward(std::shared_ptr<const Model> model);

  const ModelConfig& config() const { return model_->config(); }
  const Model& model() const { return *model_; }

  /// x [n, H] = embeddings of tokens.
  void embed(const int32_t* tokens, int64_t n, float* x) const;

  /// The attention half of `layer` for n rows: x (the residual stream, [n, H]) gains the
  /// attention output; h [n, H] receives the post-attention RMSNorm of the new x, ready
  /// for the router or the dense MLP. Writes the rows' K/V into the cache first, so rows
  /// of one sequence in the same call (prefill) see each other causally.
  void attention(int layer, float* x, int64_t n, const cpu::KvRow* rows, PagedKvCache& kv, float* h) const;

  /// Dense (non-MoE) layers: x += mlp(h).
  void dense_mlp(int layer, const float* h, int64_t n, float* x) const;

  /// Router: top-k expert ids and gate weights [n, top_k] of each row of h.
  void route(int layer, const float* h, int64_t n, int32_t* ids, float* weights) const;

  /// acc[row] += weight * expert(h[row]) for each work item (acc is [n, H] double).
  void experts(int layer, const float* h, int64_t n, const ExpertWork* work, int64_t n_work, double* acc) const;

  /// Qwen2-MoE's shared expert of a sparse layer: acc[r] += sigmoid(shared_gate . h[r]) *
  /// shared_expert(h[r]) (acc is [n, H] double; nothing when the model has none). The
  /// attention side runs it while the routed experts work.
  void shared_expert(int layer, const float* h, int64_t n, double* acc) const;

  /// x[r] += float(acc[r]).
  void add_moe_output(const double* acc, int64_t n, float* x) const;

  /// logits [n, V] of rows of x after the final norm (x is not modified).
  void logits(const float* x, int64_t n, float* out) const;

 private:
  void mla_attention(int layer, float* x, int64_t n, const cpu::KvRow* rows, PagedKvCache& kv, float* h) const;

  std::shared_ptr<const Model> model_;
  std::vector<float> inv_freq_;
  float rope_scale_ = 1.0f;  // cos/sin multiplier: YaRN's attention factor, else 1
};

}  // namespace janus
