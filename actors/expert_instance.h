// ExpertInstance: one MoE device holding up to C expert replicas.
//
// For each task it runs the work items the Scheduler assigned it — each activated replica
// once, as one grouped FFN over the rows routed to it — and answers with weighted partial
// sums per row. `slow` (fault injection) adds a delay before each task.
#pragma once

#include "actors/actor_common.h"

namespace janus::actors {

class ExpertInstance : public JanusActor {
 public:
  ExpertInstance(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int index,
                 std::shared_ptr<ExpertBackend> backend);
  caf::behavior make_behavior() override;

 private:
  const int index_;
  std::shared_ptr<ExpertBackend> backend_;
  Membership m_;
};

}  // namespace janus::actors
