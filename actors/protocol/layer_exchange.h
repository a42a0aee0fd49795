// The layer exchange: one MoE layer of one layer batch, from the shards' post-attention
// activations to the experts' partial sums back at each shard.
//
//   EGate:  shard ──ShardActivations──► Router (gathers all shards, gates) ──RoutedBatch──► Scheduler
//   AGate:  shard ──ShardActivations──► its Router (gates its rows) ──ShardActivations──► Scheduler
//           Scheduler ──ExpertTask──► each instance with work ──ExpertPartial──► Scheduler
//           Scheduler ──MoeResult{its rows of every partial, or the error}──► every shard
//
// Inside a process the tensors travel as shared Tensor handles (zero copy), so these
// types are process-local (CAF_ALLOW_UNSAFE_MESSAGE_TYPE); across nodes the same content
// goes as schemas/descriptors.capnp frames plus transport payloads, between the nodes'
// bridges (actors/bridge.h, actors/wire_codec.h). Every message carries its layer batch's
// LayerBatchKey.
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>
#include <cstdint>
#include <vector>

#include "actors/protocol/layer_batch_key.h"
#include "gpu/backend/device_routing.h"
#include "gpu/cpu/expert_work.h"
#include "runtime/base/status.h"
#include "runtime/base/tensor.h"

namespace janus::actors {

/// Shard -> Router (EGate), or shard -> its Router -> Scheduler (AGate, with routing).
struct ShardActivations {
  LayerBatchKey key;
  int32_t shard = 0;
  Tensor h;                          // [rows, H]
  std::vector<int32_t> topk_ids;     // AGate: [rows * k]
  std::vector<float> topk_weights;
};

/// Router -> Scheduler: a whole layer batch, rows of shard 0 first.
struct RoutedBatch {
  LayerBatchKey key;
  Tensor h;                          // [total rows, H]
  std::vector<int32_t> topk_ids;     // empty while the routing is on the device
  std::vector<float> topk_weights;
  std::vector<int32_t> shard_rows;   // rows contributed by each shard, in shard order
  DeviceRouting routing;             // a GPU router's ids and weights (device_routing.h)
};

/// Scheduler -> ExpertInstance.
struct ExpertTask {
  LayerBatchKey key;
  int32_t instance = 0;
  Tensor h;                          // the whole layer batch (shared)
  std::vector<ExpertWork> work;
  /// Instead of `work` when present: every (row, choice) of the router's routing whose
  /// expert this instance holds (each expert has one replica, so nothing was chosen).
  DeviceRouting routing;
};

/// ExpertInstance -> Scheduler.
struct ExpertPartial {
  LayerBatchKey key;
  int32_t instance = 0;
  Tensor partial;                    // [total rows, H]
  Status error;                      // not ok: the instance could not run the task
};

/// Scheduler -> shard: the expert instances' partial sums for the shard's rows (the
/// shard adds them to its residual), or why there are none.
struct MoeResult {
  LayerBatchKey key;
  std::vector<Tensor> partials;      // [shard rows, H] each, in instance (or MoE node) order
  Status error;
  int32_t shard = -1;                // the shard it is for (a bridge forwards it by this)
};

}  // namespace janus::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ShardActivations)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::RoutedBatch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ExpertTask)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::ExpertPartial)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(janus::actors::MoeResult)
