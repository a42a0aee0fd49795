#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "runtime/model/model_config.h"
#include "test_util.h"

using namespace janus;

namespace {

// A Qwen3-MoE config in the transformers-5 spelling (as 5.23 writes it).
const char* kQwenV5 = R"({
  "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
  "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
  "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96, "moe_intermediate_size": 32,
  "num_local_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": false, "mlp_only_layers": [1],
  "decoder_sparse_step": 1, "rms_norm_eps": 1e-06, "max_position_embeddings": 512,
  "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
  "tie_word_embeddings": false, "use_sliding_window": false, "sliding_window": null,
  "eos_token_id": null, "hidden_act": "silu", "attention_bias": false})";

// The same model in the transformers-4 spelling.
const char* kQwenV4 = R"({
  "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
  "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
  "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96, "moe_intermediate_size": 32,
  "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": false, "mlp_only_layers": [1],
  "rms_norm_eps": 1e-06, "max_position_embeddings": 512, "rope_theta": 10000.0, "rope_scaling": null,
  "tie_word_embeddings": false})";

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  auto p = s.find(from);
  REQUIRE(p != std::string::npos);
  return s.replace(p, from.size(), to);
}

std::string error_of(const std::string& text) {
  auto r = parse_model_config(text, "config.json");
  REQUIRE_FALSE(r.ok());
  return r.status().to_string();
}

}  // namespace

TEST_CASE("transformers 4 and 5 spellings of Qwen3-MoE give the same config") {
  auto v5 = parse_model_config(kQwenV5, "v5");
  auto v4 = parse_model_config(kQwenV4, "v4");
  REQUIRE(v5.ok());
  REQUIRE(v4.ok());
  for (const ModelConfig* c : {&*v5, &*v4}) {
    CHECK(c->family == ModelFamily::kQwen3Moe);
    CHECK(c->num_experts == 8);
    CHECK(c->top_k == 2);
    CHECK(c->head_dim == 32);
    CHECK(c->rope_theta == 10000.0);
    CHECK(c->qk_norm);
    CHECK_FALSE(c->norm_topk_prob);
    CHECK(c->sparse_layer == std::vector<bool>{true, false, true});
    CHECK(c->eos_token_ids.empty());
  }
}

TEST_CASE("defaults: head_dim from hidden/heads, decoder_sparse_step, Mixtral spelling") {
  std::string no_head_dim = replaced(kQwenV4, R"("head_dim": 32,)", "");
  auto c = parse_model_config(replaced(no_head_dim, R"("mlp_only_layers": [1],)", R"("decoder_sparse_step": 2,)"), "x");
  REQUIRE(c.ok());
  CHECK(c->head_dim == 16);
  CHECK(c->sparse_layer == std::vector<bool>{false, true, false});

  auto m = parse_model_config(R"({"model_type":"mixtral","vocab_size":32,"hidden_size":16,"num_hidden_layers":2,
     "num_attention_heads":4,"num_key_value_heads":2,"head_dim":null,"intermediate_size":24,"num_local_experts":4,
     "num_experts_per_tok":2,"sliding_window":8,"eos_token_id":[2,3],"tie_word_embeddings":true})",
                              "mixtral");
  REQUIRE(m.ok());
  CHECK(m->family == ModelFamily::kMixtral);
  CHECK(m->head_dim == 4);
  CHECK(m->moe_intermediate_size == 24);
  CHECK(m->norm_topk_prob);
  CHECK_FALSE(m->qk_norm);
  CHECK(m->rope_theta == 1e6);
  CHECK(m->rms_norm_eps == doctest::Approx(1e-5));
  CHECK(m->sliding_window == 8);
  CHECK(m->eos_token_ids == std::vector<int>{2, 3});
  CHECK(m->tie_word_embeddings);
}

