#include "actors/cluster.h"

#include <unistd.h>

#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <cstdlib>
#include <fstream>
#include <set>

#include "actors/gatekeeper.h"
#include "actors/wire_codec.h"
#include "runtime/base/log.h"

namespace janus::actors {

std::string exchange_transport(const GraphSpec& spec) {
  if (spec.exchange.transport != "auto") return spec.exchange.transport;
  std::set<std::string> hosts;
  for (const NodeSpec& n : spec.nodes) hosts.insert(n.host);
  return hosts.size() <= 1 ? "shm" : "tcp";
}

namespace {

Status parse_listen(const std::string& where, const std::string& text, std::string* host, uint16_t* port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return invalid_argument(where + ": coordinator{}: 'listen' must be HOST:PORT, got \"" + text + "\"");
  *host = text.substr(0, colon);
  const std::string p = text.substr(colon + 1);
  char* end = nullptr;
  const long v = std::strtol(p.c_str(), &end, 10);
  if (host->empty() || p.empty() || *end != '\0' || v < 0 || v > 65535)
    return invalid_argument(where + ": coordinator{}: 'listen' must be HOST:PORT, got \"" + text + "\"");
  *port = static_cast<uint16_t>(v);
  return Status::Ok();
}

// Runs one blocking request from the creating thread; the error names `what`.
template <class T, class... Ts>
Result<T> ask(caf::scoped_actor& self, const caf::actor& whom, std::chrono::milliseconds timeout, const std::string& what, Ts&&... xs) {
  Result<T> out = internal_error(what + ": no answer");
  self->request(whom, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& x) { out = std::move(x); },
               [&](caf::error& e) { out = unavailable(what + ": " + self->system().render(e)); });
  return out;
}

Status ask_void(caf::scoped_actor& self, const caf::actor& whom, std::chrono::milliseconds timeout, const std::string& what,
                caf::message msg) {
  Status out = Status::Ok();
  self->request(whom, timeout, std::move(msg))
      .receive([&]() {}, [&](caf::error& e) { out = unavailable(what + ": " + self->system().render(e)); });
  return out;
}

}  // namespace

