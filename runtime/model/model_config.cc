#include "runtime/model/model_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace janus {

using nlohmann::json;

const char* family_name(ModelFamily f) {
  switch (f) {
    case ModelFamily::kQwen3Moe: return "qwen3_moe";
    case ModelFamily::kMixtral: return "mixtral";
    case ModelFamily::kQwen2Moe: return "qwen2_moe";
    case ModelFamily::kOlmoe: return "olmoe";
    case ModelFamily::kDeepseekV2: return "deepseek_v2";
    case ModelFamily::kDeepseekV3: return "deepseek_v3";
    case ModelFamily::kGlm4Moe: return "glm4_moe";
  }
  return "?";
}

double YarnScaling::get_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

double YarnScaling::cos_sin_factor() const {
  if (attention_factor > 0) return attention_factor;
  // transformers: mscale and mscale_all_dim both set (non-zero) -> their ratio, else mscale 1.
  if (mscale != 0 && mscale_all_dim != 0) return get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim);
  return get_mscale(factor, 1.0);
}

double YarnScaling::softmax_factor() const {
  if (mscale_all_dim == 0) return 1.0;
  const double m = get_mscale(factor, mscale_all_dim);
  return m * m;
}

int ModelConfig::num_sparse_layers() const {
  int n = 0;
  for (bool s : sparse_layer) n += s ? 1 : 0;
  return n;
}

Status ModelConfig::validate(const std::string& where) const {
  auto err = [&](const std::string& m) { return invalid_argument(where + ": " + m); };
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0)
    return err("num_attention_heads (" + std::to_string(num_heads) + ") is not a multiple of num_key_value_heads (" +
               std::to_string(num_kv_heads) + ")");
  if (head_dim % 2 != 0) return err("head_dim (" + std::to_string(head_dim) + ") must be even for rotary embeddings");
  if (!(partial_rotary_factor > 0 && partial_rotary_factor <= 1))
    return err("partial_rotary_factor (" + json(partial_rotary_factor).dump() + ") must be in (0, 1]");
  if (rotary_dim() < 2 || rotary_dim() % 2 != 0)
    return err("the rotary part of a head (head_dim " + std::to_string(head_dim) + " * partial_rotary_factor " +
               json(partial_rotary_factor).dump() + " = " + std::to_string(rotary_dim()) + ") must be even and positive");
  if (num_sparse_layers() > 0) {
    if (num_experts <= 0) return err("the model has MoE layers but no experts");
    if (top_k <= 0 || top_k > num_experts)
      return err("num_experts_per_tok (" + std::to_string(top_k) + ") must be between 1 and the number of experts (" +
                 std::to_string(num_experts) + ")");
    if (moe_intermediate_size <= 0) return err("the expert intermediate size must be positive");
  }
  if (shared_expert_intermediate_size < 0) return err("shared_expert_intermediate_size must not be negative");
  if (clip_qkv < 0) return err("clip_qkv must not be negative");
  if (num_sparse_layers() < num_layers && intermediate_size <= 0)
    return err("dense layers need a positive intermediate_size");
  for (int id : eos_token_ids)
    if (id < 0 || id >= vocab_size) return err("eos_token_id " + std::to_string(id) + " is outside the vocabulary");
  return Status::Ok();
}

namespace {

// Typed accessors that say which key is wrong and what was found instead.
class Reader {
 public:
  Reader(const json& j, std::string where) : j_(j), where_(std::move(where)) {}

  Status err(const std::string& key, const std::string& want) const {
    return invalid_argument(where_ + ": '" + key + "' must be " + want + ", got " + j_.at(key).dump());
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  Status positive_int(const std::string& key, int* out) const {
    if (!has(key)) return invalid_argument(where_ + ": required key '" + key + "' is missing");
    return positive_int_present(key, out);
  }
  Status positive_int_or(const std::string& key, int dflt, int* out) const {
    if (!has(key)) {
      *out = dflt;
      return Status::Ok();
    }
    return positive_int_present(key, out);
  }
  Status number_or(const std::string& key, double dflt, double* out) const {
    if (!has(key)) {
      *out = dflt;
      return Status::Ok();
    }
    if (!j_.at(key).is_number() || j_.at(key).get<double>() <= 0) return err(key, "a positive number");
    *out = j_.at(key).get<double>();
    return Status::Ok();
  }
  Status bool_or(const std::string& key, bool dflt, bool* out) const {
    if (!has(key)) {
      *out = dflt;
      return Status::Ok();
    }
    if (!j_.at(key).is_boolean()) return err(key, "true or false");
    *out = j_.at(key).get<bool>();
    return Status::Ok();
  }

 private:
  Status positive_int_present(const std::string& key, int* out) const {
    const json& v = j_.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (1ll << 30))
      return err(key, "a positive integer");
    const int64_t limit = size_limit(key);
    if (v.get<int64_t>() > limit)
      return invalid_argument(where_ + ": '" + key + "' = " + v.dump() + " is beyond any model Janus can serve (at most " +
                              std::to_string(limit) + ")");
    *out = static_cast<int>(v.get<int64_t>());
    return Status::Ok();
  }

