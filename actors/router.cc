#include "actors/router.h"

namespace janus::actors {

Status join_shards(const LayerBatchKey& key, std::map<int32_t, ShardActivations>& parts, int64_t cols, RoutedBatch* out) {
  out->key = key;
  std::vector<Tensor> hs;
  for (auto& [shard, p] : parts) {
    out->shard_rows.push_back(static_cast<int32_t>(p.h.rows));
    out->topk_ids.insert(out->topk_ids.end(), p.topk_ids.begin(), p.topk_ids.end());
    out->topk_weights.insert(out->topk_weights.end(), p.topk_weights.begin(), p.topk_weights.end());
    hs.push_back(std::move(p.h));
  }
  return concat_rows(hs, cols, &out->h);
}

Router::Router(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int shard,
               std::shared_ptr<RouterBackend> backend)
    : JanusActor(cfg, ctx, shard < 0 ? "router" : "router-" + std::to_string(shard), "Router", backend->device().name()),
      shard_(shard),
      backend_(std::move(backend)) {}

Status Router::keep(const Membership& next) {
  shards_.restart(next.epoch, static_cast<int32_t>(next.shards.size()));
  return Status::Ok();
}

caf::behavior Router::make_behavior() {
  return member_behavior({
      [=, this](ShardActivations& a) {
        count();
        on_activations(a);
      },
  });
}

Status Router::gate(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) {
  if (h.rows == 0) {
    ids->clear();
    w->clear();
    return Status::Ok();
  }
  return backend_->route(layer, h, ids, w);
}

void Router::on_activations(ShardActivations& a) {
  const LayerBatchKey key = a.key;
  if (shard_ >= 0) {  // AGate: gate this shard's rows and pass them on
    if (!current_epoch(key.epoch, "ShardActivations")) return;
    Status s = timed("route", &key, [&] { return gate(key.layer, a.h, &a.topk_ids, &a.topk_weights); });
    if (!s.ok()) log_error(stats_.name, "gate failed for " + key.to_string() + ": " + s.to_string());
    send(membership_.scheduler, std::move(a));
    return;
  }
  const int32_t from = a.shard;
  PartialGather<ShardActivations>::Batch batch;
  std::string why;
  const GatherOutcome o = shards_.offer(key, from, std::move(a), &batch, &why);
  if (o == GatherOutcome::kDropped) return drop("ShardActivations", why);
  if (o != GatherOutcome::kComplete) return;  // other shards are due (activations carry no error)
  RoutedBatch b;
  Status s = timed("route", &key, [&] {
    JANUS_TRY(join_shards(key, batch.replies, ctx_->model->config().hidden_size, &b));
    // A GPU router leaves the routing on the device: the Scheduler decides whether the
    // host needs it before the experts run (device_routing.h).
    if (routes_on_device_ && b.h.rows > 0) {
      Status d = backend_->route_on_device(key.layer, b.h, &b.routing);
      if (d.code() != ErrorCode::kUnsupported) return d;
      routes_on_device_ = false;
      b.routing = DeviceRouting{};
    }
    return gate(key.layer, b.h, &b.topk_ids, &b.topk_weights);
  });
  if (!s.ok()) log_error(stats_.name, "gate failed for " + key.to_string() + ": " + s.to_string());
  send(membership_.scheduler, std::move(b));
}

}  // namespace janus::actors
