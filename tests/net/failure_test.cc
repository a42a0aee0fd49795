// What a multi-node deployment does with bad input and lost nodes: a node with the wrong
// secret or a name the config does not declare is refused (clear message on both sides);
// every kind of bad frame is dropped, logged and counted and the deployment goes on
// producing the reference tokens; a frame from an endpoint outside the deployment is
// refused by the transport; a node killed mid-step fails the affected requests with an
// error naming it within a bounded time, and the deployment says it cannot serve.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>

#include "cluster_util.h"
#include "runtime/model/presets.h"
#include "transport/framed_socket.h"
#include "transport/transport.h"

using namespace janus;
using namespace janus::test;

TEST_CASE("a node with the wrong secret or an unknown name is refused") {
  TempDir dir;
  GraphSpec spec = cluster_spec(two_by_two(), "case1", "tcp");
  std::string wrong_log, unknown_log;
  int wrong_rc = -2, unknown_rc = -2;
  auto cluster = std::make_unique<Cluster>();
  Cluster* raw = cluster.get();
  DeploymentOptions o;
  o.threads = 2;
  o.on_listening = [&, raw](uint16_t port) {
    const std::string join = "127.0.0.1:" + std::to_string(port);
    // Bytes that crashed CAF 0.17.6 when its middleman listened here (a handshake header
    // with no payload; a header claiming 4 GiB): the relay in front turns them away and
    // CAF never sees them, so the coordinator survives to admit the real nodes below.
    for (const std::string& bytes : {std::string("\x01", 1) + std::string(31, '\0'), std::string("\xff\xff\xff\xff\x02", 5)}) {
      auto fd = janus::connect_tcp("127.0.0.1", port);
      REQUIRE(fd.ok());
      janus::write_all(*fd, bytes);
      char buf[256];
      timeval tv{10, 0};
      setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      while (recv(*fd, buf, sizeof buf, 0) > 0) {
      }
      close(*fd);
    }
    // First the impostors, each to its end, then the real nodes.
    Process wrong = start_node("a1", join, "not-the-secret", dir.path() + "/wrong");
    wrong_rc = wrong.wait(30);
    wrong_log = wrong.output();
    Process unknown = start_node("zz", join, kSecret, dir.path() + "/unknown");
    unknown_rc = unknown.wait(30);
    unknown_log = unknown.output();
    for (const char* n : {"a1", "a2", "m1", "m2"}) raw->nodes[n] = start_node(n, join, kSecret, raw->dir.path());
  };
  std::filesystem::create_directories(dir.path() + "/wrong");
  std::filesystem::create_directories(dir.path() + "/unknown");
  auto d = Deployment::create(spec, o);
  REQUIRE_MESSAGE(d.ok(), d.status().to_string());
  raw->deployment = std::move(*d);
  CHECK(wrong_rc == 1);
  CHECK_MESSAGE(wrong_log.find("authentication failed: wrong secret") != std::string::npos, wrong_log);
  CHECK(unknown_rc == 1);
  CHECK_MESSAGE(unknown_log.find("no node named 'zz'") != std::string::npos, unknown_log);
  // The refusals cost nothing: the right nodes joined and serve.
  CHECK_MESSAGE(check_reference_tokens(raw->d()) == "", raw->logs());
}

TEST_CASE("a multi-node config without a secret is refused before anything listens") {
  GraphSpec spec = cluster_spec(two_by_two(), "case1", "tcp");
  spec.coordinator.secret.clear();
  if (std::getenv("JANUS_SECRET")) unsetenv("JANUS_SECRET");
  auto d = Deployment::create(spec);
  REQUIRE(!d.ok());
  CHECK(d.status().message().find("needs the shared secret") != std::string::npos);
}

