// The reference engine against Hugging Face transformers' own outputs for the same
// checkpoints (tests/fixtures, made by tests/fixtures/make_fixtures.py).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include <nlohmann/json.hpp>

#include "gpu/backend/backend.h"
#include "runtime/model/reference_engine.h"
#include "transformers_fixture.h"

using namespace janus;
using nlohmann::json;

namespace {

struct Fixture {
  std::shared_ptr<Model> model;
  json expected;
};

Fixture load_fixture(const std::string& name) {
  const janus::test::TransformersFixture& f = janus::test::transformers_fixture(name);
  auto m = Model::load(f.dir);
  REQUIRE_MESSAGE(m.ok(), m.status().to_string());
  return {*m, f.expected};
}

std::vector<GenerateRequest> requests_for(const json& expected, bool logits) {
  return janus::test::greedy_requests(expected["prompts"].get<std::vector<std::vector<int32_t>>>(),
                                      static_cast<int>(expected["greedy_tokens"][0].size()), logits);
}

// Runs every prompt alone and all together, checking logits and greedy tokens.
void check_against(const Fixture& f, const std::string& logits_key, double tol) {
  ReferenceEngine engine(f.model);
  auto reqs = requests_for(f.expected, true);
  std::vector<GenerateResult> batched;
  {
    auto r = engine.generate(reqs);
    REQUIRE(r.ok());
    batched = *r;
  }
  double worst = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    CAPTURE(i);
    auto alone = engine.generate({reqs[i]});
    REQUIRE(alone.ok());
    const auto want_logits = f.expected[logits_key][i].get<std::vector<float>>();
    const auto want_tokens = f.expected["greedy_tokens"][i].get<std::vector<int32_t>>();
    REQUIRE((*alone)[0].last_logits.size() == want_logits.size());
    const double err = janus::test::rel_max_err((*alone)[0].last_logits.data(), want_logits.data(), want_logits.size());
    worst = std::max(worst, err);
    CHECK(err <= tol);
    CHECK((*alone)[0].tokens == want_tokens);
    // Batching changes nothing, bit for bit.
    CHECK(batched[i].tokens == (*alone)[0].tokens);
    CHECK(batched[i].last_logits == (*alone)[0].last_logits);
  }
  MESSAGE("max relative logit error vs transformers (" << logits_key << "): " << worst);
}

}  // namespace

TEST_CASE("Qwen3-MoE fp32: logits within 1e-4 of transformers, greedy tokens identical, single and batched") {
  check_against(load_fixture("qwen3_moe"), "last_logits", 1e-4);
}

TEST_CASE("Mixtral fp32 (sharded, tied embeddings, sliding window): logits within 1e-4, tokens identical") {
  check_against(load_fixture("mixtral"), "last_logits", 1e-4);
}

TEST_CASE("Qwen2-MoE fp32 (q/k/v biases, gated shared expert, a dense layer): logits within 1e-4, tokens identical") {
  Fixture f = load_fixture("qwen2_moe");
  const ModelConfig& c = f.model->config();
  CHECK(c.family == ModelFamily::kQwen2Moe);
  CHECK(c.qkv_bias);
  CHECK(c.shared_expert_intermediate_size == 48);
  CHECK_FALSE(c.is_sparse(1));
  check_against(f, "last_logits", 1e-4);
}

TEST_CASE("OLMoE fp32 (q/k norms over the whole projection, clip_qkv, GQA): logits within 1e-4, tokens identical") {
  Fixture f = load_fixture("olmoe");
  const ModelConfig& c = f.model->config();
  CHECK(c.family == ModelFamily::kOlmoe);
  CHECK(c.qk_norm_full);
  CHECK(c.clip_qkv == 1.5);
  CHECK(f.model->weights().layers[0].q_norm.cols == c.q_dim());
  CHECK(f.model->weights().layers[0].k_norm.cols == c.kv_dim());
  check_against(f, "last_logits", 1e-4);
}

