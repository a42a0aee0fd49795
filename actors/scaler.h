// Scaler: owns who takes part in the deployment — the roster of actors, the membership
// (shards, routers, scheduler, expert instances, replica layout) and its epoch — and
// changes it:
//
//  * on request (ScaleTo, the console's scale{}, the autoscaler): spawns new shards and
//    expert instances (their backends and weights ready before anything switches),
//    recomputes the replica placement from the Scheduler's activation statistics, and
//    hands the Frontend the new membership to install at the next step boundary;
//    retiring shards' requests resume elsewhere, retiring actors exit afterwards;
//  * on a failure (it monitors every member): a dead expert instance is replaced by a new
//    one holding the same experts, and replicas elsewhere keep serving meanwhile; a dead
//    shard's requests resume on the others. The step in flight is aborted and re-run
//    under the new epoch, so every admitted request still produces exactly its tokens.
//    In a multi-node deployment a MoE node whose process died has its instances rebuilt
//    on the other MoE nodes the same way, and a lost attention node's requests resume on
//    the other attention nodes' shards.
//
//  * with scaler{policy="slo"}: every interval it measures the demand (output tokens/s
//    asked for) and runs Janus Algorithm 2 on the profiled performance model, with a_max
//    bounded from the Scheduler's live activation statistics (Appendix A), and rescales
//    to the fewest devices that keep TPOT within the SLO.
//
// It keeps a record of every recovery (detection and installation times) and decision.
#pragma once

#include <map>
#include <set>

#include "actors/actor_common.h"
#include "actors/protocol/control.h"
#include "actors/protocol/membership.h"
#include "actors/protocol/node.h"
#include "actors/protocol/scaling.h"
#include "runtime/scheduling/perf_model.h"
#include "runtime/config/scaling_decision.h"

namespace janus::actors {

/// What the Scaler needs to make new actors like the first ones.
struct SpawnKit {
  BackendOptions backend;
  std::vector<std::string> shard_devices, instance_devices;  // cycled through
  int next_shard_id = 0, next_instance_id = 0, next_router_id = 0;
  std::shared_ptr<const PerfModel> perf;  // for scaler{policy="slo"}
  // Multi-node: the nodes (agents, bridges) and the node index of each instance and shard position.
  std::vector<NodeInfo> nodes;
  std::vector<int32_t> instance_node, shard_node;
};

class Scaler : public JanusActor {
 public:
  Scaler(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, SpawnKit kit);
  caf::behavior make_behavior() override;

 private:
  void on_down(caf::down_msg& dm);
  /// Multi-node: a member on node `node` died, so the node's process is gone. A MoE node's
  /// instances move to the MoE nodes that are left (HostInstances); an attention node's
  /// shards leave and their requests resume on the others. Every bridge learns the new
  /// directory (DirectoryUpdate), and the step re-runs under the new membership.
  void on_node_down(const std::string& node, const std::string& why, double detected);
  void finish_node_recovery(uint32_t lost, Membership next, const std::string& what, double detected);
  void node_unrecoverable(const std::string& why);
  /// Hands the Frontend a change from `planned_` to `next`.
  void propose(Membership next, bool abort, std::vector<caf::actor> retire, const std::string& reason, double detected_s);
  Result<caf::actor> spawn_shard(int* id);
  Result<caf::actor> spawn_router(int shard_id);
  Result<caf::actor> spawn_instance(const std::vector<int32_t>& experts, int* id);
  RosterEntry* entry(const caf::actor_addr& a);
  void scale(const ScaleTo& s, caf::response_promise rp);
  void autoscale();
  void decide(double lambda, const SchedulerStats& st);

  SpawnKit kit_;
  std::vector<RosterEntry> roster_;
  Membership planned_;  // the newest membership handed to the Frontend (installed or not)
  std::vector<RecoveryRecord> recoveries_;
  // Answered when that epoch is installed: InstallMembership with the epoch, ScaleTo with Scaled.
  std::map<uint32_t, caf::response_promise> installing_, scaling_;
  std::map<uint32_t, size_t> recovery_of_epoch_;       // which record an epoch completes
  std::vector<ScalingRecord> decisions_;
  double last_tick_s_ = 0;
  bool lost_node_ = false;  // multi-node: the deployment cannot serve any more (reported once)
  std::set<uint32_t> lost_nodes_;  // multi-node: nodes whose process went away
  bool moving_ = false;            // multi-node: a lost node's instances are being moved
  int64_t last_requested_ = -1;
  ShrinkHold shrink_hold_;
};

}  // namespace janus::actors
