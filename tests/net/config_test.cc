// Multi-node configs: nodes{}, coordinator{}, exchange{} and per-section node lists in
// Lua, the checks resolve_graph makes on them, their wire form (what nodes receive), and
// the control-plane messages that cross processes (their CAF serialization).
#include <doctest/doctest.h>

#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/io/all.hpp>

#include "actors/node_protocol.h"
#include "actors/remote_types.h"
#include "actors/wire_codec.h"
#include "runtime/config/lua_config.h"
#include "runtime/model/model.h"
#include "test_util.h"

using namespace janus;

namespace {

const char* kConfig = R"(
model{path="MODEL"}
nodes{{name="a1", host="10.0.0.1"}, {name="a2", host="10.0.0.2"}, {name="m1"}, "m2"}
coordinator{listen="10.0.0.9:7000", secret="s", tls=false, join_timeout_s=5}
exchange{mode="case2", transport="tcp", spin_us=50}
attention{shards=4, nodes={"a1", "a1", "a2", "a2"}}
experts{instances=4, slots=3, nodes={"m1", "m1", "m2", "m2"}}
)";

Result<GraphSpec> load(std::string code) {
  const std::string dir = test::fixture("qwen3_moe");
  code.replace(code.find("MODEL"), 5, dir);
  return load_lua_config_string(code, "nodes.lua");
}

Status resolve(GraphSpec& g) {
  auto m = Model::load(g.model.path);
  REQUIRE(m.ok());
  return resolve_graph(g, (*m)->config(), 0);
}

}  // namespace

TEST_CASE("a multi-node config parses, resolves and travels") {
  auto g = load(kConfig);
  REQUIRE_MESSAGE(g.ok(), g.status().to_string());
  REQUIRE(g->nodes.size() == 4);
  CHECK(g->nodes[1].host == "10.0.0.2");
  CHECK(g->nodes[2].host == "127.0.0.1");  // loopback unless told
  CHECK(g->nodes[3].name == "m2");
  CHECK(g->coordinator.listen == "10.0.0.9:7000");
  CHECK(g->coordinator.join_timeout_s == doctest::Approx(5));
  CHECK(g->exchange.mode == "case2");
  CHECK(g->exchange.spin_us == 50);
  REQUIRE(resolve(*g).ok());
  CHECK(g->multi_node());
  CHECK(shard_node(*g, 2) == "a2");
  CHECK(instance_node(*g, 1) == "m1");
  CHECK(node_index(*g, "m2") == 3);
  // What a node receives: everything but the secret.
  auto back = actors::decode_graph_spec(actors::encode_graph_spec(*g));
  REQUIRE(back.ok());
  CHECK(back->nodes.size() == 4);
  CHECK(back->nodes[0].host == "10.0.0.1");
  CHECK(back->attention.nodes == g->attention.nodes);
  CHECK(back->experts.nodes == g->experts.nodes);
  CHECK(back->exchange.mode == "case2");
  CHECK(back->exchange.transport == "tcp");
  CHECK(back->coordinator.secret.empty());
  CHECK(graph_to_text(*g, Model::load(g->model.path).value()->config()).find("nodes (frontend and scaler stay") != std::string::npos);
}

TEST_CASE("multi-node config mistakes name file, line and what is wrong") {
  auto error_of = [](const std::string& edit_from, const std::string& edit_to) {
    std::string code = kConfig;
    const size_t at = code.find(edit_from);
    REQUIRE(at != std::string::npos);
    code.replace(at, edit_from.size(), edit_to);
    auto g = load(code);
    if (!g.ok()) return g.status().message();
    Status s = resolve(*g);
    return s.ok() ? std::string() : s.message();
  };
  CHECK(error_of("mode=\"case2\"", "mode=\"case3\"").find("nodes.lua:5: exchange{}: 'mode' must be") != std::string::npos);
  CHECK(error_of("{name=\"m1\"}", "{name=\"m1\", port=3}").find("unknown key 'port'") != std::string::npos);
  CHECK(error_of("\"a1\", \"a1\", \"a2\", \"a2\"", "\"a1\", \"a1\", \"a9\", \"a2\"").find("no node named 'a9'") != std::string::npos);
  CHECK(error_of("\"m1\", \"m1\", \"m2\", \"m2\"", "\"m1\", \"m1\", \"a2\", \"m2\"").find("hosts both attention shards and expert instances") !=
        std::string::npos);
  CHECK(error_of("\"a1\", \"a1\", \"a2\", \"a2\"", "\"a1\", \"a2\"").find("lists 2 nodes for 4 actors") != std::string::npos);
  CHECK(error_of("\"m1\", \"m1\", \"m2\", \"m2\"", "\"m1\", \"m1\", \"m1\", \"m1\"").find("node 'm2' hosts no shard and no instance") !=
        std::string::npos);
  CHECK(error_of("listen=\"10.0.0.9:7000\"", "listen=\"10.0.0.9\"").find("'listen' must be HOST:PORT") != std::string::npos);
  CHECK(error_of("{name=\"a1\", host=\"10.0.0.1\"}, ", "{name=\"a2\"}, ").find("declared twice") != std::string::npos);
  CHECK(error_of("attention{shards=4, nodes={\"a1\", \"a1\", \"a2\", \"a2\"}}", "attention{shards=4}").find("'nodes' is required") !=
        std::string::npos);
}

