// run_node (actors/node.h): a `janus node` process's main loop.
#include <unistd.h>

#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <chrono>
#include <cstdio>
#include <thread>

#include "actors/node_agent.h"
#include "actors/remote_types.h"
#include "actors/node.h"
#include "transport/authenticated_relay.h"

namespace janus {

using namespace janus::actors;

int run_node(const NodeOptions& o) {
  auto say = [&](const std::string& m) { std::fprintf(stderr, "janus node %s: %s\n", o.name.c_str(), m.c_str()); };
  caf::actor_system_config cfg;
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  configure_control_plane(cfg, threads, o.tls, {o.tls_cert, o.tls_key, o.tls_ca});
  caf::actor_system sys{cfg};
  // The coordinator may not listen yet: keep trying.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.connect_timeout_s);
  caf::actor coordinator;
  std::string last;
  // CAF connects to a local dialer, which proves the secret to the coordinator's relay and
  // then carries CAF's bytes (transport/authenticated_relay.h).
  auto dialer = AuthenticatedDialer::start(o.join_host, o.join_port, kCoordinatorProtocol, o.secret);
  if (!dialer.ok()) {
    say(dialer.status().message());
    return 1;
  }
  for (;;) {
    auto a = o.tls ? caf::openssl::remote_actor(sys, "127.0.0.1", (*dialer)->port())
                   : sys.middleman().remote_actor("127.0.0.1", (*dialer)->port());
    if (a) {
      coordinator = *a;
      break;
    }
    last = (*dialer)->last_failure().empty() ? sys.render(a.error()) : (*dialer)->last_failure();
    // A refusal is an answer, not a coordinator that is not up yet: do not retry it.
    if (last.rfind("authentication failed", 0) == 0) {
      say("the coordinator refused this node: " + last);
      return 1;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      say("cannot reach the coordinator at " + o.join_host + ":" + std::to_string(o.join_port) + ": " + last);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto exit_code = std::make_shared<std::atomic<int>>(1);
  int refused = 0;
  {
    caf::scoped_actor self{sys};
    std::string nonce, error;
    self->request(coordinator, std::chrono::seconds(30), NodeHello{o.name})
        .receive([&](NodeChallenge& c) { nonce = c.nonce; }, [&](caf::error& e) { error = sys.render(e); });
    if (!error.empty()) {
      say("the coordinator refused this node: " + error);
      return 1;
    }
    auto agent = sys.spawn<NodeAgent>(NodeAgentSetup{o.name, coordinator, exit_code});
    self->request(coordinator, std::chrono::seconds(30), NodeJoin{o.name, join_proof(o.secret, o.name, nonce), agent, getpid()})
        .receive([&](NodeWelcome& w) { say("joined " + o.join_host + ":" + std::to_string(o.join_port) + " as node " + std::to_string(w.index)); },
                 [&](caf::error& e) {
                   say("the coordinator refused this node: " + sys.render(e));
                   refused = 1;
                 });
    if (refused) caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
  }
  sys.await_all_actors_done();
  if (refused) return 1;
  return exit_code->load();
}

}  // namespace janus
