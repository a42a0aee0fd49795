// Elasticity and recovery: the deployment changes shape while it serves — scaled up and
// down, members killed mid-step — and every admitted request still produces exactly the
// reference engine's tokens, none lost, none twice.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "actors/deployment.h"
#include "transformers_fixture.h"

using namespace janus;
using namespace std::chrono_literals;

namespace {

struct Case {
  std::string dir;
  std::vector<GenerateRequest> requests;
  std::vector<std::vector<int32_t>> reference;
};

// The fixture's prompts, each asked for `new_tokens`, and what the reference engine makes.
Case make_case(const std::string& fixture, int new_tokens) {
  const test::TransformersFixture& f = test::transformers_fixture(fixture);
  Case c;
  c.dir = f.dir;
  c.requests = test::greedy_requests(f.prompts, new_tokens);
  auto out = test::reference_tokens(c.dir, c.requests);
  REQUIRE(out.ok());
  c.reference = *out;
  return c;
}

GraphSpec spec(const Case& c, int shards, int instances, int slots, const std::string& side) {
  GraphSpec g;
  g.source = "<test>";
  g.model.path = c.dir;
  g.attention.shards = shards;
  g.attention.micro_batches = 2;
  g.attention.max_batch = 8;
  g.attention.kv_blocks = 96;
  g.experts.instances = instances;
  g.experts.slots = slots;
  g.router.side = side;
  return g;
}

// Submits every request, runs `during` once `after_tokens` tokens have streamed, and checks
// each request's tokens (and that no token arrived twice: the stream equals the result).
void run_and_check(Deployment& d, const Case& c, int after_tokens, const std::function<void()>& during) {
  std::atomic<int> tokens{0};
  std::vector<RequestHandle> hs;
  std::vector<std::vector<int32_t>> streamed(c.requests.size());
  std::mutex mu;
  for (size_t i = 0; i < c.requests.size(); ++i)
    hs.push_back(d.submit(c.requests[i], [&, i](int32_t t) {
      std::lock_guard<std::mutex> lk(mu);
      streamed[i].push_back(t);
      ++tokens;
    }));
  const auto t0 = std::chrono::steady_clock::now();
  while (tokens < after_tokens && std::chrono::steady_clock::now() - t0 < 60s) std::this_thread::sleep_for(1ms);
  REQUIRE(tokens >= after_tokens);
  during();
  for (size_t i = 0; i < hs.size(); ++i) {
    CAPTURE(i);
    REQUIRE(hs[i].result.wait_for(120s) == std::future_status::ready);
    auto r = hs[i].result.get();
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    CHECK(r->tokens == c.reference[i]);
    std::lock_guard<std::mutex> lk(mu);
    CHECK(streamed[i] == r->tokens);
  }
}

// The attention shards and expert instances alive now.
std::pair<int, int> live_shards_and_instances(Deployment& d) {
  int shards = 0, instances = 0;
  for (const ActorSnapshot& a : d.actors()) {
    if (!a.alive) continue;
    shards += a.kind == "AttentionShard";
    instances += a.kind == "ExpertInstance";
  }
  return {shards, instances};
}

}  // namespace

TEST_CASE("a killed expert instance is replaced, the step re-runs, every request gets its reference tokens") {
  const Case c = make_case("mixtral", 120);
  for (const std::string side : {"moe", "attention"}) {
    CAPTURE(side);
    DeploymentOptions o;
    o.threads = 2;
    auto d = Deployment::create(spec(c, 2, 3, 4, side), o);  // 12 slots for 8 experts: some replicas
    REQUIRE(d.ok());
    run_and_check(**d, c, 40, [&] { REQUIRE((*d)->kill("expert-1").ok()); });
    auto rec = (*d)->recoveries();
    REQUIRE(rec.size() == 1);
    CHECK(rec[0].what.find("expert-1 died") != std::string::npos);
    CHECK(rec[0].what.find("expert-3") != std::string::npos);  // the replacement
    CHECK(rec[0].installed_s >= rec[0].detected_s);
    MESSAGE(side << ": recovered in " << (rec[0].installed_s - rec[0].detected_s) * 1e3 << " ms after detection");
    // The replacement serves: the dead one is shown down, expert-3 up.
    bool dead = false, replacement = false;
    for (const ActorSnapshot& a : (*d)->actors()) {
      if (a.name == "expert-1") dead = !a.alive;
      if (a.name == "expert-3") replacement = a.alive && a.messages > 0;
    }
    CHECK(dead);
    CHECK(replacement);
  }
}

