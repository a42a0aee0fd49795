#include "actors/scheduler.h"

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
    for (const std::string& name : known_scheduling_policy_names()) {
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

void Scheduler::record(const LayerBatchKey& key, const int32_t* ids, int64_t rows, const std::vector<int32_t>& replica,
                       uint64_t batch_id) {
  const ExpertLayout& layout = *membership_.layout;
  const size_t l = static_cast<size_t>(key.layer);
  const size_t E = static_cast<size_t>(layout.num_experts());
  add_amax(sstats_.layers[l], max_activated_experts(layout, replica.data(), static_cast<int64_t>(replica.size())));
  // Per-replica counts describe the current placement: start over when it changes size.
  const size_t cells = static_cast<size_t>(layout.num_instances()) * E;
  if (sstats_.replica_counts.empty() || sstats_.replica_counts[0].size() != cells)
    sstats_.replica_counts.assign(sstats_.layers.size(), std::vector<uint64_t>(cells, 0));
  for (size_t i = 0; i < replica.size(); ++i) {
    const int32_t e = ids[i];
    ++sstats_.expert_counts[l][static_cast<size_t>(e)];
    ++sstats_.replica_counts[l][static_cast<size_t>(layout.instance_of(replica[i])) * E + static_cast<size_t>(e)];
  }
  const int k = ctx_->model->config().top_k;
  if (window_.num_layers() > 0) (void)window_.record(key.layer, ids, rows, k);
  std::vector<int32_t> alt(replica.size());
  for (auto& p : others_) {
    if (!p->assign(layout, ids, rows, k, batch_id, alt.data()).ok()) continue;
    auto& v = sstats_.counterfactual[p->name()];
    if (v.empty()) v.resize(sstats_.layers.size());
    add_amax(v[l], max_activated_experts(layout, alt.data(), static_cast<int64_t>(alt.size())));
  }
}

Status Scheduler::keep(const Membership& next) {
  record_device_routed(true);  // under the layout they were dispatched with
  single_replica_ = next.layout != nullptr;
  if (next.layout)
    for (int e = 0; e < next.layout->num_experts() && single_replica_; ++e)
      single_replica_ = next.layout->replicas_of(e).size() == 1;
  // Whatever was in flight belongs to the old epoch: the shards re-run that step.
  shard_rows_.restart(next.epoch, static_cast<int32_t>(next.shards.size()));
  partials_.restart(next.epoch, 0);
  dead_.clear();
  for (const auto& i : membership_.instances)
    if (i) demonitor(i);
  // Multi-node: instances of other MoE nodes are invalid handles here; their node's own
  // scheduler mirror sends them their work.
  for (const auto& i : next.instances)
    if (i) monitor(i);
  return Status::Ok();
}

caf::behavior Scheduler::make_behavior() {
  set_down_handler([=, this](caf::down_msg& dm) {
    // The Scaler replaces a dead instance and the step in flight is re-run under a new
    // membership; until then, send it nothing more.
    for (size_t i = 0; i < membership_.instances.size(); ++i)
      if (membership_.instances[i].address() == dm.source) {
        dead_[static_cast<int32_t>(i)] = "expert instance expert at position " + std::to_string(i) + " died (" + to_string(dm.reason) + ")";
        log_warn(stats_.name, dead_[static_cast<int32_t>(i)]);
      }
  });
  return member_behavior({
      [=, this](RoutedBatch& b) {  // EGate
        count();
        if (!current_epoch(b.key.epoch, "RoutedBatch")) return;
        schedule(b);
      },
      [=, this](ShardActivations& a) {  // AGate
        count();
        on_shard_rows(a);
      },
      [=, this](ExpertPartial& p) {
        count();
        on_partial(p);
      },
      [=, this](const SchedulerStats&) {
        record_device_routed(true);
        SchedulerStats out = sstats_;
        if (membership_.layout) out.placement = membership_.layout->placement();
        if (window_.num_layers() > 0) {
          for (int64_t v : window_.total_counts()) out.window_load.push_back(static_cast<double>(v));
          for (int64_t v : window_.total_coactivation()) out.window_coactivation.push_back(static_cast<double>(v));
          for (int l = 0; l < window_.num_layers(); ++l) out.window_probability.push_back(window_.activation_probability(l));
        }
        return out;
      },
  });
}

void Scheduler::on_shard_rows(ShardActivations& a) {
  // AGate: the shards' rows come routed by their own Routers; join them into the layer
  // batch EGate's Router would have sent.
  const LayerBatchKey key = a.key;
  const int32_t from = a.shard;
  PartialGather<ShardActivations>::Batch parts;
  std::string why;
  const GatherOutcome o = shard_rows_.offer(key, from, std::move(a), &parts, &why);
  if (o == GatherOutcome::kDropped) return drop("ShardActivations", why);
  if (o != GatherOutcome::kComplete) return;  // other shards are due (activations carry no error)
  RoutedBatch b;
  Status joined = join_shards(key, parts.replies, ctx_->model->config().hidden_size, &b);
  if (!joined.ok()) return fail(key, joined);
  schedule(b);
}

void Scheduler::schedule(RoutedBatch& b) {
  const ModelConfig& c = ctx_->model->config();
  const int k = c.top_k;
  const int64_t rows = b.h.rows;
  sstats_.bytes_in += b.h.bytes();
  if (rows == 0) return reply(b.key, b.shard_rows, {});
  if (!b.routing.present() && (static_cast<int64_t>(b.topk_ids.size()) != rows * k || b.topk_weights.size() != b.topk_ids.size()))
    return fail(b.key, internal_error("routing of " + b.key.to_string() + " is missing (the gate failed)"));
  const uint64_t batch_id = b.key.step * 1000003ull + static_cast<uint64_t>(b.key.layer) * 131ull + static_cast<uint64_t>(b.key.micro_batch);
  record_device_routed(false);
  if (b.routing.present()) {
    if (dispatches_device_routing()) return dispatch_device_routing(b, batch_id);
    // A choice to make (or an instance elsewhere): the policy needs the ids on the host.
    // This wait is the one left in a layer of such a graph.
    Status s = b.routing.wait_host();
    if (!s.ok()) return fail(b.key, s.with_context("the routing of " + b.key.to_string() + " did not reach the host"));
    const int64_t nk = b.routing.choices();
    b.topk_ids.assign(b.routing.host_ids(), b.routing.host_ids() + nk);
    b.topk_weights.assign(b.routing.host_weights(), b.routing.host_weights() + nk);
    b.routing = DeviceRouting{};
  }
  const ExpertLayout& layout = *membership_.layout;
  std::vector<int32_t> replica(b.topk_ids.size());
  Status s = timed("schedule", &b.key, [&] { return policy_->assign(layout, b.topk_ids.data(), rows, k, batch_id, replica.data()); });
  if (!s.ok()) return fail(b.key, s.with_context("scheduling " + b.key.to_string() + " failed"));
  // Per instance: its work list; a_i is the number of distinct experts in it.
  std::vector<std::vector<ExpertWork>> work(static_cast<size_t>(layout.num_instances()));
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < k; ++j) {
      const size_t i = static_cast<size_t>(r * k + j);
      const int32_t rep = replica[i];
      work[static_cast<size_t>(layout.instance_of(rep))].push_back({static_cast<int32_t>(r), layout.expert_of(rep), b.topk_weights[i]});
    }
  record(b.key, b.topk_ids.data(), rows, replica, batch_id);

  std::vector<int32_t> waiting;
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].empty() || !membership_.instances[i]) continue;
    // A dead instance's work waits for the membership that replaces it (the step is then
    // re-run); sending it would be lost anyway.
    waiting.push_back(static_cast<int32_t>(i));
  }
  const LayerBatchKey key = b.key;
  // A MoE node's mirror whose own instances drew no work this time still answers (with
  // no partial sums), or the attention side would wait for it forever.
  if (waiting.empty()) return reply(key, b.shard_rows, {});
  partials_.expect(key, waiting, Dispatched{b.shard_rows, rows});
  for (int32_t i : waiting)
    if (!dead_.count(i)) send(membership_.instances[static_cast<size_t>(i)], ExpertTask{key, i, b.h, std::move(work[static_cast<size_t>(i)]), {}});
}