  // Bounds well above every published checkpoint (DeepSeek-V3: 61 layers, 256 experts,
  // hidden 7168, vocabulary 129k), so that an impossible config.json is refused here,
  // naming its key, instead of failing later as an allocation of many gigabytes.
  static int64_t size_limit(const std::string& key) {
    static const std::pair<const char*, int64_t> kLimits[] = {
        {"vocab_size", 1 << 22},           {"hidden_size", 1 << 17},          {"num_hidden_layers", 1024},
        {"num_attention_heads", 1024},     {"num_key_value_heads", 1024},     {"head_dim", 4096},
        {"num_local_experts", 1 << 14},    {"num_experts", 1 << 14},          {"num_experts_per_tok", 256},
        {"moe_intermediate_size", 1 << 20}, {"intermediate_size", 1 << 20},   {"max_position_embeddings", 1 << 24},
        {"decoder_sparse_step", 1024},     {"shared_expert_intermediate_size", 1 << 20},
        {"n_routed_experts", 1 << 14},     {"kv_lora_rank", 1 << 16},         {"q_lora_rank", 1 << 16},
        {"qk_nope_head_dim", 4096},        {"qk_rope_head_dim", 4096},        {"v_head_dim", 4096},
        {"n_shared_experts", 64},          {"first_k_dense_replace", 1024},   {"n_group", 1024},
        {"topk_group", 1024},
    };
    for (const auto& [name, limit] : kLimits)
      if (key == name) return limit;
    return int64_t{1} << 30;
  }

  const json& j_;
  std::string where_;
};

// YaRN's parameters from `rp` (the rope_parameters or rope_scaling object named `key`),
// with transformers 5's defaults; a key it does not read is refused rather than ignored.
Status parse_yarn(const json& rp, const std::string& key, const std::string& where, ModelConfig* c) {
  const std::string at = where + " (" + key + ")";
  static const char* kKnown[] = {"rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings",
                                 "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor", "truncate"};
  for (const auto& [k, v] : rp.items())
    if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown))
      return unsupported(at + ": '" + key + "." + k + "' is not supported for yarn RoPE scaling");
  Reader r(rp, at);
  YarnScaling& y = c->yarn;
  if (!r.has("factor")) return invalid_argument(at + ": yarn RoPE scaling needs '" + key + ".factor'");
  JANUS_TRY(r.number_or("factor", 1.0, &y.factor));
  if (y.factor < 1.0) return invalid_argument(at + ": '" + key + ".factor' must be at least 1, got " + rp["factor"].dump());
  JANUS_TRY(r.positive_int_or("original_max_position_embeddings", c->max_position_embeddings, &y.original_max_position_embeddings));
  // transformers reads `beta_fast or 32`: 0 and null mean the default too.
  auto number_or_default = [&](const char* k, double dflt, double* out) -> Status {
    if (r.has(k) && rp[k].is_number() && rp[k].get<double>() == 0) {
      *out = dflt;
      return Status::Ok();
    }
    return r.number_or(k, dflt, out);
  };
  JANUS_TRY(number_or_default("beta_fast", 32.0, &y.beta_fast));
  JANUS_TRY(number_or_default("beta_slow", 1.0, &y.beta_slow));
  JANUS_TRY(number_or_default("mscale", 0.0, &y.mscale));
  JANUS_TRY(number_or_default("mscale_all_dim", 0.0, &y.mscale_all_dim));
  JANUS_TRY(r.number_or("attention_factor", 0.0, &y.attention_factor));
  JANUS_TRY(r.bool_or("truncate", true, &y.truncate));
  c->rope_yarn = true;
  return Status::Ok();
}

