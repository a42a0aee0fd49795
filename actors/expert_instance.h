// ExpertInstance: one MoE device holding up to C expert replicas.
//
// For each task it runs the work items the Scheduler assigned it — each activated replica
// once, as one grouped FFN over the rows routed to it — and answers with weighted partial
// sums per row. Its place in the layout is its position in the current membership; when a
// placement changes, the Scaler first has it load the experts it gains (LoadExperts, while
// it keeps serving), and the membership switch then drops the ones it lost.
#pragma once

#include <vector>

#include "actors/actor_common.h"
#include "actors/protocol/layer_exchange.h"

namespace janus::actors {

class ExpertInstance : public JanusActor {
 public:
  /// `id` names the actor (expert-<id>).
  ExpertInstance(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int id,
                 std::shared_ptr<ExpertBackend> backend);
  caf::behavior make_behavior() override;

 private:
  /// Its position, and the experts the layout gives it there.
  Status keep(const Membership& next) override;
  /// A task that carries the router's device routing instead of a work list.
  Status run_routed(const ExpertTask& t, const std::vector<int32_t>& mine, Tensor* partial);

  int index_ = -1;
  std::shared_ptr<ExpertBackend> backend_;
};

}  // namespace janus::actors
