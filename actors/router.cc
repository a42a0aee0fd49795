#include "actors/router.h"

#include <cstring>

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

caf::behavior Router::make_behavior() {
  return with_stats({
      [=, this](Membership& m) {
        count();
        localize(m);
        m_ = m;
        epoch_ = m.epoch;
        pending_.clear();
      },
      [=, this](ShardActivations& a) {
        count();
        if (!current_epoch(a.key.epoch, "ShardActivations")) return;
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
    Status s = timed("route", &key, [&] { return gate(key.layer, a.h, &a.topk_ids, &a.topk_weights); });
    if (!s.ok()) log_error(stats_.name, "gate failed for " + key.to_string() + ": " + s.to_string());
    send(m_.scheduler, std::move(a));
    return;
  }
  const size_t n = m_.shards.size();
  if (a.shard < 0 || static_cast<size_t>(a.shard) >= n) {
    ++stats_.dropped;
    log_warn(stats_.name, "dropped activations from unknown shard " + std::to_string(a.shard));
    return;
  }
  Pending& p = pending_[key];
  if (p.parts.empty()) p.parts.resize(n);
  p.parts[static_cast<size_t>(a.shard)] = std::move(a);
  if (++p.received < static_cast<int>(n)) return;
  RoutedBatch b;
  b.key = key;
  for (const ShardActivations& part : p.parts) b.shard_rows.push_back(static_cast<int32_t>(part.h.rows));
  Status s = timed("route", &key, [&] {
    JANUS_TRY(concat_activations(p.parts, ctx_->model->config().hidden_size, &b.h));
    return gate(key.layer, b.h, &b.topk_ids, &b.topk_weights);
  });
  pending_.erase(key);
  if (!s.ok()) log_error(stats_.name, "gate failed for " + key.to_string() + ": " + s.to_string());
  send(m_.scheduler, std::move(b));
}

}  // namespace janus::actors