TEST_CASE("DeepSeek-V2 fp32 (MLA with q LoRA over a latent cache, dense first layer, shared expert, group-limited routing): logits within 1e-4, tokens identical") {
  Fixture f = load_fixture("deepseek_v2");
  const ModelConfig& c = f.model->config();
  CHECK(c.family == ModelFamily::kDeepseekV2);
  CHECK(c.mla());
  CHECK(c.head_dim == 8);
  // The cache holds the latent and the RoPE key per token: 40 floats a layer, no V.
  CHECK(c.kv_cache_heads() == 1);
  CHECK(c.kv_cache_head_dim() == 32 + 8);
  CHECK_FALSE(c.kv_cache_values());
  CHECK(c.n_group == 4);
  CHECK(c.routed_scaling_factor == 1.5);
  CHECK_FALSE(c.is_sparse(0));
  check_against(f, "last_logits", 1e-4);
}

TEST_CASE("DeepSeek-V2-Lite variant fp32 (one q_proj, all layers MoE, two shared experts, greedy): logits within 1e-4, tokens identical") {
  Fixture f = load_fixture("deepseek_v2_lite");
  const ModelConfig& c = f.model->config();
  CHECK(c.q_lora_rank == 0);
  CHECK(c.n_group == 0);
  CHECK(c.shared_expert_intermediate_size == 2 * c.moe_intermediate_size);
  CHECK(c.num_sparse_layers() == c.num_layers);
  check_against(f, "last_logits", 1e-4);
}

TEST_CASE("DeepSeek-V2 fp32 with YaRN RoPE scaling (attention factor and softmax mscale both != 1): logits within 1e-4, tokens identical") {
  Fixture f = load_fixture("deepseek_v2_yarn");
  const ModelConfig& c = f.model->config();
  CHECK(c.family == ModelFamily::kDeepseekV2);
  REQUIRE(c.rope_yarn);
  CHECK(c.yarn.factor == 4.0);
  CHECK(c.yarn.original_max_position_embeddings == 64);
  CHECK(c.yarn.cos_sin_factor() != doctest::Approx(1.0));
  CHECK(c.yarn.softmax_factor() != doctest::Approx(1.0));
  check_against(f, "last_logits", 1e-4);
}

TEST_CASE("DeepSeek-V3 fp32 (noaux_tc sigmoid router with correction bias, YaRN, interleaved MLA RoPE, dense first layer, shared expert): logits within 1e-4, tokens identical") {
  Fixture f = load_fixture("deepseek_v3");
  const ModelConfig& c = f.model->config();
  CHECK(c.family == ModelFamily::kDeepseekV3);
  CHECK(c.mla());
  CHECK(c.sigmoid_gate);
  CHECK(c.norm_topk_prob);
  CHECK(c.routed_scaling_factor == 2.5);
  CHECK(c.n_group == 4);
  CHECK(c.topk_group == 2);
  CHECK(c.rope_interleave);
  CHECK(c.rope_yarn);
  CHECK_FALSE(c.is_sparse(0));
  CHECK(c.shared_expert_intermediate_size == c.moe_intermediate_size);
  CHECK(f.model->weights().layers[1].router_bias.cols == c.num_experts);
  check_against(f, "last_logits", 1e-4);
}

TEST_CASE("GLM-4-MoE fp32 (partial rotary, q/k/v biases, per-head q/k norms, GQA, noaux_tc router, dense first layer, shared expert): logits within 1e-4, tokens identical") {
  Fixture f = load_fixture("glm4_moe");
  const ModelConfig& c = f.model->config();
  CHECK(c.family == ModelFamily::kGlm4Moe);
  CHECK_FALSE(c.mla());
  CHECK(c.head_dim == 16);
  CHECK(c.rotary_dim() == 8);
  CHECK(c.qkv_bias);
  CHECK(c.qk_norm);
  CHECK(c.num_kv_heads == 2);
  CHECK(c.sigmoid_gate);
  CHECK(c.norm_topk_prob);
  CHECK(c.routed_scaling_factor == 1.8);
  CHECK(c.n_group == 4);
  CHECK(c.topk_group == 2);
  CHECK_FALSE(c.is_sparse(0));
  CHECK(c.shared_expert_intermediate_size == c.moe_intermediate_size);
  CHECK_FALSE(c.shared_expert_gate);
  CHECK(c.num_nextn_predict_layers == 1);  // in config.json; the fixture has no such layer, and needs none
  CHECK(f.model->weights().layers[0].q_norm.cols == 16);
  CHECK(f.model->weights().layers[2].router_bias.cols == c.num_experts);
  check_against(f, "last_logits", 1e-4);
}

