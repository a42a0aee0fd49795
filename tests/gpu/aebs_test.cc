// The CPU AEBS reference (gpu/cpu/aebs.h): its assignment follows the documented
// Algorithm 1 (visit order, ties) and its work lists are consistent with it.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

#include "gpu/cpu/aebs.h"
#include "runtime/scheduling/aebs_optimum.h"
#include "runtime/scheduling/aebs_synthetic.h"
#include "runtime/scheduling/expert_placement.h"
#include "runtime/scheduling/scheduling_policy.h"

using namespace janus;

namespace {

ExpertLayout make_layout(int E, int C, std::vector<std::vector<int32_t>> placement) {
  auto r = ExpertLayout::create(E, C, std::move(placement));
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  return *r;
}

// Algorithm 1 (steps 1-3, no repair) as gpu/cpu/aebs.h documents it, written over the
// ExpertLayout API.
std::vector<int32_t> spec_expert_replica(const ExpertLayout& l, const std::vector<int32_t>& ids) {
  const int E = l.num_experts(), G = l.num_instances();
  std::vector<bool> act(static_cast<size_t>(E), false);
  for (int32_t e : ids) act[static_cast<size_t>(e)] = true;
  std::vector<int> load(static_cast<size_t>(G), 0), pending(static_cast<size_t>(G), 0);
  std::vector<int32_t> rep(static_cast<size_t>(E), -1);
  std::vector<int> multi;
  for (int e = 0; e < E; ++e) {
    if (!act[static_cast<size_t>(e)]) continue;
    if (l.replicas_of(e).size() == 1) {
      rep[static_cast<size_t>(e)] = l.replicas_of(e)[0];
      ++load[static_cast<size_t>(l.instance_of(rep[static_cast<size_t>(e)]))];
    } else {
      multi.push_back(e);
      for (int32_t r : l.replicas_of(e)) ++pending[static_cast<size_t>(l.instance_of(r))];
    }
  }
  std::stable_sort(multi.begin(), multi.end(), [&](int a, int b) { return l.replicas_of(a).size() < l.replicas_of(b).size(); });
  for (int e : multi) {
    for (int32_t r : l.replicas_of(e)) --pending[static_cast<size_t>(l.instance_of(r))];
    int32_t best = -1;
    for (int32_t r : l.replicas_of(e)) {
      if (best < 0) {
        best = r;
        continue;
      }
      const auto g = static_cast<size_t>(l.instance_of(r)), b = static_cast<size_t>(l.instance_of(best));
      if (std::make_tuple(load[g], pending[g], g) < std::make_tuple(load[b], pending[b], b)) best = r;
    }
    rep[static_cast<size_t>(e)] = best;
    ++load[static_cast<size_t>(l.instance_of(best))];
  }
  return rep;
}

// Independent consistency check of the outputs against the layout.
void check_consistent(const ExpertLayout& l, const std::vector<int32_t>& ids, int k, AebsHostOutputs& o) {
  const int64_t N = static_cast<int64_t>(ids.size());
  const int G = l.num_instances();
  // Every choice on a replica of its expert, one replica per expert.
  std::map<int32_t, int32_t> used;
  for (int64_t c = 0; c < N; ++c) {
    const int32_t r = o.choice_replica[static_cast<size_t>(c)];
    REQUIRE(r >= 0);
    REQUIRE(r < l.num_replicas());
    CHECK(l.expert_of(r) == ids[static_cast<size_t>(c)]);
    auto [it, fresh] = used.emplace(ids[static_cast<size_t>(c)], r);
    CHECK(it->second == r);
    (void)fresh;
  }
  // Work lists: instance g's items are exactly the choices mapped to it, grouped by
  // ascending replica, ascending inside a replica.
  std::vector<int> act = activated_experts_per_instance(l, o.choice_replica.data(), N);
  for (int g = 0; g < G; ++g) {
    CAPTURE(g);
    std::vector<int32_t> want;
    for (int64_t c = 0; c < N; ++c)
      if (l.instance_of(o.choice_replica[static_cast<size_t>(c)]) == g) want.push_back(static_cast<int32_t>(c));
    std::vector<int32_t> got(o.items.begin() + o.instance_item_offsets[static_cast<size_t>(g)],
                             o.items.begin() + o.instance_item_offsets[static_cast<size_t>(g) + 1]);
    std::vector<int32_t> sorted_got = got;
    std::sort(sorted_got.begin(), sorted_got.end());
    CHECK(sorted_got == want);
    for (size_t i = 1; i < got.size(); ++i) {
      const int32_t ra = o.choice_replica[static_cast<size_t>(got[i - 1])], rb = o.choice_replica[static_cast<size_t>(got[i])];
      CHECK((ra < rb || (ra == rb && got[i - 1] < got[i])));
    }
    // The activated replicas, each once, and a_i.
    std::set<int32_t> reps;
    for (int32_t c : got) reps.insert(o.choice_replica[static_cast<size_t>(c)]);
    std::vector<int32_t> active(o.active_replicas.begin() + o.active_offsets[static_cast<size_t>(g)],
                                o.active_replicas.begin() + o.active_offsets[static_cast<size_t>(g) + 1]);
    CHECK(active == std::vector<int32_t>(reps.begin(), reps.end()));
    CHECK(o.activated[static_cast<size_t>(g)] == act[static_cast<size_t>(g)]);
    // Per replica: its range holds exactly its choices.
    for (int32_t r : reps)
      for (int32_t i = o.replica_offsets[static_cast<size_t>(r)]; i < o.replica_offsets[static_cast<size_t>(r) + 1]; ++i)
        CHECK(o.choice_replica[static_cast<size_t>(o.items[static_cast<size_t>(i)])] == r);
  }
  CHECK(o.summary[kAebsMaxActivated] == max_activated_experts(l, o.choice_replica.data(), N));
  CHECK(o.summary[kAebsValidChoices] == N);
  CHECK(o.summary[kAebsInvalidChoices] == 0);
  CHECK(o.summary[kAebsActivatedExperts] == static_cast<int32_t>(used.size()));
  (void)k;
}

}  // namespace