TEST_CASE("config errors name the key and what was wrong") {
  CHECK(error_of("{not json").find("malformed JSON") != std::string::npos);
  CHECK(error_of(replaced(kQwenV5, R"("qwen3_moe")", R"("llama")")).find("unsupported architecture: model_type 'llama'") !=
        std::string::npos);
  CHECK(error_of(replaced(kQwenV5, R"("hidden_size": 64,)", "")).find("required key 'hidden_size' is missing") !=
        std::string::npos);
  CHECK(error_of(replaced(kQwenV5, R"("hidden_size": 64)", R"("hidden_size": "64")"))
            .find("'hidden_size' must be a positive integer, got \"64\"") != std::string::npos);
  CHECK(error_of(replaced(kQwenV5, R"("num_key_value_heads": 2)", R"("num_key_value_heads": 3)"))
            .find("not a multiple of num_key_value_heads") != std::string::npos);
  CHECK(error_of(replaced(kQwenV5, R"("num_experts_per_tok": 2)", R"("num_experts_per_tok": 9)"))
            .find("num_experts_per_tok (9)") != std::string::npos);
  CHECK(error_of(replaced(kQwenV5, R"("rope_type": "default")", R"("rope_type": "yarn")")).find("yarn") != std::string::npos);
  CHECK(error_of(replaced(kQwenV5, R"("mlp_only_layers": [1])", R"("mlp_only_layers": [7])"))
            .find("'mlp_only_layers' holds 7") != std::string::npos);
  CHECK(error_of(replaced(kQwenV5, R"("hidden_act": "silu")", R"("hidden_act": "gelu")")).find("gelu") != std::string::npos);
  CHECK(error_of("[]").find("not a JSON object") != std::string::npos);
}

TEST_CASE("the config written for a model parses back to the same config") {
  auto c = parse_model_config(kQwenV5, "x");
  REQUIRE(c.ok());
  auto back = parse_model_config(model_config_to_json(*c), "back");
  REQUIRE(back.ok());
  CHECK(back->sparse_layer == c->sparse_layer);
  CHECK(back->head_dim == c->head_dim);
  CHECK(back->num_experts == c->num_experts);
  CHECK(back->rms_norm_eps == c->rms_norm_eps);
  CHECK(back->rope_theta == c->rope_theta);
}

TEST_CASE("impossible sizes are refused up front, naming the file and the key") {
  // 2^30 layers or experts once passed and then died in an uncaught std::bad_alloc.
  for (const char* key : {"num_hidden_layers", "num_local_experts", "hidden_size", "vocab_size"}) {
    std::string text = kQwenV5;
    const std::string from = std::string("\"") + key + "\": ";
    const size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    const size_t end = text.find_first_of(",}", at);
    text.replace(at, end - at, from + "1073741824");
    const std::string e = error_of(text);
    CHECK_MESSAGE(e.find("config.json: '" + std::string(key) + "' = 1073741824 is beyond any model Janus can serve") !=
                      std::string::npos,
                  e);
  }
  // The largest published shapes still pass (DeepSeek-V3: 61 layers, 256 experts, hidden 7168).
  std::string big = replaced(replaced(kQwenV5, R"("num_hidden_layers": 3)", R"("num_hidden_layers": 61)"),
                             R"("num_local_experts": 8)", R"("num_local_experts": 256)");
  big = replaced(big, R"("mlp_only_layers": [1])", R"("mlp_only_layers": [])");
  CHECK(parse_model_config(big, "config.json").ok());
}

namespace {

// The config.json transformers 5.23 wrote for a fixture, as JSON to edit.
nlohmann::json fixture_config(const std::string& name) {
  return nlohmann::json::parse(janus::test::read_file(janus::test::fixture(name) + "/config.json"));
}

std::string error_of_json(const nlohmann::json& j) { return error_of(j.dump()); }

}  // namespace

