// The actor graph against the reference engine: token for token, over shapes, gate
// placements, policies and arrival patterns; and its failure behaviour.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>

#include "actors/deployment.h"
#include "runtime/model/reference_engine.h"
#include "deployment_checks.h"
#include "transformers_fixture.h"

using namespace janus;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  std::string dir;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> reference;  // reference-engine greedy tokens, 16 each
};

const Fixture& fixture(const std::string& name) {
  static std::map<std::string, Fixture> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  const test::TransformersFixture& t = test::transformers_fixture(name);
  Fixture f{t.dir, t.prompts, {}};
  auto out = test::reference_tokens(t.dir, test::greedy_requests(t.prompts, 16));
  REQUIRE(out.ok());
  f.reference = *out;
  // The reference engine itself equals transformers (tests/runtime): the chain holds.
  for (size_t i = 0; i < f.reference.size(); ++i) CHECK(f.reference[i] == t.greedy[i]);
  return cache.emplace(name, std::move(f)).first->second;
}

struct Shape {
  int shards, instances;
  bool spare;
  int micro_batches;
  std::string side, policy;
};

std::string describe(const Shape& s) {
  return std::to_string(s.shards) + " shards x " + std::to_string(s.instances) + " instances" + (s.spare ? " +spare" : "") +
         ", m=" + std::to_string(s.micro_batches) + ", " + s.side + ", " + s.policy;
}

GraphSpec spec_for(const Fixture& f, const Shape& s, int experts) {
  GraphSpec g;
  g.source = "<test>";
  g.model.path = f.dir;
  g.attention.shards = s.shards;
  g.attention.micro_batches = s.micro_batches;
  g.attention.max_batch = 8;
  g.attention.kv_blocks = 64;
  g.experts.instances = s.instances;
  test::place_experts(g, experts, s.spare);
  g.router.side = s.side;
  g.scheduler.policy = s.policy;
  g.scheduler.seed = 11;
  g.workload.prompts = f.prompts;
  g.workload.max_new_tokens = 16;
  g.workload.ignore_eos = true;
  return g;
}

void check_matches_reference(const std::string& model, const Shape& s) {
  const Fixture& f = fixture(model);
  CAPTURE(model);
  CAPTURE(describe(s));
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(spec_for(f, s, 8), o);
  REQUIRE_MESSAGE(d.ok(), d.status().to_string());
  auto results = (*d)->run_workload();
  REQUIRE(results.size() == f.prompts.size());
  for (size_t i = 0; i < results.size(); ++i) {
    REQUIRE_MESSAGE(results[i].ok(), results[i].status().to_string());
    CHECK(results[i]->tokens == f.reference[i]);
  }
  MetricsSnapshot m = (*d)->metrics();
  CHECK(m.completed == f.prompts.size());
  CHECK(m.tokens == static_cast<int64_t>(16 * f.prompts.size()));
  for (const LayerAmax& a : m.amax) {
    CHECK(a.batches > 0);
    CHECK(a.max >= 1);
    CHECK(a.max <= 8);
  }
}

// A covering set of shapes: every value of every dimension appears, with varied partners.
std::vector<Shape> shapes() {
  const std::vector<std::string> policies = {"aebs", "random_replica", "primary", "token_balanced"};
  std::vector<Shape> out;
  for (int i = 0; i < 16; ++i)
    out.push_back({1 + i % 3, 1 + (i * 5) % 6, (i / 2) % 2 == 1, 1 + (i / 4) % 2, (i % 2) ? "attention" : "moe",
                   policies[static_cast<size_t>((i + i / 4) % 4)]});
  return out;
}

}  // namespace

TEST_CASE("Qwen3-MoE fixture: the actor graph's tokens equal the reference engine's over a matrix of shapes") {
  for (const Shape& s : shapes()) check_matches_reference("qwen3_moe", s);
}

TEST_CASE("Mixtral fixture: the actor graph's tokens equal the reference engine's over a matrix of shapes") {
  for (const Shape& s : shapes()) check_matches_reference("mixtral", s);
}

TEST_CASE("Qwen2-MoE fixture (shared expert and dense layer on the attention side): the graph's tokens equal the reference engine's") {
  for (const Shape& s : shapes()) check_matches_reference("qwen2_moe", s);
}