// The RoPE type of a rope_parameters / rope_scaling object ("default" when it names none).
std::string rope_type_of(const json& rp) {
  if (rp.contains("rope_type") && rp["rope_type"].is_string()) return rp["rope_type"].get<std::string>();
  if (rp.contains("type") && rp["type"].is_string()) return rp["type"].get<std::string>();
  return "default";
}

// transformers' defaults of the noaux_tc router keys, which differ between the families.
struct NoauxTcDefaults {
  int n_group, topk_group;
  double routed_scaling_factor;
};

// The noaux_tc router as transformers 5 runs it for DeepSeek-V3 and GLM-4-MoE alike: sigmoid
// scores, the correction bias for selection only, n_group groups scored by the sum of their
// top two, topk_group kept, norm_topk_prob, routed_scaling_factor.
Status parse_noaux_tc_router(const json& j, const Reader& r, const std::string& where, const NoauxTcDefaults& dflt,
                             ModelConfig* c) {
  const std::string family = family_name(c->family);
  JANUS_TRY(r.bool_or("norm_topk_prob", true, &c->norm_topk_prob));
  JANUS_TRY(r.number_or("routed_scaling_factor", dflt.routed_scaling_factor, &c->routed_scaling_factor));
  if (r.has("topk_method") && j.at("topk_method") != "noaux_tc")
    return unsupported(where + ": 'topk_method' " + j.at("topk_method").dump() + " is not supported for " + family +
                       " (transformers' router for it is noaux_tc)");
  if (r.has("scoring_func") && j.at("scoring_func") != "sigmoid")
    return unsupported(where + ": 'scoring_func' " + j.at("scoring_func").dump() + " is not supported for " + family +
                       " (transformers' router for it is sigmoid)");
  c->sigmoid_gate = true;
  JANUS_TRY(r.positive_int_or("n_group", dflt.n_group, &c->n_group));
  JANUS_TRY(r.positive_int_or("topk_group", dflt.topk_group, &c->topk_group));
  if (c->num_experts % c->n_group != 0)
    return invalid_argument(where + ": 'n_group' (" + std::to_string(c->n_group) + ") does not divide the " +
                            std::to_string(c->num_experts) + " routed experts");
  if (c->num_experts / c->n_group < 2)
    return invalid_argument(where + ": 'n_group' (" + std::to_string(c->n_group) +
                            ") leaves fewer than two experts a group (its score is the sum of its top two)");
  if (c->topk_group > c->n_group)
    return invalid_argument(where + ": 'topk_group' (" + std::to_string(c->topk_group) + ") exceeds n_group (" +
                            std::to_string(c->n_group) + ")");
  if (c->top_k > c->topk_group * (c->num_experts / c->n_group))
    return invalid_argument(where + ": num_experts_per_tok (" + std::to_string(c->top_k) +
                            ") exceeds the experts of the topk_group groups it may choose from");
  return Status::Ok();
}

// The MoE layout the DeepSeek families and GLM-4-MoE share: dense MLP layers before
// first_k_dense_replace, then MoE layers whose n_shared_experts ungated shared experts
// run as one MLP of n_shared_experts * moe_intermediate_size.
Status parse_first_k_dense_moe(const json& j, const Reader& r, const std::string& where, int default_shared,
                               int default_first_dense, ModelConfig* c) {
  JANUS_TRY(r.positive_int("moe_intermediate_size", &c->moe_intermediate_size));
  int n_shared = 0;
  JANUS_TRY(r.positive_int_or("n_shared_experts", default_shared, &n_shared));
  c->shared_expert_intermediate_size = n_shared * c->moe_intermediate_size;
  c->shared_expert_gate = false;
  int first_dense = std::min(default_first_dense, c->num_layers);
  if (r.has("first_k_dense_replace")) {
    const json& v = j.at("first_k_dense_replace");
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > c->num_layers)
      return invalid_argument(where + ": 'first_k_dense_replace' must be a layer count between 0 and num_hidden_layers, got " +
                              v.dump());
    first_dense = v.get<int>();
  }
  if (r.has("moe_layer_freq") && j.at("moe_layer_freq") != 1)
    return unsupported(where + ": 'moe_layer_freq' = " + j.at("moe_layer_freq").dump() + " is not supported (transformers' " +
                       family_name(c->family) + " makes every layer from first_k_dense_replace on a MoE layer)");
  for (int l = 0; l < c->num_layers; ++l) c->sparse_layer[static_cast<size_t>(l)] = l >= first_dense;
  if (first_dense > 0) JANUS_TRY(r.positive_int("intermediate_size", &c->intermediate_size));
  else JANUS_TRY(r.positive_int_or("intermediate_size", c->moe_intermediate_size, &c->intermediate_size));
  if (r.has("mlp_bias") && j.at("mlp_bias") != false)
    return unsupported(where + ": 'mlp_bias' = true is not supported");
  if (r.has("quantization_config"))
    return unsupported(where + ": 'quantization_config' is not supported (Janus reads F32, BF16 and F16 weights; "
                               "convert the FP8 checkpoint first)");
  return Status::Ok();
}

