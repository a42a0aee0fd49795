#include "actors/attention_shard.h"

#include <algorithm>

namespace janus::actors {

AttentionShard::AttentionShard(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int id,
                               std::shared_ptr<AttentionBackend> backend)
    : JanusActor(cfg, ctx, "attention-" + std::to_string(id), "AttentionShard", backend->device().name()),
      backend_(std::move(backend)) {}

void AttentionShard::apply_membership(Membership& m) {
  localize(m);
  if (in_step_ && m.epoch != epoch_) {
    // The step in flight belongs to the old membership: drop it, commit nothing. Its
    // requests stay as they were and the next step recomputes the same values.
    log_info(stats_.name, "step " + std::to_string(step_) + " aborted by the membership of epoch " + std::to_string(m.epoch));
    in_step_ = false;
    mbs_.clear();
    out_ = StepDone{};
  }
  for (const auto& a : {m_.scheduler}) if (a) demonitor(a);
  for (const auto& r : m_.routers) demonitor(r);
  m_ = m;
  epoch_ = m.epoch;
  for (size_t i = 0; i < m_.shards.size(); ++i)
    if (m_.shards[i] == caf::actor_cast<caf::actor>(this)) index_ = static_cast<int>(i);
  monitor(m_.scheduler);
  monitor(ctx_->spec.egate() ? m_.routers.at(0) : m_.routers.at(static_cast<size_t>(index_)));
}

caf::behavior AttentionShard::make_behavior() {
  set_down_handler([=, this](caf::down_msg& dm) {
    const caf::actor& router = ctx_->spec.egate() ? m_.routers.at(0) : m_.routers.at(static_cast<size_t>(index_));
    if (dm.source != m_.scheduler.address() && dm.source != router.address()) return;  // not ours (any more)
    // The MoE side died: whatever waits on it will never be answered.
    const std::string why = "the MoE side died (" + to_string(dm.reason) + ")";
    log_error(stats_.name, why);
    for (size_t j = 0; j < mbs_.size(); ++j)
      if (!mbs_[j].done) {
        fail_requests(static_cast<int>(j), "request failed: " + why);
        mbs_[j].done = true;
      }
    maybe_end_step();
  });
  return with_stats({
      [=, this](Membership& m) {
        count();
        apply_membership(m);
      },
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
            mbs_[static_cast<size_t>(j)].layer != r.key.layer) {
          ++stats_.dropped;
          log_warn(stats_.name, "dropped MoeResult for " + r.key.to_string() + ": no micro-batch waits for it");
          return;
        }
        MicroBatch& mb = mbs_[static_cast<size_t>(j)];
        if (!r.error.empty()) {
          fail_requests(j, "request failed: " + r.error);
        } else if (!mb.rows.empty()) {
          Status s = timed("combine", &r.key, [&] { return backend_->add_moe_output(r.partials, mb.x); });
          if (!s.ok()) fail_requests(j, "request failed: " + s.to_string());
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
      admission_failures_.push_back({r.id, "request " + std::to_string(r.id) + " could not be admitted on " + stats_.name +
                                               ": " + s.message()});
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
      if (!s.ok()) fail_requests(j, "request failed: " + s.to_string());
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
      if (!s.ok()) fail_requests(j, "request failed: " + s.to_string());
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
      const caf::actor& to = ctx_->spec.egate() ? m_.routers.at(0) : m_.routers.at(static_cast<size_t>(index_));
      send(to, std::move(a));
      return;  // wait for the MoE side
    }
    if (!mb.rows.empty()) {
      Status s = timed("dense", &k, [&] { return backend_->dense_mlp(l, mb.h, mb.x); });
      if (!s.ok()) fail_requests(j, "request failed: " + s.to_string());
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
    rows.push_back({mb.last_row[i], r.req.sampling, static_cast<uint64_t>(r.generated),
                    !r.prefilled && r.req.want_prompt_logits});
  }
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  const LayerBatchKey k = key(j);
  Status s = timed("sample", &k, [&] { return backend_->sample(mb.x, rows, &tokens, &logits); });
  if (!s.ok()) {
    for (uint64_t id : mb.requests) out_.failures.push_back({id, "request failed: " + s.to_string()});
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
    if (rows[i].want_logits) t.prompt_logits = std::move(logits[next_logits++]);
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

void AttentionShard::fail_requests(int j, const std::string& why) {
  MicroBatch& mb = mbs_[static_cast<size_t>(j)];
  for (uint64_t id : mb.requests) out_.failures.push_back({id, why});
  mb.requests.clear();
  mb.last_row.clear();
  mb.tokens.clear();
  mb.rows.clear();
  mb.x = Tensor{};
  mb.h = Tensor{};
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
  send(m_.frontend, std::move(out_));
  out_ = StepDone{};
}

}  // namespace janus::actors
