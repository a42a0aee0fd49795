// The Router driven by its messages alone: the test is every shard and the scheduler.
// Its routed batches are compared with CpuForward's gate on the same rows.
#include <doctest/doctest.h>

#include "actor_fixture.h"
#include "actors/router.h"

using namespace janus;
using namespace janus::actors;
using namespace janus::test;
using namespace std::chrono_literals;

namespace {

caf::actor spawn_router(ActorWorld& w, int shard) {
  auto backend = make_router_backend(w.ctx->model, Device{}, false);
  REQUIRE(backend.ok());
  return w.spawn<Router>(w.ctx, shard, std::shared_ptr<RouterBackend>(std::move(*backend)));
}

Membership with_shards(caf::scoped_actor& self, uint32_t epoch, size_t shards) {
  Membership m;
  m.epoch = epoch;
  m.scheduler = caf::actor_cast<caf::actor>(self);
  m.shards.assign(shards, caf::actor_cast<caf::actor>(self));
  return m;
}

bool same_rows(const Tensor& t, int64_t first_row, const Tensor& part) {
  const size_t n = static_cast<size_t>(part.rows * part.cols);
  return std::equal(part.as<float>(), part.as<float>() + n, t.as<float>() + first_row * t.cols);
}

}  // namespace

TEST_CASE("an EGate router joins every shard's rows, in shard order, and gates them as CpuForward does") {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  const CpuForward ref(w.ctx->model);
  const int H = w.config().hidden_size, k = w.config().top_k;
  const int layer = first_sparse_layer(w.config());
  auto router = spawn_router(w, -1);
  install(self, router, with_shards(self, 1, 2));

  const Tensor h0 = activations(2, H, 1), h1 = activations(3, H, 2);
  const LayerBatchKey key{3, layer, 0, 1};
  self->send(router, ShardActivations{key, 1, h1, {}, {}});  // shard 1 first: order comes from the shard index
  CHECK(nothing_arrives(self));
  self->send(router, ShardActivations{key, 0, h0, {}, {}});
  RoutedBatch b = receive_one<RoutedBatch>(self, "RoutedBatch");
  CHECK(b.key == key);
  CHECK(b.shard_rows == std::vector<int32_t>{2, 3});
  REQUIRE(b.h.rows == 5);
  CHECK(same_rows(b.h, 0, h0));
  CHECK(same_rows(b.h, 2, h1));
  const Routing want = reference_route(ref, layer, b.h);
  CHECK(b.topk_ids == want.ids);
  CHECK(b.topk_weights == want.weights);
  CHECK(b.topk_ids.size() == static_cast<size_t>(5 * k));

  // A layer batch where one shard has no rows still closes, and gates only the rows there are.
  const LayerBatchKey empty_key{3, layer, 1, 1};
  self->send(router, ShardActivations{empty_key, 0, Tensor{Device{}, DType::kF32, 0, H, nullptr, nullptr, nullptr}, {}, {}});
  self->send(router, ShardActivations{empty_key, 1, h1, {}, {}});
  RoutedBatch e = receive_one<RoutedBatch>(self, "RoutedBatch with an empty shard");
  CHECK(e.shard_rows == std::vector<int32_t>{0, 3});
  CHECK(e.topk_ids == reference_route(ref, layer, h1).ids);
}

TEST_CASE("an EGate router drops what is not for the batches it gathers, and a new membership drops what was half gathered") {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  const CpuForward ref(w.ctx->model);
  const int H = w.config().hidden_size;
  const int layer = first_sparse_layer(w.config());
  auto router = spawn_router(w, -1);
  install(self, router, with_shards(self, 1, 2));
  const Tensor h = activations(2, H, 3);

  self->send(router, ShardActivations{{5, layer, 0, 0}, 0, h, {}, {}});  // an older epoch
  self->send(router, ShardActivations{{5, layer, 0, 1}, 7, h, {}, {}});  // no such shard
  self->send(router, ShardActivations{{5, layer, 0, 1}, 0, h, {}, {}});
  self->send(router, ShardActivations{{5, layer, 0, 1}, 0, h, {}, {}});  // shard 0 again: still waits for shard 1
  CHECK(nothing_arrives(self));
  CHECK(stats_of(self, router).dropped == 3);

  // Epoch 2 has one shard: the half-gathered batch of epoch 1 is gone, and its missing
  // part is dropped when it comes.
  install(self, router, with_shards(self, 2, 1));
  self->send(router, ShardActivations{{5, layer, 0, 1}, 1, h, {}, {}});
  self->send(router, ShardActivations{{6, layer, 0, 2}, 0, h, {}, {}});
  RoutedBatch b = receive_one<RoutedBatch>(self, "RoutedBatch of epoch 2");
  CHECK(b.key == LayerBatchKey{6, layer, 0, 2});
  CHECK(b.shard_rows == std::vector<int32_t>{2});
  CHECK(b.topk_ids == reference_route(ref, layer, h).ids);
  CHECK(nothing_arrives(self));
  CHECK(stats_of(self, router).dropped == 4);

  // A membership older than the one in place is refused, not installed.
  bool refused = false;
  self->request(router, 5s, with_shards(self, 1, 2)).receive([] {}, [&](caf::error&) { refused = true; });
  CHECK(refused);
  self->send(router, ShardActivations{{7, layer, 0, 2}, 0, h, {}, {}});
  CHECK(receive_one<RoutedBatch>(self, "RoutedBatch after the refused membership").key.epoch == 2);
}

TEST_CASE("an AGate router gates its own shard's rows and passes them on with their routing") {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  const CpuForward ref(w.ctx->model);
  const int H = w.config().hidden_size;
  const int layer = first_sparse_layer(w.config());
  auto router = spawn_router(w, 1);
  install(self, router, with_shards(self, 4, 2));
  const Tensor h = activations(3, H, 4);

  self->send(router, ShardActivations{{2, layer, 0, 3}, 1, h, {}, {}});  // another epoch
  self->send(router, ShardActivations{{2, layer, 0, 4}, 1, h, {}, {}});
  ShardActivations a = receive_one<ShardActivations>(self, "routed ShardActivations");
  CHECK(a.key == LayerBatchKey{2, layer, 0, 4});
  CHECK(a.shard == 1);
  CHECK(a.h.data == h.data);  // the rows themselves travel on, not a copy
  const Routing want = reference_route(ref, layer, h);
  CHECK(a.topk_ids == want.ids);
  CHECK(a.topk_weights == want.weights);

  self->send(router, ShardActivations{{2, layer, 1, 4}, 1, Tensor{Device{}, DType::kF32, 0, H, nullptr, nullptr, nullptr}, {}, {}});
  ShardActivations none = receive_one<ShardActivations>(self, "routed empty ShardActivations");
  CHECK(none.topk_ids.empty());
  CHECK(stats_of(self, router).dropped == 1);
}
