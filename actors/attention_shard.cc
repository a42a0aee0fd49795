#include "actors/attention_shard.h"

#include <algorithm>

namespace janus::actors {

AttentionShard::AttentionShard(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int id,
                               std::shared_ptr<AttentionBackend> backend)
    : JanusActor(cfg, ctx, "attention-" + std::to_string(id), "AttentionShard", backend->device().name()),
      backend_(std::move(backend)) {}

namespace {

/// A backend's failure as the request's: its code, and a message that names it.
Status request_failed(const Status& s) { return Status(s.code(), "request failed: " + s.to_string()); }

}  // namespace

const caf::actor& AttentionShard::router() const {
  return ctx_->spec.egate() ? membership_.routers.at(0) : membership_.routers.at(static_cast<size_t>(index_));
}

Status AttentionShard::keep(const Membership& next) {
  if (in_step_ && next.epoch != epoch_) {
    // The step in flight belongs to the old membership: drop it, commit nothing. Its
    // requests stay as they were and the next step recomputes the same values.
    log_info(stats_.name, "step " + std::to_string(step_) + " aborted by the membership of epoch " + std::to_string(next.epoch));
    in_step_ = false;
    mbs_.clear();
    out_ = StepDone{};
  }
  if (membership_.scheduler) demonitor(membership_.scheduler);
  for (const auto& r : membership_.routers) demonitor(r);
  for (size_t i = 0; i < next.shards.size(); ++i)
    if (next.shards[i] == caf::actor_cast<caf::actor>(this)) index_ = static_cast<int>(i);
  monitor(next.scheduler);
  monitor(ctx_->spec.egate() ? next.routers.at(0) : next.routers.at(static_cast<size_t>(index_)));
  return Status::Ok();
}

caf::behavior AttentionShard::make_behavior() {
  set_down_handler([=, this](caf::down_msg& dm) {
    if (dm.source != membership_.scheduler.address() && dm.source != router().address()) return;  // not ours (any more)
    // The MoE side died: whatever waits on it will never be answered.
    const std::string why = "the MoE side died (" + to_string(dm.reason) + ")";
    log_error(stats_.name, why);
    for (size_t j = 0; j < mbs_.size(); ++j)
      if (!mbs_[j].done) {
        fail_requests(static_cast<int>(j), unavailable("request failed: " + why));
        mbs_[j].done = true;
      }
    maybe_end_step();
  });
  return member_behavior({
      [=, this](StepBegin& sb) {
        count();
        if (!current_epoch(sb.epoch, "StepBegin")) return;
        begin_step(sb);
      },
      [=, this](MoeResult& r) {
        count();
        if (!current_epoch(r.key.epoch, "MoeResult")) return;
        const int j = r.key.micro_batch;
        if (!in_step_ || r.key.step != step_ || j < 0 || j >= static_cast<int>(mbs_.size()) || mbs_[static_cast<size_t>(j)].done ||
            mbs_[static_cast<size_t>(j)].layer != r.key.layer)
          return drop("MoeResult", "for " + r.key.to_string() + ": no micro-batch waits for it");
        MicroBatch& mb = mbs_[static_cast<size_t>(j)];
        if (!r.error.ok()) {
          fail_requests(j, r.error.with_context("request failed"));
        } else if (!mb.rows.empty()) {
          if (!mb.shared.empty()) r.partials.push_back(std::move(mb.shared));
          mb.shared = Tensor{};
          Status s = timed("combine", &r.key, [&] { return backend_->add_moe_output(r.partials, mb.x); });
          if (!s.ok()) fail_requests(j, request_failed(s));
        }
        ++mb.layer;
        advance(j);
        maybe_end_step();
      },
  });
}

void AttentionShard::begin_step(StepBegin& sb) {
  step_ = sb.step;
  in_step_ = true;
  out_ = StepDone{};
  out_.step = step_;
  out_.shard = index_;
  out_.epoch = epoch_;
  PagedKvCache& kv = backend_->kv();
  // Cancelled first: the Frontend may admit requests into the blocks they free.
  for (uint64_t id : sb.cancelled) release(id);
  for (AdmittedRequest& a : sb.admitted) {
    Running r;
    r.id = a.id;
    r.req = std::move(a.request);
    if (!a.resume_tokens.empty()) {
      // Moved here mid-generation: recompute prompt + tokens so far, then go on. The
      // token counter (and so the sampler's draw) continues where it was.
      r.req.prompt.insert(r.req.prompt.end(), a.resume_tokens.begin(), a.resume_tokens.end());
      r.req.want_prompt_logits = false;
      r.generated = static_cast<int>(a.resume_tokens.size());
      r.resumed = r.generated;
    }
    auto seq = kv.add_sequence();
    const int positions = static_cast<int>(r.req.prompt.size()) + r.req.max_new_tokens - r.resumed;
    Status s = seq.ok() ? kv.reserve(*seq, positions) : seq.status();
    if (!s.ok()) {
      if (seq.ok()) kv.release(*seq);
      admission_failures_.push_back(
          {r.id, s.with_context("request " + std::to_string(r.id) + " could not be admitted on " + stats_.name)});
      continue;  // never entered running_: nothing to undo
    }
    r.seq = *seq;
    running_.emplace(r.id, std::move(r));
  }
  // Split by request into m micro-batches, each request to the lightest so far, in id
  // order (deterministic).
  const int m = ctx_->spec.attention.micro_batches;
  mbs_.assign(static_cast<size_t>(m), MicroBatch{});
  std::vector<int64_t> weight(static_cast<size_t>(m), 0);
  for (auto& [id, r] : running_) {
    const int64_t rows = r.prefilled ? 1 : static_cast<int64_t>(r.req.prompt.size());
    const size_t j = static_cast<size_t>(std::min_element(weight.begin(), weight.end()) - weight.begin());
    weight[j] += rows;
    MicroBatch& mb = mbs_[j];
    mb.requests.push_back(id);
    if (r.prefilled) {
      const int32_t pos = static_cast<int32_t>(r.req.prompt.size()) + r.generated - r.resumed - 1;
      mb.tokens.push_back(r.next_token);
      mb.rows.push_back({r.seq, pos});
    } else {
      for (size_t t = 0; t < r.req.prompt.size(); ++t) {
        mb.tokens.push_back(r.req.prompt[t]);
        mb.rows.push_back({r.seq, static_cast<int32_t>(t)});
      }
    }
    mb.last_row.push_back(static_cast<int64_t>(mb.tokens.size()) - 1);
  }
  for (int j = 0; j < m; ++j) {
    MicroBatch& mb = mbs_[static_cast<size_t>(j)];
    if (!mb.tokens.empty()) {
      Status s = backend_->embed(mb.tokens, &mb.x);
      if (!s.ok()) fail_requests(j, request_failed(s));
    }
  }
  for (int j = 0; j < m; ++j) advance(j);
  maybe_end_step();
}

void AttentionShard::advance(int j) {
  MicroBatch& mb = mbs_[static_cast<size_t>(j)];
  const ModelConfig& c = ctx_->model->config();
  while (mb.layer < c.num_layers) {
    const int l = mb.layer;
    const LayerBatchKey k = key(j);
    if (!mb.rows.empty()) {
      Status s = timed("attention", &k, [&] { return backend_->attention(l, mb.x, mb.rows, &mb.h); });
      if (!s.ok()) fail_requests(j, request_failed(s));
    }
    if (c.is_sparse(l)) {
      ShardActivations a;
      a.key = k;
      a.shard = index_;
      if (mb.rows.empty()) {
        a.h.rows = 0;
        a.h.cols = c.hidden_size;
      } else {
        a.h = mb.h;
      }
      send(router(), std::move(a));
      // The shared expert runs here while the routed experts work; its partial sum joins
      // theirs when the MoE result comes back.
      mb.shared = Tensor{};
      if (c.has_shared_expert() && !mb.rows.empty()) {
        Status s = timed("shared", &k, [&] { return backend_->shared_expert(l, mb.h, &mb.shared); });
        if (!s.ok()) fail_requests(j, request_failed(s));
      }
      return;  // wait for the MoE side
    }
    if (!mb.rows.empty()) {
      Status s = timed("dense", &k, [&] { return backend_->dense_mlp(l, mb.h, mb.x); });
      if (!s.ok()) fail_requests(j, request_failed(s));
    }
    ++mb.layer;
  }
  finish_micro_batch(j);
}

void AttentionShard::finish_micro_batch(int j) {
  MicroBatch& mb = mbs_[static_cast<size_t>(j)];
  mb.done = true;
  if (mb.requests.empty()) return;
  std::vector<SampleRow> rows;
  for (size_t i = 0; i < mb.requests.size(); ++i) {
    const Running& r = running_.at(mb.requests[i]);
    // Log-probabilities need the row's logits on the host: every backend hands them back
    // when asked (the CUDA one copies them from the device), so they are computed here,
    // from the logits the token was sampled from.
    rows.push_back({mb.last_row[i], r.req.sampling, static_cast<uint64_t>(r.generated),
                    (!r.prefilled && r.req.want_prompt_logits) || r.req.logprobs >= 0});
  }
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  const LayerBatchKey k = key(j);
  Status s = timed("sample", &k, [&] { return backend_->sample(mb.x, rows, &tokens, &logits); });
  if (!s.ok()) {
    for (uint64_t id : mb.requests) out_.failures.push_back({id, request_failed(s)});
    return;
  }
  // Outcomes only: the requests change when the step commits (commit_step).
  const ModelConfig& c = ctx_->model->config();
  size_t next_logits = 0;
  for (size_t i = 0; i < mb.requests.size(); ++i) {
    const Running& r = running_.at(mb.requests[i]);
    TokenOut t;
    t.id = r.id;
    t.token = tokens[i];
    t.micro_batch = j;
    if (rows[i].want_logits) {
      std::vector<float>& lg = logits[next_logits++];
      if (r.req.logprobs >= 0) {
        const TokenLogprobs lp = token_logprobs(lg.data(), static_cast<int>(lg.size()), t.token, r.req.logprobs);
        t.has_logprobs = true;
        t.logprob = lp.logprob;
        for (const TopLogprob& x : lp.top) {
          t.top_tokens.push_back(x.token);
          t.top_logprobs.push_back(x.logprob);
        }
      }
      if (!r.prefilled && r.req.want_prompt_logits) t.prompt_logits = std::move(lg);
    }
    if (is_stop_token(c, r.req, t.token)) {
      t.finished = true;
      t.finish_reason = "eos";
    } else if (r.generated + 1 >= r.req.max_new_tokens) {
      t.finished = true;
      t.finish_reason = "length";
    }
    out_.tokens.push_back(std::move(t));
  }
}

void AttentionShard::fail_requests(int j, const Status& why) {
  MicroBatch& mb = mbs_[static_cast<size_t>(j)];
  for (uint64_t id : mb.requests) out_.failures.push_back({id, why});
  mb.requests.clear();
  mb.last_row.clear();
  mb.tokens.clear();
  mb.rows.clear();
  mb.x = Tensor{};
  mb.h = Tensor{};
  mb.shared = Tensor{};
}

void AttentionShard::release(uint64_t id) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  backend_->kv().release(it->second.seq);
  running_.erase(it);
}

void AttentionShard::commit_step() {
  for (const TokenOut& t : out_.tokens) {
    auto it = running_.find(t.id);
    if (it == running_.end()) continue;
    Running& r = it->second;
    r.prefilled = true;
    r.next_token = t.token;
    ++r.generated;
    if (t.finished) release(t.id);
  }
  for (const RequestFailure& f : out_.failures) release(f.id);
  out_.failures.insert(out_.failures.end(), admission_failures_.begin(), admission_failures_.end());
  admission_failures_.clear();
}

void AttentionShard::maybe_end_step() {
  if (!in_step_) return;
  for (const MicroBatch& mb : mbs_)
    if (!mb.done) return;
  in_step_ = false;
  commit_step();
  out_.free_blocks = backend_->kv().free_blocks();
  out_.free_seqs = backend_->kv().free_seqs();
  send(membership_.frontend, std::move(out_));
  out_ = StepDone{};
}

}  // namespace janus::actors
