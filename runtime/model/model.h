// A loaded checkpoint: its config and a view of every weight, in place in the mapped
// safetensors files (no copies, any mix of F32, BF16 and F16).
//
// Loading checks the checkpoint against the config before anything runs: every tensor
// the architecture needs is there with the right shape, and nothing else is. Expert
// weights may be stored per expert (`experts.{e}.gate_proj.weight`, Mixtral's
// `w1/w2/w3`) or fused the transformers-5 way (`experts.gate_up_proj` [E, 2I, H] and
// `experts.down_proj` [E, H, I]); both become the same per-expert views.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/base/dtype.h"
#include "runtime/model/model_config.h"
#include "runtime/model/safetensors.h"
#include "runtime/base/status.h"

namespace janus {

/// A row-major matrix [rows, cols] (a vector has rows == 1) in checkpoint memory.
/// Linear layers are stored [out_features, in_features], as PyTorch stores them.
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;

  bool empty() const { return data == nullptr; }
  size_t nbytes() const { return static_cast<size_t>(rows * cols) * dtype_size(dtype); }
  /// Row r as a view of [1, cols].
  WeightView row(int64_t r) const;
};

struct ExpertWeights {
  WeightView gate;  // [I, H]
  WeightView up;    // [I, H]
  WeightView down;  // [H, I]
};

struct LayerWeights {
  WeightView input_norm;  // [H]
  WeightView q, k, v, o;  // [q_dim, H], [kv_dim, H], [kv_dim, H], [H, q_dim]
  WeightView q_bias, k_bias, v_bias;  // [q_dim], [kv_dim], [kv_dim] when qkv_bias (Qwen2-MoE)
  WeightView q_norm, k_norm;  // [head_dim] (Qwen3), or [q_dim] and [kv_dim] (OLMoE's whole-projection norms)
  WeightView post_norm;   // [H]
  // DeepSeek-V2 MLA (q holds q_proj [heads * qk_head_dim, H] when there is no q LoRA):
  WeightView q_a, q_a_norm, q_b;      // [q_lora, H], [q_lora], [heads * qk_head_dim, q_lora]
  WeightView kv_a, kv_a_norm, kv_b;   // [kv_lora + rope, H], [kv_lora], [heads * (nope + v), kv_lora]
  bool sparse = true;
  WeightView router;                  // [E, H] when sparse
  WeightView router_bias;             // [E]: DeepSeek-V3's e_score_correction_bias (selection only)
  std::vector<ExpertWeights> experts; // E entries when sparse
  ExpertWeights dense;                // the MLP when not sparse
  ExpertWeights shared;               // the shared expert of a sparse layer (Qwen2-MoE), [Is, H]
  WeightView shared_gate;             // [1, H]: its per-token sigmoid gate (Qwen2-MoE only)
};

struct ModelWeights {
  WeightView embed;       // [V, H]
  std::vector<LayerWeights> layers;
  WeightView final_norm;  // [H]
  WeightView lm_head;     // [V, H]; the embedding when tied
};

class Model {
 public:
  /// Loads DIR/config.json and the safetensors beside it, validated.
  static Result<std::shared_ptr<Model>> load(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const std::string& dir() const { return dir_; }
  /// Bytes of all weights, and of the expert weights alone.
  size_t weight_bytes() const;
  size_t expert_bytes() const;

 private:
  std::string dir_;
  ModelConfig config_;
  Checkpoint checkpoint_;  // owns the mappings the views point into
  ModelWeights weights_;
};

}  // namespace janus