TEST_CASE("every kind of bad frame is dropped, logged, counted, and serving goes on") {
  auto cluster = start_cluster(cluster_spec(two_by_two(), "case2", "tcp"));
  REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
  Deployment& d = cluster->d();
  REQUIRE(check_reference_tokens(d) == "");
  struct Fault {
    const char* kind;
    uint64_t NodeSnapshot::*counter;
  };
  const Fault faults[] = {{"truncated", &NodeSnapshot::dropped_truncated},
                          {"malformed", &NodeSnapshot::dropped_malformed},
                          {"wrong_epoch", &NodeSnapshot::dropped_wrong_epoch},
                          {"size_mismatch", &NodeSnapshot::dropped_size_mismatch},
                          {"unknown_sender", &NodeSnapshot::dropped_unknown_sender},
                          {"raw", &NodeSnapshot::transport_dropped}};
  auto snapshot = [&](const std::string& name) {
    for (NodeSnapshot& n : d.nodes())
      if (n.name == name) return n;
    return NodeSnapshot{};
  };
  // Both directions: an attention node's bridge to a MoE node's, and back.
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"a1", "m1"}, {"m2", "a2"}})
    for (const Fault& f : faults) {
      CAPTURE(f.kind);
      const std::string& sender = from;  // clang 14 cannot capture a structured binding
      CAPTURE(sender);
      const uint64_t before = snapshot(to).*f.counter;
      REQUIRE(d.inject_frame_fault(from, to, f.kind).ok());
      uint64_t after = before;
      for (int i = 0; i < 200 && after == before; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        after = snapshot(to).*f.counter;
      }
      CHECK(after == before + 1);
    }
  CHECK(!d.inject_frame_fault("a1", "a2", "malformed").ok());  // same side: nothing to fake
  CHECK(!d.inject_frame_fault("a1", "m1", "bogus").ok());
  // The nodes are fine and still exact.
  CHECK_MESSAGE(check_reference_tokens(d) == "", cluster->logs());
  for (const NodeSnapshot& n : d.nodes()) CHECK(n.alive);
  // The drops were logged by the receivers.
  const std::string m1 = cluster->nodes["m1"].output();
  CHECK(m1.find("dropped a frame from node 'a1' (truncated)") != std::string::npos);
  CHECK(m1.find("(wrong epoch)") != std::string::npos);
  CHECK(m1.find("(size mismatch)") != std::string::npos);
}