namespace {

// Zeroes one F32 tensor of DIR/model.safetensors in place (8-byte header length, JSON
// header, data): how a test takes a buffer such as e_score_correction_bias out of play.
void zero_tensor(const std::string& file, const std::string& name) {
  std::string bytes = janus::test::read_file(file);
  REQUIRE(bytes.size() >= 8);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const json header = json::parse(bytes.substr(8, header_len));
  REQUIRE(header.contains(name));
  REQUIRE(header[name]["dtype"] == "F32");
  const auto off = header[name]["data_offsets"].get<std::vector<size_t>>();
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(8 + header_len + off[0]),
            bytes.begin() + static_cast<std::ptrdiff_t>(8 + header_len + off[1]), '\0');
  janus::test::write_file(file, bytes);
}

}  // namespace

TEST_CASE("leaving out a feature of a newer family moves the logits past the tolerance (the fixtures exercise each)") {
  // Each feature is switched off in the config of a copy whose tensors are otherwise
  // bound as before; the engine must then miss transformers' logits by far more than 1e-4.
  struct Case {
    const char* fixture;
    const char* what;
    std::function<void(json&)> edit;
  };
  const std::vector<Case> cases = {
      {"olmoe", "clip_qkv", [](json& j) { j["clip_qkv"] = nullptr; }},
      {"olmoe", "norm_topk_prob", [](json& j) { j["norm_topk_prob"] = false; }},
      {"deepseek_v2", "group_limited_greedy", [](json& j) { j["topk_method"] = "greedy"; }},
      {"deepseek_v2", "routed_scaling_factor", [](json& j) { j["routed_scaling_factor"] = 1.0; }},
      {"deepseek_v2_yarn", "yarn", [](json& j) { j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}}; }},
      {"deepseek_v2_yarn", "yarn mscale_all_dim", [](json& j) { j["rope_parameters"].erase("mscale_all_dim"); }},
      {"deepseek_v3", "norm_topk_prob", [](json& j) { j["norm_topk_prob"] = false; }},
      {"deepseek_v3", "routed_scaling_factor", [](json& j) { j["routed_scaling_factor"] = 1.0; }},
      {"deepseek_v3", "group limit", [](json& j) { j["topk_group"] = 4; }},
      {"deepseek_v3", "rope_interleave", [](json& j) { j["rope_interleave"] = false; }},
      {"deepseek_v3", "yarn", [](json& j) { j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}}; }},
      {"deepseek_v3", "e_score_correction_bias", nullptr},
      {"glm4_moe", "partial_rotary_factor", [](json& j) { j["rope_parameters"]["partial_rotary_factor"] = 1.0; }},
      {"glm4_moe", "norm_topk_prob", [](json& j) { j["norm_topk_prob"] = false; }},
      {"glm4_moe", "routed_scaling_factor", [](json& j) { j["routed_scaling_factor"] = 1.0; }},
      {"glm4_moe", "group limit", [](json& j) { j["topk_group"] = 4; }},
      {"glm4_moe", "e_score_correction_bias", nullptr},
  };
  for (const Case& k : cases) {
    CAPTURE(k.what);
    janus::test::TempDir d;
    janus::test::copy_dir(janus::test::fixture(k.fixture), d.path());
    json cfg = json::parse(janus::test::read_file(d / "config.json"));
    if (k.edit) k.edit(cfg);
    else
      for (int l : {1, 2}) zero_tensor(d / "model.safetensors", "model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias");
    janus::test::write_file(d / "config.json", cfg.dump());
    auto m = Model::load(d.path());
    REQUIRE_MESSAGE(m.ok(), m.status().to_string());
    ReferenceEngine engine(*m);
    const json expected = json::parse(janus::test::read_file(d / "expected.json"));
    auto out = engine.generate(requests_for(expected, true));
    REQUIRE(out.ok());
    double worst = 0;
    for (size_t i = 0; i < out->size(); ++i) {
      const auto want = expected["last_logits"][i].get<std::vector<float>>();
      worst = std::max(worst, janus::test::rel_max_err((*out)[i].last_logits.data(), want.data(), want.size()));
    }
    CHECK(worst > 1e-2);
  }
}

