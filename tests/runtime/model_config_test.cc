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
  k["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 40}, {"rope_theta", 10000.0}};
  CHECK(error_of_json(k).find("rope_parameters.rope_type \"yarn\" is not supported") != std::string::npos);
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
