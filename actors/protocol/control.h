// The control protocol: what the Deployment, the console and the Scaler ask of the
// actors while they serve — counters, fault injection, the Frontend's live requests and
// step clock, a clean shutdown.
//
//   -> any actor:  StatsQuery -> ActorStats          SlowDown (fault injection)
//   -> Frontend:   FrontendStats{} -> FrontendStats  RequestsQuery -> std::vector<RequestInfo>
//                  StepControl -> StepState          ShutdownRequest (answered when done)
//   -> Scheduler:  SchedulerStats{} -> SchedulerStats
//
// StatsQuery, SlowDown, ActorStats and the scheduler's statistics cross processes (the
// console asks the actors of every node) and have inspect()s.
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/meta/type_name.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "actors/protocol/layer_batch_key.h"

namespace janus::actors {

/// Per-actor counters every actor keeps (for metrics and the console).
struct ActorStats {
  std::string name;
  std::string kind;
  std::string device;
  uint64_t messages = 0;
  double busy_s = 0;
  uint64_t dropped = 0;  // wrong epoch, unknown key
  uint64_t mailbox = 0;  // messages waiting when asked
  double slow_ms = 0;    // injected delay per message (fault injection)
  double alive_s = 0;    // since the actor started
};

/// A request for an actor's counters (answered with ActorStats).
struct StatsQuery {};

/// Makes an actor wait this long before handling each message (fault injection).
struct SlowDown {
  double ms = 0;
};

/// a_max seen by the scheduler, per layer.
struct LayerAmaxStats {
  uint64_t batches = 0;
  double sum = 0;
  int max = 0;
  std::vector<uint64_t> histogram;  // histogram[a] = layer batches whose a_max was a
};

struct RequestTiming {
  double submit_s = 0, first_token_s = 0, last_token_s = 0;
  int64_t tokens = 0;
};

/// The Frontend's counters; an empty one is the query for them.
struct FrontendStats {
  uint64_t completed = 0, failed = 0, queued = 0, running = 0;
  uint64_t cancelled = 0;  // also counted in completed (their results are ok)
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;  // reserved by admitted requests, over every shard
  int64_t tokens = 0;
  int64_t requested_tokens = 0;  // max_new_tokens of every admitted submission: the demand
  double first_submit_s = 0, last_token_s = 0;
  std::vector<RequestTiming> finished;
};

/// The Scheduler's statistics; an empty one is the query for them.
struct SchedulerStats {
  std::vector<LayerAmaxStats> layers;
  uint64_t bytes_in = 0;  // activation bytes received from shards
  // Layer batches whose routing went to the instances as the router left it on the GPU
  // (one replica per expert: nothing to schedule, no host wait for the gate).
  uint64_t device_routed = 0;
  // Per layer: activations (token choices) per logical expert [E], and per (instance,
  // expert) replica [instances * E].
  std::vector<std::vector<uint64_t>> expert_counts;
  std::vector<std::vector<uint64_t>> replica_counts;
  // Per policy name: what a_max that policy would have given on the same layer batches
  // (only when the deployment compares policies).
  std::map<std::string, std::vector<LayerAmaxStats>> counterfactual;
  // The sliding window of recent layer batches (runtime/scheduling/activation_stats.h), summed over
  // layers: c(e) [E] and co-activation a(e, f) [E*E]; per layer p(e) [L][E].
  std::vector<double> window_load;
  std::vector<double> window_coactivation;
  std::vector<std::vector<double>> window_probability;
  // The replica layout it assigns with now (experts held per instance): the start-up one
  // until a scale or a recovery installs another.
  std::vector<std::vector<int32_t>> placement;
};

/// Where a request ran in one step.
struct RequestStepPlace {
  step_t step = 0;
  int32_t shard = 0;
  int32_t micro_batch = 0;
};

struct RequestInfo {
  uint64_t id = 0;
  std::string state;  // "queued", "running"
  int32_t shard = -1;
  int32_t prompt_tokens = 0;
  int32_t generated = 0;
  int32_t max_new_tokens = 0;
  double age_s = 0;
  double ttft_s = -1;  // -1 before the first token
  std::vector<RequestStepPlace> history;  // the most recent steps
};

/// Queries the Frontend's live requests (answered with std::vector<RequestInfo>); also
/// finished ones still remembered when `id` names one.
struct RequestsQuery {
  uint64_t id = 0;  // 0: all live requests
};

/// Steps the Frontend's clock by hand (the console's pause/step/resume).
struct StepControl {
  enum class Op { kPause, kResume, kStep, kState } op = Op::kState;
  int steps = 0;
};

struct StepState {
  bool paused = false;
  int budget = 0;  // steps still allowed while paused
  step_t step = 0;
  bool in_step = false;
};

/// Ask the Frontend to fail everything in flight and stop admitting (clean shutdown).
struct ShutdownRequest {
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ActorStats& x) {
  return f(caf::meta::type_name("janus.ActorStats"), x.name, x.kind, x.device, x.messages, x.busy_s, x.dropped, x.mailbox, x.slow_ms,
           x.alive_s);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StatsQuery&) {
  return f(caf::meta::type_name("janus.StatsQuery"));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, SlowDown& x) {
  return f(caf::meta::type_name("janus.SlowDown"), x.ms);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, LayerAmaxStats& x) {
  return f(caf::meta::type_name("janus.LayerAmaxStats"), x.batches, x.sum, x.max, x.histogram);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, SchedulerStats& x) {
  return f(caf::meta::type_name("janus.SchedulerStats"), x.layers, x.bytes_in, x.device_routed, x.expert_counts, x.replica_counts, x.counterfactual,
           x.window_load, x.window_coactivation, x.window_probability, x.placement);
}

}  // namespace janus::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::FrontendStats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ShutdownRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RequestsQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::RequestInfo>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::StepControl)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::StepState)
