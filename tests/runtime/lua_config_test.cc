#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "runtime/config/lua_config.h"
#include "runtime/model/model.h"
#include "test_util.h"

using namespace janus;

namespace {

// Writes `code` to cfg.lua in a temp dir, loads and resolves it against the Qwen3-MoE
// fixture (8 experts); returns the error text, or "" when it resolved.
std::string error_of(const std::string& code, GraphSpec* out = nullptr, int cuda_devices = 0) {
  janus::test::TempDir d;
  janus::test::write_file(d / "cfg.lua", code);
  auto spec = load_lua_config(d / "cfg.lua");
  if (!spec.ok()) return spec.status().message();
  auto model = Model::load(janus::test::fixture("qwen3_moe"));
  REQUIRE(model.ok());
  Status s = resolve_graph(*spec, (*model)->config(), cuda_devices);
  if (!s.ok()) return s.message();
  if (out) *out = *spec;
  return "";
}

bool has(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return true;
  MESSAGE("\"" << text << "\" does not contain \"" << part << "\"");
  return false;
}

const std::string kModel = "model{path = \"" + janus::test::fixture("qwen3_moe") + "\"}\n";

}  // namespace

TEST_CASE("a config resolves: sections, defaults, Lua loops and functions") {
  GraphSpec g;
  const std::string code = kModel + R"(
local function spread(n, experts)
  local p = {}
  for i = 1, n do p[i] = {} end
  for e = 0, experts - 1 do table.insert(p[e % n + 1], e) end
  return p
end
attention{shards = 2, devices = {"cpu", "cpu"}, micro_batches = 2, max_batch = 8, kv_blocks = 64}
experts{instances = 3, slots = 4, placement = spread(3, 8)}
router{side = "attention"}
scheduler{policy = "random_replica", seed = 9}
workload{prompts = {{1, 2, 3}, {4}}, max_new_tokens = 5, temperature = 0.5}
)";
  REQUIRE(error_of(code, &g) == "");
  CHECK(g.attention.shards == 2);
  CHECK(g.attention.micro_batches == 2);
  CHECK(g.attention.kv_blocks == 64);
  CHECK(g.experts.instances == 3);
  CHECK(g.resolved_placement == std::vector<std::vector<int32_t>>{{0, 3, 6}, {1, 4, 7}, {2, 5}});
  CHECK_FALSE(g.egate());
  CHECK(g.scheduler.policy == "random_replica");
  CHECK(g.scheduler.seed == 9);
  CHECK(g.workload.prompts.size() == 2);
  CHECK(g.workload.temperature == doctest::Approx(0.5));
  CHECK(g.attention.max_seq_len == 512);  // the fixture's max_position_embeddings
}

TEST_CASE("auto placement: every expert at least once, spare slots become replicas on other instances") {
  GraphSpec g;
  REQUIRE(error_of(kModel + "experts{instances = 3, slots = 4}\n", &g) == "");
  std::vector<int> count(8, 0);
  for (const auto& inst : g.resolved_placement) {
    CHECK(inst.size() <= 4u);
    for (size_t i = 0; i < inst.size(); ++i) {
      ++count[static_cast<size_t>(inst[i])];
      for (size_t j = 0; j < i; ++j) CHECK(inst[i] != inst[j]);
    }
  }
  int total = 0;
  for (int c : count) {
    CHECK(c >= 1);
    total += c;
  }
  CHECK(total == 12);  // all 12 slots used: 4 spare replicas
}