Status start_cluster(caf::actor_system& sys, const GraphSpec& spec, const DeploymentOptions& options, Membership* m,
                     std::vector<RosterEntry>* roster, ClusterState* out) {
  const CoordinatorSpec& cs = spec.coordinator;
  std::string secret = cs.secret;
  if (secret.empty() && std::getenv("JANUS_SECRET")) secret = std::getenv("JANUS_SECRET");
  if (secret.empty())
    return invalid_argument(cs.where + ": coordinator{}: a multi-node deployment needs the shared secret: give coordinator{secret=...} "
                                       "or set JANUS_SECRET");
  std::string host;
  uint16_t port = 0;
  JANUS_TRY(parse_listen(cs.where, cs.listen, &host, &port));
  std::vector<std::string> names;
  for (const NodeSpec& n : spec.nodes) names.push_back(n.name);
  out->gatekeeper = sys.spawn<Gatekeeper>(names, secret);
  // CAF listens on loopback only; the configured address is the relay's, which hands CAF
  // a connection only once the peer has proven the secret.
  auto published = cs.tls ? caf::openssl::publish(out->gatekeeper, 0, "127.0.0.1", true)
                          : sys.middleman().publish(out->gatekeeper, 0, "127.0.0.1", true);
  if (!published)
    return unavailable(cs.where + ": coordinator{}: cannot listen on 127.0.0.1: " + sys.render(published.error()));
  out->caf_port = *published;
  auto relay = AuthenticatedRelay::start(host, port, "127.0.0.1", out->caf_port, kCoordinatorProtocol, secret);
  if (!relay.ok()) return unavailable(cs.where + ": coordinator{}: " + relay.status().message());
  out->relay = std::move(*relay);
  out->port = out->relay->port();
  out->tls = cs.tls;
  log_info("coordinator", "listening for nodes on " + host + ":" + std::to_string(out->port) + (cs.tls ? " (TLS)" : ""));
  if (!cs.port_file.empty()) {
    const std::string tmp = cs.port_file + ".tmp";
    std::ofstream(tmp) << out->port << "\n";
    std::rename(tmp.c_str(), cs.port_file.c_str());
  }
  if (options.on_listening) options.on_listening(out->port);

  caf::scoped_actor self{sys};
  const auto join_timeout = std::chrono::milliseconds(static_cast<int64_t>(cs.join_timeout_s * 1e3));
  auto joined = ask<std::vector<JoinedNode>>(self, out->gatekeeper, join_timeout, "waiting for nodes", WaitForNodes{});
  if (!joined.ok()) {
    auto missing = ask<MissingNodes>(self, out->gatekeeper, std::chrono::seconds(5), "gatekeeper", MissingQuery{});
    std::string names_missing;
    if (missing.ok())
      for (const auto& n : missing->names) names_missing += (names_missing.empty() ? "" : ", ") + n;
    return unavailable(cs.where + ": node(s) " + names_missing + " did not join within " + std::to_string(cs.join_timeout_s) +
                       " s (start each with: janus node --join " + host + ":" + std::to_string(out->port) + " --name NAME)");
  }

  // Plans: which positions each node hosts.
  const std::string transport_name = exchange_transport(spec);
  const std::vector<char> graph = encode_graph_spec(spec);
  const size_t n = spec.nodes.size();
  std::vector<int32_t> shard_at(static_cast<size_t>(spec.attention.shards)), instance_at(static_cast<size_t>(spec.experts.instances));
  std::vector<NodePlan> plans(n);
  for (size_t i = 0; i < n; ++i) {
    plans[i].index = static_cast<uint32_t>(i);
    plans[i].graph = graph;
    plans[i].transport = transport_name;
    plans[i].null_backend = options.null_backend;
    plans[i].compare_policies = options.compare_policies;
  }
  for (int s = 0; s < spec.attention.shards; ++s) {
    const int k = node_index(spec, shard_node(spec, s));
    shard_at[static_cast<size_t>(s)] = k;
    plans[static_cast<size_t>(k)].shards.push_back(s);
  }
  for (int i = 0; i < spec.experts.instances; ++i) {
    const int k = node_index(spec, instance_node(spec, i));
    instance_at[static_cast<size_t>(i)] = k;
    plans[static_cast<size_t>(k)].instances.push_back(i);
    plans[static_cast<size_t>(k)].moe = true;
  }

  // Each node builds its part (loads the model, makes its backends, opens its endpoint).
  std::vector<NodeReady> ready(n);
  for (size_t i = 0; i < n; ++i) {
    const JoinedNode& j = (*joined)[i];
    auto r = ask<NodeReady>(self, j.agent, std::chrono::seconds(600), "node '" + j.name + "'", plans[i]);
    if (!r.ok()) return r.status();
    ready[i] = std::move(*r);
    NodeInfo info;
    info.index = static_cast<uint32_t>(i);
    info.name = spec.nodes[i].name;
    info.host = spec.nodes[i].host;
    info.moe = plans[i].moe;
    info.agent = j.agent;
    info.bridge = ready[i].bridge;
    info.address = ready[i].address;
    out->nodes.push_back(info);
    out->transport.push_back(ready[i].transport);
  }
  out->instance_node = instance_at;
  out->shard_node = shard_at;
  NodeDirectory dir;
  dir.nodes = out->nodes;
  dir.shard_node = shard_at;
  dir.instance_node = instance_at;
  for (const NodeInfo& x : out->nodes)
    JANUS_TRY(ask_void(self, x.bridge, std::chrono::seconds(30), "connecting node '" + x.name + "'", caf::make_message(dir)));
  if (spec.exchange.probe) {
    // One node at a time, so that probes do not share the links they measure.
    for (const NodeInfo& x : out->nodes) {
      auto fits = ask<std::vector<transport::LinkFit>>(self, x.bridge, std::chrono::seconds(120), "probing the links of node '" + x.name + "'",
                                                       ProbeLinks{});
      if (!fits.ok()) return fits.status();
      out->links.insert(out->links.end(), fits->begin(), fits->end());
    }
    for (const NodeInfo& x : out->nodes)
      JANUS_TRY(ask_void(self, x.bridge, std::chrono::seconds(30), "node '" + x.name + "'", caf::make_message(LinkTable{out->links})));
  }

  // The first membership, naming the remote actors.
  m->shards.assign(static_cast<size_t>(spec.attention.shards), caf::actor{});
  m->instances.assign(static_cast<size_t>(spec.experts.instances), caf::actor{});
  if (!spec.egate()) m->routers.assign(static_cast<size_t>(spec.attention.shards), caf::actor{});
  bool first_moe = true;
  for (size_t i = 0; i < n; ++i) {
    const std::string& node = spec.nodes[i].name;
    for (const HostedActor& a : ready[i].actors) {
      roster->push_back({a.name, a.kind, a.device, a.actor, true, node});
      if (a.kind == "AttentionShard") m->shards.at(static_cast<size_t>(a.position)) = a.actor;
      else if (a.kind == "ExpertInstance") m->instances.at(static_cast<size_t>(a.position)) = a.actor;
      else if (a.kind == "Router" && a.position >= 0) m->routers.at(static_cast<size_t>(a.position)) = a.actor;
      else if (a.kind == "Router" && first_moe) m->routers = {a.actor};
      else if (a.kind == "Scheduler" && first_moe) m->scheduler = a.actor;
      else m->extra.push_back(a.actor);  // the other MoE nodes' mirrors
    }
    if (plans[i].moe) first_moe = false;
    roster->push_back({"bridge@" + node, "Bridge", ready[i].transport, ready[i].bridge, true, node});
    m->extra.push_back(ready[i].bridge);
  }
  for (size_t s = 0; s < m->shards.size(); ++s)
    if (!m->shards[s]) return internal_error("no node hosts shard " + std::to_string(s));
  for (size_t s = 0; s < m->instances.size(); ++s)
    if (!m->instances[s]) return internal_error("no node hosts expert instance " + std::to_string(s));
  std::vector<caf::actor> bridges;
  for (const NodeInfo& x : out->nodes) bridges.push_back(x.bridge);
  self->send(out->gatekeeper, WatchNodes{bridges});
  log_info("coordinator", std::to_string(n) + " nodes ready, exchange " + spec.exchange.mode + " over " + transport_name);
  return Status::Ok();
}

