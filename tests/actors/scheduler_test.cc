// The Scheduler driven by its messages alone: the test is every shard and, where it
// plays them, the expert instances. Work lists are checked against the layout, results
// against CpuForward's experts on the same rows, failures by their Status code.
#include <doctest/doctest.h>

#include "actor_fixture.h"
#include "actors/expert_instance.h"
#include "actors/scheduler.h"

using namespace janus;
using namespace janus::actors;
using namespace janus::test;
using namespace std::chrono_literals;

namespace {

caf::actor spawn_scheduler(ActorWorld& w) {
  auto policy = make_scheduling_policy("aebs", 7);
  REQUIRE(policy.ok());
  return w.spawn<Scheduler>(w.ctx, std::move(*policy));
}

/// Two shards and two instances; the test stands in for each one not given.
Membership two_by_two(caf::scoped_actor& self, uint32_t epoch, caf::actor scheduler, std::vector<caf::actor> instances = {}) {
  Membership m;
  m.epoch = epoch;
  m.scheduler = std::move(scheduler);
  m.shards.assign(2, caf::actor_cast<caf::actor>(self));
  m.instances = instances.empty() ? std::vector<caf::actor>(2, caf::actor_cast<caf::actor>(self)) : std::move(instances);
  m.layout = one_replica_each(8, 2);  // experts 0-3 on instance 0, 4-7 on instance 1
  return m;
}

/// One T for each of two slots (shards, instances), in slot order.
template <class T>
std::vector<T> one_each(caf::scoped_actor& self, const char* what, int32_t T::*slot) {
  std::vector<T> out(2);
  for (int i = 0; i < 2; ++i) {
    T x = receive_one<T>(self, what);
    REQUIRE((x.*slot == 0 || x.*slot == 1));
    out[static_cast<size_t>(x.*slot)] = std::move(x);
  }
  return out;
}

/// Both shards' MoeResults for one layer batch.
std::vector<MoeResult> results(caf::scoped_actor& self) { return one_each(self, "MoeResult", &MoeResult::shard); }

/// Both instances' tasks.
std::vector<ExpertTask> tasks(caf::scoped_actor& self) { return one_each(self, "ExpertTask", &ExpertTask::instance); }

/// An instance's partial sums as the test makes them up: value 1000 * instance + 10 * row + col / 100.
Tensor made_up_partial(int instance, int64_t rows, int64_t cols) {
  Tensor t = Tensor::host(DType::kF64, rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t.as<double>()[r * cols + c] = 1000.0 * instance + 10.0 * static_cast<double>(r) + c / 100.0;
  return t;
}

bool is_rows_of(const Tensor& view, int instance, int64_t first_row) {
  for (int64_t r = 0; r < view.rows; ++r)
    for (int64_t c = 0; c < view.cols; ++c)
      if (view.as<double>()[r * view.cols + c] != 1000.0 * instance + 10.0 * static_cast<double>(first_row + r) + c / 100.0) return false;
  return true;
}

bool same_work(const std::vector<ExpertWork>& a, const std::vector<ExpertWork>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].row != b[i].row || a[i].expert != b[i].expert || a[i].weight != b[i].weight) return false;
  return true;
}

// Three rows (shard 0: rows 0-1, shard 1: row 2) whose choices split over both instances.
const std::vector<int32_t> kIds = {0, 5, 1, 2, 6, 7};
const std::vector<float> kWeights = {0.75f, 0.25f, 0.5f, 0.5f, 0.625f, 0.375f};
const std::vector<ExpertWork> kWork0 = {{0, 0, 0.75f}, {1, 1, 0.5f}, {1, 2, 0.5f}};
const std::vector<ExpertWork> kWork1 = {{0, 5, 0.25f}, {2, 6, 0.625f}, {2, 7, 0.375f}};

}  // namespace

