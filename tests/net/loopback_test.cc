// Multi-node deployments of 3 to 5 `janus node` processes on loopback: every exchange
// mode (single-phase, Case 1, Case 2, auto), both libfabric transports, both gate
// placements and micro-batching produce exactly the reference engine's tokens; the
// exchanges are what the mode says they are (relays only in Case 2, per-instance
// messages only in single-phase); registered buffers are reused.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "cluster_util.h"

using namespace janus;
using namespace janus::test;

namespace {

struct Case {
  std::string mode, transport, side;
  int micro_batches;
};

void run_case(const Layout& l, const Case& c) {
  CAPTURE(c.mode);
  CAPTURE(c.transport);
  CAPTURE(c.side);
  CAPTURE(c.micro_batches);
  auto cluster = start_cluster(cluster_spec(l, c.mode, c.transport, c.side, c.micro_batches));
  REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
  Deployment& d = cluster->d();
  CHECK_MESSAGE(check_reference_tokens(d) == "", cluster->logs());
  std::vector<NodeSnapshot> nodes = d.nodes();
  REQUIRE(nodes.size() == l.nodes.size());
  uint64_t relayed = 0, exchanges = 0;
  for (const NodeSnapshot& n : nodes) {
    CAPTURE(n.name);
    CHECK(n.alive);
    CHECK(n.transport == c.transport);
    CHECK(n.dropped_malformed + n.dropped_truncated + n.dropped_wrong_epoch + n.dropped_size_mismatch + n.dropped_unknown_sender == 0);
    CHECK(n.transport_dropped == 0);
    CHECK(n.failed_batches == 0);
    relayed += n.relayed;
    for (const ExchangeSample& e : n.exchanges) {
      ++exchanges;
      if (c.mode != "auto") CHECK(e.mode == c.mode);
      CHECK(e.round_s > 0);
      CHECK(e.predicted_s[1] > 0);
    }
    // Registered once, reused: a whole run registers a handful of slabs, not a region
    // per message.
    CHECK(n.pool_reused > n.pool_slabs);
    CHECK(n.registrations < 16);
  }
  CHECK(exchanges > 0);
  if (c.mode == "case2") CHECK(relayed > 0);
  if (c.mode == "case1" || c.mode == "single") CHECK(relayed == 0);
  CHECK(d.links().size() > 0);
  MetricsSnapshot m = d.metrics();
  CHECK(m.completed == reference().prompts.size());
  for (const ActorSnapshot& a : m.actors) {
    CAPTURE(a.name);
    CHECK(a.alive);
  }
}

}  // namespace

TEST_CASE("four nodes on loopback produce the reference tokens in every exchange mode") {
  const Layout l = two_by_two();
  for (const Case& c : {Case{"single", "shm", "moe", 1}, Case{"case1", "shm", "moe", 2}, Case{"case2", "tcp", "moe", 1},
                        Case{"auto", "tcp", "moe", 1}, Case{"case1", "tcp", "attention", 1}, Case{"case2", "shm", "attention", 2}})
    run_case(l, c);
}

TEST_CASE("three and five nodes on loopback") {
  // One attention node with both shards, two MoE nodes of uneven size.
  run_case({{{"a1", "127.0.0.1"}, {"m1", "127.0.0.1"}, {"m2", "127.0.0.1"}}, {"a1", "a1"}, {"m1", "m1", "m1", "m2"}},
           Case{"case2", "tcp", "moe", 1});
  // Three attention nodes (uneven), two MoE nodes: Case 2 pairs two attention nodes with m1.
  run_case({{{"a1", "127.0.0.1"}, {"a2", "127.0.0.1"}, {"a3", "127.0.0.1"}, {"m1", "127.0.0.1"}, {"m2", "127.0.0.1"}},
            {"a1", "a2", "a3", "a3"},
            {"m1", "m1", "m2", "m2"}},
           Case{"case2", "shm", "moe", 1});
}

