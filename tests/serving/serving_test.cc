// Serving a live deployment with generated workloads: a scripted scenario (a kill and a
// rescale) replayed during bursty arrivals, and the SLO autoscaler (scaler{policy="slo"})
// resizing the deployment as demand comes and goes. Every request must still produce the
// reference engine's tokens, streamed once each.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "runtime/model/model.h"
#include "runtime/scheduling/perf_model.h"
#include "runtime/model/reference_engine.h"
#include "runtime/serving/load_driver.h"
#include "transformers_fixture.h"

using namespace janus;
using namespace std::chrono_literals;

namespace {

GraphSpec spec(const std::string& dir, int shards, int instances, int slots) {
  GraphSpec g;
  g.source = "<test>";
  g.model.path = dir;
  g.attention.shards = shards;
  g.attention.max_batch = 16;
  g.attention.kv_blocks = 256;
  g.experts.instances = instances;
  g.experts.slots = slots;
  g.router.side = "moe";
  return g;
}

std::vector<std::vector<int32_t>> reference(const std::string& dir, const std::vector<PlannedRequest>& plan) {
  std::vector<GenerateRequest> reqs;
  for (const PlannedRequest& p : plan) reqs.push_back(test::greedy_request(p.prompt, p.max_new_tokens));
  auto tokens = test::reference_tokens(dir, reqs);
  REQUIRE_MESSAGE(tokens.ok(), tokens.status().to_string());
  return *tokens;
}

std::vector<PlannedRequest> plan(const std::string& kind, double rate, int requests, uint64_t seed, double prompt, double output) {
  ArrivalSpec a;
  a.kind = kind;
  a.rate = rate;
  a.shape = 0.25;  // gamma: bursty, CV^2 = 4
  a.requests = requests;
  a.seed = seed;
  a.prompt.mean = prompt;
  a.output.mean = output;
  auto p = plan_workload(a, 256, 256);  // the fixtures' vocabulary
  REQUIRE(p.ok());
  return *p;
}

void check_tokens(const ServeReport& rep, const std::vector<std::vector<int32_t>>& ref) {
  REQUIRE(rep.records.size() == ref.size());
  CHECK(rep.failed == 0);
  for (size_t i = 0; i < ref.size(); ++i) {
    CAPTURE(i);
    CHECK(rep.records[i].ok);
    CHECK(rep.records[i].result == ref[i]);
    CHECK(rep.records[i].streamed == ref[i]);
  }
}

}  // namespace

TEST_CASE("a scripted kill and rescale replay during bursty arrivals and every request keeps its tokens") {
  const std::string dir = janus::test::fixture("mixtral");
  const auto requests = plan("gamma", 40, 16, 5, 6, 60);
  const auto ref = reference(dir, requests);
  GraphSpec g = spec(dir, 2, 3, 4);
  g.scenario = {{0.1, "kill", "expert-1", 0, 0, 0, "test:1"}, {0.25, "scale", "", 0, 1, 2, "test:2"}};
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(g, o);
  REQUIRE(d.ok());
  ScenarioPlayer player(**d, g.scenario);
  std::vector<std::string> lines;
  ServeReport rep = serve_workload(**d, requests, Slo{}, false, [&](double t) {
    for (auto& l : player.advance(t)) lines.push_back(l);
  });
  for (auto& l : player.advance(1e9)) lines.push_back(l);  // the run may end before an event is due
  check_tokens(rep, ref);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].find("kill expert-1 (test:1): done") != std::string::npos);
  CHECK(lines[1].find("scale to 1A2E (test:2): done") != std::string::npos);
  for (const Status& s : player.results()) CHECK(s.ok());
  auto rec = (*d)->recoveries();
  REQUIRE(!rec.empty());
  CHECK(rec[0].what.find("expert-1 died") != std::string::npos);
  CHECK(rec[0].died_s > 0);
  CHECK(rec[0].detected_s >= rec[0].died_s);
  CHECK(rec[0].installed_s >= rec[0].detected_s);
  MESSAGE("expert-1: detected " << (rec[0].detected_s - rec[0].died_s) * 1e3 << " ms after the kill, recovered "
                                << (rec[0].installed_s - rec[0].detected_s) * 1e3 << " ms after that");
  int shards = 0, instances = 0;
  for (const ActorSnapshot& x : (*d)->actors()) {
    shards += x.alive && x.kind == "AttentionShard";
    instances += x.alive && x.kind == "ExpertInstance";
  }
  CHECK(shards == 1);
  CHECK(instances == 2);
}

TEST_CASE("the SLO autoscaler grows the deployment under a burst, shrinks it after, and loses no token") {
  const std::string dir = janus::test::fixture("mixtral");
  janus::test::TempDir tmp;
  // A model where a shard's time grows with its rows: a burst needs more shards.
  PerfModel pm;
  pm.source = "test";
  pm.num_experts = 8;
  pm.top_k = 2;
  pm.slots = 4;
  for (int l = 0; l < 3; ++l) pm.layers.push_back({1e-4, 2e-3, 0, 1e-5, 1e-4, 0, 0, 0, 0});
  janus::test::write_file(tmp / "profile.json", pm.to_json());
  GraphSpec g = spec(dir, 1, 2, 4);
  g.scaler.policy = "slo";
  g.scaler.profile = tmp / "profile.json";
  g.scaler.tpot_slo_ms = 40;
  g.scaler.interval_s = 0.1;
  g.scaler.context = 64;
  g.scaler.min_attention = 1;
  g.scaler.max_attention = 3;
  g.scaler.min_moe = 2;
  g.scaler.max_moe = 3;
  const auto requests = plan("poisson", 200, 24, 9, 5, 80);  // a burst: 24 requests in ~0.1 s
  const auto ref = reference(dir, requests);
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(g, o);
  REQUIRE(d.ok());
  ServeReport rep = serve_workload(**d, requests, Slo{}, false);
  check_tokens(rep, ref);
  // Quiet now: within a few intervals the Scaler sees no demand and shrinks.
  std::vector<ScalingInfo> ds;
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < 10s) {
    ds = (*d)->scaling_decisions();
    if (!ds.empty() && ds.back().lambda == 0 && ds.back().attention == 1) break;
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(!ds.empty());
  int most = 0;
  bool grew = false;
  for (const ScalingInfo& x : ds) {
    most = std::max(most, x.attention);
    grew |= x.changed && x.attention > 1;
  }
  CHECK(grew);
  CHECK(most >= 2);
  CHECK(ds.back().attention == 1);
  CHECK(ds.back().moe == 2);
  for (const ScalingInfo& x : ds)
    if (x.feasible) CHECK(x.tpot_s <= 0.040);
}
