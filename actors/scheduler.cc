#include "actors/scheduler.h"

#include <cstring>

#include "actors/router.h"

namespace janus::actors {

// Layer batches per layer the activation statistics remember (placement, autoscaling).
constexpr int kStatsWindow = 64;

Scheduler::Scheduler(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, std::unique_ptr<SchedulingPolicy> policy)
    : JanusActor(cfg, ctx, "scheduler", "Scheduler", "cpu"), policy_(std::move(policy)) {
  const ModelConfig& c = ctx_->model->config();
  sstats_.layers.resize(static_cast<size_t>(c.num_layers));
  sstats_.expert_counts.assign(static_cast<size_t>(c.num_layers), std::vector<uint64_t>(static_cast<size_t>(c.num_experts), 0));
  if (auto w = ActivationStats::create(c.num_layers, c.num_experts, kStatsWindow); w.ok()) window_ = std::move(*w);
  if (ctx_->compare_policies)
    for (const std::string& name : scheduling_policy_names()) {
      if (name == policy_->name()) continue;
      auto p = make_scheduling_policy(name, ctx_->spec.scheduler.seed);
      if (p.ok()) others_.push_back(std::move(*p));
    }
}

namespace {
void add_amax(LayerAmaxStats& ls, int amax) {
  ++ls.batches;
  ls.sum += amax;
  ls.max = std::max(ls.max, amax);
  if (ls.histogram.size() <= static_cast<size_t>(amax)) ls.histogram.resize(static_cast<size_t>(amax) + 1, 0);
  ++ls.histogram[static_cast<size_t>(amax)];
}
}  // namespace

void Scheduler::record(const RoutedBatch& b, const std::vector<int32_t>& replica, uint64_t batch_id) {
  const ExpertLayout& layout = *m_.layout;
  const size_t l = static_cast<size_t>(b.key.layer);
  const size_t E = static_cast<size_t>(layout.num_experts());
  add_amax(sstats_.layers[l], max_activated_experts(layout, replica.data(), static_cast<int64_t>(replica.size())));
  // Per-replica counts describe the current placement: start over when it changes size.
  const size_t cells = static_cast<size_t>(layout.num_instances()) * E;
  if (sstats_.replica_counts.empty() || sstats_.replica_counts[0].size() != cells)
    sstats_.replica_counts.assign(sstats_.layers.size(), std::vector<uint64_t>(cells, 0));
  for (size_t i = 0; i < replica.size(); ++i) {
    const int32_t e = b.topk_ids[i];
    ++sstats_.expert_counts[l][static_cast<size_t>(e)];
    ++sstats_.replica_counts[l][static_cast<size_t>(layout.instance_of(replica[i])) * E + static_cast<size_t>(e)];
  }
  const int k = ctx_->model->config().top_k;
  if (window_.num_layers() > 0) (void)window_.record(b.key.layer, b.topk_ids.data(), b.h.rows, k);
  std::vector<int32_t> alt(replica.size());
  for (auto& p : others_) {
    if (!p->assign(layout, b.topk_ids.data(), b.h.rows, k, batch_id, alt.data()).ok()) continue;
    auto& v = sstats_.counterfactual[p->name()];
    if (v.empty()) v.resize(sstats_.layers.size());
    add_amax(v[l], max_activated_experts(layout, alt.data(), static_cast<int64_t>(alt.size())));
  }
}

caf::behavior Scheduler::make_behavior() {
  set_down_handler([=, this](caf::down_msg& dm) {
    // The Scaler replaces a dead instance and the step in flight is re-run under a new
    // membership; until then, send it nothing more.
    for (size_t i = 0; i < m_.instances.size(); ++i)
      if (m_.instances[i].address() == dm.source) {
        dead_[static_cast<int32_t>(i)] = "expert instance expert at position " + std::to_string(i) + " died (" + to_string(dm.reason) + ")";
        log_warn(stats_.name, dead_[static_cast<int32_t>(i)]);
      }
  });
  return with_stats({
      [=, this](Membership& m) {
        count();
        // Whatever was in flight belongs to the old epoch: the shards re-run that step.
        pending_.clear();
        agate_parts_.clear();
        dead_.clear();
        localize(m);
        for (const auto& i : m_.instances)
          if (i) demonitor(i);
        m_ = m;
        epoch_ = m.epoch;
        // Multi-node: instances of other MoE nodes are invalid handles here; their
        // node's own scheduler mirror sends them their work.
        for (const auto& i : m_.instances)
          if (i) monitor(i);
      },
      [=, this](RoutedBatch& b) {  // EGate
        count();
        if (!current_epoch(b.key.epoch, "RoutedBatch")) return;
        schedule(b);
      },
      [=, this](ShardActivations& a) {  // AGate: gather the shards' routed rows
        count();
        if (!current_epoch(a.key.epoch, "ShardActivations")) return;
        const size_t n = m_.shards.size();
        if (a.shard < 0 || static_cast<size_t>(a.shard) >= n) {
          ++stats_.dropped;
          log_warn(stats_.name, "dropped activations from unknown shard " + std::to_string(a.shard));
          return;
        }
        const LayerBatchKey key = a.key;
        auto& parts = agate_parts_[key];
        if (parts.empty()) parts.resize(n);
        parts[static_cast<size_t>(a.shard)] = std::move(a);
        size_t have = 0;
        for (const auto& p : parts) have += (p.key == key) ? 1 : 0;
        if (have < n) return;
        RoutedBatch b;
        b.key = key;
        for (auto& p : parts) {
          b.shard_rows.push_back(static_cast<int32_t>(p.h.rows));
          b.topk_ids.insert(b.topk_ids.end(), p.topk_ids.begin(), p.topk_ids.end());
          b.topk_weights.insert(b.topk_weights.end(), p.topk_weights.begin(), p.topk_weights.end());
        }
        Status joined = concat_activations(parts, ctx_->model->config().hidden_size, &b.h);
        agate_parts_.erase(key);
        if (!joined.ok()) return fail(key, b.shard_rows, joined.message());
        schedule(b);
      },
      [=, this](ExpertPartial& p) {
        count();
        if (!current_epoch(p.key.epoch, "ExpertPartial")) return;
        on_partial(p);
      },
      [=, this](const SchedulerStats&) {
        SchedulerStats out = sstats_;
        if (window_.num_layers() > 0) {
          for (int64_t v : window_.total_counts()) out.window_load.push_back(static_cast<double>(v));
          for (int64_t v : window_.total_coactivation()) out.window_coactivation.push_back(static_cast<double>(v));
          for (int l = 0; l < window_.num_layers(); ++l) out.window_probability.push_back(window_.activation_probability(l));
        }
        return out;
      },
  });
}

void Scheduler::schedule(RoutedBatch& b) {
  const ModelConfig& c = ctx_->model->config();
  const int k = c.top_k;
  const int64_t rows = b.h.rows;
  sstats_.bytes_in += b.h.bytes();
  if (rows == 0) {
    Pending p;
    p.shard_rows = b.shard_rows;
    reply(b.key, p);
    return;
  }
  if (static_cast<int64_t>(b.topk_ids.size()) != rows * k || b.topk_weights.size() != b.topk_ids.size())
    return fail(b.key, b.shard_rows, "routing of " + b.key.to_string() + " is missing (the gate failed)");
  const ExpertLayout& layout = *m_.layout;
  std::vector<int32_t> replica(b.topk_ids.size());
  const uint64_t batch_id = b.key.step * 1000003ull + static_cast<uint64_t>(b.key.layer) * 131ull + static_cast<uint64_t>(b.key.micro_batch);
  Status s = timed("schedule", &b.key, [&] { return policy_->assign(layout, b.topk_ids.data(), rows, k, batch_id, replica.data()); });
  if (!s.ok()) return fail(b.key, b.shard_rows, "scheduling " + b.key.to_string() + " failed: " + s.message());
  // Per instance: its work list; a_i is the number of distinct experts in it.
  std::vector<std::vector<ExpertWork>> work(static_cast<size_t>(layout.num_instances()));
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < k; ++j) {
      const size_t i = static_cast<size_t>(r * k + j);
      const int32_t rep = replica[i];
      work[static_cast<size_t>(layout.instance_of(rep))].push_back({static_cast<int32_t>(r), layout.expert_of(rep), b.topk_weights[i]});
    }
  record(b, replica, batch_id);