TEST_CASE("cancel across nodes: the remote shard frees the KV, a request that needs it then runs exactly") {
  const Layout l{{{"a1", "127.0.0.1"}, {"a2", "127.0.0.1"}, {"m1", "127.0.0.1"}, {"m2", "127.0.0.1"}}, {"a1", "a2"}, {"m1", "m2"}};
  GraphSpec g = cluster_spec(l, "case1", "tcp");
  g.workload.prompts.clear();
  // 30 blocks of 16 per shard: a 1 + 400 token request takes 26, so with one on each shard a
  // request of 2 + 100 (7 blocks) must wait until one is cancelled, and then fits only where
  // the cancelled one's shard (a node process) really released its KV.
  g.attention.kv_blocks = 30;
  auto cluster = start_cluster(g);
  REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
  Deployment& d = cluster->d();
  const Reference& r = reference();
  GenerateRequest longer = greedy_request(r.prompts[0], 400);
  std::atomic<int> tokens{0};
  // The step clock decides how far the long ones get (3 steps), not the machine's speed.
  REQUIRE(d.pause().ok());
  RequestHandle a = d.submit(longer, [&](int32_t) { ++tokens; });
  RequestHandle b = d.submit(longer, [&](int32_t) { ++tokens; });
  REQUIRE(d.step(3).ok());
  const auto t0 = std::chrono::steady_clock::now();
  while (tokens < 6 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(tokens == 6);
  GenerateRequest small = greedy_request(r.prompts[1], 100);
  RequestHandle c = d.submit(small);
  while (d.metrics().queued != 1 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(d.metrics().kv_blocks_used == 52);
  REQUIRE(d.cancel(a).ok());
  REQUIRE(d.resume().ok());
  REQUIRE(c.result.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
  Result<GenerateResult> rc = c.result.get();
  REQUIRE_MESSAGE(rc.ok(), (rc.status().to_string() + "\n" + cluster->logs()));
  auto ref = reference_tokens(r.dir, {small});
  REQUIRE(ref.ok());
  CHECK(rc->tokens == (*ref)[0]);
  CHECK(a.result.get()->finish_reason == "cancelled");
  REQUIRE(d.cancel(b).ok());
  REQUIRE(b.result.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  CHECK(b.result.get()->finish_reason == "cancelled");
  MetricsSnapshot m = d.metrics();
  CHECK(m.cancelled == 2);
  CHECK(m.kv_blocks_used == 0);
  CHECK(m.running == 0);
}

TEST_CASE("logprobs across nodes: computed on the remote shards, they equal the reference engine's") {
  const Layout l{{{"a1", "127.0.0.1"}, {"a2", "127.0.0.1"}, {"m1", "127.0.0.1"}, {"m2", "127.0.0.1"}}, {"a1", "a2"}, {"m1", "m2"}};
  GraphSpec g = cluster_spec(l, "case1", "tcp");
  g.workload.prompts.clear();
  auto cluster = start_cluster(g);
  REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
  Deployment& d = cluster->d();
  const Reference& r = reference();
  std::vector<GenerateRequest> reqs;
  std::vector<RequestHandle> handles;
  for (size_t i = 0; i < 3; ++i) {
    GenerateRequest q = greedy_request(r.prompts[i], 8);
    q.logprobs = static_cast<int>(i) * 4;  // 0, 4, 8
    reqs.push_back(q);
    handles.push_back(d.submit(q));
  }
  auto model = Model::load(r.dir);
  REQUIRE(model.ok());
  ReferenceEngine engine(*model);
  auto ref = engine.generate(reqs);
  REQUIRE(ref.ok());
  for (size_t i = 0; i < reqs.size(); ++i) {
    CAPTURE(i);
    REQUIRE(handles[i].result.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
    Result<GenerateResult> out = handles[i].result.get();
    REQUIRE_MESSAGE(out.ok(), (out.status().to_string() + "\n" + cluster->logs()));
    CHECK(out->tokens == (*ref)[i].tokens);
    REQUIRE(out->logprobs.size() == (*ref)[i].logprobs.size());
    for (size_t k = 0; k < out->logprobs.size(); ++k) {
      const TokenLogprobs& a = out->logprobs[k];
      const TokenLogprobs& b = (*ref)[i].logprobs[k];
      CHECK(std::abs(a.logprob - b.logprob) < 1e-4);
      REQUIRE(a.top.size() == static_cast<size_t>(reqs[i].logprobs));
      for (size_t t = 0; t < a.top.size(); ++t) CHECK(std::abs(a.top[t].logprob - b.top[t].logprob) < 1e-4);
    }
  }
}