TEST_CASE("Qwen2-MoE's shared expert runs on the attention shards, once per sparse layer batch, before its combine") {
  const Fixture& f = fixture("qwen2_moe");
  GraphSpec g = spec_for(f, {2, 3, false, 2, "moe", "aebs"}, 8);
  DeploymentOptions o;
  o.threads = 2;
  o.trace = true;
  auto d = Deployment::create(g, o);
  REQUIRE_MESSAGE(d.ok(), d.status().to_string());
  auto results = (*d)->run_workload();
  for (size_t i = 0; i < results.size(); ++i) {
    REQUIRE(results[i].ok());
    CHECK(results[i]->tokens == f.reference[i]);
  }
  const auto spans = (*d)->trace().spans();
  auto model = Model::load(f.dir);
  REQUIRE(model.ok());
  int shared = 0;
  for (const TraceSpan& s : spans) {
    if (s.what != "shared") continue;
    ++shared;
    CAPTURE(s.actor);
    CAPTURE(s.layer);
    CHECK(s.actor.rfind("attention-", 0) == 0);
    CHECK((*model)->config().is_sparse(s.layer));
    // The combine of the same layer batch comes after it, on the same shard.
    bool combined_after = false;
    for (const TraceSpan& c : spans)
      if (c.what == "combine" && c.actor == s.actor && c.step == s.step && c.layer == s.layer &&
          c.micro_batch == s.micro_batch && c.start_s >= s.end_s)
        combined_after = true;
    CHECK(combined_after);
  }
  CHECK(shared > 0);
  int combines = 0;
  for (const TraceSpan& s : spans) combines += s.what == "combine" ? 1 : 0;
  CHECK(shared == combines);  // every sparse layer batch with rows ran it exactly once
}

TEST_CASE("OLMoE fixture: the actor graph's tokens equal the reference engine's over a matrix of shapes") {
  for (const Shape& s : shapes()) check_matches_reference("olmoe", s);
}

TEST_CASE("DeepSeek-V2 fixture (MLA latent cache, shared expert on the attention side): the graph's tokens equal the reference engine's") {
  for (const Shape& s : shapes()) check_matches_reference("deepseek_v2", s);
  for (const Shape& s : shapes()) check_matches_reference("deepseek_v2_lite", s);
}

TEST_CASE("DeepSeek-V2 with YaRN and DeepSeek-V3 (noaux_tc gate on either side): the graph's tokens equal the reference engine's") {
  for (const Shape& s : shapes()) check_matches_reference("deepseek_v2_yarn", s);
  for (const Shape& s : shapes()) check_matches_reference("deepseek_v3", s);
}

TEST_CASE("GLM-4-MoE fixture (partial rotary, q/k/v biases, noaux_tc gate, shared expert): the graph's tokens equal the reference engine's") {
  for (const Shape& s : shapes()) check_matches_reference("glm4_moe", s);
}

TEST_CASE("requests of mixed lengths arriving while others decode, some waiting for KV blocks") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {2, 3, true, 2, "moe", "aebs"}, 8);
  // 3 blocks of 16 tokens per shard: room for at most two of these requests at a time
  // (each needs 1-3 blocks), so the rest must wait at the Frontend, and none is dropped.
  g.attention.kv_blocks = 3;
  g.workload.prompts.clear();
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(g, o);
  REQUIRE_MESSAGE(d.ok(), d.status().to_string());
  test::check_requests_joining_while_others_decode(**d, f.prompts, f.reference, {5, 0, 3}, {1, 4, 2}, 30s);
}

TEST_CASE("a request that can never fit a shard's cache is refused at once") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {1, 2, false, 1, "moe", "aebs"}, 8);
  g.attention.kv_blocks = 2;
  auto d = Deployment::create(g);
  REQUIRE(d.ok());
  GenerateRequest r;
  r.prompt = f.prompts[5];  // 20 tokens + 16 new = 36 positions: 3 blocks
  r.max_new_tokens = 16;
  auto h = (*d)->submit(r);
  REQUIRE(h.result.wait_for(10s) == std::future_status::ready);
  auto out = h.result.get();
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().message().find("needs 3 KV blocks, more than a shard's whole cache (2)") != std::string::npos);
}

