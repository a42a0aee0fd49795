// What the Scaler, the Frontend and the Deployment say to each other about membership:
// the roster of actors, requests to rescale, and the membership changes the Frontend
// installs at step boundaries.
#pragma once

#include <string>
#include <vector>

#include "actors/messages.h"

namespace janus::actors {

/// One actor the deployment ever had.
struct RosterEntry {
  std::string name, kind, device;
  caf::actor actor;
  bool alive = true;
  std::string node = "local";  // the process it runs in (a node's name in a multi-node deployment)
};

struct RosterQuery {};

/// Deployment -> Scaler at start: the first membership and the actors it names.
struct InstallMembership {
  Membership membership;
  std::vector<RosterEntry> roster;
};

/// Scaler -> Frontend: install `next` (its epoch is the current one + 1). With `abort`,
/// the step in flight is cut short and re-run under `next` (a member died); otherwise the
/// change waits for the step boundary. `retire` are live actors that leave (they get an
/// exit once `next` is in place); requests on shards that are not in `next` resume on
/// shards that are.
struct Reconfigure {
  Membership next;
  bool abort = false;
  std::vector<caf::actor> retire;
  std::string reason;
  double detected_s = 0;
};

/// Frontend -> Scaler: `epoch` is in place everywhere (at `applied_s`).
struct Reconfigured {
  uint32_t epoch = 0;
  double applied_s = 0;
  std::string reason;
};

/// -> Scaler: rescale to this many shards and expert instances (answered with the new
/// epoch once it is installed, or an error).
struct ScaleTo {
  int attention = 0;
  int moe = 0;
};

/// A failure and how long the deployment took to come back from it.
struct RecoveryRecord {
  std::string what;        // "expert-2 died (kill): replaced by expert-5"
  double detected_s = 0;   // when the Scaler saw the down message
  double installed_s = 0;  // when the new membership was in place
  double died_s = 0;       // when the Deployment killed it (fault injection), if known
};

struct RecoveryQuery {};

/// Scaler -> Frontend: a member the deployment cannot do without died.
struct Unrecoverable {
  std::string why;
};

/// The autoscaler's clock tick (Scaler to itself).
struct ScaleTick {};

/// One decision of the autoscaler.
struct ScalingRecord {
  double t_s = 0;          // steady-clock seconds
  double lambda = 0;       // measured demand, output tokens/s
  int attention = 0, moe = 0;
  double batch = 0, tpot = 0;
  bool feasible = false;
  bool changed = false;    // it rescaled
  std::string note;
};

struct ScalingQuery {};

/// -> ExpertInstance: load these experts' weights now (keep the current ones too), so
/// a placement can switch at a step boundary without waiting for weights.
struct LoadExperts {
  std::vector<int32_t> experts;
};

}  // namespace janus::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RosterQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::RosterEntry>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::InstallMembership)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::Reconfigure)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::Reconfigured)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ScaleTo)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RecoveryQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::RecoveryRecord>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::Unrecoverable)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::LoadExperts)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ScaleTick)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ScalingQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::ScalingRecord>)