// DeepSeek-V2 as transformers 5 runs it: MLA, dense layers before first_k_dense_replace,
// ungated shared experts, softmax routing (greedy or group-limited) scaled by
// routed_scaling_factor. What transformers does differently from the original code, or
// what Janus does not run, is refused naming the key.
// DeepSeek-V3 shares all of it but the router (noaux_tc) and rope_interleave.
Status parse_deepseek(const json& j, const Reader& r, const std::string& where, ModelConfig* c) {
  JANUS_TRY(r.positive_int("kv_lora_rank", &c->kv_lora_rank));
  JANUS_TRY(r.positive_int("qk_nope_head_dim", &c->qk_nope_head_dim));
  JANUS_TRY(r.positive_int("qk_rope_head_dim", &c->qk_rope_head_dim));
  JANUS_TRY(r.positive_int("v_head_dim", &c->v_head_dim));
  if (r.has("q_lora_rank")) JANUS_TRY(r.positive_int("q_lora_rank", &c->q_lora_rank));
  c->head_dim = c->qk_rope_head_dim;  // transformers' DeepseekV2Config does the same
  if (c->head_dim % 2 != 0)
    return invalid_argument(where + ": 'qk_rope_head_dim' (" + std::to_string(c->head_dim) + ") must be even");
  const bool v3 = c->family == ModelFamily::kDeepseekV3;
  JANUS_TRY(parse_first_k_dense_moe(j, r, where, v3 ? 1 : 2, 0, c));
  if (v3) {
    JANUS_TRY(r.bool_or("rope_interleave", true, &c->rope_interleave));
    return parse_noaux_tc_router(j, r, where, {8, 4, 2.5}, c);
  }
  bool norm = false;
  JANUS_TRY(r.bool_or("norm_topk_prob", false, &norm));
  if (norm)
    return unsupported(where + ": 'norm_topk_prob' = true is not supported for deepseek_v2 (transformers' DeepSeek-V2 "
                               "router does not renormalise; the original code does: refused rather than guessed)");
  if (r.has("scoring_func") && j.at("scoring_func") != "softmax")
    return unsupported(where + ": 'scoring_func' = " + j.at("scoring_func").dump() +
                       " is not supported for deepseek_v2 (transformers' DeepSeek-V2 router is softmax)");
  JANUS_TRY(r.number_or("routed_scaling_factor", 1.0, &c->routed_scaling_factor));
  const std::string method = r.has("topk_method") && j.at("topk_method").is_string() ? j.at("topk_method").get<std::string>()
                                                                                      : "greedy";
  if (r.has("topk_method") && !j.at("topk_method").is_string())
    return invalid_argument(where + ": 'topk_method' must be a string, got " + j.at("topk_method").dump());
  if (method == "group_limited_greedy") {
    JANUS_TRY(r.positive_int("n_group", &c->n_group));
    JANUS_TRY(r.positive_int("topk_group", &c->topk_group));
    if (c->num_experts % c->n_group != 0)
      return invalid_argument(where + ": 'n_group' (" + std::to_string(c->n_group) + ") does not divide the " +
                              std::to_string(c->num_experts) + " routed experts");
    if (c->topk_group > c->n_group)
      return invalid_argument(where + ": 'topk_group' (" + std::to_string(c->topk_group) + ") exceeds n_group (" +
                              std::to_string(c->n_group) + ")");
    if (c->top_k > c->topk_group * (c->num_experts / c->n_group))
      return invalid_argument(where + ": num_experts_per_tok (" + std::to_string(c->top_k) +
                              ") exceeds the experts of the topk_group groups it may choose from");
  } else if (method != "greedy") {
    return unsupported(where + ": 'topk_method' \"" + method +
                       "\" is not supported for deepseek_v2 (greedy and group_limited_greedy are)");
  }
  return Status::Ok();
}