TEST_CASE("Qwen2-MoE config: biases, shared expert, dense layers and defaults as transformers reads them") {
  nlohmann::json j = fixture_config("qwen2_moe");
  auto c = parse_model_config(j.dump(), "qwen2_moe");
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  CHECK(c->family == ModelFamily::kQwen2Moe);
  CHECK(std::string(family_name(c->family)) == "qwen2_moe");
  CHECK(c->qkv_bias);
  CHECK_FALSE(c->qk_norm);
  CHECK_FALSE(c->qk_norm_full);
  CHECK(c->shared_expert_intermediate_size == 48);
  CHECK(c->has_shared_expert());
  CHECK(c->head_dim == 16);  // no head_dim key: hidden / heads
  CHECK(c->num_experts == 8);  // transformers 5 writes num_experts for qwen2_moe
  CHECK(c->sparse_layer == std::vector<bool>{true, false, true});
  CHECK_FALSE(c->norm_topk_prob);
  CHECK(c->sliding_window == 0);  // "sliding_window": 0 with use_sliding_window false
  // qkv_bias defaults to true (transformers' default); decoder_sparse_step makes dense layers.
  j.erase("qkv_bias");
  j["mlp_only_layers"] = nlohmann::json::array();
  j["decoder_sparse_step"] = 3;
  auto d = parse_model_config(j.dump(), "qwen2_moe");
  REQUIRE(d.ok());
  CHECK(d->qkv_bias);
  CHECK(d->sparse_layer == std::vector<bool>{false, false, true});
  // Written back the transformers-5 way, it parses to the same model.
  auto back = parse_model_config(model_config_to_json(*c), "back");
  REQUIRE_MESSAGE(back.ok(), back.status().to_string());
  CHECK(back->family == ModelFamily::kQwen2Moe);
  CHECK(back->qkv_bias == c->qkv_bias);
  CHECK(back->shared_expert_intermediate_size == c->shared_expert_intermediate_size);
  CHECK(back->sparse_layer == c->sparse_layer);
}

TEST_CASE("Qwen2-MoE features Janus does not run are refused, naming the key") {
  nlohmann::json j = fixture_config("qwen2_moe");
  nlohmann::json k = j;
  k["use_sliding_window"] = true;
  CHECK(error_of_json(k).find("'use_sliding_window' = true is not supported for qwen2_moe") != std::string::npos);
  k = j;
  k["layer_types"][2] = "sliding_attention";
  CHECK(error_of_json(k).find("'layer_types' holds \"sliding_attention\"") != std::string::npos);
  k = j;
  k.erase("shared_expert_intermediate_size");
  CHECK(error_of_json(k).find("required key 'shared_expert_intermediate_size' is missing") != std::string::npos);
  k = j;
  k["shared_expert_intermediate_size"] = 0;
  CHECK(error_of_json(k).find("'shared_expert_intermediate_size' must be a positive integer, got 0") != std::string::npos);
  k = j;
  k["qkv_bias"] = "yes";
  CHECK(error_of_json(k).find("'qkv_bias' must be true or false") != std::string::npos);
}

TEST_CASE("OLMoE config: whole-projection q/k norms, clip_qkv, norm_topk_prob") {
  nlohmann::json j = fixture_config("olmoe");
  auto c = parse_model_config(j.dump(), "olmoe");
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  CHECK(c->family == ModelFamily::kOlmoe);
  CHECK(std::string(family_name(c->family)) == "olmoe");
  CHECK(c->qk_norm_full);
  CHECK_FALSE(c->qk_norm);
  CHECK_FALSE(c->qkv_bias);
  CHECK_FALSE(c->has_shared_expert());
  CHECK(c->clip_qkv == 1.5);
  CHECK(c->norm_topk_prob);
  CHECK(c->moe_intermediate_size == 32);  // OLMoE's experts are intermediate_size wide
  CHECK(c->num_sparse_layers() == c->num_layers);
  CHECK(c->rms_norm_eps == doctest::Approx(1e-5));
  j["clip_qkv"] = nullptr;
  j.erase("norm_topk_prob");
  auto d = parse_model_config(j.dump(), "olmoe");
  REQUIRE(d.ok());
  CHECK(d->clip_qkv == 0.0);
  CHECK_FALSE(d->norm_topk_prob);  // transformers' default
  auto back = parse_model_config(model_config_to_json(*c), "back");
  REQUIRE_MESSAGE(back.ok(), back.status().to_string());
  CHECK(back->family == ModelFamily::kOlmoe);
  CHECK(back->clip_qkv == c->clip_qkv);
  CHECK(back->norm_topk_prob == c->norm_topk_prob);
  CHECK(back->qk_norm_full);
}

TEST_CASE("OLMoE features Janus does not run are refused, naming the key") {
  nlohmann::json j = fixture_config("olmoe");
  nlohmann::json k = j;
  k["attention_bias"] = true;
  CHECK(error_of_json(k).find("attention_bias=true is not supported") != std::string::npos);
  k = j;
  k["head_dim"] = 32;
  CHECK(error_of_json(k).find("'head_dim' = 32 is not supported for olmoe") != std::string::npos);
  k = j;
  k["sliding_window"] = 16;
  CHECK(error_of_json(k).find("'sliding_window' is not supported for olmoe") != std::string::npos);
  k = j;
  k["clip_qkv"] = -1;
  CHECK(error_of_json(k).find("'clip_qkv' must be a positive number, got -1") != std::string::npos);
}