TEST_CASE("a killed attention shard's requests resume on the others with their exact tokens") {
  const Case c = make_case("qwen3_moe", 100);
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(spec(c, 3, 2, 4, "moe"), o);
  REQUIRE(d.ok());
  run_and_check(**d, c, 60, [&] { REQUIRE((*d)->kill("attention-1").ok()); });
  auto rec = (*d)->recoveries();
  REQUIRE(rec.size() == 1);
  CHECK(rec[0].what.find("attention-1 died") != std::string::npos);
}

TEST_CASE("scaling up then down while serving changes membership under new epochs and loses no token") {
  const Case c = make_case("mixtral", 150);
  for (const std::string side : {"moe", "attention"}) {
    CAPTURE(side);
    DeploymentOptions o;
    o.threads = 2;
    auto d = Deployment::create(spec(c, 1, 2, 5, side), o);
    REQUIRE(d.ok());
    run_and_check(**d, c, 30, [&] {
      REQUIRE((*d)->scale(3, 4).ok());
      auto names = (*d)->actor_names();
      CHECK(std::count(names.begin(), names.end(), "attention-2") == 1);
      CHECK(std::count(names.begin(), names.end(), "expert-3") == 1);
      std::this_thread::sleep_for(50ms);
      REQUIRE((*d)->scale(1, 2).ok());
    });
    const auto [shards, instances] = live_shards_and_instances(**d);
    CHECK(shards == 1);
    CHECK(instances == 2);
    CHECK((*d)->scale(1, 1).code() == ErrorCode::kUnavailable);  // 1 x 5 slots cannot hold 8 experts
  }
}

namespace {

std::vector<std::string> sorted_names(Deployment& d) {
  auto v = d.actor_names();
  std::sort(v.begin(), v.end());
  return v;
}

// The roster's live actors, once the retired ones' exits are in (they go asynchronously).
std::vector<std::string> names_settled(Deployment& d, const std::vector<std::string>& want) {
  auto now = sorted_names(d);
  for (auto t0 = std::chrono::steady_clock::now(); now != want && std::chrono::steady_clock::now() - t0 < 20s;
       std::this_thread::sleep_for(10ms))
    now = sorted_names(d);
  return now;
}

struct RollbackPoint {
  // Plain fields (not a nested RescaleFault): GCC 12 at -O3 warns falsely about the
  // nested strings of a braced list (-Wmaybe-uninitialized).
  RescaleFault::At at;
  const char* member;
  const char* side;
  const char* failed_at;  // what the Status names: "<step> of <member>"
  const char* why;        // and why
};

}  // namespace

