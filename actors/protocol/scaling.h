// The scaling protocol: asking the Scaler to rescale, and what it remembers of failures
// and of the autoscaler's decisions. Coordinator-only (the Scaler never leaves it).
//
//   Deployment, console, autoscaler ──ScaleTo──► Scaler ──Scaled{status, epoch}──►
//   Scaler ──ScaleTick──► itself (scaler{policy="slo"}, every interval)
//   -> Scaler: RecoveryQuery -> std::vector<RecoveryRecord>, ScalingQuery -> std::vector<ScalingRecord>,
//              RescaleQuery -> RescaleStats
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/status.h"

namespace janus::actors {

/// -> Scaler: rescale to this many shards and expert instances (answered with Scaled
/// once the new membership is installed, or as soon as it cannot be).
struct ScaleTo {
  int attention = 0;
  int moe = 0;
};

/// The answer to ScaleTo: the epoch of the membership with the new sizes, or why there
/// is none.
struct Scaled {
  Status status;
  uint32_t epoch = 0;
};

/// A failure and how long the deployment took to come back from it.
struct RecoveryRecord {
  std::string what;        // "expert-2 died (kill): replaced by expert-5"
  double detected_s = 0;   // when the Scaler saw the down message
  double installed_s = 0;  // when the new membership was in place
  double died_s = 0;       // when the Deployment killed it (fault injection), if known
};

struct RecoveryQuery {};

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

/// Rescales installed and rescales rolled back (a step failed; the membership they
/// started from stayed), with the last failure's Status.
struct RescaleStats {
  uint32_t epoch = 0;  // the newest membership's (handed to the Frontend, installed or not)
  uint64_t installed = 0;
  uint64_t failed = 0;
  Status last_failure;
};

struct RescaleQuery {};

}  // namespace janus::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ScaleTo)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::Scaled)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RecoveryQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::RecoveryRecord>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ScaleTick)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ScalingQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::ScalingRecord>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RescaleStats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RescaleQuery)