TEST_CASE("DeepSeek-V2 config: MLA ranks, dense first layers, shared experts, group-limited routing") {
  nlohmann::json j = fixture_config("deepseek_v2");
  auto c = parse_model_config(j.dump(), "deepseek_v2");
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  CHECK(c->family == ModelFamily::kDeepseekV2);
  CHECK(std::string(family_name(c->family)) == "deepseek_v2");
  CHECK(c->mla());
  CHECK(c->q_lora_rank == 24);
  CHECK(c->kv_lora_rank == 32);
  CHECK(c->qk_head_dim() == 24);
  CHECK(c->head_dim == 8);  // the RoPE part, as transformers sets it
  CHECK(c->v_head_dim == 16);
  CHECK(c->num_experts == 8);  // n_routed_experts
  CHECK(c->shared_expert_intermediate_size == 32);
  CHECK_FALSE(c->shared_expert_gate);
  CHECK(c->sparse_layer == std::vector<bool>{false, true, true});
  CHECK(c->n_group == 4);
  CHECK(c->topk_group == 2);
  CHECK(c->routed_scaling_factor == 1.5);
  auto back = parse_model_config(model_config_to_json(*c), "back");
  REQUIRE_MESSAGE(back.ok(), back.status().to_string());
  CHECK(back->sparse_layer == c->sparse_layer);
  CHECK(back->q_lora_rank == c->q_lora_rank);
  CHECK(back->n_group == c->n_group);
  CHECK(back->shared_expert_intermediate_size == c->shared_expert_intermediate_size);
  auto lite = parse_model_config(fixture_config("deepseek_v2_lite").dump(), "lite");
  REQUIRE(lite.ok());
  CHECK(lite->q_lora_rank == 0);  // "q_lora_rank": null
  CHECK(lite->n_group == 0);      // greedy
}

TEST_CASE("DeepSeek-V2 features Janus does not run are refused, naming the key") {
  nlohmann::json j = fixture_config("deepseek_v2");
  nlohmann::json k = j;
  k["rope_parameters"] = {{"rope_type", "longrope"}, {"factor", 40}, {"rope_theta", 10000.0}};
  CHECK(error_of_json(k).find("rope_parameters type \"longrope\" is not supported") != std::string::npos);
  k = j;
  k["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}};
  CHECK(error_of_json(k).find("yarn RoPE scaling needs 'rope_parameters.factor'") != std::string::npos);
  k = j;
  k["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4}, {"low_freq_factor", 1}};
  CHECK(error_of_json(k).find("'rope_parameters.low_freq_factor' is not supported for yarn") != std::string::npos);
  k = j;
  k["quantization_config"] = {{"quant_method", "fp8"}};
  CHECK(error_of_json(k).find("'quantization_config'") != std::string::npos);
  k = j;
  k["topk_method"] = "noaux_tc";
  CHECK(error_of_json(k).find("'topk_method' \"noaux_tc\" is not supported for deepseek_v2") != std::string::npos);
  k = j;
  k["norm_topk_prob"] = true;
  CHECK(error_of_json(k).find("'norm_topk_prob' = true is not supported for deepseek_v2") != std::string::npos);
  k = j;
  k["moe_layer_freq"] = 2;
  CHECK(error_of_json(k).find("'moe_layer_freq' = 2 is not supported") != std::string::npos);
  k = j;
  k["attention_bias"] = true;
  CHECK(error_of_json(k).find("attention_bias=true is not supported") != std::string::npos);
  k = j;
  k["mlp_bias"] = true;
  CHECK(error_of_json(k).find("'mlp_bias' = true is not supported") != std::string::npos);
  k = j;
  k["n_group"] = 3;
  CHECK(error_of_json(k).find("'n_group' (3) does not divide the 8 routed experts") != std::string::npos);
  k = j;
  k["topk_group"] = 1;
  k["num_experts_per_tok"] = 3;
  CHECK(error_of_json(k).find("exceeds the experts of the topk_group groups") != std::string::npos);
  k = j;
  k.erase("kv_lora_rank");
  CHECK(error_of_json(k).find("required key 'kv_lora_rank' is missing") != std::string::npos);
  k = j;
  k["first_k_dense_replace"] = 9;
  CHECK(error_of_json(k).find("'first_k_dense_replace' must be a layer count") != std::string::npos);
}

namespace {

// The published config.json files of DeepSeek-V2, V2-Lite and V3 (their architecture keys;
// the remote-code and training keys such as auto_map, aux_loss_alpha and seq_aux are
// ignored as transformers ignores them).
const char* kDeepseekV2Lite = R"({
  "architectures": ["DeepseekV2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV2Config"}, "aux_loss_alpha": 0.001,
  "bos_token_id": 100000, "eos_token_id": 100001, "ep_size": 1, "first_k_dense_replace": 1, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 10944, "kv_lora_rank": 512,
  "max_position_embeddings": 163840, "model_type": "deepseek_v2", "moe_intermediate_size": 1408, "moe_layer_freq": 1,
  "n_group": 1, "n_routed_experts": 64, "n_shared_experts": 2, "norm_topk_prob": false, "num_attention_heads": 16,
  "num_experts_per_tok": 6, "num_hidden_layers": 27, "num_key_value_heads": 16, "pretraining_tp": 1,
  "q_lora_rank": null, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                   "original_max_position_embeddings": 4096, "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "seq_aux": true,
  "tie_word_embeddings": false, "topk_group": 1, "topk_method": "greedy", "torch_dtype": "bfloat16",
  "transformers_version": "4.39.3", "use_cache": true, "v_head_dim": 128, "vocab_size": 102400})";

const char* kDeepseekV3 = R"({
  "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
  "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432,
  "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 2048,
  "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": true,
  "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
  "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                   "original_max_position_embeddings": 4096, "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": true,
  "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
  "transformers_version": "4.33.1", "use_cache": true, "v_head_dim": 128, "vocab_size": 129280})";

}  // namespace