TEST_CASE("with recovery off, an expert instance that dies mid-run fails the affected requests with a clear error, no hang") {
  const Fixture& f = fixture("mixtral");
  GraphSpec g = spec_for(f, {2, 3, false, 1, "moe", "aebs"}, 8);
  g.workload.prompts.clear();
  g.scaler.recover = false;
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(g, o);
  REQUIRE(d.ok());
  std::atomic<int> tokens{0};
  std::vector<RequestHandle> hs;
  for (const GenerateRequest& r : test::greedy_requests(f.prompts, 400)) hs.push_back((*d)->submit(r, [&](int32_t) { ++tokens; }));
  const auto t0 = std::chrono::steady_clock::now();
  while (tokens < 12 && std::chrono::steady_clock::now() - t0 < 30s) std::this_thread::sleep_for(1ms);
  REQUIRE((*d)->kill("expert-1").ok());
  int failed = 0;
  for (auto& h : hs) {
    REQUIRE(h.result.wait_for(30s) == std::future_status::ready);
    auto r = h.result.get();
    if (!r.ok()) {
      ++failed;
      CHECK(r.status().message().find("expert instance expert-1 died") != std::string::npos);
    }
  }
  CHECK(failed > 0);
  // Later requests fail fast too, naming the dead instance.
  GenerateRequest again;
  again.prompt = f.prompts[4];
  again.max_new_tokens = 8;
  auto h = (*d)->submit(again);
  REQUIRE(h.result.wait_for(30s) == std::future_status::ready);
  auto r = h.result.get();
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("expert-1 died") != std::string::npos);
  CHECK((*d)->kill("expert-9").code() == ErrorCode::kNotFound);
}

TEST_CASE("shutdown with requests in flight resolves every request and returns") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {2, 2, true, 2, "attention", "random_replica"}, 8);
  auto d = Deployment::create(g);
  REQUIRE(d.ok());
  std::atomic<int> tokens{0};
  std::vector<RequestHandle> hs;
  for (const GenerateRequest& r : test::greedy_requests(f.prompts, 400)) hs.push_back((*d)->submit(r, [&](int32_t) { ++tokens; }));
  while (tokens < 6) std::this_thread::sleep_for(1ms);
  const auto t0 = std::chrono::steady_clock::now();
  (*d)->shutdown();
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  for (auto& h : hs) {
    REQUIRE(h.result.wait_for(1s) == std::future_status::ready);
    auto r = h.result.get();
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().find("shut down") != std::string::npos);
  }
  auto late = (*d)->submit(GenerateRequest{});
  REQUIRE(late.result.wait_for(1s) == std::future_status::ready);
  CHECK_FALSE(late.result.get().ok());
  (*d)->shutdown();  // idempotent
}

TEST_CASE("with two micro-batches attention and expert work overlap but with one they never do") {
  for (int m : {1, 2}) {
    CAPTURE(m);
    GraphSpec g = default_graph_spec();
    g.attention.micro_batches = m;
    g.workload.prompts.clear();
    for (int i = 0; i < 12; ++i) g.workload.prompts.push_back({i + 1, 2 * i + 3, 5});
    g.workload.max_new_tokens = 24;
    DeploymentOptions o;
    o.trace = true;
    o.threads = 2;
    auto d = Deployment::create(g, o);
    REQUIRE(d.ok());
    for (auto& r : (*d)->run_workload()) REQUIRE(r.ok());
    const double overlap = (*d)->trace().overlap_seconds("attention", "experts");
    MESSAGE("m=" << m << ": attention busy " << (*d)->trace().busy_seconds("attention") * 1e3 << " ms, experts busy "
                 << (*d)->trace().busy_seconds("experts") * 1e3 << " ms, overlapping " << overlap * 1e3 << " ms");
    if (m == 1) CHECK(overlap == 0.0);
    else CHECK(overlap > 0.0);
  }
}