TEST_CASE("a frame from an endpoint outside the deployment is refused by the transport") {
  auto cluster = start_cluster(cluster_spec(two_by_two(), "case1", "tcp"));
  REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
  Deployment& d = cluster->d();
  NodeSnapshot target;
  for (NodeSnapshot& n : d.nodes())
    if (n.name == "m1") target = n;
  REQUIRE(!target.transport_address.empty());
  // libfabric only in a child process (tests/transport's rule): the outsider sends a
  // well-formed frame from an id the node never connected.
  const pid_t pid = fork();
  if (pid == 0) {
    transport::EndpointConfig ec;
    ec.self_id = 77;
    auto ep = transport::Endpoint::open("tcp", ec);
    if (!ep.ok()) _exit(2);
    auto peer = (*ep)->connect(target.transport_address, 2);
    if (!peer.ok()) _exit(3);
    char payload[64] = {};
    if (!(*ep)->send(*peer, 1, payload, sizeof payload).ok()) _exit(4);
    std::vector<transport::Completion> done;
    (void)(*ep)->wait(done, 1, 5.0);
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  uint64_t dropped = 0;
  for (int i = 0; i < 200 && dropped == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (NodeSnapshot& n : d.nodes())
      if (n.name == "m1") dropped = n.transport_dropped;
  }
  CHECK(dropped == 1);
  CHECK(check_reference_tokens(d) == "");
}

TEST_CASE("a node killed mid-step fails the affected requests with a clear error, in bounded time") {
  // With recovery turned off (scaler{recover=false}); with it on, see the next test.
  for (const char* victim : {"m2", "a1"}) {
    CAPTURE(victim);
    GraphSpec spec = cluster_spec(two_by_two(), "case1", "tcp");
    spec.scaler.recover = false;
    auto cluster = start_cluster(spec);
    REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
    Deployment& d = cluster->d();
    // Long requests, so that the kill lands while they decode.
    std::vector<RequestHandle> handles;
    std::atomic<int> tokens{0};
    for (const GenerateRequest& g : greedy_requests(reference().prompts, 400)) handles.push_back(d.submit(g, [&](int32_t) { ++tokens; }));
    for (int i = 0; i < 500 && tokens < 20; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(tokens >= 20);
    cluster->nodes[victim].kill_now();
    const auto t0 = std::chrono::steady_clock::now();
    for (RequestHandle& h : handles) {
      REQUIRE(h.result.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
      auto r = h.result.get();
      REQUIRE(!r.ok());
      CHECK_MESSAGE(r.status().message().find(std::string("node '") + victim + "'") != std::string::npos, r.status().message());
    }
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(waited < 10);
    // Nothing more is admitted, and it says why.
    GenerateRequest g;
    g.prompt = {1, 2, 3};
    g.max_new_tokens = 2;
    auto late = d.submit(g).result.get();
    REQUIRE(!late.ok());
    CHECK(late.status().message().find("cannot serve") != std::string::npos);
  }
}

TEST_CASE("control connections over TLS: nodes with --tls serve exactly, a plain node cannot join") {
  TempDir dir;
  GraphSpec spec = cluster_spec(two_by_two(), "case1", "shm");
  spec.coordinator.tls = true;  // no certificate: anonymous Diffie-Hellman (CAF's openssl module)
  spec.coordinator.join_timeout_s = 30;
  auto cluster = std::make_unique<Cluster>();
  Cluster* raw = cluster.get();
  int plain_rc = -2;
  std::string plain_log;
  DeploymentOptions o = cluster_options();
  o.on_listening = [&, raw](uint16_t port) {
    const std::string join = "127.0.0.1:" + std::to_string(port);
    // A node that speaks plain CAF to a TLS port never gets in; it gives up after its
    // connect timeout, saying where it could not connect.
    Process plain = start_node("a1", join, kSecret, dir.path(), {}, {"--connect-timeout", "2"});
    plain_rc = plain.wait(30);
    plain_log = plain.output();
    for (const char* n : {"a1", "a2", "m1", "m2"}) raw->nodes[n] = start_node(n, join, kSecret, raw->dir.path(), {}, {"--tls"});
  };
  auto d = Deployment::create(spec, o);
  REQUIRE_MESSAGE(d.ok(), (d.status().to_string() + "\n" + raw->logs()));
  raw->deployment = std::move(*d);
  CHECK(plain_rc == 1);
  CHECK_MESSAGE(plain_log.find("cannot reach the coordinator") != std::string::npos, plain_log);
  CHECK_MESSAGE(check_reference_tokens(raw->d()) == "", raw->logs());
}

TEST_CASE("a node killed mid-run is recovered from, and every request completes exactly") {
  // A MoE node: its instances move to the other MoE node (m1 also hosts the primary router
  // and scheduler). An attention node: its requests resume on the other one's shards.
  // Longer generations than the fixture's, from the reference engine itself.
  const Reference& ref = reference();
  const std::vector<GenerateRequest> reqs = greedy_requests(ref.prompts, 64);
  auto expected = reference_tokens(ref.dir, reqs);
  REQUIRE(expected.ok());
  struct Kill {
    std::string mode, victim, side;
  };
  std::vector<Kill> kills;
  for (const std::string mode : {"case1", "case2", "single"})
    for (const std::string victim : {"m2", "m1", "a1", "a2"}) kills.push_back({mode, victim, "moe"});
  // AGate: each shard has its own gate, which leaves with it.
  for (const std::string victim : {"m1", "a1"}) kills.push_back({"case2", victim, "attention"});
  for (const Kill& k : kills) {
    {
      const std::string& mode = k.mode;
      const std::string& victim = k.victim;
      CAPTURE(mode);
      CAPTURE(victim);
      CAPTURE(k.side);
      auto cluster = start_cluster(cluster_spec(two_by_two(), mode, "tcp", k.side));
      REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
      Deployment& d = cluster->d();
      std::vector<RequestHandle> handles;
      std::atomic<int> tokens{0};
      for (const GenerateRequest& g : reqs) handles.push_back(d.submit(g, [&](int32_t) { ++tokens; }));
      for (int i = 0; i < 500 && tokens < 12; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      REQUIRE(tokens >= 12);
      REQUIRE(tokens < static_cast<int>(reqs.size()) * 64);  // the kill lands mid-run
      const double killed_s = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
      cluster->nodes[victim].kill_now();
      for (size_t i = 0; i < handles.size(); ++i) {
        REQUIRE_MESSAGE(handles[i].result.wait_for(std::chrono::seconds(60)) == std::future_status::ready, cluster->diagnosis());
        auto r = handles[i].result.get();
        REQUIRE_MESSAGE(r.ok(), (r.status().to_string() + "\n" + cluster->logs()));
        CHECK(r->tokens == (*expected)[i]);
      }
      // The recovery is on record, and the deployment goes on serving exactly.
      auto recoveries = d.recoveries();
      REQUIRE(recoveries.size() == 1);
      CHECK(recoveries[0].what.find(std::string("node '") + victim + "'") != std::string::npos);
      CHECK(recoveries[0].installed_s >= recoveries[0].detected_s);
      // Detection: the coordinator's CAF connection to the node breaks with the process.
      const double detect_ms = (recoveries[0].detected_s - killed_s) * 1e3, recover_ms = (recoveries[0].installed_s - recoveries[0].detected_s) * 1e3;
      MESSAGE(mode << " " << k.side << " " << victim << ": detected " << detect_ms << " ms after the kill, recovered " << recover_ms << " ms later");
      CHECK_MESSAGE(detect_ms < 5000, cluster->logs());
      CHECK(recover_ms < 5000);
      CHECK_MESSAGE(check_reference_tokens(d) == "", cluster->logs());
    }
  }
}

// libfabric 1.17's shm provider: a node killed with sends to it in flight leaves entries
// in each survivor's shm response queue that stay busy forever (only the dead receiver
// could complete them), and shm processes that queue in order, stopping at the first busy
// entry: from then on no send of the survivor completes, to anyone, and some tens of steps
// later the deployment stopped, silently ("sends in flight 960 (a1:960 a2:1)" in
// Cluster::diagnosis()). The bridges now re-open their shm endpoints during the recovery
// and reconnect to each other's new addresses (actors/bridge.cc on_directory_update):
// this test failed on every run before that.
TEST_CASE("an attention node killed under load: its requests resume on the other node and all complete exactly") {
  // The README's loopback graph (examples/configs/nodes/loopback.lua): the tiny-qwen3-moe
  // preset, one shard per attention node, auto exchange mode over shm, the default KV
  // cache and batch; 8 long requests, so that the survivor takes over four requests
  // mid-generation (each recomputes prompt + tokens so far) next to its own four.
  auto dir = ensure_preset_model("tiny-qwen3-moe", 0, DType::kF32, false);
  REQUIRE(dir.ok());
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 99}, {42, 7, 300, 11, 256, 8}, {100}, {9, 8, 7, 6, 5, 4, 3, 2},
                                                     {5, 17, 98}, {42, 7, 300, 11},          {101}, {9, 8, 7, 6}};
  const int n_tokens = 400;
  const std::vector<GenerateRequest> reqs = greedy_requests(prompts, n_tokens);
  auto expected = reference_tokens(*dir, reqs);
  REQUIRE(expected.ok());
  for (const std::string victim : {"a1", "a2"}) {
    CAPTURE(victim);
    Layout l = two_by_two();
    l.shard_nodes = {"a1", "a2"};
    GraphSpec spec = cluster_spec(l, "auto", "shm");
    spec.model.path = *dir;
    spec.attention.max_batch = 64;
    spec.attention.kv_blocks = 0;  // as the README's config: enough for max_batch full-length requests
    spec.experts.slots = 10;
    spec.exchange.spin_us = GraphSpec{}.exchange.spin_us;
    spec.scheduler.seed = GraphSpec{}.scheduler.seed;
    DeploymentOptions o;  // the CLI's: default threads
    auto cluster = start_cluster(spec, "127.0.0.1", {}, kSecret, o);
    REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
    Deployment& d = cluster->d();
    std::vector<RequestHandle> handles;
    std::atomic<int> tokens{0};
    for (const GenerateRequest& g : reqs) handles.push_back(d.submit(g, [&](int32_t) { ++tokens; }));
    const int total = static_cast<int>(reqs.size()) * n_tokens;
    for (int i = 0; i < 2000 && tokens < total / 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(tokens >= total / 3);
    REQUIRE(tokens < total);  // the kill lands mid-run
    cluster->nodes[victim].kill_now();
    for (size_t i = 0; i < handles.size(); ++i) {
      CAPTURE(i);
      REQUIRE_MESSAGE(handles[i].result.wait_for(std::chrono::seconds(30)) == std::future_status::ready, cluster->diagnosis());
      auto r = handles[i].result.get();
      REQUIRE_MESSAGE(r.ok(), (r.status().to_string() + "\n" + cluster->logs()));
      CHECK(r->tokens == (*expected)[i]);
    }
    REQUIRE(d.recoveries().size() == 1);
    // Every survivor re-opened its shm endpoint once and is reachable at the new address.
    for (const NodeSnapshot& n : d.nodes()) {
      CAPTURE(n.name);
      if (n.name == victim) continue;
      CHECK(n.alive);
      CHECK(n.relinks == 1);
    }
    // ... and it goes on serving over the new links: a greedy request is the prefix of its
    // longer run.
    GenerateRequest again = reqs[1];
    again.max_new_tokens = 32;
    auto after = d.submit(again).result.get();
    REQUIRE_MESSAGE(after.ok(), (after.status().to_string() + "\n" + cluster->logs()));
    CHECK(after->tokens == std::vector<int32_t>((*expected)[1].begin(), (*expected)[1].begin() + 32));
  }
}