TEST_CASE("aebs replica table is a CSR of the layout with the documented visit order") {
  // instance 0: 0 1 2 | instance 1: 1 2 3 | instance 2: 2 4 | instance 3: 1 5
  ExpertLayout l = make_layout(6, 3, {{0, 1, 2}, {1, 2, 3}, {2, 4}, {1, 5}});
  AebsReplicaTable t = AebsReplicaTable::build(l);
  CHECK(t.expert_offsets == std::vector<int32_t>{0, 1, 4, 7, 8, 9, 10});
  CHECK(t.expert_replicas == std::vector<int32_t>{0, 1, 3, 8, 2, 4, 6, 5, 7, 9});
  CHECK(t.instance_offsets == std::vector<int32_t>{0, 3, 6, 8, 10});
  CHECK(t.replica_instance == std::vector<int32_t>{0, 0, 0, 1, 1, 1, 2, 2, 3, 3});
  CHECK(t.replica_expert == std::vector<int32_t>{0, 1, 2, 1, 2, 3, 2, 4, 1, 5});
  CHECK(t.instance_mask[1] == 0b1011u);
  CHECK(t.instance_mask[2] == 0b0111u);
  // Experts 1 and 2 have 3 replicas each: by id. A 2-replica expert would come first:
  ExpertLayout l2 = make_layout(3, 3, {{0, 1, 2}, {0, 1}, {0, 2}});
  CHECK(AebsReplicaTable::build(l2).visit_order == std::vector<int32_t>{1, 2, 0});
  CHECK(AebsReplicaTable::build(l2, AebsVisitOrder::kExpertId).visit_order == std::vector<int32_t>{0, 1, 2});
  CHECK(t.view().num_multi == 2);
  CHECK(t.view().max_replicas == 3);
}

