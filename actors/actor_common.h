// What every Janus actor shares: the deployment's context (model, graph, trace), its
// own counters, the membership it is a member of and its epoch, and a way to time the
// work it does.
#pragma once

#include <caf/all.hpp>
#include <memory>
#include <string>

#include "actors/protocol/control.h"
#include "actors/protocol/layer_batch_key.h"
#include "actors/protocol/membership.h"
#include "gpu/backend/backend.h"
#include "runtime/config/graph_spec.h"
#include "runtime/base/log.h"
#include "runtime/base/trace.h"

namespace janus::actors {

/// How the actors of one node of a multi-node deployment see a membership: members in
/// other processes that they send layer data to become the node's bridge (which moves the
/// data over the transport), the MoE side's router and scheduler become this node's own
/// mirrors, instances on other nodes become invalid handles (this node's scheduler does
/// not send them work). Set by the NodeAgent (actors/node_agent.h); absent in one process.
class MembershipView {
 public:
  virtual ~MembershipView() = default;
  virtual void localize(Membership& m) const = 0;
};

/// Read-only facts of one deployment, shared by its actors.
struct DeploymentContext {
  std::shared_ptr<const Model> model;
  GraphSpec spec;
  bool null_backend = false;
  bool compare_policies = false;  // the Scheduler also records what other policies would do
  Trace* trace = nullptr;  // owned by the Deployment; outlives the actors
  std::shared_ptr<const MembershipView> view;  // multi-node only
};

/// The backends' options for this deployment: the shards' KV cache from attention{}.
/// One definition for one process and for a `janus node`, so both size caches alike.
BackendOptions backend_options(const GraphSpec& spec, const ModelConfig& model);

/// The tiny wall clock every actor uses for timings (seconds, monotonic).
double now_seconds();

class JanusActor : public caf::event_based_actor {
 public:
  JanusActor(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, std::string name, std::string kind,
             std::string device);

  const char* name() const override { return stats_.name.c_str(); }

 protected:
  /// Runs f, adding its duration to the busy time and, when tracing, as a span.
  template <class F>
  auto timed(const char* what, const LayerBatchKey* key, F&& f) -> decltype(f()) {
    const double t0 = now_seconds();
    struct Done {
      JanusActor* self;
      const char* what;
      const LayerBatchKey* key;
      double t0;
      ~Done() { self->finish_span(what, key, t0); }
    } done{this, what, key, t0};
    return f();
  }

  /// Counts a handled message, and waits first when the actor was slowed down.
  void count();

  /// Counts a message that is not applied and logs "dropped <what> <why>".
  void drop(const char* what, const std::string& why);

  /// True when `epoch` is current; otherwise drops the message and returns false.
  bool current_epoch(uint32_t epoch, const char* what);

  // -- membership -------------------------------------------------------------------------

  /// The one way an actor takes a membership: one older than the current epoch is
  /// refused (dropped); otherwise it is localized (this node's view of it), the actor
  /// keeps what it needs from it (keep()), and it becomes membership_ under its epoch.
  /// The Status is keep()'s, with the actor's name: the membership is installed even
  /// when it failed, since the Frontend goes on with it and only logs the failure.
  Status adopt(Membership next);

  /// What this actor keeps from `next` while membership_ and epoch_ are still the ones
  /// it replaces: its own position, the members it watches, what in flight belongs to
  /// the old epoch. Nothing by default.
  virtual Status keep(const Membership& next);

  /// The behaviour of a member: `handlers`, plus Membership (adopted, and answered when
  /// installed or with keep()'s error) and the handlers of with_stats().
  caf::behavior member_behavior(caf::message_handler handlers);

  /// The actor's handlers plus those every actor has: StatsQuery (answered with
  /// ActorStats) and SlowDown.
  caf::behavior with_stats(caf::message_handler handlers);

  std::shared_ptr<const DeploymentContext> ctx_;
  ActorStats stats_;
  Membership membership_;
  uint32_t epoch_ = 0;
  double started_s_ = 0;

 private:
  void finish_span(const char* what, const LayerBatchKey* key, double t0);
};

}  // namespace janus::actors
