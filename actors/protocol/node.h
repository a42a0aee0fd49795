// The control plane of a multi-node deployment: what the coordinator and `janus node`
// processes say to each other over CAF's middleman (docs/architecture.md §6).
//
//   node                                   coordinator (Gatekeeper, published)
//   NodeHello{name}                   ->   NodeChallenge{nonce}       (a name the config declares)
//   NodeJoin{name, HMAC(secret, ...)} ->   NodeWelcome{index}         (or "wrong secret", refused)
//                                     <-   NodePlan                   (what to host)
//   NodeReady{actors, bridge, address} ->
//                                     <-   NodeDirectory              (every node: bridge, transport address)
//                                     <-   ProbeLinks                 (answered with the link fits)
//                                     <-   LinkTable                  (every link's fit: the cost model)
//                                     <-   NodeLost                   (another node's process went away)
//                                     <-   HostInstances              (a lost MoE node's instances move here)
//                                     <-   DirectoryUpdate            (where instances live now)
//   RelinkedAddress{address}          ->                              (shm: a re-opened endpoint)
//                                     <-   PeerAddresses              (shm: every survivor's new address)
//                                     <-   Membership (to each actor, from the Frontend), steps ...
//                                     <-   NodeShutdown
//
// The secret never travels: the node proves it knows it with an HMAC-SHA256 of a fresh
// nonce. Every type here has an inspect() and is registered on both sides by
// add_janus_message_types() (actors/remote_types.h).
#pragma once

#include <caf/actor.hpp>
#include <caf/meta/type_name.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "actors/protocol/layer_batch_key.h"
#include "transport/cost_model.h"