TEST_CASE("control-plane messages survive CAF serialization") {
  caf::actor_system_config cfg;
  actors::configure_control_plane(cfg, 1, false, {});
  caf::actor_system sys{cfg};
  auto roundtrip = [&](auto x) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    REQUIRE(!sink(x));
    decltype(x) y;
    caf::binary_deserializer source{sys, buf};
    auto err = source(y);
    REQUIRE_MESSAGE(!err, sys.render(err));
    return y;
  };
  // A Membership carries actor handles: it goes through a real middleman connection
  // (two actor systems in this process), there and back.
  {
    caf::actor_system_config cfg2;
    actors::configure_control_plane(cfg2, 1, false, {});
    caf::actor_system other{cfg2};
    auto echo = other.spawn([]() -> caf::behavior { return {[](actors::Membership& m) { return m; }}; });
    auto port = other.middleman().publish(echo, 0, "127.0.0.1", true);
    REQUIRE(port);
    auto remote = sys.middleman().remote_actor("127.0.0.1", *port);
    REQUIRE(remote);
    actors::Membership m;
    m.epoch = 5;
    m.frontend = echo;  // a handle that crosses twice
    auto layout = ExpertLayout::create(8, 3, {{0, 1, 2}, {3, 4, 5}, {6, 7, 0}});
    REQUIRE(layout.ok());
    m.layout = std::make_shared<ExpertLayout>(*layout);
    caf::scoped_actor self{sys};
    actors::Membership m2;
    bool ok = false;
    self->request(*remote, std::chrono::seconds(10), m)
        .receive([&](actors::Membership& x) {
                   m2 = x;
                   ok = true;
                 },
                 [&](caf::error& e) { FAIL_CHECK(sys.render(e)); });
    REQUIRE(ok);
    CHECK(m2.epoch == 5);
    CHECK(m2.frontend.address() == echo.address());
    REQUIRE(m2.layout != nullptr);
    CHECK(m2.layout->placement() == layout->placement());
    CHECK(m2.layout->replicas_of(0).size() == 2);
    m2 = {};
    caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
  }

  actors::StepBegin sb;
  sb.step = 9;
  sb.epoch = 2;
  actors::AdmittedRequest a;
  a.id = 4;
  a.request.prompt = {1, 2, 3};
  a.request.sampling.temperature = 0.5f;
  a.request.sampling.seed = 77;
  a.resume_tokens = {8};
  sb.admitted.push_back(a);
  actors::StepBegin sb2 = roundtrip(sb);
  REQUIRE(sb2.admitted.size() == 1);
  CHECK(sb2.admitted[0].request.prompt == std::vector<int32_t>{1, 2, 3});
  CHECK(sb2.admitted[0].request.sampling.seed == 77);
  CHECK(sb2.admitted[0].resume_tokens == std::vector<int32_t>{8});
  CHECK(sb2.admitted[0].request.logprobs == -1);
  sb.admitted[0].request.logprobs = 7;
  CHECK(roundtrip(sb).admitted.at(0).request.logprobs == 7);

  // A token's log-probabilities come back from a remote shard in its StepDone.
  actors::StepDone done;
  done.step = 9;
  actors::TokenOut tok;
  tok.id = 4;
  tok.token = 12;
  tok.has_logprobs = true;
  tok.logprob = -0.25f;
  tok.top_tokens = {12, 3};
  tok.top_logprobs = {-0.25f, -1.5f};
  done.tokens.push_back(tok);
  actors::StepDone done2 = roundtrip(done);
  REQUIRE(done2.tokens.size() == 1);
  CHECK(done2.tokens[0].has_logprobs);
  CHECK(done2.tokens[0].logprob == -0.25f);
  CHECK(done2.tokens[0].top_tokens == std::vector<int32_t>{12, 3});
  CHECK(done2.tokens[0].top_logprobs == std::vector<float>{-0.25f, -1.5f});

  transport::LinkFit f;
  f.from = 1;
  f.to = 3;
  f.bytes_per_s = 2e9;
  actors::LinkTable t{{f}};
  CHECK(roundtrip(t).links.at(0).bytes_per_s == doctest::Approx(2e9));

  // The join proof is an HMAC of the nonce: another secret or nonce gives another one.
  const std::string p = actors::join_proof("s", "a1", "n1");
  CHECK(p.size() == 64);
  CHECK(p == actors::join_proof("s", "a1", "n1"));
  CHECK(p != actors::join_proof("t", "a1", "n1"));
  CHECK(p != actors::join_proof("s", "a1", "n2"));
  CHECK(p != actors::join_proof("s", "a2", "n1"));
}