TEST_CASE("metrics report timings, per-layer a_max and every actor") {
  GraphSpec g = default_graph_spec();
  auto d = Deployment::create(g);
  REQUIRE(d.ok());
  for (auto& r : (*d)->run_workload()) REQUIRE(r.ok());
  MetricsSnapshot m = (*d)->metrics();
  CHECK(m.completed == 4);
  CHECK(m.tokens == 96);
  CHECK(m.tokens_per_s > 0);
  CHECK(m.ttft_s.p50 > 0);
  CHECK(m.tpot_s.p50 > 0);
  CHECK(m.amax.size() == 4);
  CHECK(m.policy == "aebs");
  std::set<std::string> names;
  for (const ActorSnapshot& a : m.actors) {
    names.insert(a.name);
    CHECK(a.dropped == 0);
  }
  for (const char* n : {"frontend", "attention-0", "attention-1", "router", "scheduler", "expert-0", "expert-3", "scaler"})
    CHECK(names.count(n) == 1);
}

// -- cancel, the richer callbacks, the callback-thread contract -------------------------

namespace {

// Waits (bounded) until `pred` holds; false when it never did.
template <class Pred>
bool wait_until(Pred pred, std::chrono::seconds limit = 30s) {
  const auto t0 = std::chrono::steady_clock::now();
  while (!pred()) {
    if (std::chrono::steady_clock::now() - t0 > limit) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST_CASE("cancel ends a running request, frees its KV so a request that needs the blocks then runs, and says cancelled") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {1, 2, false, 1, "moe", "aebs"}, 8);
  g.workload.prompts.clear();
  // One shard of 30 blocks of 16: the long request takes 26 of them (prompt + 400), so the
  // second (prompt + 100: 7 blocks) cannot be admitted beside it.
  g.attention.kv_blocks = 30;
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(g, o);
  REQUIRE_MESSAGE(d.ok(), d.status().to_string());
  // The step clock, not the wall clock, decides how far the long request gets: exactly 4
  // steps (4 tokens) before the cancel, however fast or loaded the machine is.
  REQUIRE((*d)->pause().ok());
  GenerateRequest longer;
  longer.prompt = f.prompts[0];
  longer.max_new_tokens = 400;
  longer.stop_at_eos = false;
  std::atomic<int> tokens{0};
  RequestHandle a = (*d)->submit(longer, [&](int32_t) { ++tokens; });
  REQUIRE((*d)->step(4).ok());
  REQUIRE(wait_until([&] { return tokens == 4; }));
  GenerateRequest second;
  second.prompt = f.prompts[1];
  second.max_new_tokens = 100;
  second.stop_at_eos = false;
  RequestHandle b = (*d)->submit(second);
  REQUIRE(wait_until([&] { return (*d)->metrics().queued == 1; }));
  REQUIRE((*d)->step(2).ok());  // two more steps: the second still does not fit
  REQUIRE(wait_until([&] { return tokens == 6; }));
  CHECK((*d)->metrics().queued == 1);
  CHECK((*d)->metrics().kv_blocks_used == 26);
  CHECK(b.result.wait_for(0s) == std::future_status::timeout);

  REQUIRE((*d)->cancel(a).ok());
  REQUIRE(a.result.wait_for(30s) == std::future_status::ready);
  Result<GenerateResult> ra = a.result.get();
  REQUIRE_MESSAGE(ra.ok(), ra.status().to_string());
  CHECK(ra->finish_reason == "cancelled");
  REQUIRE(ra->tokens.size() == 6);
  // The tokens it made are the reference's prefix.
  auto ref = test::reference_tokens(f.dir, {longer});
  REQUIRE(ref.ok());
  CHECK(std::equal(ra->tokens.begin(), ra->tokens.end(), (*ref)[0].begin()));
  CHECK((*d)->metrics().kv_blocks_used == 0);  // free for admission at once

  REQUIRE((*d)->resume().ok());
  REQUIRE(b.result.wait_for(60s) == std::future_status::ready);
  Result<GenerateResult> rb = b.result.get();
  REQUIRE_MESSAGE(rb.ok(), rb.status().to_string());
  CHECK(rb->tokens.size() == 100);
  auto ref_b = test::reference_tokens(f.dir, {second});
  REQUIRE(ref_b.ok());
  CHECK(rb->tokens == (*ref_b)[0]);
  CHECK(tokens == 6);  // nothing streamed after the cancel
  MetricsSnapshot m = (*d)->metrics();
  CHECK(m.cancelled == 1);
  CHECK(m.running == 0);
  CHECK(m.queued == 0);
  CHECK(m.kv_blocks_used == 0);
  CHECK(m.kv_blocks_total == 30);
}

TEST_CASE("cancel of a queued request, of a finished one and of an unknown handle") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {1, 2, false, 1, "moe", "aebs"}, 8);
  g.workload.prompts.clear();
  g.attention.kv_blocks = 30;
  auto d = Deployment::create(g);
  REQUIRE(d.ok());
  REQUIRE((*d)->pause().ok());
  GenerateRequest big;
  big.prompt = f.prompts[0];
  big.max_new_tokens = 400;
  big.stop_at_eos = false;
  std::atomic<int> tokens{0};
  RequestHandle running = (*d)->submit(big, [&](int32_t) { ++tokens; });
  REQUIRE((*d)->step(1).ok());
  REQUIRE(wait_until([&] { return tokens == 1; }));
  RequestHandle queued = (*d)->submit(big);  // no room beside the first
  REQUIRE(wait_until([&] { return (*d)->metrics().queued == 1; }));
  REQUIRE((*d)->cancel(queued).ok());
  REQUIRE(queued.result.wait_for(10s) == std::future_status::ready);
  Result<GenerateResult> rq = queued.result.get();
  REQUIRE(rq.ok());
  CHECK(rq->finish_reason == "cancelled");
  CHECK(rq->tokens.empty());
  REQUIRE((*d)->cancel(running).ok());
  REQUIRE(running.result.wait_for(30s) == std::future_status::ready);
  CHECK(running.result.get()->finish_reason == "cancelled");
  REQUIRE((*d)->resume().ok());

  GenerateRequest small;
  small.prompt = f.prompts[2];
  small.max_new_tokens = 2;
  RequestHandle done = (*d)->submit(small);
  REQUIRE(done.result.wait_for(30s) == std::future_status::ready);
  Status again = (*d)->cancel(done);
  CHECK(again.code() == ErrorCode::kInvalidArgument);
  CHECK(again.message().find("already finished") != std::string::npos);
  CHECK((*d)->cancel(running).code() == ErrorCode::kInvalidArgument);  // cancelled already
  RequestHandle unknown;
  unknown.id = 12345;
  Status u = (*d)->cancel(unknown);
  CHECK(u.code() == ErrorCode::kNotFound);
  CHECK(u.message().find("request 12345") != std::string::npos);
  CHECK((*d)->cancel(RequestHandle{}).code() == ErrorCode::kNotFound);
  CHECK((*d)->metrics().cancelled == 2);
}

