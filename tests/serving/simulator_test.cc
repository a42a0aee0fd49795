// `janus simulate`'s model (runtime/serving/simulator.h): shapes and memory, step times
// against hand computation, the real policies inside, serving in virtual time without
// losing a token, the Scaler's decisions as load changes, and the study's choice.
#include <doctest/doctest.h>

#include <numeric>

#include "runtime/serving/simulator.h"
#include "test_util.h"

using namespace janus;

namespace {

// A profile with flat costs, so step times can be computed by hand: attention 1 ms per
// layer whatever the batch, experts 2 ms per layer whatever a_max, no messaging.
PerfModel flat_profile() {
  PerfModel p;
  p.num_experts = 16;
  p.top_k = 2;
  p.slots = 16;
  p.attention_layer_bytes = 1e6;
  p.expert_bytes = 1e6;
  p.kv_bytes_per_token = 1024;
  LayerCoefficients l;
  l.c_a = 1e-3;
  l.beta = 1e-12;
  l.c_e = 2e-3;
  p.layers = {l};
  return p;
}

SimShape small_shape() {
  SimShape s;
  s.name = "small";
  s.layers = 4;
  s.sparse_layers = 4;
  s.experts = 16;
  s.top_k = 2;
  s.hidden = 256;
  s.expert_bytes = 1e6;              // the profile's: expert_scale 1
  s.attention_layer_bytes = 1e6;     // c_a stays 1 ms
  s.step_bytes = 0;
  s.attention_bytes = 1e9;
  s.kv_bytes_per_token_layer = 256;  // 1 KiB per token over 4 layers
  return s;
}

SimCosts small_costs() {
  auto c = SimCosts::from_profile(flat_profile(), small_shape());
  REQUIRE(c.ok());
  c->device_bytes = 10e9;
  c->memory_fraction = 1.0;
  c->link.nic_latency_s = 0;
  c->link.nvlink_latency_s = 0;
  c->link.nic_bytes_per_s = 1e18;
  c->link.nvlink_bytes_per_s = 1e18;
  c->link.per_message_s = 0;
  return *c;
}

PlannedRequest req(double at, int prompt, int out) { return {at, std::vector<int32_t>(static_cast<size_t>(prompt), 1), out}; }

}  // namespace

TEST_CASE("DeepSeek-V2's shape has the sizes of its model card") {
  const SimShape s = SimShape::deepseek_v2();
  CHECK(s.expert_bytes == 3.0 * 5120 * 1536 * 2);
  CHECK(s.kv_bytes_per_token_layer == 1152);
  // ~236B parameters in BF16: experts 160 x 59 layers plus the attention side.
  const double total = s.attention_bytes + 160.0 * 59 * s.expert_bytes;
  CHECK(total / 2 == doctest::Approx(236e9).epsilon(0.03));
  CHECK(SimShape::builtin("gpt-9").status().code() == ErrorCode::kNotFound);
}

TEST_CASE("memory decides which deployments exist") {
  auto c = SimCosts::from_profile(flat_profile(), SimShape::deepseek_v2());
  REQUIRE(c.ok());
  c->device_bytes = 85.04e9;  // an H100's 79.2 GiB
  c->memory_fraction = 0.92;
  CHECK(c->expert_slots() == 28);
  CHECK(sim_memory_check(*c, {SimSystem::kJanus, 1, 5}).find("cannot hold 160 experts") != std::string::npos);
  CHECK(sim_memory_check(*c, {SimSystem::kJanus, 1, 6}).empty());
  CHECK(sim_memory_check(*c, {SimSystem::kMonolithic, 8, 0}).empty());  // TP-8 attention: 1/8 of it per GPU
  CHECK(!sim_memory_check(*c, {SimSystem::kMonolithicDp, 8, 0}).empty());  // a whole attention copy per GPU
  CHECK(sim_memory_check(*c, {SimSystem::kMonolithicDp, 16, 0}).empty());
  CHECK(sim_memory_check(*c, {SimSystem::kMonolithic, 12, 0}).find("whole nodes") != std::string::npos);
  auto m = StepModel::create(*c, {SimSystem::kJanus, 1, 5});
  CHECK(m.status().code() == ErrorCode::kResourceExhausted);
  PerfModel old = flat_profile();
  old.expert_bytes = 0;  // a profile from before byte counts were recorded
  CHECK(SimCosts::from_profile(old, small_shape()).status().message().find("run it again") != std::string::npos);
}