namespace janus::actors {

/// The name of the handshake (transport/secret_handshake.h) a node runs with the
/// coordinator's relay before CAF: a proof for another protocol (the console's) fails.
inline constexpr const char* kCoordinatorProtocol = "janus-coordinator-1";


struct NodeHello {
  std::string name;
};

struct NodeChallenge {
  std::string nonce;
};

struct NodeJoin {
  std::string name;
  std::string proof;  // join_proof(secret, name, nonce)
  caf::actor agent;   // the node's NodeAgent
  int32_t pid = 0;
};

struct NodeWelcome {
  uint32_t index = 0;
};

/// What a node hosts. Positions are the actors' places in the first membership.
struct NodePlan {
  uint32_t index = 0;
  std::vector<char> graph;          // the resolved GraphSpec (encode_graph_spec)
  std::vector<int32_t> shards;      // attention shards (with their Routers under AGate)
  std::vector<int32_t> instances;   // expert instances
  bool moe = false;                 // also the MoE side's Router (EGate) and Scheduler mirrors
  std::string transport;            // "tcp", "shm", "verbs"
  bool null_backend = false;
  bool compare_policies = false;
};

struct HostedActor {
  std::string name, kind, device;
  caf::actor actor;
  int32_t position = -1;  // shard or instance position; -1 for the router and scheduler mirrors
};

struct NodeReady {
  std::vector<HostedActor> actors;
  caf::actor bridge;
  std::vector<char> address;  // the bridge's transport address
  std::string transport;
};

struct NodeInfo {
  uint32_t index = 0;
  std::string name, host;
  bool moe = false;
  caf::actor agent, bridge;
  std::vector<char> address;
};

/// Every node, and where each shard and instance lives (node indices).
struct NodeDirectory {
  std::vector<NodeInfo> nodes;
  std::vector<int32_t> shard_node, instance_node;
};

/// -> a bridge: measure the links to the nodes it exchanges with (answered with
/// std::vector<transport::LinkFit>).
struct ProbeLinks {
  int32_t reps = 0;  // 0: the default
};

/// -> every bridge: the fits of every link (the cost model's input).
struct LinkTable {
  std::vector<transport::LinkFit> links;
};

/// -> a node: stop serving and exit.
struct NodeShutdown {
  std::string reason;
};

/// Coordinator -> every bridge: node `index`'s process went away (the coordinator sees
/// it: nodes hold CAF connections to the coordinator only).
struct NodeLost {
  uint32_t index = 0;
  std::string reason;
};

/// Scaler -> a MoE node's agent, when another MoE node went away: host expert instances
/// at these membership positions (ids name the new actors; experts[i] are position i's
/// experts), answered with their handles (std::vector<HostedActor>).
struct HostInstances {
  std::vector<int32_t> positions, ids;
  std::vector<std::vector<int32_t>> experts;
};

/// Scaler -> every surviving bridge, before the membership that replaces a lost node:
/// where each instance and shard position lives now, and which node is gone.
struct DirectoryUpdate {
  std::vector<int32_t> instance_node, shard_node;
  uint32_t lost = 0;
};

/// A bridge's answer to DirectoryUpdate. Over shm a survivor re-opens its endpoint after
/// a peer's loss (libfabric 1.17's shm provider leaves the sends that were in flight to
/// the dead process busy in the survivor's queue forever, and stops completing every
/// send queued behind them): `address` is the new endpoint's. Empty: the endpoint is kept.
struct RelinkedAddress {
  std::vector<char> address;
};

/// Scaler -> every surviving bridge, when they re-opened their endpoints (RelinkedAddress),
/// before the membership that replaces the lost node: each node's new transport address
/// by node index (empty: the node is gone). Each bridge connects to the others anew.
struct PeerAddresses {
  std::vector<std::vector<char>> address;
};

/// One layer batch as the attention node that dispatched it saw it.
struct ExchangeRecord {
  LayerBatchKey key;
  int32_t mode = 0;          // transport::ExchangeMode
  int64_t rows = 0;          // rows of this node's shards
  double round_s = 0;        // dispatch posted -> every shard's partial sums in
  double moe_s = 0;          // of which the MoE side spent computing (the slowest MoE node)
  double predicted_s[3] = {0, 0, 0};  // the cost model, per mode
};

/// A bridge's counters.
struct BridgeStats {
  std::string node;
  std::string transport;
  std::vector<char> address;
  uint64_t frames_sent = 0, frames_received = 0, payload_bytes_sent = 0, payload_bytes_received = 0;
  uint64_t relayed = 0;                // Case 2 frames passed on
  uint64_t dropped_truncated = 0, dropped_malformed = 0, dropped_wrong_epoch = 0, dropped_size_mismatch = 0,
           dropped_unknown_sender = 0;
  uint64_t dropped_stale = 0;          // well-formed but for a layer batch nobody waits for
  uint64_t failed_batches = 0;         // layer batches failed here (a node went away, an error frame)
  uint64_t transport_dropped = 0;      // frames the transport itself refused (all reasons)
  uint64_t pool_slabs = 0, pool_acquired = 0, pool_reused = 0;
  uint64_t registrations = 0;          // transport memory registrations (should stop growing)
  uint64_t relinks = 0;                // endpoints re-opened after a peer's loss (shm)
  std::vector<ExchangeRecord> records;  // the most recent layer batches (attention nodes)
  std::vector<std::string> pending;     // TwoPhaseExchange::pending(): what is still waited for
};

struct BridgeStatsQuery {
  bool records = true;
};

/// Fault injection for tests: this bridge sends `peer` a bad frame of `kind` ("truncated",
/// "malformed", "wrong_epoch", "size_mismatch", "unknown_sender", "raw").
struct BridgeFault {
  std::string kind;
  uint32_t peer = 0;
};

/// HMAC-SHA256(secret, "janus-join\0" name "\0" nonce), hex.
std::string join_proof(const std::string& secret, const std::string& name, const std::string& nonce);
/// 32 random hex characters.
std::string random_nonce();

// -- inspectors ----------------------------------------------------------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeHello& x) {
  return f(caf::meta::type_name("janus.NodeHello"), x.name);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeChallenge& x) {
  return f(caf::meta::type_name("janus.NodeChallenge"), x.nonce);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeJoin& x) {
  return f(caf::meta::type_name("janus.NodeJoin"), x.name, x.proof, x.agent, x.pid);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeWelcome& x) {
  return f(caf::meta::type_name("janus.NodeWelcome"), x.index);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodePlan& x) {
  return f(caf::meta::type_name("janus.NodePlan"), x.index, x.graph, x.shards, x.instances, x.moe, x.transport, x.null_backend,
           x.compare_policies);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, HostedActor& x) {
  return f(caf::meta::type_name("janus.HostedActor"), x.name, x.kind, x.device, x.actor, x.position);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeReady& x) {
  return f(caf::meta::type_name("janus.NodeReady"), x.actors, x.bridge, x.address, x.transport);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeInfo& x) {
  return f(caf::meta::type_name("janus.NodeInfo"), x.index, x.name, x.host, x.moe, x.agent, x.bridge, x.address);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeDirectory& x) {
  return f(caf::meta::type_name("janus.NodeDirectory"), x.nodes, x.shard_node, x.instance_node);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ProbeLinks& x) {
  return f(caf::meta::type_name("janus.ProbeLinks"), x.reps);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, LinkTable& x) {
  return f(caf::meta::type_name("janus.LinkTable"), x.links);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeShutdown& x) {
  return f(caf::meta::type_name("janus.NodeShutdown"), x.reason);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeLost& x) {
  return f(caf::meta::type_name("janus.NodeLost"), x.index, x.reason);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, HostInstances& x) {
  return f(caf::meta::type_name("janus.HostInstances"), x.positions, x.ids, x.experts);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, DirectoryUpdate& x) {
  return f(caf::meta::type_name("janus.DirectoryUpdate"), x.instance_node, x.shard_node, x.lost);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, RelinkedAddress& x) {
  return f(caf::meta::type_name("janus.RelinkedAddress"), x.address);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, PeerAddresses& x) {
  return f(caf::meta::type_name("janus.PeerAddresses"), x.address);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ExchangeRecord& x) {
  return f(caf::meta::type_name("janus.ExchangeRecord"), x.key, x.mode, x.rows, x.round_s, x.moe_s, x.predicted_s[0],
           x.predicted_s[1], x.predicted_s[2]);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, BridgeStats& x) {
  return f(caf::meta::type_name("janus.BridgeStats"), x.node, x.transport, x.address, x.frames_sent, x.frames_received,
           x.payload_bytes_sent, x.payload_bytes_received, x.relayed, x.dropped_truncated, x.dropped_malformed,
           x.dropped_wrong_epoch, x.dropped_size_mismatch, x.dropped_unknown_sender, x.dropped_stale, x.failed_batches,
           x.transport_dropped, x.pool_slabs, x.pool_acquired, x.pool_reused, x.registrations, x.relinks, x.records, x.pending);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, BridgeStatsQuery& x) {
  return f(caf::meta::type_name("janus.BridgeStatsQuery"), x.records);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, BridgeFault& x) {
  return f(caf::meta::type_name("janus.BridgeFault"), x.kind, x.peer);
}

}  // namespace janus::actors

namespace janus::transport {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, LinkFit& x) {
  return f(caf::meta::type_name("janus.LinkFit"), x.from, x.to, x.latency_s, x.per_message_s, x.bytes_per_s, x.rtt_small_s,
           x.samples);
}

}  // namespace janus::transport