  Pending p;
  p.shard_rows = b.shard_rows;
  p.rows = rows;
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].empty() || !m_.instances[i]) continue;
    // A dead instance's work waits for the membership that replaces it (the step is then
    // re-run); sending it would be lost anyway.
    p.waiting.insert(static_cast<int32_t>(i));
  }
  const LayerBatchKey key = b.key;
  if (p.waiting.empty()) {
    // A MoE node's mirror whose own instances drew no work this time still answers (with
    // no partial sums), or the attention side would wait for it forever.
    reply(key, p);
    return;
  }
  for (int32_t i : p.waiting)
    if (!dead_.count(i)) send(m_.instances[static_cast<size_t>(i)], ExpertTask{key, i, b.h, std::move(work[static_cast<size_t>(i)])});
  pending_.emplace(key, std::move(p));
}

void Scheduler::on_partial(ExpertPartial& part) {
  auto it = pending_.find(part.key);
  if (it == pending_.end() || !it->second.waiting.count(part.instance)) {
    ++stats_.dropped;
    log_warn(stats_.name, "dropped a partial result for " + part.key.to_string() + " from expert-" + std::to_string(part.instance) +
                              ": nothing waits for it");
    return;
  }
  Pending& p = it->second;
  if (!part.error.empty()) {
    auto shard_rows = p.shard_rows;
    pending_.erase(it);
    return fail(part.key, shard_rows, "expert-" + std::to_string(part.instance) + ": " + part.error);
  }
  if (part.partial.rows != p.rows) {
    auto shard_rows = p.shard_rows;
    pending_.erase(it);
    return fail(part.key, shard_rows,
                "expert-" + std::to_string(part.instance) + " returned " + std::to_string(part.partial.rows) + " rows for a batch of " +
                    std::to_string(p.rows));
  }
  p.partials[part.instance] = std::move(part.partial);
  p.waiting.erase(part.instance);
  if (p.waiting.empty()) {
    const LayerBatchKey key = it->first;
    reply(key, p);
    pending_.erase(key);
  }
}