TEST_CASE("a Janus step costs attention + exchange + experts per layer, by hand") {
  SimCosts c = small_costs();
  c.link.nic_bytes_per_s = 1e9;  // now the exchange costs something
  c.link.nvlink_bytes_per_s = 1e10;
  auto m = StepModel::create(c, {SimSystem::kJanus, 2, 2});
  REQUIRE(m.ok());
  auto t = m->step({30, 10}, {300, 100}, 0);
  REQUIRE(t.ok());
  const double row = 256 * 2;
  // One MoE node of 2 GPUs: the busiest shard sends 30 rows, the node takes 40 over 2 NICs,
  // then 40 rows over NVLink; both ways.
  const double one_way = std::max(30 * row, 40 * row / 2) / 1e9 + 40 * row / 1e10;
  CHECK(t->attention == doctest::Approx(4 * 1e-3));
  CHECK(t->exchange == doctest::Approx(4 * 2 * one_way));
  CHECK(t->experts == doctest::Approx(4 * 2e-3).epsilon(1e-6));
  CHECK(t->total == doctest::Approx(t->attention + t->exchange + t->experts + t->fixed));
  CHECK(t->amax >= 1);
  CHECK(t->amax <= 16);
}

TEST_CASE("AEBS inside the step model activates fewer experts per instance than a random replica") {
  SimCosts c = small_costs();
  c.zipf = 0.8;
  c.expert_model.moe_curve = {{1, 1e-4}, {16, 1.6e-3}};  // now a_max matters
  double aebs = 0, random = 0;
  auto j = StepModel::create(c, {SimSystem::kJanus, 1, 4});
  auto ms = StepModel::create(c, {SimSystem::kMegaScale, 1, 4});
  REQUIRE(j.ok());
  REQUIRE(ms.ok());
  c.micro_batches = 1;
  auto ms1 = StepModel::create(c, {SimSystem::kMegaScale, 1, 4});
  REQUIRE(ms1.ok());
  for (uint64_t s = 0; s < 20; ++s) {
    aebs += j->step({24}, {240}, s)->amax;
    random += ms1->step({24}, {240}, s)->amax;
  }
  CHECK(aebs < random);
  // Ping-pong halves the batch each side sees but reads the weights twice.
  auto two = ms->step({24}, {240}, 0);
  REQUIRE(two.ok());
  CHECK(two->attention == doctest::Approx(4 * 2 * 1e-3));
}

TEST_CASE("serving in virtual time: the step clock, TTFT and TPOT by hand") {
  SimCosts c = small_costs();
  SimServingOptions o;
  o.initial = {SimSystem::kJanus, 1, 1};
  o.requests = {req(0, 16, 4)};
  auto r = simulate_serving(c, o);
  REQUIRE(r.ok());
  // Every step costs 4 layers x (1 ms attention + 2 ms experts) = 12 ms.
  CHECK(r->completed == 1);
  CHECK(r->steps == 4);
  CHECK(r->tokens == 4);
  CHECK(r->virtual_s == doctest::Approx(0.048));
  CHECK(r->ttft[0] == doctest::Approx(0.012));
  CHECK(r->tpot[0] == doctest::Approx(0.012));
  CHECK(r->device_seconds == doctest::Approx(2 * 0.048));
}