TEST_CASE("config errors name the file and line and say what is wrong") {
  CHECK(has(error_of(kModel + "attention{shard = 2}\n"), "cfg.lua:2: attention{}: unknown key 'shard'"));
  CHECK(has(error_of(kModel + "\nattention{shards = \"two\"}\n"), "cfg.lua:3: attention{}: 'shards' must be an integer >= 1, got \"two\""));
  CHECK(has(error_of(kModel + "experts{instances = 2, slots = 3}\n"),
            "cfg.lua:2: experts{}: 2 instances x 3 slots = 6 slots, fewer than the model's 8 experts"));
  CHECK(has(error_of(kModel + "experts{instances = 2, devices = {\"cpu\", \"cuda:3\"}}\n"),
            "cfg.lua:2: experts{}: device 'cuda:3' does not exist (0 CUDA devices visible)"));
  CHECK(has(error_of(kModel + "attention{devices = \"gpu0\"}\n"), "device 'gpu0' is not \"cpu\" or \"cuda:N\""));
  CHECK(has(error_of(kModel + "experts{instances = 2, slots = 5, placement = {{0,1,2,3,3}, {4,5,6,7}}}\n"),
            "cfg.lua:2: experts{}: expert layout: instance 0 holds expert 3 twice"));
  CHECK(has(error_of(kModel + "experts{instances = 2, slots = 4, placement = {{0,1,2,3}, {4,5,6}}}\n"),
            "expert 7 has no replica on any instance"));
  CHECK(has(error_of(kModel + "experts{instances = 2, slots = 4, placement = {{0,1,2,3}, {4,5,6,9}}}\n"), "names expert 9"));
  CHECK(has(error_of(kModel + "attention{shards = 2\n"), "cfg.lua:3:"));  // Lua syntax error, reported by Lua
  CHECK(has(error_of(kModel + "local x = nil + 1\n"), "cfg.lua:2: attempt to perform arithmetic on a nil value"));
  CHECK(has(error_of(kModel + "router{side = \"egate\"}\n"), "cfg.lua:2: router{}: 'side' must be \"moe\" (EGate) or \"attention\" (AGate)"));
  CHECK(has(error_of(kModel + "scheduler{policy = \"fastest\"}\n"), "cfg.lua:2: scheduler{}: unknown policy 'fastest'"));
  CHECK(has(error_of(kModel + "attention{}\nattention{}\n"), "cfg.lua:3: attention{}: given twice (first at "));
  CHECK(has(error_of(kModel + "workload{prompts = {{1, 999}}}\n"), "cfg.lua:2: workload{}: prompt 1 holds token id 999"));
  CHECK(has(error_of(kModel + "workload{prompts = {{1, -2}}}\n"), "must be a non-negative integer, got -2"));
  CHECK(has(error_of(kModel + "attention(5)\n"), "cfg.lua:2: attention{}: expects one table argument"));
  CHECK(has(error_of(kModel + "scaler{shrink_after = 0}\n"), "cfg.lua:2: scaler{}: 'shrink_after' must be an integer >= 1, got 0"));
  CHECK(has(error_of("model{path = \"/nonexistent\", preset = \"x\"}\n"), "cfg.lua:1: model{}: give exactly one of 'path' and 'preset'"));
  CHECK(has(error_of(kModel + "os.exit(1)\n"), "attempt to index a nil value (global 'os')"));  // no os in configs
  auto missing = load_lua_config("/nonexistent/config.lua");
  CHECK(has(missing.status().message(), "/nonexistent/config.lua: no such config file"));
}

TEST_CASE("an unknown key is refused with the section's keys in the order they are read") {
  CHECK(has(error_of(kModel + "coordinator{tsl = true}\n"),
            "cfg.lua:2: coordinator{}: unknown key 'tsl' (keys: listen, secret, tls, cert, key, ca, join_timeout_s, port_file)"));
  CHECK(has(error_of(kModel + "exchange{modes = 1}\n"), "cfg.lua:2: exchange{}: unknown key 'modes' (keys: mode, transport, spin_us, probe)"));
  // Two bad keys: the first of the list is the one reported.
  CHECK(has(error_of(kModel + "simulate{zipf = -1, gpus_per_node = 0}\n"), "'gpus_per_node' must be an integer >= 1, got 0"));
  CHECK(has(error_of(kModel + "exchange{transport = \"udp\", mode = \"all\"}\n"),
            "'mode' must be \"single\", \"case1\", \"case2\" or \"auto\", got \"all\""));
}

