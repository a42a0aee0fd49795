#include "actors/router.h"

namespace janus::actors {

Status concat_activations(const std::vector<ShardActivations>& parts, int64_t cols, Tensor* out) {
  std::vector<Tensor> hs;
  for (const ShardActivations& p : parts) hs.push_back(p.h);
  return concat_rows(hs, cols, out);
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
  switch (shards_.offer(key, from, std::move(a), &batch, &why)) {
    case GatherOutcome::kDropped: return drop("ShardActivations", why);
    case GatherOutcome::kWaiting:
    case GatherOutcome::kFailed: return;  // activations carry no error
    case GatherOutcome::kComplete: break;
  }
  std::vector<ShardActivations> parts;
  for (auto& [shard, part] : batch.replies) parts.push_back(std::move(part));
  RoutedBatch b;
  b.key = key;
  for (const ShardActivations& part : parts) b.shard_rows.push_back(static_cast<int32_t>(part.h.rows));
  Status s = timed("route", &key, [&] {
    JANUS_TRY(concat_activations(parts, ctx_->model->config().hidden_size, &b.h));
    return gate(key.layer, b.h, &b.topk_ids, &b.topk_weights);
  });
  if (!s.ok()) log_error(stats_.name, "gate failed for " + key.to_string() + ": " + s.to_string());
  send(membership_.scheduler, std::move(b));
}

}  // namespace janus::actors
