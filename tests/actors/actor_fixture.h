// What the actors' protocol tests share: an actor system, a deployment context over a
// committed fixture model, a stand-in for the members an actor talks to (the test
// itself, or actors that only acknowledge), and the reference computations the actors'
// replies are compared with — CpuForward called directly, never through an actor.
#pragma once

#include <doctest/doctest.h>

#include <caf/all.hpp>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "actors/actor_common.h"
#include "runtime/model/cpu_forward.h"
#include "test_util.h"

namespace janus::test {

struct ActorWorld {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<actors::DeploymentContext> ctx;

  explicit ActorWorld(const std::string& model = "qwen3_moe") {
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    ctx = std::make_shared<actors::DeploymentContext>();
    auto m = Model::load(fixture(model));
    REQUIRE(m.ok());
    ctx->model = *m;
    // A KV cache sized by hand: the Deployment resolves these from the model otherwise.
    ctx->spec.attention.block_size = 16;
    ctx->spec.attention.kv_blocks = 64;
    ctx->spec.attention.max_seq_len = 256;
    ctx->spec.attention.max_batch = 8;
  }
  // The system waits for every actor at destruction: each actor a test spawns here is
  // told to exit first.
  ~ActorWorld() {
    for (const caf::actor& a : spawned) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }

  template <class T, class... Ts>
  caf::actor spawn(Ts&&... xs) {
    spawned.push_back(sys->spawn<T>(std::forward<Ts>(xs)...));
    return spawned.back();
  }
  template <class F, class... Ts>
  caf::actor spawn_fn(F f, Ts&&... xs) {
    spawned.push_back(sys->spawn(f, std::forward<Ts>(xs)...));
    return spawned.back();
  }

  const ModelConfig& config() const { return ctx->model->config(); }

  std::vector<caf::actor> spawned;
};

/// An actor that acknowledges every membership and ignores the rest: a member that only
/// has to be there (a scheduler the Frontend installs, a scheduler a shard watches).
inline caf::behavior acknowledging_member() {
  return {[](const actors::Membership&) {}};
}

/// Sends `m` to `a` as the Frontend does and waits for the acknowledgement.
inline void install(caf::scoped_actor& self, const caf::actor& a, const actors::Membership& m) {
  self->request(a, std::chrono::seconds(5), m).receive([] {}, [&](caf::error& e) { FAIL("membership refused: " << to_string(e)); });
}

/// The layout of `experts` experts on `instances` instances, each expert on exactly one
/// (so which instance runs a choice does not depend on the scheduling policy).
inline std::shared_ptr<const ExpertLayout> one_replica_each(int experts, int instances) {
  std::vector<std::vector<int32_t>> placement(static_cast<size_t>(instances));
  for (int e = 0; e < experts; ++e) placement[static_cast<size_t>(e * instances / experts)].push_back(e);
  const int slots = (experts + instances - 1) / instances;
  auto l = ExpertLayout::create(experts, slots, placement);
  REQUIRE(l.ok());
  return std::make_shared<const ExpertLayout>(*l);
}

/// rows x cols host activations, different for each `seed`, never zero.
inline Tensor activations(int64_t rows, int64_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  Tensor t = Tensor::host(DType::kF32, rows, cols);
  const std::vector<float> v = random_floats(static_cast<size_t>(rows * cols), rng, 0.5f);
  std::copy(v.begin(), v.end(), t.as<float>());
  return t;
}

inline int first_sparse_layer(const ModelConfig& c) {
  for (int l = 0; l < c.num_layers; ++l)
    if (c.is_sparse(l)) return l;
  FAIL("the fixture has no MoE layer");
  return -1;
}

/// The gate of `layer` for the rows of h: [rows * top_k] ids and weights.
struct Routing {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};
inline Routing reference_route(const CpuForward& f, int layer, const Tensor& h) {
  Routing r;
  r.ids.resize(static_cast<size_t>(h.rows * f.config().top_k));
  r.weights.resize(r.ids.size());
  if (h.rows > 0) f.route(layer, h.as<float>(), h.rows, r.ids.data(), r.weights.data());
  return r;
}

/// What the whole MoE side adds to the rows of h at `layer` ([rows * H], double): every
/// row's top-k experts, weighted by the gate, as the reference engine computes it.
inline std::vector<double> reference_moe(const CpuForward& f, int layer, const Tensor& h) {
  const int k = f.config().top_k;
  const Routing r = reference_route(f, layer, h);
  std::vector<ExpertWork> work;
  for (int64_t row = 0; row < h.rows; ++row)
    for (int j = 0; j < k; ++j) {
      const size_t s = static_cast<size_t>(row * k + j);
      work.push_back({static_cast<int32_t>(row), r.ids[s], r.weights[s]});
    }
  std::vector<double> acc(static_cast<size_t>(h.rows * h.cols), 0.0);
  if (h.rows > 0) f.experts(layer, h.as<float>(), h.rows, work.data(), static_cast<int64_t>(work.size()), acc.data());
  return acc;
}

/// The sum of a shard's partials (F64, [rows, H] each) against the reference rows
/// [first_row, first_row + rows) of `ref`: equal up to the order the sums were added in.
inline void check_partials_sum_to(const std::vector<Tensor>& partials, const std::vector<double>& ref, int64_t first_row, int64_t rows,
                                  int64_t cols) {
  std::vector<double> sum(static_cast<size_t>(rows * cols), 0.0);
  for (const Tensor& p : partials) {
    REQUIRE(p.dtype == DType::kF64);
    REQUIRE(p.rows == rows);
    REQUIRE(p.cols == cols);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += p.as<double>()[i];
  }
  double worst = 0, norm = 0;
  for (size_t i = 0; i < sum.size(); ++i) {
    const double want = ref[static_cast<size_t>(first_row * cols) + i];
    worst = std::max(worst, std::abs(sum[i] - want));
    norm = std::max(norm, std::abs(want));
  }
  CHECK(norm > 0);  // a zero reference would let anything pass
  CHECK(worst <= 1e-12 * norm);
}

/// Waits for one message of type T, failing after `timeout`.
template <class T>
T receive_one(caf::scoped_actor& self, const char* what, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  T out{};
  bool got = false;
  self->receive(
      [&](T& x) {
        out = std::move(x);
        got = true;
      },
      caf::after(timeout) >> [&] { FAIL("no " << what << " arrived"); });
  CHECK(got);
  return out;
}

/// True when nothing at all arrives within `wait`.
inline bool nothing_arrives(caf::scoped_actor& self, std::chrono::milliseconds wait = std::chrono::milliseconds(100)) {
  bool quiet = true;
  self->receive(
      caf::others >> [&](caf::message_view&) -> caf::result<caf::message> {
        quiet = false;
        return caf::message{};
      },
      caf::after(wait) >> [] {});
  return quiet;
}

inline actors::ActorStats stats_of(caf::scoped_actor& self, const caf::actor& a) {
  actors::ActorStats s;
  self->request(a, std::chrono::seconds(5), actors::StatsQuery{})
      .receive([&](actors::ActorStats& x) { s = std::move(x); }, [](caf::error&) { FAIL("no stats"); });
  return s;
}

}  // namespace janus::test