TEST_CASE("aebs breaks load ties toward the instance later experts need least") {
  // instance 0: 0 1 2 | instance 1: 0 | instance 2: 1 2. Experts 0, 1, 2 each have two
  // replicas; all activated. Lowest-id ties would give a_max 2 (0->0, 1->2, 2->0); the
  // pending rule sends expert 0 to instance 1 (nobody else can use it): a_max 1.
  ExpertLayout l = make_layout(3, 3, {{0, 1, 2}, {0}, {1, 2}});
  AebsReplicaTable t = AebsReplicaTable::build(l, AebsVisitOrder::kFewestReplicasFirst, 0);
  AebsHostOutputs o;
  const std::vector<int32_t> ids = {0, 1, 2, 1};
  o.resize(t.view(), static_cast<int64_t>(ids.size()));
  REQUIRE(cpu::aebs(t.view(), ids.data(), 2, 2, o.outputs()).ok());
  CHECK(o.expert_replica == std::vector<int32_t>{3, 1, 5});
  CHECK(o.activated == std::vector<int32_t>{1, 1, 1});
  CHECK(o.summary[kAebsMaxActivated] == 1);
  CHECK(o.choice_replica == std::vector<int32_t>{3, 1, 5, 1});
  CHECK(o.replica_offsets == std::vector<int32_t>{0, 0, 2, 2, 3, 3, 4});
  CHECK(std::vector<int32_t>(o.items.begin(), o.items.begin() + 4) == std::vector<int32_t>{1, 3, 0, 2});
  CHECK(o.active_offsets == std::vector<int32_t>{0, 1, 2, 3});
  CHECK(std::vector<int32_t>(o.active_replicas.begin(), o.active_replicas.begin() + 3) == std::vector<int32_t>{1, 3, 5});
  check_consistent(l, ids, 2, o);
}

TEST_CASE("aebs repairs a greedy assignment along an augmenting path to the optimum") {
  // instance 0: 2 7 4 8 | instance 1: 2 6 1 8 | instance 2: 5 0 1 3. Singles 4, 7 (inst 0)
  // and 3 (inst 2); the greedy puts 1 and 2 on instance 1 and 8 on instance 0: loads 3 2 1.
  // The path 0 -> 1 -> 2 moves 8 to instance 1 and 1 to instance 2: loads 2 2 2.
  ExpertLayout l = make_layout(9, 4, {{2, 7, 4, 8}, {2, 6, 1, 8}, {5, 0, 1, 3}});
  const std::vector<int32_t> ids = {4, 8, 8, 3, 2, 1, 7, 8, 3, 1};
  AebsReplicaTable plain = AebsReplicaTable::build(l, AebsVisitOrder::kFewestReplicasFirst, 0);
  AebsReplicaTable repaired = AebsReplicaTable::build(l);
  CHECK(repaired.view().max_repairs == 3);
  AebsHostOutputs a, b;
  a.resize(plain.view(), 10);
  b.resize(repaired.view(), 10);
  REQUIRE(cpu::aebs(plain.view(), ids.data(), 5, 2, a.outputs()).ok());
  REQUIRE(cpu::aebs(repaired.view(), ids.data(), 5, 2, b.outputs()).ok());
  CHECK(a.expert_replica == std::vector<int32_t>{-1, 6, 4, 11, 2, -1, -1, 1, 3});
  CHECK(a.activated == std::vector<int32_t>{3, 2, 1});
  CHECK(a.summary[kAebsRepairs] == 0);
  CHECK(b.expert_replica == std::vector<int32_t>{-1, 10, 4, 11, 2, -1, -1, 1, 7});
  CHECK(b.activated == std::vector<int32_t>{2, 2, 2});
  CHECK(b.summary[kAebsMaxActivated] == 2);
  CHECK(b.summary[kAebsRepairs] == 1);
  CHECK(*optimal_max_activated(l, ids.data(), 5, 2) == 2);
  check_consistent(l, ids, 2, b);
}

