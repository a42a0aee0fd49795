// The messages the actors of one deployment exchange (CAF 0.17 types).
//
// Inside a process, tensors travel as shared Tensor handles (zero copy), so the data-plane
// types are process-local (CAF_ALLOW_UNSAFE_MESSAGE_TYPE); across nodes the same content
// goes as schemas/descriptors.capnp frames plus transport payloads, between the nodes'
// bridges (actors/bridge.h, actors/wire_codec.h). The control-plane types that do cross a
// process boundary over CAF's middleman (a step's start and end, memberships, counters)
// have inspect() functions below and are registered by add_janus_message_types()
// (actors/remote_types.h).
// Every data-plane message carries a LayerBatchKey whose epoch fences membership changes:
// a message from another epoch is dropped, logged and counted, never applied.
//
// Include only from actor sources: CAF headers compile slowly.
#pragma once

#include <caf/all.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gpu/backend/backend.h"
#include "runtime/base/expert_layout.h"
#include "runtime/model/reference_engine.h"

namespace janus::actors {

using step_t = uint64_t;

struct LayerBatchKey {
  step_t step = 0;
  int32_t layer = 0;
  int32_t micro_batch = 0;
  uint32_t epoch = 0;

  bool operator==(const LayerBatchKey& o) const {
    return step == o.step && layer == o.layer && micro_batch == o.micro_batch && epoch == o.epoch;
  }
  bool operator<(const LayerBatchKey& o) const {
    if (step != o.step) return step < o.step;
    if (layer != o.layer) return layer < o.layer;
    return micro_batch < o.micro_batch;
  }
  std::string to_string() const;
};

// -- requests -------------------------------------------------------------------------

/// Where a request's tokens go: called on the Frontend's thread.
struct RequestSink {
  std::function<void(int32_t token)> on_token;
  std::function<void(Result<GenerateResult>)> on_done;
};

struct SubmitRequest {
  uint64_t id = 0;
  GenerateRequest request;
  std::shared_ptr<RequestSink> sink;
};

/// A request handed to a shard at a step boundary.
struct AdmittedRequest {
  uint64_t id = 0;
  GenerateRequest request;
  std::vector<int32_t> resume_tokens;  // made on another shard before it moved here
};

// -- the step protocol ------------------------------------------------------------------

/// Frontend -> every shard: run step `step`; `admitted` join this shard now.
struct StepBegin {
  step_t step = 0;
  uint32_t epoch = 0;
  std::vector<AdmittedRequest> admitted;
};

struct TokenOut {
  uint64_t id = 0;
  int32_t token = 0;
  int32_t micro_batch = 0;  // where the request ran in this step
  bool finished = false;
  std::string finish_reason;
  std::vector<float> prompt_logits;  // when the request asked for them (first token only)
};

struct RequestFailure {
  uint64_t id = 0;
  std::string message;
};

/// Shard -> Frontend: step `step` is done here.
struct StepDone {
  step_t step = 0;
  uint32_t epoch = 0;
  int32_t shard = 0;
  std::vector<TokenOut> tokens;
  std::vector<RequestFailure> failures;
  int32_t free_blocks = 0;
  int32_t free_seqs = 0;
};

// -- the layer exchange -----------------------------------------------------------------

/// Shard -> Router (EGate), or shard -> its Router -> Scheduler (AGate, with routing).
struct ShardActivations {
  LayerBatchKey key;
  int32_t shard = 0;
  Tensor h;                          // [rows, H]
  std::vector<int32_t> topk_ids;     // AGate: [rows * k]
  std::vector<float> topk_weights;
};

/// Router -> Scheduler: a whole layer batch, rows of shard 0 first.
struct RoutedBatch {
  LayerBatchKey key;
  Tensor h;                          // [total rows, H]
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_weights;
  std::vector<int32_t> shard_rows;   // rows contributed by each shard, in shard order
};

/// Scheduler -> ExpertInstance.
struct ExpertTask {
  LayerBatchKey key;
  int32_t instance = 0;
  Tensor h;                          // the whole layer batch (shared)
  std::vector<ExpertWork> work;
};

/// ExpertInstance -> Scheduler.
struct ExpertPartial {
  LayerBatchKey key;
  int32_t instance = 0;
  Tensor partial;                    // [total rows, H]
  std::string error;                 // non-empty: the instance could not run the task
};

/// Scheduler -> shard: the expert instances' partial sums for the shard's rows (the
/// shard adds them to its residual), or why there are none.
struct MoeResult {
  LayerBatchKey key;
  std::vector<Tensor> partials;      // [shard rows, H] each, in instance (or MoE node) order
  std::string error;
  int32_t shard = -1;                // the shard it is for (a bridge forwards it by this)
};

// -- membership -------------------------------------------------------------------------

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

// -- queries, control -------------------------------------------------------------------

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

struct FrontendStats {
  uint64_t completed = 0, failed = 0, queued = 0, running = 0;
  int64_t tokens = 0;
  int64_t requested_tokens = 0;  // max_new_tokens of every admitted submission: the demand
  double first_submit_s = 0, last_token_s = 0;
  std::vector<RequestTiming> finished;
};

struct SchedulerStats {
  std::vector<LayerAmaxStats> layers;
  uint64_t bytes_in = 0;  // activation bytes received from shards
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

/// Makes an actor wait this long before handling each message (fault injection).
struct SlowDown {
  double ms = 0;
};

/// A request for an actor's counters (answered with ActorStats).
struct StatsQuery {};

/// Ask the Frontend to fail everything in flight and stop admitting (clean shutdown).
struct ShutdownRequest {
  std::string reason;
};

/// The tiny wall clock every actor uses for timings (seconds, monotonic).
double now_seconds();

// -- wire forms of the control-plane types (CAF 0.17 inspectors) ------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, LayerBatchKey& x) {
  return f(caf::meta::type_name("janus.LayerBatchKey"), x.step, x.layer, x.micro_batch, x.epoch);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, AdmittedRequest& x) {
  return f(caf::meta::type_name("janus.AdmittedRequest"), x.id, x.request, x.resume_tokens);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StepBegin& x) {
  return f(caf::meta::type_name("janus.StepBegin"), x.step, x.epoch, x.admitted);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, TokenOut& x) {
  return f(caf::meta::type_name("janus.TokenOut"), x.id, x.token, x.micro_batch, x.finished, x.finish_reason, x.prompt_logits);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, RequestFailure& x) {
  return f(caf::meta::type_name("janus.RequestFailure"), x.id, x.message);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StepDone& x) {
  return f(caf::meta::type_name("janus.StepDone"), x.step, x.epoch, x.shard, x.tokens, x.failures, x.free_blocks, x.free_seqs);
}

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
  return f(caf::meta::type_name("janus.SchedulerStats"), x.layers, x.bytes_in, x.expert_counts, x.replica_counts, x.counterfactual,
           x.window_load, x.window_coactivation, x.window_probability);
}

}  // namespace janus::actors

namespace janus {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, SamplingParams& x) {
  return f(caf::meta::type_name("janus.SamplingParams"), x.temperature, x.top_p, x.top_k, x.seed);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, GenerateRequest& x) {
  return f(caf::meta::type_name("janus.GenerateRequest"), x.prompt, x.max_new_tokens, x.sampling, x.stop_at_eos, x.eos_ids,
           x.want_prompt_logits);
}

}  // namespace janus

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::SubmitRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ShardActivations)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RoutedBatch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ExpertTask)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ExpertPartial)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::MoeResult)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::FrontendStats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ShutdownRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RequestsQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<janus::actors::RequestInfo>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::StepControl)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::StepState)