void Scheduler::reply(const LayerBatchKey& key, Pending& p) {
  int64_t offset = 0;
  for (size_t s = 0; s < m_.shards.size(); ++s) {
    const int64_t n = s < p.shard_rows.size() ? p.shard_rows[s] : 0;
    MoeResult r;
    r.key = key;
    r.shard = static_cast<int32_t>(s);
    if (n > 0)
      for (const auto& [instance, t] : p.partials) {
        // A view of the shard's rows: no copy, the storage is shared.
        Tensor v = t;
        v.rows = n;
        v.data = static_cast<char*>(t.data) + static_cast<size_t>(offset * t.cols) * dtype_size(t.dtype);
        r.partials.push_back(std::move(v));
      }
    offset += n;
    send(m_.shards[s], std::move(r));
  }
}

void Scheduler::fail(const LayerBatchKey& key, const std::vector<int32_t>& shard_rows, const std::string& why) {
  (void)shard_rows;
  log_error(stats_.name, "layer batch " + key.to_string() + " failed: " + why);
  for (size_t s = 0; s < m_.shards.size(); ++s) {
    MoeResult r;
    r.key = key;
    r.error = why;
    r.shard = static_cast<int32_t>(s);
    send(m_.shards[s], std::move(r));
  }
}

}  // namespace janus::actors
