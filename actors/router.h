// Router: the gate of a MoE layer — top-k expert ids and weights for every row.
//
// Under EGate (router{side="moe"}, Janus) one Router on the MoE side gathers each layer
// batch whole from all shards, gates it, and hands it to the Scheduler as one RoutedBatch.
// Under AGate (router{side="attention"}, MegaScale-Infer) each shard has its own Router:
// it gates the shard's rows and forwards them with their routing to the Scheduler.
#pragma once

#include <map>

#include "actors/actor_common.h"
#include "actors/partial_gather.h"
#include "actors/protocol/layer_exchange.h"

namespace janus::actors {

class Router : public JanusActor {
 public:
  /// `shard` is the shard this router serves under AGate, -1 under EGate.
  Router(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int shard, std::shared_ptr<RouterBackend> backend);
  caf::behavior make_behavior() override;

 private:
  Status keep(const Membership& next) override;
  void on_activations(ShardActivations& a);
  Status gate(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w);

  const int shard_;
  std::shared_ptr<RouterBackend> backend_;
  bool routes_on_device_ = true;  // until the backend says it cannot (it computes on the host)
  PartialGather<ShardActivations> shards_{"shard "};  // EGate: each layer batch's rows from every shard
};

/// The layer batch a gather of every shard's activations makes, rows of shard 0 first:
/// their rows joined (a single part is shared, not copied), each shard's row count, and
/// their routing joined (AGate; empty under EGate).
Status join_shards(const LayerBatchKey& key, std::map<int32_t, ShardActivations>& parts, int64_t cols, RoutedBatch* out);

}  // namespace janus::actors