TEST_CASE("a queued request that is cancelled leaves the queue at once; the running ones go on, token for token") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {1, 2, false, 1, "moe", "aebs"}, 8);
  g.workload.prompts.clear();
  g.attention.max_batch = 2;  // two slots
  auto d = Deployment::create(g);
  REQUIRE(d.ok());
  std::vector<GenerateRequest> runs;
  for (int i = 0; i < 2; ++i) {
    GenerateRequest r;
    r.prompt = f.prompts[static_cast<size_t>(i)];
    r.max_new_tokens = 24;
    r.stop_at_eos = false;
    runs.push_back(r);
  }
  std::atomic<int> started{0};
  std::vector<RequestHandle> running;
  for (const GenerateRequest& r : runs) {
    auto first = std::make_shared<std::atomic<bool>>(false);
    running.push_back((*d)->submit(r, [&started, first](int32_t) {
      if (!first->exchange(true)) ++started;
    }));
  }
  REQUIRE(wait_until([&] { return started == 2; }));
  // The clock stops at a step boundary: whatever happens to the queued request now happens
  // without a step, so it cannot be something noticed only when the request would run.
  REQUIRE((*d)->pause().ok());
  GenerateRequest extra = runs[0];
  extra.prompt = f.prompts[2];
  RequestHandle queued = (*d)->submit(extra);
  REQUIRE(wait_until([&] { return (*d)->metrics().queued == 1; }));
  REQUIRE((*d)->cancel(queued).ok());
  MetricsSnapshot m = (*d)->metrics();  // answered after the cancel: the Frontend's mailbox keeps order
  CHECK(m.queued == 0);
  CHECK(m.running == 2);
  REQUIRE(queued.result.wait_for(10s) == std::future_status::ready);
  REQUIRE(queued.result.get().ok());
  CHECK(queued.result.get()->finish_reason == "cancelled");
  CHECK(queued.result.get()->tokens.empty());
  REQUIRE((*d)->resume().ok());
  auto ref = test::reference_tokens(f.dir, runs);
  REQUIRE(ref.ok());
  for (size_t i = 0; i < running.size(); ++i) {
    REQUIRE(running[i].result.wait_for(60s) == std::future_status::ready);
    Result<GenerateResult> r = running[i].result.get();
    REQUIRE(r.ok());
    CHECK(r->finish_reason == "length");
    CHECK(r->tokens == (*ref)[i]);
  }
  CHECK((*d)->metrics().cancelled == 1);
}