TEST_CASE("serving admits what fits, queues the rest, and every token comes exactly once") {
  SimCosts c = small_costs();
  c.device_bytes = 1e9 + 64 * 16 * 1024.0;  // 64 KV blocks of 16 tokens per shard beside the weights
  SimServingOptions o;
  o.initial = {SimSystem::kJanus, 2, 2};
  for (int i = 0; i < 40; ++i) o.requests.push_back(req(0.001 * i, 40 + i % 7, 60 + i % 13));
  auto r = simulate_serving(c, o);
  REQUIRE(r.ok());
  CHECK(r->completed == 40);
  int64_t expected = 0;
  for (const auto& q : o.requests) expected += q.max_new_tokens;
  CHECK(r->tokens == expected);
  // 64 blocks hold 8 such requests per shard at once: the rest wait for one to finish.
  CHECK(*std::max_element(r->ttft.begin(), r->ttft.end()) > 60 * 0.012);
  o.requests = {req(0, 2000, 100)};  // 132 blocks: more than a shard has
  CHECK(simulate_serving(c, o).status().code() == ErrorCode::kResourceExhausted);
}

TEST_CASE("the simulated Scaler grows and shrinks the deployment with the load and loses no token") {
  SimCosts c = small_costs();
  c.alpha = 1e-3;  // attention now grows with rows: more load needs more shards
  SimServingOptions o;
  o.initial = {SimSystem::kJanus, 1, 1};
  o.scaling_model = scaling_model(c);
  o.scaler.policy = "slo";
  o.scaler.tpot_slo_ms = 60;
  o.scaler.interval_s = 2;
  o.scaler.context = 40;
  o.scaler.max_attention = 6;
  o.scaler.max_moe = 2;
  // A quiet start, a burst, quiet again.
  int64_t expected = 0;
  double t = 0;
  for (int i = 0; i < 400; ++i) {
    const bool burst = i >= 20 && i < 380;
    t += burst ? 0.05 : 0.5;
    o.requests.push_back(req(t, 8, 32));
    expected += 32;
  }
  auto r = simulate_serving(c, o);
  REQUIRE(r.ok());
  CHECK(r->completed == 400);
  CHECK(r->tokens == expected);
  int most = 0;
  for (const SimDecision& d : r->decisions) most = std::max(most, d.attention);
  CHECK(most >= 3);
  REQUIRE(!r->decisions.empty());
  CHECK(r->decisions.back().attention <= 2);  // quiet again at the end
  CHECK(r->devices_over_time.size() >= 3);
  CHECK(r->moved_requests >= 0);
  SimServingOptions mono = o;
  mono.initial = {SimSystem::kMonolithic, 8, 0};
  CHECK(simulate_serving(c, mono).status().code() == ErrorCode::kInvalidArgument);  // Algorithm 2 is Janus's
}

TEST_CASE("the study keeps, per system, batch and SLO, the best deployment within the SLO") {
  SimCosts c = small_costs();
  c.alpha = 2e-5;
  c.expert_model.moe_curve = {{1, 2e-4}, {16, 2e-3}};
  StudyOptions o;
  o.batches = {32, 256};
  o.slos_ms = {20, 40};
  o.max_devices = 16;
  o.steps = 3;
  auto r = run_study(c, o);
  REQUIRE(r.ok());
  CHECK(r->rows.size() == 4 * 2 * 2);
  for (const StudyRow& row : r->rows) {
    if (!row.feasible) continue;
    CHECK(row.best.tpot_s * 1e3 <= row.slo_ms);
    for (const StudyCandidate& x : r->candidates)
      if (x.config.system == row.system && x.batch == row.batch && x.infeasible.empty() && x.tpot_s * 1e3 <= row.slo_ms)
        CHECK(x.tokens_per_s_per_device <= row.best.tokens_per_s_per_device + 1e-9);
  }
  const std::string csv = study_csv(*r);
  CHECK(csv.rfind("system,batch,slo_ms,feasible,config", 0) == 0);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 17);
}