TEST_CASE("the published DeepSeek-V2, V2-Lite and V3 config.json files load, YaRN included") {
  auto lite = parse_model_config(kDeepseekV2Lite, "DeepSeek-V2-Lite");
  REQUIRE_MESSAGE(lite.ok(), lite.status().to_string());
  CHECK(lite->family == ModelFamily::kDeepseekV2);
  CHECK(lite->q_lora_rank == 0);
  CHECK(lite->rope_theta == 10000.0);
  REQUIRE(lite->rope_yarn);
  CHECK(lite->yarn.factor == 40.0);
  CHECK(lite->yarn.original_max_position_embeddings == 4096);
  CHECK(lite->yarn.mscale == 0.707);
  // mscale == mscale_all_dim: cos/sin unscaled; the softmax scale gains (0.1 * 0.707 * ln 40 + 1)^2.
  CHECK(lite->yarn.cos_sin_factor() == doctest::Approx(1.0));
  CHECK(lite->yarn.softmax_factor() == doctest::Approx(std::pow(0.1 * 0.707 * std::log(40.0) + 1.0, 2)));
  // V2: the same file with V2's sizes and group-limited routing.
  nlohmann::json v2 = nlohmann::json::parse(kDeepseekV2Lite);
  v2["hidden_size"] = 5120, v2["intermediate_size"] = 12288, v2["moe_intermediate_size"] = 1536;
  v2["num_hidden_layers"] = 60, v2["num_attention_heads"] = 128, v2["num_key_value_heads"] = 128;
  v2["n_routed_experts"] = 160, v2["q_lora_rank"] = 1536, v2["routed_scaling_factor"] = 16.0;
  v2["topk_method"] = "group_limited_greedy", v2["n_group"] = 8, v2["topk_group"] = 3;
  auto full = parse_model_config(v2.dump(), "DeepSeek-V2");
  REQUIRE_MESSAGE(full.ok(), full.status().to_string());
  CHECK(full->n_group == 8);
  CHECK(full->rope_yarn);
  // transformers 5 writes the same scaling as rope_parameters with rope_type.
  auto back = parse_model_config(model_config_to_json(*lite), "back");
  REQUIRE_MESSAGE(back.ok(), back.status().to_string());
  CHECK(back->rope_yarn);
  CHECK(back->yarn.factor == lite->yarn.factor);
  CHECK(back->yarn.mscale_all_dim == lite->yarn.mscale_all_dim);
  CHECK(back->yarn.original_max_position_embeddings == 4096);

  auto v3 = parse_model_config(kDeepseekV3, "DeepSeek-V3");
  REQUIRE_MESSAGE(v3.ok(), v3.status().to_string());
  CHECK(v3->family == ModelFamily::kDeepseekV3);
  CHECK(std::string(family_name(v3->family)) == "deepseek_v3");
  CHECK(v3->sigmoid_gate);
  CHECK(v3->norm_topk_prob);
  CHECK(v3->n_group == 8);
  CHECK(v3->topk_group == 4);
  CHECK(v3->routed_scaling_factor == 2.5);
  CHECK(v3->rope_interleave);
  CHECK(v3->shared_expert_intermediate_size == 2048);
  CHECK(v3->sparse_layer[2] == false);
  CHECK(v3->sparse_layer[3] == true);
  CHECK(v3->yarn.softmax_factor() == doctest::Approx(std::pow(0.1 * std::log(40.0) + 1.0, 2)));
  auto v3back = parse_model_config(model_config_to_json(*v3), "back");
  REQUIRE_MESSAGE(v3back.ok(), v3back.status().to_string());
  CHECK(v3back->family == ModelFamily::kDeepseekV3);
  CHECK(v3back->n_group == 8);
  CHECK(v3back->sparse_layer == v3->sparse_layer);
}