void stop_cluster(caf::actor_system& sys, ClusterState& c, const std::string& reason, std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys};
  // A node that drops its connection before its agent's exit reaches us is not a loss.
  if (c.gatekeeper) (void)ask_void(self, c.gatekeeper, std::chrono::seconds(5), "gatekeeper", caf::make_message(ShuttingDown{}));
  size_t waiting = 0;
  for (const NodeInfo& x : c.nodes) {
    if (!x.agent) continue;
    self->monitor(x.agent);
    self->send(x.agent, NodeShutdown{reason});
    ++waiting;
  }
  bool timed_out = false;
  while (waiting > 0 && !timed_out)
    self->receive([&](caf::down_msg&) { --waiting; }, caf::after(timeout) >> [&] { timed_out = true; });
  if (timed_out) log_warn("coordinator", std::to_string(waiting) + " node(s) did not stop in time");
  if (c.gatekeeper) {
    // (CAF 0.17's openssl::unpublish does not compile: a TLS port closes with the system.)
    if (!c.tls) sys.middleman().unpublish(c.gatekeeper, c.caf_port);
    caf::anon_send_exit(c.gatekeeper, caf::exit_reason::user_shutdown);
  }
  c.nodes.clear();
  c.relay.reset();
}

}  // namespace janus::actors