TEST_CASE("Qwen3-MoE BF16 copy: within 1e-2 of the fp32 model and 1e-4 of transformers on the same bf16 weights") {
  Fixture f = load_fixture("qwen3_moe_bf16");
  CHECK(f.model->weights().layers[0].q.dtype == DType::kBF16);
  check_against(f, "last_logits", 1e-4);
  check_against(f, "last_logits_original_f32", 1e-2);
}

TEST_CASE("a transformers-4 spelled config.json gives the same logits") {
  janus::test::TempDir d;
  janus::test::copy_dir(janus::test::fixture("qwen3_moe"), d.path());
  json cfg = json::parse(janus::test::read_file(d / "config.json"));
  cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"];
  cfg.erase("rope_parameters");
  cfg["num_experts"] = cfg["num_local_experts"];
  cfg.erase("num_local_experts");
  janus::test::write_file(d / "config.json", cfg.dump());
  auto m = Model::load(d.path());
  REQUIRE(m.ok());
  Fixture f{*m, json::parse(janus::test::read_file(d / "expected.json"))};
  check_against(f, "last_logits", 1e-4);
}

TEST_CASE("GLM-4-MoE's partial_rotary_factor in the transformers-4 spelling (top level), or absent (0.5), gives the same logits") {
  for (bool absent : {false, true}) {
    CAPTURE(absent);
    janus::test::TempDir d;
    janus::test::copy_dir(janus::test::fixture("glm4_moe"), d.path());
    json cfg = json::parse(janus::test::read_file(d / "config.json"));
    REQUIRE(cfg["rope_parameters"]["partial_rotary_factor"] == 0.5);
    if (!absent) cfg["partial_rotary_factor"] = cfg["rope_parameters"]["partial_rotary_factor"];
    cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"];
    cfg.erase("rope_parameters");
    janus::test::write_file(d / "config.json", cfg.dump());
    auto m = Model::load(d.path());
    REQUIRE_MESSAGE(m.ok(), m.status().to_string());
    CHECK((*m)->config().rotary_dim() == 8);
    Fixture f{*m, json::parse(janus::test::read_file(d / "expected.json"))};
    check_against(f, "last_logits", 1e-4);
  }
}

TEST_CASE("generation stops at an EOS id when asked, and not otherwise") {
  Fixture f = load_fixture("qwen3_moe");
  auto tokens = f.expected["greedy_tokens"][3].get<std::vector<int32_t>>();
  // Use the 5th greedy token as EOS (first occurrence decides where it stops).
  const int32_t eos = tokens[4];
  const size_t stop = static_cast<size_t>(std::find(tokens.begin(), tokens.end(), eos) - tokens.begin());
  ReferenceEngine engine(f.model);
  GenerateRequest r;
  r.eos_ids = {eos};
  r.prompt = f.expected["prompts"][3].get<std::vector<int32_t>>();
  r.max_new_tokens = 16;
  auto out = engine.generate({r});
  REQUIRE(out.ok());
  CHECK((*out)[0].tokens.size() == stop + 1);
  CHECK((*out)[0].tokens.back() == eos);
  CHECK((*out)[0].finish_reason == "eos");
  r.stop_at_eos = false;
  auto all = engine.generate({r});
  REQUIRE(all.ok());
  CHECK((*all)[0].tokens == tokens);
  CHECK((*all)[0].finish_reason == "length");
}

