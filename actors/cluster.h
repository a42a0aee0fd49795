// The coordinator's side of a multi-node deployment (Deployment::create with a config
// that declares nodes{}): it publishes the Gatekeeper on loopback behind an authenticated
// relay on the configured address (transport/authenticated_relay.h: no byte of a peer
// that has not proven the secret reaches CAF), waits for
// every declared `janus node` to join with the deployment's secret, hands each its plan,
// connects the nodes' bridges to each other (directory), has them probe their links and
// shares the fits (the exchange's cost model), and returns the first membership naming
// the remote actors. The Frontend and the Scaler stay in the coordinator; the MoE side's
// Router and Scheduler run as one mirror per MoE node (actors/bridge.h says why).
#pragma once

#include <caf/actor_system.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/deployment.h"
#include "actors/protocol/membership.h"
#include "actors/protocol/node.h"
#include "transport/authenticated_relay.h"

namespace janus::actors {

struct ClusterState {
  caf::actor gatekeeper;
  uint16_t port = 0;           // where nodes join: the authenticated relay's port
  uint16_t caf_port = 0;       // the Gatekeeper's own, on loopback, reached only through the relay
  std::shared_ptr<AuthenticatedRelay> relay;
  bool tls = false;
  std::vector<NodeInfo> nodes;
  std::vector<int32_t> instance_node;  // node index of each instance position
  std::vector<int32_t> shard_node;     // node index of each shard position
  std::vector<std::string> transport;  // per node
  std::vector<transport::LinkFit> links;
};

/// Builds the remote part of the deployment. `m` gets everything but the frontend;
/// `roster` every remote actor (with its node's name).
Status start_cluster(caf::actor_system& sys, const GraphSpec& spec, const DeploymentOptions& options, Membership* m,
                     std::vector<RosterEntry>* roster, ClusterState* out);

/// Tells every node to stop and waits (up to `timeout`) until their agents are gone.
void stop_cluster(caf::actor_system& sys, ClusterState& c, const std::string& reason, std::chrono::milliseconds timeout);

/// The transport a spec's exchange uses: its `transport`, or for "auto" shm when every
/// node is on one host, else tcp.
std::string exchange_transport(const GraphSpec& spec);

}  // namespace janus::actors