namespace {

// log_softmax of one row of logits, in double: the test's own, not the runtime's.
std::vector<double> log_softmax(const std::vector<float>& logits) {
  double mx = logits[0];
  for (float x : logits) mx = std::max(mx, static_cast<double>(x));
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - mx);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - mx - std::log(sum);
  return out;
}

}  // namespace

TEST_CASE("logprobs: each token's own and its top list are log_softmax of the reference engine's logits at the same prefix") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {2, 2, false, 2, "moe", "aebs"}, 8);
  g.workload.prompts.clear();
  auto d = Deployment::create(g);
  REQUIRE(d.ok());
  struct Ask {
    int logprobs;
    float temperature;
  };
  // Greedy and sampled: a sampled request's log-probabilities are still the raw
  // distribution's (before temperature and top-k), as vLLM returns them.
  const Ask asks[] = {{5, 0.f}, {0, 0.f}, {20, 0.9f}, {-1, 0.f}};
  const int steps = 6;
  std::vector<GenerateRequest> reqs;
  std::vector<RequestHandle> handles;
  std::mutex mu;
  std::map<uint64_t, std::vector<TokenEvent>> events;
  for (size_t i = 0; i < std::size(asks); ++i) {
    GenerateRequest r;
    r.prompt = f.prompts[i % f.prompts.size()];
    r.max_new_tokens = steps;
    r.stop_at_eos = false;
    r.logprobs = asks[i].logprobs;
    r.sampling.temperature = asks[i].temperature;
    r.sampling.top_k = asks[i].temperature > 0 ? 4 : 0;
    r.sampling.seed = 99;
    reqs.push_back(r);
    RequestCallbacks cb;
    cb.on_token = [&](const TokenEvent& e) {
      std::lock_guard<std::mutex> lk(mu);
      events[e.request_id].push_back(e);
    };
    handles.push_back((*d)->submit(r, cb));
  }
  auto model = Model::load(f.dir);
  REQUIRE(model.ok());
  ReferenceEngine engine(*model);
  auto direct = engine.generate(reqs);  // the reference engine computes them too
  REQUIRE(direct.ok());
  for (size_t i = 0; i < reqs.size(); ++i) {
    CAPTURE(i);
    REQUIRE(handles[i].result.wait_for(60s) == std::future_status::ready);
    Result<GenerateResult> out = handles[i].result.get();
    REQUIRE(out.ok());
    REQUIRE(out->tokens.size() == static_cast<size_t>(steps));
    CHECK(out->tokens == (*direct)[i].tokens);
    std::vector<TokenEvent> evs;
    {
      std::lock_guard<std::mutex> lk(mu);
      evs = events[handles[i].id];
    }
    REQUIRE(evs.size() == static_cast<size_t>(steps));
    if (reqs[i].logprobs < 0) {
      CHECK(out->logprobs.empty());
      CHECK((*direct)[i].logprobs.empty());
      for (const TokenEvent& e : evs) CHECK_FALSE(e.logprobs.has_value());
      continue;
    }
    REQUIRE(out->logprobs.size() == static_cast<size_t>(steps));
    REQUIRE((*direct)[i].logprobs.size() == static_cast<size_t>(steps));
    const size_t n = static_cast<size_t>(reqs[i].logprobs);
    for (int k = 0; k < steps; ++k) {
      CAPTURE(k);
      // The reference engine's logits after the prompt and the first k tokens.
      GenerateRequest prefix = reqs[i];
      prefix.prompt.insert(prefix.prompt.end(), out->tokens.begin(), out->tokens.begin() + k);
      prefix.max_new_tokens = 0;
      prefix.want_prompt_logits = true;
      prefix.logprobs = -1;
      auto ref = engine.generate({prefix});
      REQUIRE(ref.ok());
      const std::vector<double> lsm = log_softmax((*ref)[0].last_logits);
      std::vector<double> sorted = lsm;
      std::sort(sorted.begin(), sorted.end(), std::greater<double>());
      const int32_t chosen = out->tokens[static_cast<size_t>(k)];
      REQUIRE(evs[static_cast<size_t>(k)].logprobs.has_value());
      const TokenLogprobs& lp = *evs[static_cast<size_t>(k)].logprobs;
      CHECK(std::abs(lp.logprob - lsm[static_cast<size_t>(chosen)]) < 1e-4);
      REQUIRE(lp.top.size() == n);
      for (size_t t = 0; t < n; ++t) {
        CHECK(std::abs(lp.top[t].logprob - lsm[static_cast<size_t>(lp.top[t].token)]) < 1e-4);
        CHECK(std::abs(lp.top[t].logprob - sorted[t]) < 1e-4);  // the t-th most likely
        if (t > 0) CHECK(lp.top[t].logprob <= lp.top[t - 1].logprob);
      }
      if (reqs[i].sampling.greedy() && n > 0) CHECK(lp.top[0].token == chosen);
      // The result holds the same as the events, and the reference engine agrees.
      const TokenLogprobs& kept = out->logprobs[static_cast<size_t>(k)];
      CHECK(kept.logprob == lp.logprob);
      CHECK(kept.top.size() == lp.top.size());
      const TokenLogprobs& ref_lp = (*direct)[i].logprobs[static_cast<size_t>(k)];
      CHECK(std::abs(ref_lp.logprob - lp.logprob) < 1e-4);
      REQUIRE(ref_lp.top.size() == n);
      for (size_t t = 0; t < n; ++t) CHECK(std::abs(ref_lp.top[t].logprob - lp.top[t].logprob) < 1e-4);
    }
  }
}