bool Scheduler::dispatches_device_routing() const {
  if (!single_replica_ || !dead_.empty()) return false;
  for (const auto& i : membership_.instances)
    if (!i) return false;
  return true;
}

void Scheduler::dispatch_device_routing(RoutedBatch& b, uint64_t batch_id) {
  const ExpertLayout& layout = *membership_.layout;
  const LayerBatchKey key = b.key;
  std::vector<int32_t> waiting;
  (void)timed("schedule", &key, [&] {
    // Which instances draw work is known only on the device: every instance that holds
    // an expert runs (one with no row of its experts returns zeros).
    for (int i = 0; i < layout.num_instances(); ++i)
      if (!layout.experts_on(i).empty()) waiting.push_back(i);
    return Status::Ok();
  });
  if (waiting.empty()) return fail(key, internal_error("no expert instance holds an expert"));
  partials_.expect(key, waiting, Dispatched{b.shard_rows, b.h.rows});
  for (int32_t i : waiting) {
    send(membership_.instances[static_cast<size_t>(i)], ExpertTask{key, i, b.h, {}, b.routing});
  }
  ++sstats_.device_routed;
  routed_stats_.push_back(RoutedStats{key, batch_id, std::move(b.routing)});
}

void Scheduler::record_device_routed(bool wait) {
  while (!routed_stats_.empty()) {
    RoutedStats& r = routed_stats_.front();
    if (!wait && !r.routing.host_written()) return;
    Status s = r.routing.wait_host();
    if (s.ok() && membership_.layout) {
      const ExpertLayout& layout = *membership_.layout;
      const int64_t nk = r.routing.choices();
      const int32_t* ids = r.routing.host_ids();
      std::vector<int32_t> replica(static_cast<size_t>(nk));
      bool valid = true;
      for (int64_t i = 0; i < nk && valid; ++i) {
        valid = ids[i] >= 0 && ids[i] < layout.num_experts() && layout.replicas_of(ids[i]).size() == 1;
        if (valid) replica[static_cast<size_t>(i)] = layout.replicas_of(ids[i])[0];
      }
      if (valid) record(r.key, ids, r.routing.rows, replica, r.batch_id);
      else log_warn(stats_.name, "the routing of " + r.key.to_string() + " names an expert outside the layout; not counted");
    } else if (!s.ok()) {
      log_warn(stats_.name, "the routing of " + r.key.to_string() + " did not reach the host: " + s.to_string());
    }
    routed_stats_.pop_front();
  }
}

