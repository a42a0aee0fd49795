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
//
// Rollback. A rescale runs its steps — spawn the new members, load their weights (and the
// kept instances' new experts), have each new member acknowledge the membership it joins
// (within DeploymentOptions::rescale_join_timeout_s) — before it hands anything to the
// Frontend, so until the hand-off the deployment serves on its previous membership and
// epoch. When a step fails, the new members are retired, kept instances go back to the
// experts they held, and the ScaleTo is answered with a Status naming the step and the
// member (logged once, counted in RescaleStats). A member of the current membership that
// dies meanwhile is a recovery (on_down); the rescale then starts over from the recovered
// membership. A member retiring at a handed-off but not yet installed epoch that dies is
// a recovery too: the step in flight is aborted and re-run. DeploymentOptions::
// rescale_faults makes one step fail for one member (the tests' hook).
#pragma once

#include <map>
#include <set>

#include "actors/actor_common.h"
#include "actors/deployment.h"
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
  // Rescale steps that fail (a test hook; each fires once) and how long new members have
  // to acknowledge the membership they join.
  std::vector<RescaleFault> faults;
  double join_timeout_s = 30;
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
  // `rescale`: the spawn is a rescale's step, where the injected faults apply.
  Result<caf::actor> spawn_shard(int* id, bool rescale = false);
  Result<caf::actor> spawn_router(int shard_id, bool rescale = false);
  Result<caf::actor> spawn_instance(const std::vector<int32_t>& experts, int* id, bool rescale = false);
  /// Whether a fault is injected at step `at` for `member` (it is consumed).
  bool take_fault(RescaleFault::At at, const std::string& member);
  RosterEntry* entry(const caf::actor_addr& a);
  void scale(const ScaleTo& s, caf::response_promise rp, int attempt = 0);

  /// A rescale between its first spawn and its hand-off to the Frontend: what it will
  /// install and what to undo if a step fails.
  struct Rescale {
    ScaleTo to;
    caf::response_promise rp;
    int attempt = 0;
    uint32_t from_epoch = 0;  // planned_.epoch when it started
    Membership next;
    std::vector<caf::actor> retire;                 // old members that leave once `next` is installed
    std::vector<std::pair<std::string, caf::actor>> joining;  // new members, by name
    std::vector<std::pair<caf::actor, std::vector<int32_t>>> kept;  // kept instances and the experts they held
    std::string reason;
    size_t waiting = 0;  // answers still due in the current step
    bool over = false;   // handed off, rolled back or started over
  };
  using RescalePtr = std::shared_ptr<Rescale>;
  void spawn_members(const RescalePtr& r, const ExpertLayout& layout);
  void load_experts(const RescalePtr& r, std::vector<std::pair<caf::actor, std::vector<int32_t>>> loads);
  void join(const RescalePtr& r);
  void hand_off(const RescalePtr& r);
  /// A step failed: the new members retire, the previous membership stays.
  void roll_back(const RescalePtr& r, const std::string& step, const std::string& member, const Status& why);
  /// The membership changed under the rescale (a member died and was recovered): it starts
  /// over from the new one. True when it did (the caller stops).
  bool overtaken(const RescalePtr& r);
  void retire_joining(const RescalePtr& r);
  bool retiring(const caf::actor_addr& a) const;
  void autoscale();
  void decide(double lambda, const SchedulerStats& st);

  SpawnKit kit_;
  std::vector<RosterEntry> roster_;
  Membership planned_;  // the newest membership handed to the Frontend (installed or not)
  std::vector<RecoveryRecord> recoveries_;
  // Answered when that epoch is installed: InstallMembership with the epoch, ScaleTo with Scaled.
  std::map<uint32_t, caf::response_promise> installing_, scaling_;
  std::map<uint32_t, size_t> recovery_of_epoch_;       // which record an epoch completes
  // Handed-off epochs not yet installed and the members leaving at them: until then the
  // Frontend still runs steps with those members.
  std::map<uint32_t, std::vector<caf::actor>> retiring_;
  uint32_t installed_epoch_ = 0;
  RescaleStats rescale_stats_;
  std::vector<ScalingRecord> decisions_;
  double last_tick_s_ = 0;
  bool lost_node_ = false;  // multi-node: the deployment cannot serve any more (reported once)
  std::set<uint32_t> lost_nodes_;  // multi-node: nodes whose process went away
  bool moving_ = false;            // multi-node: a lost node's instances are being moved
  int64_t last_requested_ = -1;
  ShrinkHold shrink_hold_;
  const char* spawn_step_ = "spawn";  // how far the last spawn_* got: "spawn", then "load" (its weights)
};

}  // namespace janus::actors