TEST_CASE("with real expert instances, each shard's partial sums add up to CpuForward's MoE output for its rows") {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  const CpuForward ref(w.ctx->model);
  const int H = w.config().hidden_size;
  const int layer = first_sparse_layer(w.config());
  auto sched = spawn_scheduler(w);
  std::vector<caf::actor> instances;
  for (int i = 0; i < 2; ++i) {
    auto b = make_expert_backend(w.ctx->model, Device{}, one_replica_each(8, 2)->experts_on(i), false);
    REQUIRE(b.ok());
    instances.push_back(w.spawn<ExpertInstance>(w.ctx, i, std::shared_ptr<ExpertBackend>(std::move(*b))));
  }
  const Membership m = two_by_two(self, 1, sched, instances);
  for (const caf::actor& a : {sched, instances[0], instances[1]}) install(self, a, m);

  const Tensor h = activations(5, H, 11);
  const Routing routing = reference_route(ref, layer, h);
  self->send(sched, RoutedBatch{{2, layer, 0, 1}, h, routing.ids, routing.weights, {2, 3}});
  const std::vector<MoeResult> r = results(self);
  const std::vector<double> want = reference_moe(ref, layer, h);
  for (int s = 0; s < 2; ++s) {
    CAPTURE(s);
    CHECK(r[s].key == LayerBatchKey{2, layer, 0, 1});
    CHECK(r[s].error.ok());
    CHECK(!r[s].partials.empty());
    check_partials_sum_to(r[s].partials, want, s == 0 ? 0 : 2, s == 0 ? 2 : 3, H);
  }

  // What it counted: each logical expert's activations, as the routing says.
  SchedulerStats st;
  self->request(sched, 5s, SchedulerStats{}).receive([&](SchedulerStats& x) { st = std::move(x); }, [](caf::error&) { FAIL("no stats"); });
  REQUIRE(st.expert_counts.size() > static_cast<size_t>(layer));
  std::vector<uint64_t> counted(8, 0);
  for (int32_t e : routing.ids) ++counted[static_cast<size_t>(e)];
  CHECK(st.expert_counts[static_cast<size_t>(layer)] == counted);
  CHECK(st.layers[static_cast<size_t>(layer)].batches == 1);
  CHECK(st.bytes_in == h.bytes());
}

TEST_CASE("the scheduler gathers every instance's partial once, hands each shard its rows, and fails a batch with the error's code") {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  const int H = w.config().hidden_size;
  const int layer = first_sparse_layer(w.config());
  auto sched = spawn_scheduler(w);
  install(self, sched, two_by_two(self, 1, sched));
  const Tensor h = activations(3, H, 5);

  // Complete: the work lists follow the layout, the results are views of the partials.
  const LayerBatchKey k1{4, layer, 0, 1};
  self->send(sched, RoutedBatch{k1, h, kIds, kWeights, {2, 1}});
  std::vector<ExpertTask> t = tasks(self);
  CHECK(same_work(t[0].work, kWork0));
  CHECK(same_work(t[1].work, kWork1));
  CHECK(t[0].h.data == h.data);  // the layer batch is shared, not copied
  self->send(sched, ExpertPartial{k1, 1, made_up_partial(1, 3, H), Status::Ok()});
  CHECK(nothing_arrives(self));  // instance 0 is still due
  self->send(sched, ExpertPartial{k1, 0, made_up_partial(0, 3, H), Status::Ok()});
  std::vector<MoeResult> r = results(self);
  for (int s = 0; s < 2; ++s) {
    CAPTURE(s);
    CHECK(r[s].error.ok());
    REQUIRE(r[s].partials.size() == 2);
    for (int i = 0; i < 2; ++i) {  // in instance order
      CHECK(r[s].partials[i].rows == (s == 0 ? 2 : 1));
      CHECK(is_rows_of(r[s].partials[i], i, s == 0 ? 0 : 2));
    }
  }
  self->send(sched, ExpertPartial{k1, 0, made_up_partial(0, 3, H), Status::Ok()});  // complete already: dropped

  // Failed: one error fails the batch for every shard, with its code; the other
  // instance's partial is then dropped.
  const LayerBatchKey k2{4, layer, 1, 1};
  self->send(sched, RoutedBatch{k2, h, kIds, kWeights, {2, 1}});
  t = tasks(self);
  self->send(sched, ExpertPartial{k2, 0, Tensor{}, Status(ErrorCode::kResourceExhausted, "out of device memory")});
  r = results(self);
  for (const MoeResult& x : r) {
    CHECK(x.key == k2);
    CHECK(x.partials.empty());
    CHECK(x.error.code() == ErrorCode::kResourceExhausted);
    CHECK(x.error.message() == "expert-0: out of device memory");
  }
  self->send(sched, ExpertPartial{k2, 1, made_up_partial(1, 3, H), Status::Ok()});

  // A partial of the wrong size is a broken instance, not a result.
  const LayerBatchKey k3{4, layer, 2, 1};
  self->send(sched, RoutedBatch{k3, h, kIds, kWeights, {2, 1}});
  t = tasks(self);
  self->send(sched, ExpertPartial{k3, 1, made_up_partial(1, 1, H), Status::Ok()});
  for (const MoeResult& x : results(self)) {
    CHECK(x.error.code() == ErrorCode::kInternal);
    CHECK(x.error.message() == "expert-1: returned 1 rows for a batch of 3");
  }

  // No routing for rows that have some: the gate failed upstream.
  self->send(sched, RoutedBatch{{4, layer, 3, 1}, h, {}, {}, {2, 1}});
  for (const MoeResult& x : results(self)) {
    CHECK(x.error.code() == ErrorCode::kInternal);
    CHECK(x.error.message().find("is missing (the gate failed)") != std::string::npos);
  }

  // No rows at all: answered at once, with nothing to add.
  self->send(sched, RoutedBatch{{4, layer, 4, 1}, Tensor{Device{}, DType::kF32, 0, H, nullptr, nullptr}, {}, {}, {0, 0}});
  for (const MoeResult& x : results(self)) {
    CHECK(x.error.ok());
    CHECK(x.partials.empty());
  }

  self->send(sched, ExpertPartial{{4, layer, 0, 0}, 0, made_up_partial(0, 3, H), Status::Ok()});  // an older epoch
  CHECK(nothing_arrives(self));
  CHECK(stats_of(self, sched).dropped == 3);
}

