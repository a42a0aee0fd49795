// NodeAgent: the control actor of a `janus node` process.
//
// Once the coordinator has let the node in (actors/node_protocol.h), the agent receives
// the node's plan — the deployment's GraphSpec and the shards, instances and MoE-side
// mirrors this node hosts — and builds them here: it loads the model, makes the backends
// on this node's devices, opens the node's transport endpoint and spawns the actors and
// the node's Bridge; it answers with their handles and the endpoint's address. It then
// passes the directory of nodes and the link table to the bridge, and sets up how this
// node's actors see memberships (MembershipView: members elsewhere become the bridge,
// the MoE side's router and scheduler become this node's mirrors).
//
// The node serves until the coordinator says NodeShutdown, or until the coordinator goes
// away (it monitors it): then every actor here exits and the process ends.
#pragma once

#include <atomic>
#include <memory>

#include "actors/actor_common.h"
#include "actors/protocol/node.h"

namespace janus::actors {

struct NodeAgentSetup {
  std::string name;
  caf::actor coordinator;                  // the gatekeeper the node joined through
  std::shared_ptr<std::atomic<int>> exit_code;  // 0 after NodeShutdown, 1 when the coordinator vanished
};

class NodeAgent : public caf::event_based_actor {
 public:
  NodeAgent(caf::actor_config& cfg, NodeAgentSetup setup);
  ~NodeAgent() override;
  caf::behavior make_behavior() override;
  const char* name() const override { return name_.c_str(); }

  struct Impl;

 private:
  std::string name_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace janus::actors
