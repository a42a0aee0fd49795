// The membership protocol: who takes part in the deployment under which epoch, and how
// a change of it is made and installed.
//
//   Deployment ──InstallMembership{first, roster}──► Scaler
//   Scaler ──LoadExperts──► kept instances (placement changes: weights first)
//   Scaler ──Reconfigure{next, abort?, retire}──► Frontend      (or Unrecoverable)
//   Frontend ──Membership──► every member (answered once installed), at a step boundary
//   Frontend ──Reconfigured{epoch}──► Scaler
//
// A Membership crosses processes (to the members on `janus node`s) and has an
// inspect(); the rest stays in the coordinator.
#pragma once

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/sec.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/protocol/status.h"
#include "runtime/base/expert_layout.h"

namespace janus::actors {

/// Scaler -> everyone: who takes part, under which epoch.
struct Membership {
  uint32_t epoch = 0;
  caf::actor frontend;
  std::vector<caf::actor> shards;
  std::vector<caf::actor> routers;   // EGate: one; AGate: one per shard
  caf::actor scheduler;
  std::vector<caf::actor> instances;
  std::shared_ptr<const ExpertLayout> layout;
  // Multi-node: the other members that must hear of every epoch (the MoE nodes' router
  // and scheduler mirrors, every node's bridge). Empty in one process.
  std::vector<caf::actor> extra;
};

/// One actor the deployment ever had.
struct RosterEntry {
  std::string name, kind, device;
  caf::actor actor;
  bool alive = true;
  std::string node = "local";  // the process it runs in (a node's name in a multi-node deployment)
};

/// -> Scaler: the roster (answered with std::vector<RosterEntry>).
struct RosterQuery {};

/// Deployment -> Scaler at start: the first membership and the actors it names
/// (answered with its epoch once installed).
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

/// Scaler -> Frontend: a member the deployment cannot do without died; nothing can be
/// served any more, and `error` says why.
struct Unrecoverable {
  Status error;
};

/// Scaler -> ExpertInstance: load these experts' weights now (keep the current ones too),
/// so a placement can switch at a step boundary without waiting for weights (answered
/// with the Status of the load).
struct LoadExperts {
  std::vector<int32_t> experts;
};

/// The replica layout travels as its placement and is rebuilt (and so checked) on arrival.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, Membership& x) {
  int32_t experts = 0, slots = 0;
  std::vector<std::vector<int32_t>> placement;
  if constexpr (Inspector::reads_state) {
    if (x.layout) {
      experts = x.layout->num_experts();
      slots = x.layout->slots();
      placement = x.layout->placement();
    }
  }
  auto rebuild = caf::meta::load_callback([&]() -> caf::error {
    x.layout.reset();
    if (placement.empty()) return caf::none;
    auto l = ExpertLayout::create(experts, slots, placement);
    if (!l.ok()) return caf::make_error(caf::sec::invalid_argument, "membership layout: " + l.status().message());
    x.layout = std::make_shared<const ExpertLayout>(std::move(*l));
    return caf::none;
  });
  return f(caf::meta::type_name("janus.Membership"), x.epoch, x.frontend, x.shards, x.routers, x.scheduler, x.instances, x.extra,
           experts, slots, placement, rebuild);
}

}  // namespace janus::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RosterQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::RosterEntry>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::InstallMembership)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::Reconfigure)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::Reconfigured)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::Unrecoverable)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::LoadExperts)
