// Frontend: the deployment's front door and its step clock.
//
// It admits requests (validating them first), queues those that do not fit, and at each
// step boundary hands queued requests to the attention shard with the most free KV blocks
// that can hold the whole request (prompt + max_new_tokens), so a running request never
// runs out of cache and nothing is dropped. It starts a step on every shard at once
// (shards run in lockstep), collects their tokens, streams them to each request's sink,
// and keeps the per-request timings behind TTFT and TPOT. The console can pause the
// clock at a step boundary, run a given number of steps, and resume.
#pragma once

#include <deque>
#include <map>

#include "actors/actor_common.h"

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
    int shard = -1;  // -1 while queued
    std::vector<int32_t> tokens;
    std::vector<float> prompt_logits;
    double submit_s = 0, first_s = 0, last_s = 0;
    std::vector<RequestStepPlace> history;
  };
  struct ShardLoad {
    int free_blocks = 0;
    int free_seqs = 0;
    bool alive = true;
  };

  void submit(SubmitRequest& s);
  void maybe_start_step();
  void on_step_done(StepDone& d);
  void finish(Request& r, Result<GenerateResult> result);
  void fail_all(const std::string& why);
  int blocks_needed(const GenerateRequest& r) const;
  RequestInfo info(const Request& r, bool queued) const;
  void remember(Request r);
  StepState step_state() const { return {paused_, budget_, step_, in_step_}; }

  Membership m_;
  std::map<uint64_t, Request> live_;  // queued and running
  std::deque<uint64_t> queue_;
  std::vector<ShardLoad> load_;
  step_t step_ = 0;
  bool in_step_ = false;
  int pending_done_ = 0;
  bool shut_down_ = false;
  bool paused_ = false;  // the console's pause(): no new step starts...
  int budget_ = 0;       // ...except this many (step(n))
  std::map<uint64_t, Request> recent_;  // finished requests kept for trace(), the last 256
  std::string broken_;  // why the deployment cannot serve any more (a shard died)
  FrontendStats fstats_;
};

}  // namespace janus::actors
