// The architecture of a Hugging Face MoE checkpoint, read from its config.json.
//
// Janus reads Qwen3-MoE (`qwen3_moe`), Mixtral (`mixtral`), Qwen2-MoE (`qwen2_moe`: q/k/v
// biases, a gated shared expert), OLMoE (`olmoe`: q/k RMSNorm over the whole projection,
// optional clip_qkv), DeepSeek-V2/V3 (`deepseek_v2`, `deepseek_v3`: MLA, shared experts,
// group-limited and noaux_tc routers) and GLM-4-MoE (`glm4_moe`: partial rotary, q/k/v
// biases, per-head q/k norms, DeepSeek-V3's router), in both the transformers-4 and transformers-5
// spellings: `num_experts` or `num_local_experts`,
// top-level `rope_theta` or `rope_parameters.rope_theta`, an absent or null `head_dim`
// (hidden_size / num_attention_heads), dense layers through `mlp_only_layers` and
// `decoder_sparse_step`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/status.h"

namespace janus {

enum class ModelFamily : uint8_t { kQwen3Moe, kMixtral, kQwen2Moe, kOlmoe, kDeepseekV2, kDeepseekV3, kGlm4Moe };

// "qwen3_moe", "mixtral", "qwen2_moe", "olmoe", "deepseek_v2", "deepseek_v3", "glm4_moe"
const char* family_name(ModelFamily f);

/// YaRN RoPE scaling (rope_parameters / rope_scaling with rope_type "yarn"), as
/// transformers 5's _compute_yarn_parameters reads it. Only the DeepSeek families take it.
struct YarnScaling {
  double factor = 1.0;                      // context extension ratio
  int original_max_position_embeddings = 0;  // the pretraining context (max_position_embeddings when absent)
  double beta_fast = 32.0, beta_slow = 1.0;  // the ramp's rotation bounds
  double mscale = 0.0, mscale_all_dim = 0.0; // 0: absent
  double attention_factor = 0.0;            // cos/sin multiplier; 0: derived from factor and the mscales
  bool truncate = true;                     // floor/ceil the ramp's bounds

  /// 0.1 * m * ln(scale) + 1 for scale > 1, else 1 (the YaRN paper's Eq. 21).
  static double get_mscale(double scale, double m);
  /// What cos and sin are multiplied by.
  double cos_sin_factor() const;
  /// MLA's softmax-scale correction (transformers' yarn_apply_mscale): the qk scale is
  /// multiplied by get_mscale(factor, mscale_all_dim)^2 when mscale_all_dim is set.
  double softmax_factor() const;
};

struct ModelConfig {
  ModelFamily family = ModelFamily::kQwen3Moe;
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int intermediate_size = 0;      // dense MLP layers
  int moe_intermediate_size = 0;  // one expert
  int num_experts = 0;
  int top_k = 0;
  bool norm_topk_prob = false;    // renormalise the top-k gate weights to sum to 1
  bool qk_norm = false;           // Qwen3, GLM-4-MoE's use_qk_norm: RMSNorm over head_dim on q and k before RoPE
  bool qk_norm_full = false;      // OLMoE: RMSNorm over the whole q [q_dim] and k [kv_dim] projections
  bool qkv_bias = false;          // Qwen2-MoE, GLM-4-MoE's attention_bias: the q, k and v projections have biases
  double clip_qkv = 0.0;          // OLMoE: q, k, v clamped to [-clip, clip] after the norms (0: no clip)
  /// Qwen2-MoE: every MoE layer also runs one shared expert of this intermediate size,
  /// scaled per token by sigmoid(shared_expert_gate . h) (0: no shared expert).
  int shared_expert_intermediate_size = 0;
  bool shared_expert_gate = false;  // Qwen2-MoE gates its shared expert; DeepSeek-V2 adds its shared experts as they are

  // DeepSeek-V2 Multi-head Latent Attention (kv_lora_rank > 0). head_dim is then the RoPE
  // part of a query/key head (qk_rope_head_dim), as transformers sets it.
  int q_lora_rank = 0;       // 0: q is one projection (V2-Lite); else q_a -> RMSNorm -> q_b
  int kv_lora_rank = 0;      // the compressed latent cached per token
  int qk_nope_head_dim = 0;  // the part of each q/k head without RoPE
  int qk_rope_head_dim = 0;  // the decoupled RoPE key, one per token shared by the heads
  int v_head_dim = 0;
  double routed_scaling_factor = 1.0;  // routed gate weights are multiplied by this
  int n_group = 0, topk_group = 0;     // group_limited_greedy routing when n_group > 0
  /// DeepSeek-V3 (noaux_tc): sigmoid scores; e_score_correction_bias added for choosing
  /// groups (sum of each group's top two) and experts only; top-k renormalised when
  /// norm_topk_prob, then scaled by routed_scaling_factor.
  bool sigmoid_gate = false;
  bool rope_interleave = true;  // MLA: the RoPE part in interleaved pairs (V2 always; V3's rope_interleave)
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  /// GLM-4-MoE: RoPE rotates only the first rotary_dim() values of each head (rotate_half
  /// within them); the rest pass through.
  double partial_rotary_factor = 1.0;
  bool rope_yarn = false;  // rope_type "yarn": `yarn` holds its parameters
  YarnScaling yarn;
  int max_position_embeddings = 0;
  int sliding_window = 0;         // 0: full causal attention
  bool tie_word_embeddings = false;
  std::vector<int> eos_token_ids;
  int bos_token_id = -1;
  /// GLM-4-MoE's multi-token-prediction layers, stored as model.layers.{num_layers + i}: not
  /// part of the forward pass, their tensors are skipped on load as transformers skips them.
  int num_nextn_predict_layers = 0;
  std::vector<bool> sparse_layer;  // per layer: MoE block (true) or dense MLP (false)

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  int rotary_dim() const { return static_cast<int>(head_dim * partial_rotary_factor); }  // transformers' int()
  bool is_sparse(int layer) const { return sparse_layer[static_cast<size_t>(layer)]; }
  int num_sparse_layers() const;
  bool has_shared_expert() const { return shared_expert_intermediate_size > 0; }
  bool mla() const { return kv_lora_rank > 0; }
  bool deepseek() const { return family == ModelFamily::kDeepseekV2 || family == ModelFamily::kDeepseekV3; }
  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  /// What the paged KV cache holds per token and layer: kv heads of head_dim for K and
  /// for V; for MLA one entry of kv_lora_rank + qk_rope_head_dim values and no V.
  int kv_cache_heads() const { return mla() ? 1 : num_kv_heads; }
  int kv_cache_head_dim() const { return mla() ? kv_lora_rank + qk_rope_head_dim : head_dim; }
  bool kv_cache_values() const { return !mla(); }

  /// Checks the numbers fit together (heads divide, top_k <= experts, ...).
  Status validate(const std::string& where) const;
};

/// Parses config.json text; `where` names the file in error messages.
Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& where);

/// Reads DIR/config.json.
Result<ModelConfig> load_model_config(const std::string& dir);

/// The transformers-5 config.json for `cfg` (what make-model writes).
std::string model_config_to_json(const ModelConfig& cfg);

}  // namespace janus