// GLM-4-MoE as transformers 5 runs it: GQA attention with optional q/k/v biases
// (attention_bias) and per-head q/k RMSNorm (use_qk_norm), partial rotary (read with the
// RoPE keys), DeepSeek-V3's layout of dense and MoE layers with shared experts and its
// noaux_tc router. Its multi-token-prediction layers (num_nextn_predict_layers) are not part
// of the forward pass: transformers skips their tensors when loading, and so does Janus.
Status parse_glm4_moe(const json& j, const Reader& r, const std::string& where, ModelConfig* c) {
  JANUS_TRY(r.bool_or("attention_bias", false, &c->qkv_bias));
  JANUS_TRY(r.bool_or("use_qk_norm", false, &c->qk_norm));
  JANUS_TRY(parse_first_k_dense_moe(j, r, where, 1, 1, c));
  JANUS_TRY(parse_noaux_tc_router(j, r, where, {1, 1, 1.0}, c));
  if (r.has("num_nextn_predict_layers")) {
    const json& v = j.at("num_nextn_predict_layers");
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 64)
      return invalid_argument(where + ": 'num_nextn_predict_layers' must be a layer count between 0 and 64, got " + v.dump());
    c->num_nextn_predict_layers = v.get<int>();
  }
  if (r.has("sliding_window"))
    return unsupported(where + ": 'sliding_window' is not supported for glm4_moe (transformers' GLM-4-MoE has none)");
  return Status::Ok();
}

}  // namespace