TEST_CASE("DeepSeek-V3 router keys Janus does not run, and YaRN outside the DeepSeek families, are refused naming the key") {
  nlohmann::json j = nlohmann::json::parse(kDeepseekV3);
  nlohmann::json k = j;
  k["topk_method"] = "group_limited_greedy";
  CHECK(error_of_json(k).find("'topk_method' \"group_limited_greedy\" is not supported for deepseek_v3") != std::string::npos);
  k = j;
  k["scoring_func"] = "softmax";
  CHECK(error_of_json(k).find("'scoring_func' \"softmax\" is not supported for deepseek_v3") != std::string::npos);
  k = j;
  k["n_group"] = 256;
  CHECK(error_of_json(k).find("fewer than two experts a group") != std::string::npos);
  k = j;
  k["topk_group"] = 9;
  CHECK(error_of_json(k).find("'topk_group' (9) exceeds n_group (8)") != std::string::npos);
  nlohmann::json q = fixture_config("qwen2_moe");
  q["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4}, {"rope_theta", 10000.0}};
  CHECK(error_of_json(q).find("type \"yarn\" is not supported for qwen2_moe") != std::string::npos);
}

namespace {

// GLM-4.5-Air's shape in the transformers-4 spelling it ships with: partial_rotary_factor and
// rope_theta at the top level, rope_scaling null, an MTP layer (num_nextn_predict_layers).
const char* kGlm45Air = R"({
  "architectures": ["Glm4MoeForCausalLM"], "attention_bias": true, "attention_dropout": 0.0, "pad_token_id": 151329,
  "eos_token_id": [151329, 151336, 151338], "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
  "partial_rotary_factor": 0.5, "initializer_range": 0.02, "intermediate_size": 10944, "max_position_embeddings": 131072,
  "model_type": "glm4_moe", "moe_intermediate_size": 1408, "norm_topk_prob": true, "num_attention_heads": 96,
  "n_group": 1, "topk_group": 1, "n_routed_experts": 128, "n_shared_experts": 1, "routed_scaling_factor": 1.0,
  "num_experts_per_tok": 8, "first_k_dense_replace": 1, "num_hidden_layers": 46, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 1000000, "num_nextn_predict_layers": 1,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.54.0", "use_cache": true,
  "use_qk_norm": false, "vocab_size": 151552})";

}  // namespace

