// Gatekeeper: the coordinator's published actor, where `janus node` processes join.
//
// A node says its name (it must be one the config declares and not taken), gets a fresh
// nonce, and proves it holds the deployment's secret with an HMAC of it
// (actors/node_protocol.h); a wrong proof is refused with a clear message on both sides
// and counted. The Deployment waits here (WaitForNodes) until every declared node has
// joined, then drives the rest of the start-up itself. It watches every node's agent; when
// one goes away it tells the other nodes' bridges (NodeLost), which fail the layer
// batches that can no longer complete.
#pragma once

#include <caf/all.hpp>
#include <map>

#include "actors/protocol/node.h"

namespace janus::actors {

/// Deployment -> Gatekeeper: answered with the joined nodes once all are in.
struct WaitForNodes {};

struct JoinedNode {
  std::string name;
  uint32_t index = 0;
  caf::actor agent;
  int32_t pid = 0;
};

/// -> Gatekeeper: joins refused for a wrong secret so far (answered with uint64_t).
struct RefusedQuery {};

/// Deployment -> Gatekeeper, once the nodes are up: tell these bridges (by node index)
/// when a node's process goes away.
struct WatchNodes {
  std::vector<caf::actor> bridges;
};

/// Deployment -> Gatekeeper, before it shuts the nodes down (answered when taken): from
/// now on a node going away is expected, not a loss to report.
struct ShuttingDown {};

/// -> Gatekeeper: the declared nodes that have not joined yet (answered with MissingNodes).
struct MissingQuery {};
struct MissingNodes {
  std::vector<std::string> names;
};

class Gatekeeper : public caf::event_based_actor {
 public:
  Gatekeeper(caf::actor_config& cfg, std::vector<std::string> names, std::string secret);
  caf::behavior make_behavior() override;
  const char* name() const override { return "gatekeeper"; }

 private:
  void maybe_done();

  std::vector<std::string> names_;  // declared nodes, in index order
  std::string secret_;
  std::map<std::string, std::string> nonces_;  // outstanding challenges
  std::map<std::string, JoinedNode> joined_;
  std::vector<caf::response_promise> waiting_;
  std::vector<caf::actor> bridges_;  // by node index, once the deployment runs
  uint64_t refused_ = 0;
  bool shutting_down_ = false;
};

}  // namespace janus::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::WaitForNodes)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::JoinedNode>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RefusedQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::MissingQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::WatchNodes)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::MissingNodes)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ShuttingDown)
