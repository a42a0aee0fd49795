// Scaler: owns the deployment's membership — which shards, routers, scheduler and expert
// instances take part, and where the replicas are — under an epoch number. It hands the
// membership to every actor and answers once all have it, so no step starts before the
// graph is wired. (SLO-aware scaling, elasticity and recovery build on this later.)
#pragma once

#include "actors/actor_common.h"

namespace janus::actors {

/// Sent to the Scaler to install a membership; answered with the epoch once every member
/// has acknowledged it.
struct InstallMembership {
  Membership membership;
};

class Scaler : public JanusActor {
 public:
  Scaler(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx);
  caf::behavior make_behavior() override;

 private:
  Membership m_;
};

}  // namespace janus::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::InstallMembership)
