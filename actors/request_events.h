// What a running request tells its submitter, token by token: the embedding API's
// streaming callbacks (actors/deployment.h, Deployment::submit with RequestCallbacks).
//
// The callback-thread contract (the same for every callback here):
//  - Callbacks run on a runtime thread (the Frontend actor's), never on the submitting
//    thread, one at a time for the whole deployment: two callbacks never run at once, so a
//    callback needs no lock against another callback, only against the caller's own threads.
//  - Per request, on_token is called once per token in order (index 0, 1, ...), and
//    on_done exactly once, after the last on_token, just before the handle's future
//    resolves with the same result.
//  - Callbacks delay every request of the deployment while they run: hand the event to
//    another thread (a queue, a condition variable) and return.
//  - A callback may call Deployment::submit() and Deployment::cancel() (they only post a
//    message, never wait). It must not call the Deployment's waiting calls (metrics(),
//    requests(), pause(), scale(), kill(), shutdown(), ...) nor wait on a handle's future:
//    they wait for the Frontend, which is busy running the callback. shutdown() called
//    from a callback is refused with an error in the log.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "runtime/base/status.h"
#include "runtime/model/reference_engine.h"

namespace janus {

/// One token of a request, as the Frontend streams it.
struct TokenEvent {
  uint64_t request_id = 0;
  int32_t token = 0;
  int index = 0;              // 0 for the request's first new token
  bool last = false;          // the request's final token
  std::string finish_reason;  // on the last token: "length" or "eos"; empty before
  double since_submit_s = 0;    // when the Frontend had the token, seconds after submit()
  double since_previous_s = 0;  // since the previous token (since submit() for the first)
  /// Only when the request asked (GenerateRequest::logprobs >= 0): this token's
  /// log-probability and the `logprobs` most likely tokens, most likely first, of the
  /// model's raw distribution (log_softmax of the logits, before temperature, top-k and
  /// top-p). Computed on the attention shard that sampled the token, from the same logits.
  std::optional<TokenLogprobs> logprobs;
};

/// The callbacks of a submitted request; each may be empty.
struct RequestCallbacks {
  std::function<void(const TokenEvent&)> on_token;
  /// The request's end: its result (finish_reason "length", "eos" or "cancelled"), or the
  /// error that ended it.
  std::function<void(const Result<GenerateResult>&)> on_done;
};

}  // namespace janus