TEST_CASE("aebs work lists are consistent with its assignment on random and skewed batches") {
  struct Setup {
    int E, k, G, C;
  };
  int cases = 0, repaired = 0;
  for (Setup s : {Setup{8, 2, 4, 3}, Setup{64, 6, 8, 10}, Setup{160, 8, 16, 12}, Setup{64, 8, 32, 4}})
    for (double zipf : {0.0, 1.0, 1.5})
      for (int64_t B : {1, 3, 16, 64, 300}) {
        CAPTURE(s.E);
        CAPTURE(s.G);
        CAPTURE(zipf);
        CAPTURE(B);
        std::vector<double> pop = synthetic_popularity(s.E, zipf, 7);
        auto layout = place_experts({s.E, s.G, s.C, pop, {}, {}});
        REQUIRE(layout.ok());
        for (int variant = 0; variant < 3; ++variant) {
          // 0: the default (fewest replicas first, repair); 1: the greedy alone; 2: id order.
          const AebsVisitOrder order = variant == 2 ? AebsVisitOrder::kExpertId : AebsVisitOrder::kFewestReplicasFirst;
          AebsReplicaTable t = AebsReplicaTable::build(*layout, order, variant == 1 ? 0 : -1);
          auto ids = synthetic_routing(s.E, s.k, B, zipf, 7, static_cast<uint64_t>(cases));
          REQUIRE(ids.ok());
          AebsHostOutputs o;
          o.resize(t.view(), B * s.k);
          REQUIRE(cpu::aebs(t.view(), ids->data(), B, s.k, o.outputs()).ok());
          check_consistent(*layout, *ids, s.k, o);
          CHECK(cpu::aebs_check_outputs(t.view(), ids->data(), B, s.k, o.outputs()).ok());
          if (variant == 1) CHECK(o.expert_replica == spec_expert_replica(*layout, *ids));
          if (variant != 1) {
            // With the repair, a_max is the optimum unless the repair budget ran out.
            const int opt = *optimal_max_activated(*layout, ids->data(), B, s.k);
            CHECK(o.summary[kAebsMaxActivated] >= opt);
            if (o.summary[kAebsRepairs] < t.view().max_repairs) CHECK(o.summary[kAebsMaxActivated] == opt);
            repaired += o.summary[kAebsRepairs] > 0;
          }
          // Same input, same output.
          AebsHostOutputs o2;
          o2.resize(t.view(), B * s.k);
          REQUIRE(cpu::aebs(t.view(), ids->data(), B, s.k, o2.outputs()).ok());
          CHECK(o2.choice_replica == o.choice_replica);
          CHECK(o2.items == o.items);
          ++cases;
        }
      }
  CHECK(cases == 180);
  CHECK(repaired > 0);  // the repair path is exercised
}

TEST_CASE("aebs marks invalid ids, leaves them out of the work lists and says which") {
  ExpertLayout l = make_layout(4, 2, {{0, 1}, {2, 3}, {0, 2}});
  AebsReplicaTable t = AebsReplicaTable::build(l);
  AebsHostOutputs o;
  const std::vector<int32_t> ids = {0, 9, 3, -2, 2, 1};
  o.resize(t.view(), 6);
  Status st = cpu::aebs(t.view(), ids.data(), 3, 2, o.outputs());
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == ErrorCode::kInvalidArgument);
  CHECK(st.message().find("token 0 slot 1 chose expert 9, outside [0, 4) (2 invalid choices in all)") != std::string::npos);
  CHECK(o.choice_replica[1] == -1);
  CHECK(o.choice_replica[3] == -1);
  CHECK(o.summary[kAebsInvalidChoices] == 2);
  CHECK(o.summary[kAebsValidChoices] == 4);
  CHECK(o.replica_offsets[static_cast<size_t>(t.num_replicas())] == 4);
  CHECK(cpu::aebs_check_outputs(t.view(), ids.data(), 3, 2, o.outputs()).ok());
  // An empty batch is fine and activates nothing.
  REQUIRE(cpu::aebs(t.view(), ids.data(), 0, 2, o.outputs()).ok());
  CHECK(o.summary[kAebsMaxActivated] == 0);
  CHECK(o.summary[kAebsActivatedExperts] == 0);
  CHECK(std::all_of(o.expert_replica.begin(), o.expert_replica.end(), [](int32_t r) { return r == -1; }));
  CHECK(cpu::aebs(t.view(), ids.data(), 2, 0, o.outputs()).code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("aebs on the CPU serves more than 64 instances (the GPU's limit) and reaches the optimum") {
  auto layout = place_experts({200, 80, 4, synthetic_popularity(200, 1.0, 4), {}, {}});
  REQUIRE(layout.ok());
  AebsReplicaTable t = AebsReplicaTable::build(*layout);
  CHECK(t.view().instance_mask == nullptr);
  for (int64_t B : {1, 32, 512}) {
    auto ids = synthetic_routing(200, 8, B, 1.0, 4, static_cast<uint64_t>(B));
    REQUIRE(ids.ok());
    AebsHostOutputs o;
    o.resize(t.view(), B * 8);
    REQUIRE(cpu::aebs(t.view(), ids->data(), B, 8, o.outputs()).ok());
    check_consistent(*layout, *ids, 8, o);
    CHECK(o.summary[kAebsMaxActivated] == *optimal_max_activated(*layout, ids->data(), B, 8));
  }
}