void Scheduler::on_partial(ExpertPartial& part) {
  const LayerBatchKey key = part.key;
  Result<Tensor> sums = part.error.ok() ? Result<Tensor>(std::move(part.partial)) : Result<Tensor>(part.error);
  auto whole_batch = [](const Dispatched& d, const Tensor& t) {
    if (t.rows == d.rows) return Status::Ok();
    return internal_error("returned " + std::to_string(t.rows) + " rows for a batch of " + std::to_string(d.rows));
  };
  PartialSums::Batch batch;
  std::string why;
  switch (partials_.offer(key, part.instance, std::move(sums), &batch, &why, whole_batch)) {
    case GatherOutcome::kDropped: return drop("ExpertPartial", why);
    case GatherOutcome::kWaiting: return;
    case GatherOutcome::kFailed: return fail(key, batch.error);
    case GatherOutcome::kComplete: return reply(key, batch.context.shard_rows, batch.replies);
  }
}

void Scheduler::reply(const LayerBatchKey& key, const std::vector<int32_t>& shard_rows, const std::map<int32_t, Tensor>& partials) {
  int64_t offset = 0;
  for (size_t s = 0; s < membership_.shards.size(); ++s) {
    const int64_t n = s < shard_rows.size() ? shard_rows[s] : 0;
    MoeResult r;
    r.key = key;
    r.shard = static_cast<int32_t>(s);
    if (n > 0)
      for (const auto& [instance, t] : partials) {
        // A view of the shard's rows: no copy, the storage is shared.
        Tensor v = t;
        v.rows = n;
        v.data = static_cast<char*>(t.data) + static_cast<size_t>(offset * t.cols) * dtype_size(t.dtype);
        r.partials.push_back(std::move(v));
      }
    offset += n;
    send(membership_.shards[s], std::move(r));
  }
}

void Scheduler::fail(const LayerBatchKey& key, const Status& why) {
  log_error(stats_.name, "layer batch " + key.to_string() + " failed: " + why.message());
  for (size_t s = 0; s < membership_.shards.size(); ++s) {
    MoeResult r;
    r.key = key;
    r.error = why;
    r.shard = static_cast<int32_t>(s);
    send(membership_.shards[s], std::move(r));
  }
}

}  // namespace janus::actors
