#include "actors/frontend.h"

#include <algorithm>

#include "runtime/scheduling/kv_admission.h"

namespace janus::actors {

Frontend::Frontend(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx)
    : JanusActor(cfg, std::move(ctx), "frontend", "Frontend", "cpu") {}

int Frontend::blocks_needed(const GenerateRequest& r) const {
  return kv_blocks_needed(static_cast<int>(r.prompt.size()), r.max_new_tokens, ctx_->spec.attention.block_size);
}

int Frontend::shard_index(const caf::actor& a) const {
  for (size_t i = 0; i < membership_.shards.size(); ++i)
    if (membership_.shards[i] == a) return static_cast<int>(i);
  return -1;
}

caf::behavior Frontend::make_behavior() {
  return with_stats({
      [=, this](Reconfigure& r) {
        count();
        if (!scaler_) scaler_ = caf::actor_cast<caf::actor>(current_sender());
        on_reconfigure(r);
      },
      [=, this](Unrecoverable& u) {
        count();
        log_error(stats_.name, u.error.message());
        broken_ = u.error.message();
        fail_all("request failed: " + broken_);
        in_step_ = false;
        awaiting_.clear();
      },
      [=, this](SubmitRequest& s) {
        count();
        submit(s);
      },
      [=, this](const CancelRequest& c) {
        count();
        cancel(c.id);
      },
      [=, this](StepDone& d) {
        count();
        on_step_done(d);
      },
      [=, this](ShutdownRequest& r) {
        count();
        shut_down_ = true;
        fail_all(r.reason);
      },
      [=, this](const FrontendStats&) -> FrontendStats {  // a query carries an empty FrontendStats
        FrontendStats out = fstats_;
        out.queued = queue_.size();
        out.running = live_.size() - queue_.size();
        out.kv_blocks_used = 0;
        for (const caf::actor& sh : membership_.shards) {
          auto it = use_.find(sh.address());
          if (it != use_.end()) out.kv_blocks_used += it->second.blocks;
        }
        out.kv_blocks_total = static_cast<int64_t>(membership_.shards.size()) * ctx_->spec.attention.kv_blocks;
        return out;
      },
      [=, this](const RequestsQuery& q) -> std::vector<RequestInfo> {
        std::vector<RequestInfo> out;
        for (const auto& [id, r] : live_)
          if (q.id == 0 || q.id == id) out.push_back(info(r, !r.shard));
        if (q.id != 0 && out.empty()) {
          auto it = recent_.find(q.id);
          if (it != recent_.end()) out.push_back(info(it->second, false));
        }
        return out;
      },
      [=, this](const StepControl& c) -> StepState {
        // The answer is the clock as the command left it, before any step it allows starts.
        switch (c.op) {
          case StepControl::Op::kPause: paused_ = true; budget_ = 0; break;
          case StepControl::Op::kResume: paused_ = false; budget_ = 0; break;
          case StepControl::Op::kStep: paused_ = true; budget_ += std::max(0, c.steps); break;
          case StepControl::Op::kState: break;
        }
        StepState state = step_state();
        maybe_start_step();
        return state;
      },
  });
}

// -- requests ---------------------------------------------------------------------------

void Frontend::submit(SubmitRequest& s) {
  const ModelConfig& c = ctx_->model->config();
  Request r;
  r.id = s.id;
  r.req = std::move(s.request);
  r.sink = std::move(s.sink);
  r.submit_s = now_seconds();
  if (fstats_.first_submit_s == 0) fstats_.first_submit_s = r.submit_s;
  const std::string what = "request " + std::to_string(r.id);
  Status v = validate_request(c, r.req, what);
  const int len = static_cast<int>(r.req.prompt.size()) + r.req.max_new_tokens;
  if (v.ok() && len > ctx_->spec.attention.max_seq_len)
    v = invalid_argument(what + ": prompt plus max_new_tokens (" + std::to_string(len) + ") exceeds the shards' max_seq_len (" +
                         std::to_string(ctx_->spec.attention.max_seq_len) + ")");
  if (v.ok() && blocks_needed(r.req) > ctx_->spec.attention.kv_blocks)
    v = resource_exhausted(what + ": needs " + std::to_string(blocks_needed(r.req)) + " KV blocks, more than a shard's whole cache (" +
                           std::to_string(ctx_->spec.attention.kv_blocks) + ")");
  if (v.ok() && shut_down_) v = unavailable(what + ": the deployment is shutting down");
  if (v.ok() && !broken_.empty()) v = unavailable(what + ": the deployment cannot serve: " + broken_);
  if (!v.ok()) {
    ++fstats_.failed;
    if (r.sink && r.sink->on_done) r.sink->on_done(v);
    return;
  }
  if (r.req.max_new_tokens == 0) {
    GenerateResult g;
    g.prompt = r.req.prompt;
    g.finish_reason = "length";
    finish(r, std::move(g));
    return;
  }
  r.blocks = blocks_needed(r.req);
  fstats_.requested_tokens += r.req.max_new_tokens;
  queue_.push_back(r.id);
  live_.emplace(r.id, std::move(r));
  maybe_start_step();
}

void Frontend::cancel(uint64_t id) {
  auto it = live_.find(id);
  if (it == live_.end()) return;  // it ended first (the Deployment told its caller so)
  Request& r = it->second;
  if (r.shard) {
    cancelled_[r.shard.address()].push_back(id);
  } else {
    queue_.erase(std::find(queue_.begin(), queue_.end(), id));
  }
  GenerateResult g;
  g.prompt = r.req.prompt;
  g.tokens = r.tokens;
  g.logprobs = r.logprobs;
  g.finish_reason = "cancelled";
  ++fstats_.cancelled;
  finish(r, std::move(g));  // frees its blocks in use_, so waiting requests may now fit
  remember(std::move(r));
  live_.erase(it);
  maybe_start_step();
}

void Frontend::maybe_start_step() {
  if (in_step_ || installing_ || !broken_.empty()) return;
  if (!reconfig_.empty()) {  // a membership change waits for this boundary
    Reconfigure r = std::move(reconfig_.front());
    reconfig_.pop_front();
    return install(std::move(r));
  }
  if (membership_.shards.empty()) return;
  if (paused_ && budget_ == 0) return;
  const int kv_blocks = ctx_->spec.attention.kv_blocks, max_seqs = ctx_->spec.attention.max_batch;
  std::vector<std::vector<AdmittedRequest>> admit(membership_.shards.size());
  // First come, first served (runtime/scheduling/kv_admission.h).
  while (!queue_.empty()) {
    Request& r = live_.at(queue_.front());
    std::vector<ShardOccupancy> occupancy;
    for (const caf::actor& sh : membership_.shards) {
      const ShardUse& u = use_[sh.address()];
      occupancy.push_back({u.blocks, u.seqs});
    }
    const int best = pick_shard(occupancy, r.blocks, kv_blocks, max_seqs);
    if (best < 0) break;
    ShardUse& u = use_[membership_.shards[static_cast<size_t>(best)].address()];
    u.blocks += r.blocks;
    u.seqs += 1;
    r.shard = membership_.shards[static_cast<size_t>(best)];
    AdmittedRequest a{r.id, r.req, {}};
    a.resume_tokens = r.tokens;  // non-empty when it moved here from another shard
    admit[static_cast<size_t>(best)].push_back(std::move(a));
    queue_.pop_front();
  }
  const bool running = live_.size() > queue_.size();
  if (!running) return;  // idle: nothing admitted, nothing decoding
  in_step_ = true;
  if (paused_) --budget_;
  ++step_;
  awaiting_.clear();
  for (size_t i = 0; i < membership_.shards.size(); ++i) {
    awaiting_.insert(membership_.shards[i].address());
    std::vector<uint64_t> cancelled;
    if (auto c = cancelled_.find(membership_.shards[i].address()); c != cancelled_.end()) {
      cancelled = std::move(c->second);
      cancelled_.erase(c);
    }
    send(membership_.shards[i], StepBegin{step_, epoch_, std::move(admit[i]), std::move(cancelled)});
  }
}

void Frontend::apply_tokens(StepDone& d) {
  const double now = now_seconds();
  for (TokenOut& t : d.tokens) {
    auto it = live_.find(t.id);
    if (it == live_.end()) continue;  // cancelled while the step ran
    Request& r = it->second;
    TokenEvent ev;
    ev.request_id = r.id;
    ev.token = t.token;
    ev.index = static_cast<int>(r.tokens.size());
    ev.last = t.finished;
    if (t.finished) ev.finish_reason = t.finish_reason;
    if (t.has_logprobs) {
      TokenLogprobs lp;
      lp.logprob = t.logprob;
      for (size_t k = 0; k < t.top_tokens.size() && k < t.top_logprobs.size(); ++k) lp.top.push_back({t.top_tokens[k], t.top_logprobs[k]});
      r.logprobs.push_back(lp);
      ev.logprobs = std::move(lp);
    }
    ev.since_submit_s = now - r.submit_s;
    ev.since_previous_s = now - (r.tokens.empty() ? r.submit_s : r.last_s);
    if (r.tokens.empty()) r.first_s = now;
    r.last_s = now;
    // Only the most recent steps: a long generation would otherwise keep one per token.
    if (r.history.size() >= kHistorySteps) r.history.erase(r.history.begin());
    r.history.push_back({d.step, d.shard, t.micro_batch});
    r.tokens.push_back(t.token);
    ++fstats_.tokens;
    fstats_.last_token_s = now;
    if (!t.prompt_logits.empty()) r.prompt_logits = std::move(t.prompt_logits);
    if (r.sink && r.sink->on_token) r.sink->on_token(ev);
    if (t.finished) {
      GenerateResult g;
      g.prompt = r.req.prompt;
      g.tokens = r.tokens;
      g.last_logits = std::move(r.prompt_logits);
      g.logprobs = r.logprobs;
      g.finish_reason = t.finish_reason;
      finish(r, std::move(g));
      remember(std::move(r));
      live_.erase(it);
    }
  }
  for (RequestFailure& f : d.failures) {
    auto it = live_.find(f.id);
    if (it == live_.end()) continue;
    // To its caller, an admitted request that failed is one the deployment could not
    // serve, whatever failed inside: unavailable, with the shard's message.
    finish(it->second, unavailable(f.error.message()));
    live_.erase(it);
  }
}

void Frontend::on_step_done(StepDone& d) {
  const caf::actor_addr from = caf::actor_cast<caf::actor_addr>(current_sender());
  // A step cut short by a membership change still counts for the shards that finished it
  // before they heard of the change: they committed its tokens, so must we.
  const bool current = in_step_ && d.step == step_ && awaiting_.count(from);
  const bool late = d.step == aborted_step_ && d.step != 0 && awaiting_.count(from);
  if (!current && !late) {
    ++stats_.dropped;
    log_warn(stats_.name, "dropped StepDone of step " + std::to_string(d.step) + " (current step " + std::to_string(step_) + ")");
    return;
  }
  awaiting_.erase(from);
  apply_tokens(d);
  if (current && awaiting_.empty()) {
    in_step_ = false;
    maybe_start_step();
  }
}

void Frontend::finish(Request& r, Result<GenerateResult> result) {
  if (r.shard) {
    ShardUse& u = use_[r.shard.address()];
    u.blocks -= r.blocks;
    u.seqs -= 1;
  }
  if (result.ok()) {
    ++fstats_.completed;
    const RequestTiming t{r.submit_s, r.first_s, r.last_s, static_cast<int64_t>(r.tokens.size())};
    if (fstats_.finished.size() < kTimingWindow) {
      fstats_.finished.push_back(t);
    } else {
      fstats_.finished[timing_next_] = t;
      timing_next_ = (timing_next_ + 1) % kTimingWindow;
    }
  } else {
    ++fstats_.failed;
  }
  if (r.sink && r.sink->on_done) r.sink->on_done(std::move(result));
  r.sink.reset();
}

void Frontend::fail_all(const std::string& why) {
  for (auto& [id, r] : live_) finish(r, unavailable(why));
  live_.clear();
  queue_.clear();
}

RequestInfo Frontend::info(const Request& r, bool queued) const {
  RequestInfo i;
  i.id = r.id;
  i.state = queued ? "queued" : (r.sink ? "running" : "finished");
  i.shard = shard_index(r.shard);
  i.prompt_tokens = static_cast<int32_t>(r.req.prompt.size());
  i.generated = static_cast<int32_t>(r.tokens.size());
  i.max_new_tokens = r.req.max_new_tokens;
  i.age_s = now_seconds() - r.submit_s;
  i.ttft_s = r.tokens.empty() ? -1 : r.first_s - r.submit_s;
  i.history = r.history;
  return i;
}

void Frontend::remember(Request r) {
  r.sink.reset();
  recent_.emplace(r.id, std::move(r));
  while (recent_.size() > 256) recent_.erase(recent_.begin());
}

// -- membership ---------------------------------------------------------------------------

void Frontend::on_reconfigure(Reconfigure& r) {
  if (r.abort && in_step_) {
    // A member died mid-step: the step cannot finish. Shards that already finished it
    // will still report (accepted as late), the others drop it when `next` reaches them.
    log_warn(stats_.name, "step " + std::to_string(step_) + " aborted: " + r.reason);
    aborted_step_ = step_;
    in_step_ = false;
  }
  reconfig_.push_back(std::move(r));
  maybe_start_step();
}

void Frontend::install(Reconfigure r) {
  installing_ = true;
  Membership& next = r.next;
  // Requests on shards that leave (dead or retiring) go back to the front of the queue,
  // in id order, and resume from their tokens so far on whichever shard takes them.
  std::vector<uint64_t> moved;
  for (auto& [id, q] : live_) {
    if (!q.shard) continue;
    if (std::find(next.shards.begin(), next.shards.end(), q.shard) != next.shards.end()) continue;
    ShardUse& u = use_[q.shard.address()];
    u.blocks -= q.blocks;
    u.seqs -= 1;
    q.shard = caf::actor{};
    moved.push_back(id);
  }
  for (auto it = moved.rbegin(); it != moved.rend(); ++it) queue_.push_front(*it);
  // Cancellations owed to shards that leave: their KV goes with them.
  for (auto it = cancelled_.begin(); it != cancelled_.end();) {
    const bool stays = std::any_of(next.shards.begin(), next.shards.end(), [&](const caf::actor& a) { return a.address() == it->first; });
    it = stays ? std::next(it) : cancelled_.erase(it);
  }
  if (!moved.empty()) log_info(stats_.name, std::to_string(moved.size()) + " request(s) resume on other shards");

  std::vector<caf::actor> members = {next.scheduler};
  members.insert(members.end(), next.shards.begin(), next.shards.end());
  members.insert(members.end(), next.routers.begin(), next.routers.end());
  members.insert(members.end(), next.instances.begin(), next.instances.end());
  members.insert(members.end(), next.extra.begin(), next.extra.end());
  auto left = std::make_shared<size_t>(members.size());
  auto failed = std::make_shared<std::string>();
  auto done = [=, this]() {
    // Its epoch follows the current one (the Scaler numbers them) and the Frontend keeps
    // nothing else from it: adopt() has no failure to report here.
    (void)adopt(r.next);
    for (const caf::actor& a : r.retire) send_exit(a, caf::exit_reason::user_shutdown);
    installing_ = false;
    awaiting_.clear();
    if (!failed->empty()) log_error(stats_.name, "installing epoch " + std::to_string(epoch_) + ": " + *failed);
    log_info(stats_.name, "epoch " + std::to_string(epoch_) + " installed: " + r.reason);
    if (scaler_) send(scaler_, Reconfigured{epoch_, now_seconds(), r.reason});
    maybe_start_step();
  };
  for (const caf::actor& a : members) {
    request(a, std::chrono::seconds(60), r.next)
        .then([=]() mutable {
                if (--*left == 0) done();
              },
              [=](caf::error& e) mutable {
                *failed = "a member did not acknowledge: " + to_string(e);
                if (--*left == 0) done();
              });
  }
  if (members.empty()) done();
}

}  // namespace janus::actors