TEST_CASE("seeded sampling gives the same tokens alone and in a batch") {
  Fixture f = load_fixture("mixtral");
  ReferenceEngine engine(f.model);
  auto reqs = requests_for(f.expected, false);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].sampling.temperature = 1.5f;
    reqs[i].sampling.top_p = 0.95f;
    reqs[i].sampling.seed = 100 + i;
  }
  auto batch = engine.generate(reqs);
  REQUIRE(batch.ok());
  int differs_from_greedy = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto alone = engine.generate({reqs[i]});
    REQUIRE(alone.ok());
    CHECK((*alone)[0].tokens == (*batch)[i].tokens);
    differs_from_greedy += (*alone)[0].tokens != f.expected["greedy_tokens"][i].get<std::vector<int32_t>>();
  }
  CHECK(differs_from_greedy > 0);
}

TEST_CASE("bad requests are refused with a reason, nothing runs") {
  Fixture f = load_fixture("qwen3_moe");
  ReferenceEngine engine(f.model);
  GenerateRequest ok;
  ok.prompt = {1, 2, 3};
  GenerateRequest empty;
  auto r1 = engine.generate({ok, empty});
  REQUIRE_FALSE(r1.ok());
  CHECK(r1.status().message().find("request 1: the prompt is empty") != std::string::npos);
  GenerateRequest oov;
  oov.prompt = {1, 256};
  auto r2 = engine.generate({oov});
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.status().message().find("token id 256 at position 1 is outside the vocabulary [0, 256)") != std::string::npos);
  GenerateRequest longr;
  longr.prompt = {1};
  longr.max_new_tokens = 600;
  auto r3 = engine.generate({longr});
  REQUIRE_FALSE(r3.ok());
  CHECK(r3.status().message().find("exceeds max_position_embeddings (512)") != std::string::npos);
  // Sampling parameters out of range are refused even for greedy requests (once a
  // temperature of -1 was served as greedy and a top_p of 2 was ignored).
  struct Bad {
    float temperature, top_p;
    int top_k;
    const char* message;
  };
  for (const Bad& b : {Bad{-1.f, 1.f, 0, "temperature must be a finite number >= 0"},
                       Bad{std::nanf(""), 1.f, 0, "temperature must be a finite number >= 0"},
                       Bad{0.f, 2.f, 0, "top_p must be in (0, 1], got 2"}, Bad{0.7f, 0.f, 0, "top_p must be in (0, 1], got 0"},
                       Bad{0.f, 1.f, -3, "top_k must be >= 0"}}) {
    GenerateRequest r = ok;
    r.sampling.temperature = b.temperature;
    r.sampling.top_p = b.top_p;
    r.sampling.top_k = b.top_k;
    auto out = engine.generate({r});
    REQUIRE_FALSE(out.ok());
    CHECK_MESSAGE(out.status().message().find(b.message) != std::string::npos, out.status().message());
  }
}

TEST_CASE("no GPU attention is built for YaRN or partial rotary: refused naming the keys, whatever CUDA backend is registered; GPU routers are not refused for the noaux_tc gate") {
  auto gpu = Device::parse("cuda:0");
  REQUIRE(gpu.ok());
  for (const char* name : {"deepseek_v2_yarn", "deepseek_v3", "glm4_moe"}) {
    CAPTURE(name);
    Fixture f = load_fixture(name);
    auto a = make_attention_backend(f.model, *gpu, BackendOptions{});
    REQUIRE_FALSE(a.ok());
    CHECK(a.status().code() == ErrorCode::kUnsupported);
    const bool glm = f.model->config().family == ModelFamily::kGlm4Moe;
    CHECK_MESSAGE(a.status().message().find(glm ? "'partial_rotary_factor': RoPE over 8 of the 16 values of each head"
                                                : "YaRN RoPE scaling") != std::string::npos,
                  a.status().message());
    // The CUDA router runs the noaux_tc gate (tests/cuda/gate_test.cc): a GPU router is made,
    // or fails for want of a CUDA backend or device, never for the gate's keys.
    auto r = make_router_backend(f.model, *gpu);
    if (!r.ok()) {
      CHECK(r.status().message().find("'e_score_correction_bias'") == std::string::npos);
      CHECK(r.status().message().find("noaux_tc") == std::string::npos);
    }
  }
  // The CPU builds their routers.
  for (const char* name : {"deepseek_v3", "glm4_moe"}) {
    Fixture f = load_fixture(name);
    CHECK(make_router_backend(f.model, Device{}).ok());
  }
}