TEST_CASE("logprobs outside -1..20 are refused") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {1, 2, false, 1, "moe", "aebs"}, 8);
  g.workload.prompts.clear();
  auto d = Deployment::create(g);
  REQUIRE(d.ok());
  for (int bad : {-2, kMaxLogprobs + 1}) {
    GenerateRequest r;
    r.prompt = f.prompts[0];
    r.max_new_tokens = 2;
    r.logprobs = bad;
    Result<GenerateResult> out = (*d)->submit(r).result.get();
    REQUIRE_FALSE(out.ok());
    CHECK(out.status().code() == ErrorCode::kInvalidArgument);
    CHECK(out.status().message().find("logprobs must be -1 (none) or 0..20") != std::string::npos);
  }
}

TEST_CASE("the richer token callback: ids, indices, finish reason on the last token, timings; on_done before the future") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {2, 2, false, 1, "moe", "aebs"}, 8);
  g.workload.prompts.clear();
  auto d = Deployment::create(g);
  REQUIRE(d.ok());
  std::mutex mu;
  std::vector<TokenEvent> events;
  std::string done_reason;
  bool future_ready_in_done = true;
  RequestHandle h;
  std::promise<void> handle_set;
  std::shared_future<void> handle_ready = handle_set.get_future().share();
  RequestCallbacks cb;
  cb.on_token = [&](const TokenEvent& e) {
    std::lock_guard<std::mutex> lk(mu);
    events.push_back(e);
  };
  cb.on_done = [&](const Result<GenerateResult>& r) {
    handle_ready.wait();
    std::lock_guard<std::mutex> lk(mu);
    done_reason = r.ok() ? r->finish_reason : r.status().to_string();
    future_ready_in_done = h.result.wait_for(0s) == std::future_status::ready;
  };
  h = (*d)->submit(test::greedy_requests({f.prompts[3]}, 16)[0], cb);
  handle_set.set_value();
  REQUIRE(h.result.wait_for(30s) == std::future_status::ready);
  Result<GenerateResult> r = h.result.get();
  REQUIRE(r.ok());
  std::lock_guard<std::mutex> lk(mu);
  REQUIRE(events.size() == 16);
  CHECK(r->tokens == f.reference[3]);
  double since = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    CAPTURE(i);
    CHECK(events[i].request_id == h.id);
    CHECK(events[i].index == static_cast<int>(i));
    CHECK(events[i].token == r->tokens[i]);
    CHECK(events[i].last == (i + 1 == events.size()));
    CHECK(events[i].finish_reason == (i + 1 == events.size() ? "length" : ""));
    CHECK(events[i].since_submit_s > 0);
    CHECK(events[i].since_submit_s >= since);
    CHECK(events[i].since_previous_s == doctest::Approx(events[i].since_submit_s - since).epsilon(1e-6));
    since = events[i].since_submit_s;
  }
  CHECK(done_reason == "length");
  CHECK_FALSE(future_ready_in_done);  // on_done runs before the future resolves
}