TEST_CASE("a GLM-4.5-Air config.json loads: partial rotary, q/k/v biases, the noaux_tc router, shared experts, its MTP layer") {
  auto c = parse_model_config(kGlm45Air, "GLM-4.5-Air");
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  CHECK(c->family == ModelFamily::kGlm4Moe);
  CHECK(std::string(family_name(c->family)) == "glm4_moe");
  CHECK(c->head_dim == 128);
  CHECK(c->rotary_dim() == 64);
  CHECK(c->rope_theta == 1e6);
  CHECK(c->qkv_bias);
  CHECK_FALSE(c->qk_norm);
  CHECK(c->num_kv_heads == 8);
  CHECK(c->sigmoid_gate);
  CHECK(c->n_group == 1);
  CHECK(c->routed_scaling_factor == 1.0);
  CHECK(c->shared_expert_intermediate_size == 1408);
  CHECK_FALSE(c->shared_expert_gate);
  CHECK_FALSE(c->is_sparse(0));
  CHECK(c->is_sparse(1));
  CHECK(c->num_nextn_predict_layers == 1);
  CHECK(c->eos_token_ids.size() == 3);
  // GLM-4.5's differences from Air: per-head q/k norms, 3 dense layers, scaling 2.5.
  nlohmann::json full = nlohmann::json::parse(kGlm45Air);
  full["use_qk_norm"] = true, full["first_k_dense_replace"] = 3, full["routed_scaling_factor"] = 2.5;
  auto g = parse_model_config(full.dump(), "GLM-4.5");
  REQUIRE_MESSAGE(g.ok(), g.status().to_string());
  CHECK(g->qk_norm);
  CHECK(g->num_sparse_layers() == 46 - 3);
  // Written back the transformers-5 way (partial_rotary_factor in rope_parameters), it reads the same.
  auto back = parse_model_config(model_config_to_json(*g), "back");
  REQUIRE_MESSAGE(back.ok(), back.status().to_string());
  CHECK(back->family == ModelFamily::kGlm4Moe);
  CHECK(back->partial_rotary_factor == 0.5);
  CHECK(back->qkv_bias);
  CHECK(back->qk_norm);
  CHECK(back->routed_scaling_factor == 2.5);
  CHECK(back->sparse_layer == g->sparse_layer);
  CHECK(back->num_nextn_predict_layers == 1);
  // transformers' GLM-4-MoE config defaults the factor to 0.5 when neither spelling has it.
  nlohmann::json none = nlohmann::json::parse(kGlm45Air);
  none.erase("partial_rotary_factor");
  auto half = parse_model_config(none.dump(), "no factor");
  REQUIRE_MESSAGE(half.ok(), half.status().to_string());
  CHECK(half->rotary_dim() == 64);
}

TEST_CASE("GLM-4-MoE values Janus does not run, and partial rotary or attention biases outside glm4_moe, are refused naming the key") {
  const nlohmann::json j = nlohmann::json::parse(kGlm45Air);
  nlohmann::json k = j;
  k["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4}};
  CHECK(error_of_json(k).find("type \"yarn\" is not supported for glm4_moe") != std::string::npos);
  k = j;
  k["head_dim"] = 6;  // half of it is an odd rotary part, which rotate_half cannot split
  CHECK(error_of_json(k).find("the rotary part of a head (head_dim 6 * partial_rotary_factor 0.5 = 3) must be even") !=
        std::string::npos);
  k = j;
  k["partial_rotary_factor"] = 1.5;
  CHECK(error_of_json(k).find("partial_rotary_factor (1.5) must be in (0, 1]") != std::string::npos);
  k = j;
  k["scoring_func"] = "softmax";
  CHECK(error_of_json(k).find("'scoring_func' \"softmax\" is not supported for glm4_moe") != std::string::npos);
  k = j;
  k["n_group"] = 3;
  CHECK(error_of_json(k).find("'n_group' (3) does not divide the 128 routed experts") != std::string::npos);
  k = j;
  k["sliding_window"] = 4096;
  CHECK(error_of_json(k).find("'sliding_window' is not supported for glm4_moe") != std::string::npos);
  k = j;
  k["quantization_config"] = {{"quant_method", "fp8"}};
  CHECK(error_of_json(k).find("'quantization_config' is not supported") != std::string::npos);
  k = j;
  k["num_nextn_predict_layers"] = -1;
  CHECK(error_of_json(k).find("'num_nextn_predict_layers' must be a layer count") != std::string::npos);
  nlohmann::json q = fixture_config("qwen3_moe");
  q["rope_parameters"]["partial_rotary_factor"] = 0.5;
  CHECK(error_of_json(q).find("'partial_rotary_factor' = 0.5 is not supported for qwen3_moe (only for glm4_moe)") !=
        std::string::npos);
  q = fixture_config("qwen3_moe");
  q["attention_bias"] = true;
  CHECK(error_of_json(q).find("attention_bias=true is not supported for qwen3_moe") != std::string::npos);
}