Result<ModelConfig> parse_model_config(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return invalid_argument(where + ": malformed JSON: " + e.what());
  }
  if (!j.is_object()) return invalid_argument(where + ": not a JSON object");
  if (!j.contains("model_type") || !j["model_type"].is_string())
    return invalid_argument(where + ": required key 'model_type' is missing or not a string");
  const std::string model_type = j["model_type"].get<std::string>();
  ModelConfig c;
  if (model_type == "qwen3_moe") c.family = ModelFamily::kQwen3Moe;
  else if (model_type == "mixtral") c.family = ModelFamily::kMixtral;
  else if (model_type == "qwen2_moe") c.family = ModelFamily::kQwen2Moe;
  else if (model_type == "olmoe") c.family = ModelFamily::kOlmoe;
  else if (model_type == "deepseek_v2") c.family = ModelFamily::kDeepseekV2;
  else if (model_type == "deepseek_v3") c.family = ModelFamily::kDeepseekV3;
  else if (model_type == "glm4_moe") c.family = ModelFamily::kGlm4Moe;
  else
    return unsupported(where + ": unsupported architecture: model_type '" + model_type +
                       "' (Janus reads qwen3_moe, mixtral, qwen2_moe, olmoe, deepseek_v2, deepseek_v3 and glm4_moe)");
  // The Qwen families share the layout of dense and sparse layers and their defaults.
  const bool qwen = c.family == ModelFamily::kQwen3Moe || c.family == ModelFamily::kQwen2Moe;
  Reader r(j, where);

  if (r.has("hidden_act") && j["hidden_act"] != "silu")
    return unsupported(where + ": hidden_act " + j["hidden_act"].dump() + " is not supported (only silu)");
  const bool glm = c.family == ModelFamily::kGlm4Moe;
  if (!glm && r.has("attention_bias") && j["attention_bias"] != false)
    return unsupported(where + ": attention_bias=true is not supported for " + family_name(c.family) + " (only for glm4_moe)");

  JANUS_TRY(r.positive_int("vocab_size", &c.vocab_size));
  JANUS_TRY(r.positive_int("hidden_size", &c.hidden_size));
  JANUS_TRY(r.positive_int("num_hidden_layers", &c.num_layers));
  JANUS_TRY(r.positive_int("num_attention_heads", &c.num_heads));
  JANUS_TRY(r.positive_int_or("num_key_value_heads", c.num_heads, &c.num_kv_heads));
  if (c.hidden_size % c.num_heads != 0 && !r.has("head_dim"))
    return invalid_argument(where + ": no head_dim and hidden_size is not a multiple of num_attention_heads");
  JANUS_TRY(r.positive_int_or("head_dim", c.hidden_size / c.num_heads, &c.head_dim));
  JANUS_TRY(r.positive_int_or("max_position_embeddings", 32768, &c.max_position_embeddings));

  // Experts: transformers 4 says num_experts (Qwen) / num_local_experts (Mixtral);
  // transformers 5 writes num_local_experts for both.
  const char* experts_key = r.has("num_local_experts") ? "num_local_experts"
                            : r.has("n_routed_experts") ? "n_routed_experts"  // DeepSeek
                                                        : "num_experts";
  JANUS_TRY(r.positive_int(experts_key, &c.num_experts));
  JANUS_TRY(r.positive_int("num_experts_per_tok", &c.top_k));

  double eps = 0;
  const bool eps_1e5 = c.family == ModelFamily::kMixtral || c.family == ModelFamily::kOlmoe;
  JANUS_TRY(r.number_or("rms_norm_eps", eps_1e5 ? 1e-5 : 1e-6, &eps));
  c.rms_norm_eps = eps;

  // RoPE: transformers 5 nests theta (and the scaling) in rope_parameters; 4 puts
  // rope_theta at the top and the scaling in rope_scaling.
  double dflt_theta = c.family == ModelFamily::kMixtral ? 1e6 : 10000.0;
  JANUS_TRY(r.number_or("rope_theta", dflt_theta, &c.rope_theta));
  // Partial rotary: transformers 4 spells it at the top, 5 in rope_parameters; GLM-4-MoE's
  // config defaults it to 0.5, the other families rotate whole heads.
  JANUS_TRY(r.number_or("partial_rotary_factor", glm ? 0.5 : 1.0, &c.partial_rotary_factor));
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!r.has(key)) continue;
    const json& rp = j[key];
    if (!rp.is_object()) return invalid_argument(where + ": '" + key + "' must be an object");
    Reader rr(rp, where + " (" + key + ")");
    JANUS_TRY(rr.number_or("rope_theta", c.rope_theta, &c.rope_theta));
    JANUS_TRY(rr.number_or("partial_rotary_factor", c.partial_rotary_factor, &c.partial_rotary_factor));
    const std::string type = rope_type_of(rp);
    if (type == "default") continue;
    if (type != "yarn")
      return unsupported(where + ": " + key + " type \"" + type + "\" is not supported (default, and yarn for deepseek_v2/v3)");
    if (!c.deepseek())
      return unsupported(where + ": " + key + " type \"yarn\" is not supported for " + family_name(c.family) +
                         " (only for deepseek_v2 and deepseek_v3)");
    if (c.rope_yarn) return invalid_argument(where + ": both rope_parameters and rope_scaling set a RoPE scaling");
    JANUS_TRY(parse_yarn(rp, key, where, &c));
  }

  if (!glm && c.partial_rotary_factor != 1.0)
    return unsupported(where + ": 'partial_rotary_factor' = " + json(c.partial_rotary_factor).dump() +
                       " is not supported for " + family_name(c.family) + " (only for glm4_moe)");

  JANUS_TRY(r.bool_or("tie_word_embeddings", false, &c.tie_word_embeddings));
  c.sparse_layer.assign(static_cast<size_t>(c.num_layers), true);
  if (qwen) {
    c.qk_norm = c.family == ModelFamily::kQwen3Moe;
    if (c.family == ModelFamily::kQwen2Moe) {
      JANUS_TRY(r.bool_or("qkv_bias", true, &c.qkv_bias));
      // transformers builds a shared expert (and its gate) in every MoE layer of Qwen2-MoE.
      JANUS_TRY(r.positive_int("shared_expert_intermediate_size", &c.shared_expert_intermediate_size));
      c.shared_expert_gate = true;
      bool use_sw = false;
      JANUS_TRY(r.bool_or("use_sliding_window", false, &use_sw));
      if (use_sw)
        return unsupported(where + ": 'use_sliding_window' = true is not supported for qwen2_moe (sliding-window layers "
                                   "from max_window_layers on are not implemented)");
      if (r.has("layer_types")) {
        const json& lt = j["layer_types"];
        if (!lt.is_array()) return invalid_argument(where + ": 'layer_types' must be a list of strings");
        for (const json& t : lt)
          if (t != "full_attention")
            return unsupported(where + ": 'layer_types' holds " + t.dump() + ": only full_attention layers are supported for qwen2_moe");
      }
    }
    JANUS_TRY(r.positive_int("moe_intermediate_size", &c.moe_intermediate_size));
    JANUS_TRY(r.bool_or("norm_topk_prob", false, &c.norm_topk_prob));
    int step = 1;
    JANUS_TRY(r.positive_int_or("decoder_sparse_step", 1, &step));
    std::vector<int> mlp_only;
    if (r.has("mlp_only_layers")) {
      const json& m = j["mlp_only_layers"];
      if (!m.is_array()) return invalid_argument(where + ": 'mlp_only_layers' must be a list of layer indices");
      for (const json& x : m) {
        if (!x.is_number_integer() || x.get<int>() < 0 || x.get<int>() >= c.num_layers)
          return invalid_argument(where + ": 'mlp_only_layers' holds " + x.dump() + ", not a layer index below " +
                                  std::to_string(c.num_layers));
        mlp_only.push_back(x.get<int>());
      }
    }
    for (int l = 0; l < c.num_layers; ++l) {
      bool dense = std::find(mlp_only.begin(), mlp_only.end(), l) != mlp_only.end() || (l + 1) % step != 0;
      c.sparse_layer[static_cast<size_t>(l)] = !dense;
    }
    if (c.num_sparse_layers() < c.num_layers) JANUS_TRY(r.positive_int("intermediate_size", &c.intermediate_size));
    else JANUS_TRY(r.positive_int_or("intermediate_size", c.moe_intermediate_size, &c.intermediate_size));
    if (c.family == ModelFamily::kQwen3Moe) {
      bool use_sw = false;
      JANUS_TRY(r.bool_or("use_sliding_window", false, &use_sw));
      if (use_sw) JANUS_TRY(r.positive_int("sliding_window", &c.sliding_window));
    }
  } else if (c.deepseek()) {
    JANUS_TRY(parse_deepseek(j, r, where, &c));
  } else if (glm) {
    JANUS_TRY(parse_glm4_moe(j, r, where, &c));
  } else if (c.family == ModelFamily::kOlmoe) {
    // OLMoE normalises q over hidden_size and k over (hidden_size / heads) * kv_heads values:
    // the projections' widths only when head_dim is hidden_size / heads.
    if (c.head_dim * c.num_heads != c.hidden_size)
      return unsupported(where + ": 'head_dim' = " + std::to_string(c.head_dim) +
                         " is not supported for olmoe (its q/k norms span hidden_size; head_dim must be hidden_size / "
                         "num_attention_heads = " + std::to_string(c.hidden_size / c.num_heads) + ")");
    c.qk_norm_full = true;
    JANUS_TRY(r.bool_or("norm_topk_prob", false, &c.norm_topk_prob));
    JANUS_TRY(r.positive_int("intermediate_size", &c.moe_intermediate_size));
    c.intermediate_size = c.moe_intermediate_size;
    if (r.has("clip_qkv")) JANUS_TRY(r.number_or("clip_qkv", 0.0, &c.clip_qkv));
    if (r.has("sliding_window"))
      return unsupported(where + ": 'sliding_window' is not supported for olmoe (transformers' OLMoE has none)");
  } else {
    c.qk_norm = false;
    c.norm_topk_prob = true;  // Mixtral always renormalises its top-k
    JANUS_TRY(r.positive_int("intermediate_size", &c.moe_intermediate_size));
    c.intermediate_size = c.moe_intermediate_size;
    if (r.has("sliding_window")) JANUS_TRY(r.positive_int("sliding_window", &c.sliding_window));
  }

  if (r.has("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int>());
    else if (e.is_array()) {
      for (const json& x : e) {
        if (!x.is_number_integer()) return invalid_argument(where + ": 'eos_token_id' must be an integer or a list of integers");
        c.eos_token_ids.push_back(x.get<int>());
      }
    } else {
      return invalid_argument(where + ": 'eos_token_id' must be an integer or a list of integers, got " + e.dump());
    }
  }
  if (r.has("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_token_id = j["bos_token_id"].get<int>();
  JANUS_TRY(c.validate(where));
  return c;
}

Result<ModelConfig> load_model_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  std::ifstream in(path);
  if (!in) return not_found(path + ": no such file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), path);
}

std::string model_config_to_json(const ModelConfig& c) {
  json j;
  const bool qwen = c.family == ModelFamily::kQwen3Moe || c.family == ModelFamily::kQwen2Moe;
  const char* arch = c.family == ModelFamily::kQwen3Moe   ? "Qwen3MoeForCausalLM"
                     : c.family == ModelFamily::kMixtral  ? "MixtralForCausalLM"
                     : c.family == ModelFamily::kQwen2Moe ? "Qwen2MoeForCausalLM"
                     : c.family == ModelFamily::kOlmoe    ? "OlmoeForCausalLM"
                     : c.family == ModelFamily::kDeepseekV2 ? "DeepseekV2ForCausalLM"
                     : c.family == ModelFamily::kDeepseekV3 ? "DeepseekV3ForCausalLM"
                                                            : "Glm4MoeForCausalLM";
  j["architectures"] = {arch};
  j["model_type"] = family_name(c.family);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_parameters"] = {{"rope_theta", c.rope_theta}, {"rope_type", "default"}};
  if (c.partial_rotary_factor != 1.0) j["rope_parameters"]["partial_rotary_factor"] = c.partial_rotary_factor;
  if (c.rope_yarn) {
    const YarnScaling& y = c.yarn;
    json& rp = j["rope_parameters"];
    rp["rope_type"] = "yarn";
    rp["factor"] = y.factor;
    rp["original_max_position_embeddings"] = y.original_max_position_embeddings;
    rp["beta_fast"] = y.beta_fast;
    rp["beta_slow"] = y.beta_slow;
    if (y.mscale != 0) rp["mscale"] = y.mscale;
    if (y.mscale_all_dim != 0) rp["mscale_all_dim"] = y.mscale_all_dim;
    if (y.attention_factor > 0) rp["attention_factor"] = y.attention_factor;
    rp["truncate"] = y.truncate;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["num_local_experts"] = c.num_experts;
  j["num_experts_per_tok"] = c.top_k;
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["dtype"] = "float32";
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  else j["eos_token_id"] = nullptr;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (qwen) {
    j["moe_intermediate_size"] = c.moe_intermediate_size;
    j["intermediate_size"] = c.intermediate_size;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["decoder_sparse_step"] = 1;
    std::vector<int> dense;
    for (int l = 0; l < c.num_layers; ++l)
      if (!c.is_sparse(l)) dense.push_back(l);
    j["mlp_only_layers"] = dense;
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    if (c.family == ModelFamily::kQwen2Moe) {
      j["qkv_bias"] = c.qkv_bias;
      j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
    } else {
      j["attention_bias"] = false;
    }
  } else if (c.deepseek() || c.family == ModelFamily::kGlm4Moe) {
    j.erase("num_local_experts");
    j["n_routed_experts"] = c.num_experts;
    j["moe_intermediate_size"] = c.moe_intermediate_size;
    j["intermediate_size"] = c.intermediate_size;
    j["n_shared_experts"] = c.shared_expert_intermediate_size / c.moe_intermediate_size;
    int first_dense = 0;
    while (first_dense < c.num_layers && !c.is_sparse(first_dense)) ++first_dense;
    j["first_k_dense_replace"] = first_dense;
    j["routed_scaling_factor"] = c.routed_scaling_factor;
    j["norm_topk_prob"] = c.norm_topk_prob;
    if (c.sigmoid_gate || c.n_group > 0) {
      j["n_group"] = c.n_group;
      j["topk_group"] = c.topk_group;
    }
    if (c.family == ModelFamily::kGlm4Moe) {
      j["attention_bias"] = c.qkv_bias;
      j["use_qk_norm"] = c.qk_norm;
      j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
    } else {
      j.erase("head_dim");  // transformers derives it (qk_rope_head_dim)
      j["kv_lora_rank"] = c.kv_lora_rank;
      j["q_lora_rank"] = c.q_lora_rank > 0 ? json(c.q_lora_rank) : json(nullptr);
      j["qk_nope_head_dim"] = c.qk_nope_head_dim;
      j["qk_rope_head_dim"] = c.qk_rope_head_dim;
      j["v_head_dim"] = c.v_head_dim;
      j["attention_bias"] = false;
      if (c.family == ModelFamily::kDeepseekV3) {
        j["rope_interleave"] = c.rope_interleave;
      } else {
        j["topk_method"] = c.n_group > 0 ? "group_limited_greedy" : "greedy";
        j["n_group"] = c.n_group > 0 ? json(c.n_group) : json(nullptr);
        j["topk_group"] = c.n_group > 0 ? json(c.topk_group) : json(nullptr);
      }
    }
  } else if (c.family == ModelFamily::kOlmoe) {
    j["intermediate_size"] = c.moe_intermediate_size;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["attention_bias"] = false;
    j["clip_qkv"] = c.clip_qkv > 0 ? json(c.clip_qkv) : json(nullptr);
  } else {
    j["intermediate_size"] = c.moe_intermediate_size;
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    j["router_jitter_noise"] = 0.0;
  }
  return j.dump(2) + "\n";
}

}  // namespace janus
