// Bridge: a node's data plane. One per process of a multi-node deployment; it owns the
// node's transport endpoint and is the only actor that touches it. It polls the endpoint
// by messages to itself: at once while there is traffic (and spin_us after it), then
// backing off to 1 ms, so an idle node leaves its cores to the others.
//
// The node's own actors never see another process: their membership names the bridge in
// place of every member that lives elsewhere (actors/actor_common.h, MembershipView), so
// a shard's activations and a scheduler's results for a remote shard come here as the
// ordinary local messages. The bridge turns them into Cap'n Proto descriptor frames
// (schemas/descriptors.capnp ExchangeFrame) plus payload bytes on the transport, and on
// the receiving side back into local messages to the local actors.
//
// Per layer batch (docs/architecture.md §5, the paper's §3.3):
//
//   attention node                      MoE nodes (each: Router + Scheduler mirrors running
//   shards ──ShardActivations──► bridge   the same deterministic gate and AEBS on the whole
//   phase 1: the node's shards' rows      layer batch, sending work only to local instances)
//   are copied side by side into one
//   registered payload, then
//     single: every shard's rows to every instance (the baseline: no aggregation)
//     Case 1: one payload to each MoE node
//     Case 2: one payload to the node's designated MoE node, which relays it to the others
//   ◄── back: each MoE node sums its instances' partial sums per row (F64, in instance
//   order), and sends one payload per attention node (Case 1), or sends it to the
//   designated node, which adds the MoE nodes' sums in node order and sends one payload
//   (Case 2); single-phase sends every instance's partial to every shard. Phase 1 in
//   reverse: the payload's rows are handed to each shard as views (no copy).
//
// "auto" picks Case 1 or Case 2 per layer batch with the cost model (transport/
// cost_model.h) fitted from the links probed at start-up. Case 1 and Case 2 add the same
// numbers in the same order, so they give identical tokens.
//
// Every frame is validated on arrival (actors/wire_codec.h, then: the sender is the
// transport peer it came from and may send this, the epoch is the current one, the
// payload is as long as the descriptor says); a bad one is dropped, logged and counted
// (BridgeStats) and the node goes on. When the coordinator reports another node's
// process gone (NodeLost), every layer batch in flight here fails with an error naming it,
// or, with recovery on, is dropped and re-run under the next membership; over shm the
// bridge then re-opens its endpoint and reconnects to the survivors' new ones
// (DirectoryUpdate, PeerAddresses) before that membership comes.
//
// The actor only wires the pieces that do this together and polls: who is where and what
// a lost node means (actors/bridge_topology.h), the endpoint and the frames on it
// (actors/node_link.h), host staging and sums (actors/bridge_staging.h), the exchange
// itself (actors/two_phase_exchange.h), and the link probes (actors/link_probe.h).
#pragma once

#include <memory>

#include "actors/actor_common.h"
#include "actors/node_protocol.h"
#include "transport/transport.h"

namespace janus::actors {

struct BridgeSetup {
  uint32_t node = 0;  // this node's index (also its transport id)
  std::string node_name;
  std::string transport;
  std::shared_ptr<transport::Endpoint> endpoint;
  transport::EndpointConfig endpoint_config;  // how `endpoint` was opened (a re-open after a peer's loss uses it)
  bool moe = false;
  caf::actor router, scheduler;  // MoE node: its mirrors (dispatches go to the router under
                                 // EGate, to the scheduler under AGate)
};

class Bridge : public JanusActor {
 public:
  Bridge(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, BridgeSetup setup);
  ~Bridge() override;
  caf::behavior make_behavior() override;
  /// Closes the endpoint as soon as the bridge exits: the actors that name it keep its
  /// object alive, and an endpoint left open to the process's end leaves its shm region
  /// in /dev/shm.
  void on_exit() override;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace janus::actors