TEST_CASE("a number read into a double keeps the default's precision when given as the default") {
  GraphSpec g;
  REQUIRE(error_of(kModel + "simulate{device_gb = 85.04, zipf = 0.1}\n", &g) == "");
  CHECK(g.simulate.device_gb == 85.04);             // as a float it equals the default's float
  CHECK(g.simulate.zipf == static_cast<double>(static_cast<float>(0.1)));  // read as a float
}

TEST_CASE("the default config file is the built-in default graph") {
  auto file = load_lua_config(std::string(JANUS_SOURCE_DIR) + "/examples/configs/default.lua");
  REQUIRE(file.ok());
  GraphSpec d = default_graph_spec();
  CHECK(file->model.preset == d.model.preset);
  CHECK(file->attention.shards == d.attention.shards);
  CHECK(file->attention.micro_batches == d.attention.micro_batches);
  CHECK(file->experts.instances == d.experts.instances);
  CHECK(file->experts.slots == d.experts.slots);
  CHECK(file->router.side == d.router.side);
  CHECK(file->scheduler.policy == d.scheduler.policy);
  CHECK(file->workload.prompts == d.workload.prompts);
  CHECK(file->workload.max_new_tokens == d.workload.max_new_tokens);
}

TEST_CASE("simulate{} reads the simulator's settings and refuses bad ones by name") {
  GraphSpec g;
  REQUIRE(error_of(kModel + "simulate{profile = \"p.json\", shape = \"deepseek-v2\", system = \"megascale\", nic_gbps = 200,\n"
                            "         study_batches = {32, 64}, study_slos_ms = {100}, max_devices = 24}\n",
                   &g) == "");
  CHECK(g.simulate.shape == "deepseek-v2");
  CHECK(g.simulate.system == "megascale");
  CHECK(g.simulate.nic_gbps == doctest::Approx(200));
  CHECK(g.simulate.study_batches == std::vector<int>{32, 64});
  CHECK(g.simulate.study_slos_ms == std::vector<double>{100});
  CHECK(g.simulate.max_devices == 24);
  CHECK(g.simulate.profile.size() > 6);  // made relative to the config's folder
  CHECK(g.simulate.profile.substr(g.simulate.profile.size() - 7) == "/p.json");
  CHECK(has(error_of(kModel + "simulate{system = \"vllm\"}\n"), "cfg.lua:2: simulate{}: 'system' must be \"janus\""));
  CHECK(has(error_of(kModel + "simulate{shape = \"gpt5\"}\n"), "'shape' must be \"model\" or \"deepseek-v2\""));
  CHECK(has(error_of(kModel + "simulate{study_batches = {64, -1}}\n"), "'study_batches'[2] must be a positive number"));
  CHECK(has(error_of(kModel + "simulate{memory_fraction = 2}\n"), "'memory_fraction' must be between"));
  CHECK(has(error_of(kModel + "simulate{gpus = 8}\n"), "unknown key 'gpus'"));
}

