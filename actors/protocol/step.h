// The step protocol: how requests enter the deployment and how the Frontend's clock
// drives the attention shards.
//
//   Deployment ──SubmitRequest──► Frontend ──StepBegin{admitted, cancelled}──► every shard
//   Deployment ──CancelRequest──►          ◄──StepDone{tokens, failures}── every shard
//
// Shards run in lockstep: a step starts on every shard of the current membership at once
// and ends when each has answered. StepBegin and StepDone cross processes (shards on
// `janus node`s, the Frontend in the coordinator) and are registered by
// add_janus_message_types() (actors/remote_types.h); SubmitRequest carries a callback
// and stays in the coordinator.
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/meta/type_name.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/protocol/layer_batch_key.h"
#include "actors/protocol/status.h"
#include "actors/request_events.h"
#include "runtime/model/reference_engine.h"

namespace janus::actors {

/// Where a request's tokens go: called on the Frontend's thread (the contract is
/// actors/request_events.h's).
struct RequestSink {
  std::function<void(const TokenEvent&)> on_token;
  std::function<void(Result<GenerateResult>)> on_done;
};

/// Deployment -> Frontend: a new request.
struct SubmitRequest {
  uint64_t id = 0;
  GenerateRequest request;
  std::shared_ptr<RequestSink> sink;
};

/// Deployment -> Frontend: end request `id` now (its result: finish_reason "cancelled",
/// the tokens so far). A request that already ended is left as it is.
struct CancelRequest {
  uint64_t id = 0;
};

/// A request handed to a shard at a step boundary.
struct AdmittedRequest {
  uint64_t id = 0;
  GenerateRequest request;
  std::vector<int32_t> resume_tokens;  // made on another shard before it moved here
};

/// Frontend -> every shard: run step `step`; `admitted` join this shard now.
struct StepBegin {
  step_t step = 0;
  uint32_t epoch = 0;
  std::vector<AdmittedRequest> admitted;
  // Requests of this shard that were cancelled since its last step: their KV is released
  // before `admitted` join (the Frontend already counts those blocks free).
  std::vector<uint64_t> cancelled;
};

struct TokenOut {
  uint64_t id = 0;
  int32_t token = 0;
  int32_t micro_batch = 0;  // where the request ran in this step
  bool finished = false;
  std::string finish_reason;
  std::vector<float> prompt_logits;  // when the request asked for them (first token only)
  // When the request asked for log-probabilities (GenerateRequest::logprobs >= 0): the
  // token's own and the top list's, as parallel vectors (most likely first). Plain fields
  // so the message serializes as it is when it crosses to another process.
  bool has_logprobs = false;
  float logprob = 0;
  std::vector<int32_t> top_tokens;
  std::vector<float> top_logprobs;
};

/// A request the shard gave up on in this step, and why (the code says what kind of
/// failure it was; the Frontend reports every such request as unavailable).
struct RequestFailure {
  uint64_t id = 0;
  Status error;
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

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, AdmittedRequest& x) {
  return f(caf::meta::type_name("janus.AdmittedRequest"), x.id, x.request, x.resume_tokens);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StepBegin& x) {
  return f(caf::meta::type_name("janus.StepBegin"), x.step, x.epoch, x.admitted, x.cancelled);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, TokenOut& x) {
  return f(caf::meta::type_name("janus.TokenOut"), x.id, x.token, x.micro_batch, x.finished, x.finish_reason, x.prompt_logits,
           x.has_logprobs, x.logprob, x.top_tokens, x.top_logprobs);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, RequestFailure& x) {
  return f(caf::meta::type_name("janus.RequestFailure"), x.id, x.error);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StepDone& x) {
  return f(caf::meta::type_name("janus.StepDone"), x.step, x.epoch, x.shard, x.tokens, x.failures, x.free_blocks, x.free_seqs);
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
           x.want_prompt_logits, x.logprobs);
}

}  // namespace janus

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::SubmitRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::CancelRequest)
