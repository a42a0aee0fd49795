#include "actors/frontend.h"

namespace janus::actors {

Frontend::Frontend(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx)
    : JanusActor(cfg, std::move(ctx), "frontend", "Frontend", "cpu") {}

int Frontend::blocks_needed(const GenerateRequest& r) const {
  const int bs = ctx_->spec.attention.block_size;
  const int len = static_cast<int>(r.prompt.size()) + r.max_new_tokens;
  return (len + bs - 1) / bs;
}

caf::behavior Frontend::make_behavior() {
  set_down_handler([=, this](caf::down_msg& dm) {
    for (size_t i = 0; i < m_.shards.size(); ++i)
      if (m_.shards[i].address() == dm.source && load_[i].alive) {
        load_[i].alive = false;
        const std::string why = "attention shard attention-" + std::to_string(i) + " died (" + to_string(dm.reason) + ")";
        log_error(stats_.name, why);
        broken_ = why;
        // Its requests cannot continue; the step it was in will never finish either.
        fail_all("request failed: " + why);
        in_step_ = false;
      }
  });
  return with_stats({
      [=, this](Membership& m) {
        count();
        m_ = m;
        epoch_ = m.epoch;
        load_.assign(m_.shards.size(), ShardLoad{ctx_->spec.attention.kv_blocks, ctx_->spec.attention.max_batch, true});
        for (const auto& s : m_.shards) monitor(s);
      },
      [=, this](SubmitRequest& s) {
        count();
        submit(s);
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
        return out;
      },
      [=, this](const RequestsQuery& q) -> std::vector<RequestInfo> {
        std::vector<RequestInfo> out;
        for (const auto& [id, r] : live_)
          if (q.id == 0 || q.id == id) out.push_back(info(r, r.shard < 0));
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
  queue_.push_back(r.id);
  live_.emplace(r.id, std::move(r));
  maybe_start_step();
}

RequestInfo Frontend::info(const Request& r, bool queued) const {
  RequestInfo i;
  i.id = r.id;
  i.state = queued ? "queued" : (r.sink ? "running" : "finished");
  i.shard = r.shard;
  i.prompt_tokens = static_cast<int32_t>(r.req.prompt.size());
  i.generated = static_cast<int32_t>(r.tokens.size());
  i.max_new_tokens = r.req.max_new_tokens;
  i.age_s = now_seconds() - r.submit_s;
  i.ttft_s = r.tokens.empty() ? -1 : r.first_s - r.submit_s;
  i.history = r.history;
  return i;
}

void Frontend::maybe_start_step() {
  if (in_step_ || m_.shards.empty() || !broken_.empty()) return;
  if (paused_ && budget_ == 0) return;
  std::vector<std::vector<AdmittedRequest>> admit(m_.shards.size());
  // First come, first served: stop at the first request that fits nowhere now (it waits
  // for blocks to come back; nothing behind it overtakes it).
  while (!queue_.empty()) {
    Request& r = live_.at(queue_.front());
    const int need = blocks_needed(r.req);
    int best = -1;
    for (size_t i = 0; i < load_.size(); ++i) {
      const ShardLoad& l = load_[i];
      if (!l.alive || l.free_seqs < 1 || l.free_blocks < need) continue;
      if (best < 0 || l.free_blocks > load_[static_cast<size_t>(best)].free_blocks) best = static_cast<int>(i);
    }
    if (best < 0) break;
    load_[static_cast<size_t>(best)].free_blocks -= need;
    load_[static_cast<size_t>(best)].free_seqs -= 1;
    r.shard = best;
    admit[static_cast<size_t>(best)].push_back({r.id, r.req});
    queue_.pop_front();
  }
  const bool running = live_.size() > queue_.size();
  if (!running) return;  // idle: nothing admitted, nothing decoding
  in_step_ = true;
  if (paused_) --budget_;
  ++step_;
  pending_done_ = static_cast<int>(m_.shards.size());
  for (size_t i = 0; i < m_.shards.size(); ++i) send(m_.shards[i], StepBegin{step_, epoch_, std::move(admit[i])});
}

void Frontend::on_step_done(StepDone& d) {
  if (d.step != step_ || !in_step_) {
    ++stats_.dropped;
    log_warn(stats_.name, "dropped StepDone of step " + std::to_string(d.step) + " (current step " + std::to_string(step_) + ")");
    return;
  }
  const double now = now_seconds();
  for (TokenOut& t : d.tokens) {
    auto it = live_.find(t.id);
    if (it == live_.end()) continue;
    Request& r = it->second;
    if (r.tokens.empty()) r.first_s = now;
    r.last_s = now;
    r.history.push_back({d.step, d.shard, t.micro_batch});
    r.tokens.push_back(t.token);
    ++fstats_.tokens;
    fstats_.last_token_s = now;
    if (!t.prompt_logits.empty()) r.prompt_logits = std::move(t.prompt_logits);
    if (r.sink && r.sink->on_token) r.sink->on_token(t.token);
    if (t.finished) {
      GenerateResult g;
      g.prompt = r.req.prompt;
      g.tokens = r.tokens;
      g.last_logits = std::move(r.prompt_logits);
      g.finish_reason = t.finish_reason;
      finish(r, std::move(g));
      remember(std::move(r));
      live_.erase(it);
    }
  }
  for (RequestFailure& f : d.failures) {
    auto it = live_.find(f.id);
    if (it == live_.end()) continue;
    finish(it->second, unavailable(f.message));
    live_.erase(it);
  }
  if (d.shard >= 0 && static_cast<size_t>(d.shard) < load_.size()) {
    load_[static_cast<size_t>(d.shard)].free_blocks = d.free_blocks;
    load_[static_cast<size_t>(d.shard)].free_seqs = d.free_seqs;
  }
  if (--pending_done_ == 0) {
    in_step_ = false;
    maybe_start_step();
  }
}

void Frontend::finish(Request& r, Result<GenerateResult> result) {
  if (result.ok()) {
    ++fstats_.completed;
    fstats_.finished.push_back({r.submit_s, r.first_s, r.last_s, static_cast<int64_t>(r.tokens.size())});
  } else {
    ++fstats_.failed;
  }
  if (r.sink && r.sink->on_done) r.sink->on_done(std::move(result));
  r.sink.reset();
}

void Frontend::remember(Request r) {
  r.sink.reset();
  recent_.emplace(r.id, std::move(r));
  while (recent_.size() > 256) recent_.erase(recent_.begin());
}

void Frontend::fail_all(const std::string& why) {
  for (auto& [id, r] : live_) finish(r, unavailable(why));
  live_.clear();
  queue_.clear();
}

}  // namespace janus::actors