TEST_CASE("impossible sizes and scenario events that cannot happen are refused when the config loads") {
  // Once: max_batch 2^30 died in std::bad_alloc, a million instances hung `janus graph`, and
  // kill "expert-9" or scale{moe=100} on this graph were accepted and failed mid-run.
  CHECK(has(error_of(kModel + "attention{max_batch = 1073741824}\n"),
            "cfg.lua:2: attention{}: 'max_batch' 1073741824 is more than Janus supports (at most 65536)"));
  CHECK(has(error_of(kModel + "experts{instances = 1000000}\n"),
            "cfg.lua:2: experts{}: 'instances' 1000000 is more than Janus supports (at most 4096)"));
  CHECK(has(error_of(kModel + "attention{kv_blocks = 1073741824}\n"), "'kv_blocks' 1073741824 is more than Janus supports"));
  CHECK(has(error_of(kModel + "attention{max_batch = 4, micro_batches = 8}\n"), "'micro_batches' 8 is more than Janus supports (at most 4)"));
  const std::string graph = kModel + "attention{shards = 2}\nexperts{instances = 4, slots = 2}\n";
  CHECK(has(error_of(graph + "at(1, kill \"expert-9\")\n"),
            "cfg.lua:4: at(1.000000): kill \"expert-9\": no such actor at that time (2 attention shards, 4 expert instances"));
  CHECK(has(error_of(graph + "at(1, slow(\"expert\", 5))\n"), "slow \"expert\": no such actor"));
  CHECK(has(error_of(graph + "at(1, kill \"router-0\")\n"), "kill \"router-0\": no such actor"));  // EGate: one router
  CHECK(has(error_of(graph + "at(1, scale{attention = 1, moe = 3})\n"),
            "scale{moe=3}: 3 instances x 2 slots cannot hold the model's 8 experts"));
  CHECK(has(error_of(graph + "at(1, scale{attention = 1, moe = 100000})\n"), "'moe' 100000 is more than Janus supports"));
  CHECK(has(error_of(graph + "at(1, scale{attention = 0, moe = 4})\n"), "scale{} needs attention and moe of at least 1"));
  // Events see the graph as scaled by the events before them, in time order.
  CHECK(error_of(graph + "at(2, kill \"expert-5\")\nat(1, scale{attention = 2, moe = 6})\n") == "");
  CHECK(has(error_of(graph + "at(1, kill \"expert-5\")\nat(2, scale{attention = 2, moe = 6})\n"), "kill \"expert-5\": no such actor"));
  CHECK(error_of(graph + "at(1, kill \"expert-3\")\nat(1, slow(\"attention-1\", 20))\nat(2, kill \"scheduler\")\n") == "");
  CHECK(has(error_of(kModel + "router{side = \"attention\"}\nat(1, kill \"router-0\")\nat(1, kill \"router\")\n"),
            "cfg.lua:4: at(1.000000): kill \"router\": no such actor"));
}

TEST_CASE("the graph shows what the KV cache keeps per token: GQA K and V, MLA's latent against the MHA it replaces") {
  GraphSpec spec;
  REQUIRE(error_of(kModel, &spec) == "");
  auto qwen = Model::load(janus::test::fixture("qwen3_moe"));
  REQUIRE(qwen.ok());
  const ModelConfig& q = (*qwen)->config();
  const std::string gqa = graph_to_text(spec, q);
  // K and V of every kv head: 2 x kv heads x head_dim values; no MHA comparison for a cache that is MHA/GQA already.
  CHECK(has(gqa, "kv cache   " + std::to_string(2 * q.num_kv_heads * q.head_dim) + " values per token per layer, "));
  CHECK(gqa.find("as MHA") == std::string::npos);
  // DeepSeek-V2's attention shapes: the latent (512) and the RoPE key (64) per token, against
  // 128 heads of K 192 and V 128 that transformers' cache keeps.
  auto j = nlohmann::json::parse(janus::test::read_file(janus::test::fixture("deepseek_v2") + "/config.json"));
  j["num_attention_heads"] = 128;
  j["num_key_value_heads"] = 128;
  j["kv_lora_rank"] = 512;
  j["qk_rope_head_dim"] = 64;
  j["head_dim"] = 64;
  j["qk_nope_head_dim"] = 128;
  j["qk_head_dim"] = 192;
  j["v_head_dim"] = 128;
  auto v2 = parse_model_config(j.dump(), "v2 shapes");
  REQUIRE_MESSAGE(v2.ok(), v2.status().to_string());
  const std::string mla = graph_to_text(spec, *v2);
  CHECK(has(mla, "576 values per token per layer (latent + RoPE key)"));
  CHECK(has(mla, "as MHA (128 heads of K 192 + V 128) 40960 values, 71.1x more"));
  const std::string per_token = std::to_string(576 * v2->num_layers * 4);
  auto js = nlohmann::json::parse(graph_to_json(spec, *v2));
  CHECK(js["kv_cache"]["values_per_token_layer"] == 576);
  CHECK(js["kv_cache"]["mha_values_per_token_layer"] == 40960);
  CHECK(std::to_string(js["kv_cache"]["bytes_per_token_f32"].get<int64_t>()) == per_token);
}
