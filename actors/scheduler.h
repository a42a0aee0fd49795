// Scheduler: turns a routed layer batch into work for the expert instances.
//
// It runs the configured policy (AEBS by default) over the whole layer batch — every
// (token, logical expert) to one physical replica — so that the largest number of
// distinct experts any instance must run (a_max) is small; sends each instance its work
// list with the shared activations (or, when a GPU router left the routing on the device
// and every expert has one replica, so there is nothing to choose, the routing itself:
// no host waits for the gate, and the statistics are recorded once its host copy lands); sums the instances' partial results as they arrive
// and hands each shard its rows of every partial (the shard's backend adds them to its
// residual, on its own device). It watches the
// instances: a layer batch that waits on an instance that died fails with a clear error
// instead of hanging.
#pragma once

#include <deque>
#include <map>

#include "actors/actor_common.h"
#include "actors/partial_gather.h"
#include "actors/protocol/layer_exchange.h"
#include "runtime/scheduling/activation_stats.h"
#include "runtime/scheduling/scheduling_policy.h"

namespace janus::actors {

class Scheduler : public JanusActor {
 public:
  Scheduler(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, std::unique_ptr<SchedulingPolicy> policy);
  caf::behavior make_behavior() override;

 private:
  /// What a layer batch sent to the instances waits with.
  struct Dispatched {
    std::vector<int32_t> shard_rows;
    int64_t rows = 0;
  };
  using PartialSums = PartialGather<Tensor, Dispatched>;

  Status keep(const Membership& next) override;
  void on_shard_rows(ShardActivations& a);
  void schedule(RoutedBatch& b);
  void on_partial(ExpertPartial& p);
  void reply(const LayerBatchKey& key, const std::vector<int32_t>& shard_rows, const std::map<int32_t, Tensor>& partials);
  void fail(const LayerBatchKey& key, const Status& why);

  /// Whether a device-routed batch can go to the instances as it is: every expert has
  /// one replica (no policy has a choice to make), every instance is here and alive.
  bool dispatches_device_routing() const;
  void dispatch_device_routing(RoutedBatch& b, uint64_t batch_id);
  /// The statistics of device-routed batches whose host copy has arrived (all of them,
  /// waiting, with `wait`): taken off the critical path, in batch order.
  void record_device_routed(bool wait);

  void record(const LayerBatchKey& key, const int32_t* ids, int64_t rows, const std::vector<int32_t>& replica, uint64_t batch_id);

  std::unique_ptr<SchedulingPolicy> policy_;
  std::vector<std::unique_ptr<SchedulingPolicy>> others_;  // for counterfactual a_max
  PartialGather<ShardActivations> shard_rows_{"shard "};  // AGate: the shards' routed rows
  PartialSums partials_{"expert-"};                       // by instance: [rows, H] each
  std::map<int32_t, std::string> dead_;  // instance -> why
  SchedulerStats sstats_;
  ActivationStats window_;  // the last kStatsWindow layer batches of every layer
  bool single_replica_ = false;  // of the current layout
  struct RoutedStats {
    LayerBatchKey key;
    uint64_t batch_id = 0;
    DeviceRouting routing;
  };
  std::deque<RoutedStats> routed_stats_;  // dispatched from the device, not yet recorded
};

}  // namespace janus::actors