// The rollback matrix: each failure point of a scale-up from 1A2E to 2A3E leaves the
// deployment on its old membership and epoch with the failure reported and counted, the
// new members gone, requests exact; a second rescale then succeeds.
TEST_CASE("a scale-up that fails at any step rolls back to the previous membership, and the next one succeeds") {
  const Case c = make_case("mixtral", 60);
  using At = RescaleFault::At;
  const std::vector<RollbackPoint> points = {
      {At::kSpawn, "attention-1", "moe", "spawn of attention-1", "could not be spawned"},
      {At::kSpawn, "router-1", "attention", "spawn of router-1", "could not be spawned"},
      {At::kSpawn, "expert-2", "moe", "spawn of expert-2", "could not be spawned"},
      {At::kLoad, "expert-2", "attention", "load of expert-2", "out of memory"},
      {At::kLoad, "expert-0", "moe", "load of expert-0", "out of memory"},  // a kept instance's new experts
      {At::kJoin, "expert-2", "moe", "join of expert-2", "died before it joined"},
      {At::kStall, "attention-1", "attention", "join of attention-1", "did not acknowledge epoch 2 within 300 ms"},
  };
  for (const RollbackPoint& p : points) {
    CAPTURE(p.failed_at);
    CAPTURE(p.side);
    DeploymentOptions o;
    o.threads = 2;
    o.rescale_faults = {RescaleFault{p.at, p.member}};
    o.rescale_join_timeout_s = 0.3;
    auto d = Deployment::create(spec(c, 1, 2, 5, p.side), o);
    REQUIRE(d.ok());
    const auto names = sorted_names(**d);
    const auto placement = (**d).placement();
    const uint32_t epoch = (**d).metrics().epoch;
    CHECK(epoch == 1);
    run_and_check(**d, c, 20, [&] {
      const Status failed = (*d)->scale(2, 3);
      CHECK(failed.code() == ErrorCode::kUnavailable);
      CHECK(failed.message().find(std::string("failed at ") + p.failed_at) != std::string::npos);
      CHECK(failed.message().find(p.why) != std::string::npos);
      CHECK(failed.message().find("still serving epoch 1") != std::string::npos);
      MetricsSnapshot m = (*d)->metrics();
      CHECK(m.epoch == epoch);
      CHECK(m.rescales_failed == 1);
      CHECK(m.rescales == 0);
      CHECK(m.last_rescale_failure.find(p.failed_at) != std::string::npos);
      CHECK((*d)->placement() == placement);
      CHECK(names_settled(**d, names) == names);  // the new members exited: no leak
      CHECK((*d)->recoveries().empty());
      // Not wedged: the same rescale, now without the fault.
      REQUIRE((*d)->scale(2, 3).ok());
    });
    MetricsSnapshot m = (*d)->metrics();
    CHECK(m.epoch == epoch + 1);
    CHECK(m.rescales == 1);
    CHECK(m.rescales_failed == 1);
    const auto [shards, instances] = live_shards_and_instances(**d);
    CHECK(shards == 2);
    CHECK(instances == 3);
  }
}

// A scale-down from 3A4E to 1A2E that loses a member after its weights are in place, just
// before the hand-off: a retiring shard (its step is cut short and re-run without it) or a
// kept instance (replaced) — the rescale finishes as a recovery, every token exact.
TEST_CASE("a scale-down that loses a member midway finishes as a recovery with exact tokens") {
  const Case c = make_case("mixtral", 60);
  for (const std::string lost : {"attention-2", "expert-0"}) {
    for (const std::string side : {"moe", "attention"}) {
      CAPTURE(lost);
      CAPTURE(side);
      DeploymentOptions o;
      o.threads = 2;
      o.rescale_faults = {{RescaleFault::At::kJoin, lost}};
      auto d = Deployment::create(spec(c, 3, 4, 4, side), o);
      REQUIRE(d.ok());
      run_and_check(**d, c, 20, [&] { REQUIRE((*d)->scale(1, 2).ok()); });
      auto rec = (*d)->recoveries();
      REQUIRE(rec.size() == 1);
      CHECK(rec[0].what.find(lost + " died") != std::string::npos);
      MetricsSnapshot m = (*d)->metrics();
      CHECK(m.rescales == 1);
      CHECK(m.rescales_failed == 0);
      const auto [shards, instances] = live_shards_and_instances(**d);
      CHECK(shards == 1);
      CHECK(instances == 2);
    }
  }
}

TEST_CASE("placement() and experts() show the live layout after a scale, the one the Scheduler routes by") {
  const Case c = make_case("mixtral", 24);
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(spec(c, 1, 2, 5, "moe"), o);
  REQUIRE(d.ok());
  const auto start = (*d)->placement();
  CHECK(start.size() == 2);
  run_and_check(**d, c, 4, [&] { REQUIRE((*d)->scale(1, 4).ok()); });
  const auto live = (*d)->placement();
  REQUIRE(live.size() == 4);
  std::vector<int> held(8, 0);
  for (const auto& experts : live) {
    CHECK(experts.size() <= 5);
    for (int32_t e : experts) ++held.at(static_cast<size_t>(e));
  }
  for (int e = 0; e < 8; ++e) CHECK(held[static_cast<size_t>(e)] >= 1);
  // The heat map's layout is the same one, sized for its instances.
  auto h = (*d)->experts(0);
  REQUIRE(h.ok());
  CHECK(h->placement == live);
  CHECK(h->num_instances == 4);
  CHECK(h->per_instance_expert.size() == static_cast<size_t>(4 * h->num_experts));
  // And the requests served after the scale are routed by it: still the reference tokens.
  run_and_check(**d, c, 0, [] {});
  REQUIRE((*d)->scale(1, 2).ok());
  CHECK((*d)->placement().size() == 2);
}
