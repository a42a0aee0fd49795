// Frontend: the deployment's front door, its step clock, and where membership changes
// take effect.
//
// It admits requests (validating them first), queues those that do not fit, and at each
// step boundary hands queued requests to the attention shard with the most free KV blocks
// that can hold the whole request (prompt + max_new_tokens), so a running request never
// runs out of cache and nothing is dropped. It starts a step on every shard at once
// (shards run in lockstep), collects their tokens, streams them to each request's sink,
// and keeps the per-request timings behind TTFT and TPOT. The console can pause the
// clock at a step boundary, run a given number of steps, and resume.
//
// Membership changes from the Scaler (scale up or down, a replacement for a dead member)
// are installed here, between steps: every member gets the new membership under a new
// epoch and acknowledges it before the next step starts. When a member died mid-step the
// step is aborted instead (its old-epoch messages are then dropped everywhere) and re-run
// under the new membership. Requests of a shard that died or retires resume on another
// shard from the tokens already streamed: nothing is lost, nothing is sent twice.
#pragma once

#include <deque>
#include <map>
#include <set>

#include "actors/actor_common.h"
#include "actors/protocol/step.h"

namespace janus::actors {

class Frontend : public JanusActor {
 public:
  Frontend(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx);
  caf::behavior make_behavior() override;

 private:
  struct Request {
    uint64_t id = 0;
    GenerateRequest req;
    std::shared_ptr<RequestSink> sink;
    caf::actor shard;  // invalid while queued
    std::vector<int32_t> tokens;
    std::vector<TokenLogprobs> logprobs;  // per token, when asked
    std::vector<float> prompt_logits;
    double submit_s = 0, first_s = 0, last_s = 0;
    std::vector<RequestStepPlace> history;
    int blocks = 0;
  };
  struct ShardUse {
    int blocks = 0;
    int seqs = 0;
  };

  void submit(SubmitRequest& s);
  void cancel(uint64_t id);
  void maybe_start_step();
  void on_step_done(StepDone& d);
  void apply_tokens(StepDone& d);
  void finish(Request& r, Result<GenerateResult> result);
  void fail_all(const std::string& why);
  int blocks_needed(const GenerateRequest& r) const;
  int shard_index(const caf::actor& a) const;
  RequestInfo info(const Request& r, bool queued) const;
  void remember(Request r);
  StepState step_state() const { return {paused_, budget_, step_, in_step_}; }

  void on_reconfigure(Reconfigure& r);
  void install(Reconfigure r);

  caf::actor scaler_;
  std::map<uint64_t, Request> live_;  // queued and running
  std::deque<uint64_t> queue_;
  std::map<caf::actor_addr, ShardUse> use_;  // KV blocks and sequence slots taken, per shard
  // Cancelled requests whose shard still holds their KV: sent with the shard's next
  // StepBegin (use_ already counts their blocks free, so the same StepBegin may admit
  // requests into them; the shard releases first).
  std::map<caf::actor_addr, std::vector<uint64_t>> cancelled_;
  step_t step_ = 0;
  bool in_step_ = false;
  std::set<caf::actor_addr> awaiting_;  // shards whose StepDone for step_ is still due
  step_t aborted_step_ = 0;              // a step cut short by a membership change
  bool shut_down_ = false;
  bool paused_ = false;  // the console's pause(): no new step starts...
  int budget_ = 0;       // ...except this many (step(n))
  std::deque<Reconfigure> reconfig_;  // membership changes waiting for a step boundary
  bool installing_ = false;
  std::string broken_;  // why the deployment cannot serve any more
  std::map<uint64_t, Request> recent_;  // finished requests kept for trace(), the last 256
  FrontendStats fstats_;
  // fstats_.finished is a ring of the last kTimingWindow requests' timings: TTFT and TPOT
  // percentiles are of that window, so a server that runs for days keeps a bounded list
  // (the counts stay exact). timing_next_ is where the next one goes once it is full.
  size_t timing_next_ = 0;

 public:
  static constexpr size_t kTimingWindow = 4096;
  static constexpr size_t kHistorySteps = 64;  // per request, the most recent step places kept for trace()
};

}  // namespace janus::actors