TEST_CASE("submitting and cancelling from inside a callback does not deadlock, also while another thread waits in metrics()") {
  const Fixture& f = fixture("qwen3_moe");
  GraphSpec g = spec_for(f, {1, 2, false, 1, "moe", "aebs"}, 8);
  g.workload.prompts.clear();
  DeploymentOptions o;
  o.threads = 2;
  auto d = Deployment::create(g, o);
  REQUIRE(d.ok());
  Deployment& dep = **d;
  std::atomic<bool> stop{false};
  std::thread poller([&] {  // holds the query lock over and over, as a metrics scraper does
    while (!stop) (void)dep.metrics();
  });
  // A chain: each request's third token submits the next one; the tenth also cancels a
  // long request from its callback.
  GenerateRequest longer;
  longer.prompt = f.prompts[0];
  longer.max_new_tokens = 400;
  longer.stop_at_eos = false;
  RequestHandle victim = dep.submit(longer);
  std::mutex mu;
  std::vector<RequestHandle> chain;
  std::promise<void> all_done;
  std::function<RequestCallbacks(int)> make = [&](int n) {
    RequestCallbacks cb;
    cb.on_token = [&, n](const TokenEvent& e) {
      if (e.index != 2) return;
      if (n + 1 < 10) {
        RequestHandle next = dep.submit(test::greedy_requests({f.prompts[static_cast<size_t>((n + 1) % 6)]}, 16)[0], make(n + 1));
        std::lock_guard<std::mutex> lk(mu);
        chain.push_back(next);
      } else {
        CHECK(dep.cancel(victim).ok());
        dep.shutdown();  // refused from a callback, with an error in the log: no deadlock
      }
    };
    cb.on_done = [&, n](const Result<GenerateResult>& r) {
      CHECK(r.ok());
      if (n == 9) all_done.set_value();
    };
    return cb;
  };
  RequestHandle first = dep.submit(test::greedy_requests({f.prompts[0]}, 16)[0], make(0));
  {
    std::lock_guard<std::mutex> lk(mu);
    chain.insert(chain.begin(), first);
  }
  auto fut = all_done.get_future();
  REQUIRE(fut.wait_for(60s) == std::future_status::ready);
  REQUIRE(victim.result.wait_for(30s) == std::future_status::ready);
  CHECK(victim.result.get()->finish_reason == "cancelled");
  stop = true;
  poller.join();
  std::lock_guard<std::mutex> lk(mu);
  REQUIRE(chain.size() == 10);
  for (size_t n = 0; n < chain.size(); ++n) {
    CAPTURE(n);
    REQUIRE(chain[n].result.wait_for(30s) == std::future_status::ready);
    Result<GenerateResult> r = chain[n].result.get();
    REQUIRE(r.ok());
    CHECK(r->tokens == f.reference[n % 6]);
  }
  // Still serving after the refused shutdown.
  RequestHandle after = dep.submit(test::greedy_requests({f.prompts[1]}, 4)[0]);
  REQUIRE(after.result.wait_for(30s) == std::future_status::ready);
  CHECK(after.result.get().ok());
}