TEST_CASE("under AGate the scheduler joins the shards' routed rows, shard 0 first, before it schedules them") {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  const int H = w.config().hidden_size;
  const int layer = first_sparse_layer(w.config());
  auto sched = spawn_scheduler(w);
  install(self, sched, two_by_two(self, 3, sched));
  const Tensor h0 = activations(2, H, 8), h1 = activations(1, H, 9);

  const LayerBatchKey key{1, layer, 0, 3};
  self->send(sched, ShardActivations{key, 1, h1, {6, 7}, {0.625f, 0.375f}});
  self->send(sched, ShardActivations{key, 4, h1, {6, 7}, {0.625f, 0.375f}});  // no such shard
  CHECK(nothing_arrives(self));
  self->send(sched, ShardActivations{key, 0, h0, {0, 5, 1, 2}, {0.75f, 0.25f, 0.5f, 0.5f}});
  std::vector<ExpertTask> t = tasks(self);
  CHECK(same_work(t[0].work, kWork0));
  CHECK(same_work(t[1].work, kWork1));
  REQUIRE(t[0].h.rows == 3);
  CHECK(std::equal(h0.as<float>(), h0.as<float>() + 2 * H, t[0].h.as<float>()));
  CHECK(std::equal(h1.as<float>(), h1.as<float>() + H, t[0].h.as<float>() + 2 * H));
  for (int i = 0; i < 2; ++i) self->send(sched, ExpertPartial{key, i, made_up_partial(i, 3, H), Status::Ok()});
  const std::vector<MoeResult> r = results(self);
  CHECK(r[0].partials.size() == 2);
  CHECK(r[1].partials.size() == 2);
  CHECK(is_rows_of(r[1].partials[1], 1, 2));

  // A new membership drops the batches in flight: their replies are of the old epoch.
  self->send(sched, ShardActivations{{2, layer, 0, 3}, 0, h0, {0, 5, 1, 2}, {0.75f, 0.25f, 0.5f, 0.5f}});
  install(self, sched, two_by_two(self, 4, sched));
  self->send(sched, ShardActivations{{2, layer, 0, 3}, 1, h1, {6, 7}, {0.625f, 0.375f}});
  CHECK(nothing_arrives(self));
  CHECK(stats_of(self, sched).dropped == 2);
}
