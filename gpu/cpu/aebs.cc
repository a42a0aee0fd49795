#include "gpu/cpu/aebs.h"

#include <algorithm>
#include <limits>
#include <string>

namespace janus {

AebsReplicaTable AebsReplicaTable::build(const ExpertLayout& layout, AebsVisitOrder order, int max_repairs) {
  AebsReplicaTable t;
  t.max_repairs_ = max_repairs < 0 ? layout.num_instances() : max_repairs;
  const int E = layout.num_experts(), G = layout.num_instances(), R = layout.num_replicas();
  t.num_experts_ = E;
  t.num_instances_ = G;
  t.expert_offsets.assign(static_cast<size_t>(E) + 1, 0);
  for (int e = 0; e < E; ++e) {
    const auto& reps = layout.replicas_of(e);
    t.expert_offsets[static_cast<size_t>(e) + 1] = t.expert_offsets[static_cast<size_t>(e)] + static_cast<int32_t>(reps.size());
    t.expert_replicas.insert(t.expert_replicas.end(), reps.begin(), reps.end());
    t.max_replicas_ = std::max(t.max_replicas_, static_cast<int>(reps.size()));
  }
  t.replica_instance.resize(static_cast<size_t>(R));
  t.replica_expert.resize(static_cast<size_t>(R));
  for (int32_t r = 0; r < R; ++r) {
    t.replica_instance[static_cast<size_t>(r)] = layout.instance_of(r);
    t.replica_expert[static_cast<size_t>(r)] = layout.expert_of(r);
  }
  t.instance_offsets.assign(static_cast<size_t>(G) + 1, 0);
  for (int g = 0; g < G; ++g)
    t.instance_offsets[static_cast<size_t>(g) + 1] =
        t.instance_offsets[static_cast<size_t>(g)] + static_cast<int32_t>(layout.experts_on(g).size());
  if (G <= 64) {
    t.instance_mask.assign(static_cast<size_t>(E), 0);
    for (int32_t r = 0; r < R; ++r)
      t.instance_mask[static_cast<size_t>(layout.expert_of(r))] |= uint64_t{1} << layout.instance_of(r);
  }
  for (int e = 0; e < E; ++e)
    if (layout.replicas_of(e).size() > 1) t.visit_order.push_back(e);
  if (order == AebsVisitOrder::kFewestReplicasFirst)
    std::stable_sort(t.visit_order.begin(), t.visit_order.end(),
                     [&](int32_t a, int32_t b) { return layout.replicas_of(a).size() < layout.replicas_of(b).size(); });
  return t;
}

AebsTableView AebsReplicaTable::view() const {
  AebsTableView v;
  v.num_experts = num_experts_;
  v.num_instances = num_instances_;
  v.num_replicas = num_replicas();
  v.max_replicas = max_replicas_;
  v.max_repairs = max_repairs_;
  v.num_multi = static_cast<int32_t>(visit_order.size());
  v.expert_offsets = expert_offsets.data();
  v.expert_replicas = expert_replicas.data();
  v.replica_instance = replica_instance.data();
  v.replica_expert = replica_expert.data();
  v.instance_offsets = instance_offsets.data();
  v.instance_mask = instance_mask.empty() ? nullptr : instance_mask.data();
  v.visit_order = visit_order.data();
  return v;
}

void AebsHostOutputs::resize(const AebsTableView& t, int64_t max_choices) {
  const size_t n = static_cast<size_t>(std::max<int64_t>(max_choices, 1));
  choice_replica.resize(n);
  items.resize(n);
  expert_replica.resize(static_cast<size_t>(t.num_experts));
  replica_offsets.resize(static_cast<size_t>(t.num_replicas) + 1);
  active_replicas.resize(static_cast<size_t>(std::max(t.num_replicas, 1)));
  instance_item_offsets.resize(static_cast<size_t>(t.num_instances) + 1);
  activated.resize(static_cast<size_t>(t.num_instances));
  active_offsets.resize(static_cast<size_t>(t.num_instances) + 1);
  summary.resize(kAebsSummarySize);
}

AebsOutputs AebsHostOutputs::outputs() {
  AebsOutputs o;
  o.choice_replica = choice_replica.data();
  o.expert_replica = expert_replica.data();
  o.replica_offsets = replica_offsets.data();
  o.items = items.data();
  o.instance_item_offsets = instance_item_offsets.data();
  o.activated = activated.data();
  o.active_offsets = active_offsets.data();
  o.active_replicas = active_replicas.data();
  o.summary = summary.data();
  return o;
}

namespace cpu {

namespace {

std::string choice_name(int64_t c, int k) {
  return "token " + std::to_string(c / k) + " slot " + std::to_string(c % k);
}

}  // namespace

Status aebs(const AebsTableView& t, const int32_t* ids, int64_t tokens, int k, const AebsOutputs& out) {
  if (tokens < 0 || k <= 0) return invalid_argument("aebs: tokens must be >= 0 and k > 0");
  const int64_t N = tokens * k;
  if (N > std::numeric_limits<int32_t>::max() / 2) return invalid_argument("aebs: too many choices (tokens x k)");
  if (N > 0 && ids == nullptr) return invalid_argument("aebs: no expert ids");
  const int E = t.num_experts, G = t.num_instances, R = t.num_replicas;

  // 1. activated set: choices per expert.
  std::vector<int32_t> total(static_cast<size_t>(E), 0);
  int64_t invalid = 0, first_invalid = -1;
  for (int64_t c = 0; c < N; ++c) {
    const int32_t e = ids[c];
    if (e < 0 || e >= E) {
      if (invalid++ == 0) first_invalid = c;
      continue;
    }
    ++total[static_cast<size_t>(e)];
  }

  // 2. single-replica experts; 3. multi-replica experts in visit order. inst[e]: the
  // instance chosen for an activated expert.
  std::vector<int32_t> load(static_cast<size_t>(G), 0);
  std::vector<int32_t> inst(static_cast<size_t>(E), -1);
  int32_t activated_experts = 0;
  for (int e = 0; e < E; ++e) {
    if (total[static_cast<size_t>(e)] == 0) continue;
    ++activated_experts;
    const int32_t b = t.expert_offsets[e], n = t.expert_offsets[e + 1] - b;
    if (n == 1) {
      inst[static_cast<size_t>(e)] = t.replica_instance[t.expert_replicas[b]];
      ++load[static_cast<size_t>(inst[static_cast<size_t>(e)])];
    }
  }
  // The activated multi-replica experts in visit order; pending[g]: those not yet visited
  // that instance g could take.
  std::vector<int32_t> multi;
  std::vector<int32_t> pending(static_cast<size_t>(G), 0);
  for (int32_t v = 0; v < t.num_multi; ++v) {
    const int32_t e = t.visit_order[v];
    if (total[static_cast<size_t>(e)] == 0) continue;
    multi.push_back(e);
    for (int32_t i = t.expert_offsets[e]; i < t.expert_offsets[e + 1]; ++i)
      ++pending[static_cast<size_t>(t.replica_instance[t.expert_replicas[i]])];
  }
  for (int32_t e : multi) {
    int32_t best = -1;
    for (int32_t i = t.expert_offsets[e]; i < t.expert_offsets[e + 1]; ++i) {
      const int32_t g = t.replica_instance[t.expert_replicas[i]];
      const size_t gi = static_cast<size_t>(g);
      --pending[gi];
      // argmin (load, pending, instance id); replicas come in ascending instance order.
      if (best < 0 || load[gi] < load[static_cast<size_t>(best)] ||
          (load[gi] == load[static_cast<size_t>(best)] && pending[gi] < pending[static_cast<size_t>(best)]))
        best = g;
    }
    inst[static_cast<size_t>(e)] = best;
    ++load[static_cast<size_t>(best)];
  }

  // 4. repair: move load along augmenting paths from the most loaded instances to ones at
  // least two below, while the max exceeds the ceil(activated / n_e) lower bound.
  auto hosts = [&](int32_t e, int32_t g) {
    for (int32_t i = t.expert_offsets[e]; i < t.expert_offsets[e + 1]; ++i)
      if (t.replica_instance[t.expert_replicas[i]] == g) return true;
    return false;
  };
  int32_t repairs = 0;
  const int32_t lower = (activated_experts + G - 1) / G;
  std::vector<char> adj, visited, in_max;
  std::vector<int32_t> parent, frontier, newly;
  while (repairs < t.max_repairs && !multi.empty()) {
    const int32_t L = *std::max_element(load.begin(), load.end());
    if (L <= lower) break;
    // adj[g*G + h]: an activated multi-replica expert on g could move to h.
    adj.assign(static_cast<size_t>(G) * static_cast<size_t>(G), 0);
    for (int32_t e : multi) {
      const int32_t g = inst[static_cast<size_t>(e)];
      for (int32_t i = t.expert_offsets[e]; i < t.expert_offsets[e + 1]; ++i) {
        const int32_t h = t.replica_instance[t.expert_replicas[i]];
        if (h != g) adj[static_cast<size_t>(g) * static_cast<size_t>(G) + static_cast<size_t>(h)] = 1;
      }
    }
    // Breadth-first from every instance at L; parent: the lowest instance of the previous
    // level; target: the lowest instance at <= L-2 on the first level that has one.
    in_max.assign(static_cast<size_t>(G), 0);
    frontier.clear();
    for (int32_t g = 0; g < G; ++g)
      if (load[static_cast<size_t>(g)] == L) {
        in_max[static_cast<size_t>(g)] = 1;
        frontier.push_back(g);
      }
    visited = in_max;
    parent.assign(static_cast<size_t>(G), -1);
    int32_t target = -1;
    while (!frontier.empty() && target < 0) {
      newly.clear();
      for (int32_t h = 0; h < G; ++h) {
        if (visited[static_cast<size_t>(h)]) continue;
        for (int32_t g : frontier)
          if (adj[static_cast<size_t>(g) * static_cast<size_t>(G) + static_cast<size_t>(h)]) {
            parent[static_cast<size_t>(h)] = g;
            newly.push_back(h);
            break;
          }
      }
      for (int32_t h : newly) {
        visited[static_cast<size_t>(h)] = 1;
        if (target < 0 && load[static_cast<size_t>(h)] <= L - 2) target = h;
      }
      frontier.swap(newly);
    }
    if (target < 0) break;
    // Move one expert along each edge, from the target back to the start: on edge g -> h
    // the activated multi-replica expert on g that h hosts, first in visit order.
    int32_t h = target;
    while (!in_max[static_cast<size_t>(h)]) {
      const int32_t g = parent[static_cast<size_t>(h)];
      for (int32_t e : multi)
        if (inst[static_cast<size_t>(e)] == g && hosts(e, h)) {
          inst[static_cast<size_t>(e)] = h;
          break;
        }
      h = g;
    }
    --load[static_cast<size_t>(h)];
    ++load[static_cast<size_t>(target)];
    ++repairs;
  }

  std::vector<int32_t> chosen(static_cast<size_t>(E), -1);
  for (int e = 0; e < E; ++e) {
    const int32_t g = inst[static_cast<size_t>(e)];
    if (g < 0) continue;
    for (int32_t i = t.expert_offsets[e]; i < t.expert_offsets[e + 1]; ++i)
      if (t.replica_instance[t.expert_replicas[i]] == g) chosen[static_cast<size_t>(e)] = t.expert_replicas[i];
  }

  // 5. replica offsets (replica id order = instance order), work lists, per-instance lists.
  for (int e = 0; e < E; ++e) out.expert_replica[e] = chosen[static_cast<size_t>(e)];
  std::vector<int32_t> cursor(static_cast<size_t>(R), 0);
  int32_t items = 0, active = 0, amax = 0, experts = 0;
  for (int g = 0; g < G; ++g) {
    out.instance_item_offsets[g] = items;
    out.active_offsets[g] = active;
    for (int32_t r = t.instance_offsets[g]; r < t.instance_offsets[g + 1]; ++r) {
      const int32_t e = t.replica_expert[r];
      out.replica_offsets[r] = items;
      cursor[static_cast<size_t>(r)] = items;
      if (chosen[static_cast<size_t>(e)] == r) {
        items += total[static_cast<size_t>(e)];
        out.active_replicas[active++] = r;
        ++experts;
      }
    }
    out.activated[g] = load[static_cast<size_t>(g)];
    amax = std::max(amax, load[static_cast<size_t>(g)]);
  }
  out.replica_offsets[R] = items;
  out.instance_item_offsets[G] = items;
  out.active_offsets[G] = active;
  for (int64_t c = 0; c < N; ++c) {
    const int32_t e = ids[c];
    if (e < 0 || e >= E) {
      out.choice_replica[c] = -1;
      continue;
    }
    const int32_t r = chosen[static_cast<size_t>(e)];
    out.choice_replica[c] = r;
    out.items[cursor[static_cast<size_t>(r)]++] = static_cast<int32_t>(c);
  }
  out.summary[kAebsMaxActivated] = amax;
  out.summary[kAebsActivatedExperts] = experts;
  out.summary[kAebsInvalidChoices] = static_cast<int32_t>(invalid);
  out.summary[kAebsValidChoices] = items;
  out.summary[kAebsRepairs] = repairs;
  if (invalid > 0)
    return invalid_argument("aebs: " + choice_name(first_invalid, k) + " chose expert " + std::to_string(ids[first_invalid]) +
                            ", outside [0, " + std::to_string(E) + ")" +
                            (invalid > 1 ? " (" + std::to_string(invalid) + " invalid choices in all)" : ""));
  return Status::Ok();
}

Status aebs_check_outputs(const AebsTableView& t, const int32_t* ids, int64_t tokens, int k, const AebsOutputs& out) {
  const int64_t N = tokens * k;
  const int E = t.num_experts, G = t.num_instances, R = t.num_replicas;
  auto fail = [](const std::string& m) { return internal_error("aebs outputs: " + m); };
  std::vector<int32_t> total(static_cast<size_t>(E), 0);
  int32_t valid = 0, invalid = 0;
  for (int64_t c = 0; c < N; ++c) {
    const int32_t e = ids[c], r = out.choice_replica[c];
    if (e < 0 || e >= E) {
      ++invalid;
      if (r != -1) return fail(choice_name(c, k) + ": invalid expert but replica " + std::to_string(r));
      continue;
    }
    ++valid;
    ++total[static_cast<size_t>(e)];
    if (r < 0 || r >= R || t.replica_expert[r] != e)
      return fail(choice_name(c, k) + ": expert " + std::to_string(e) + " mapped to replica " + std::to_string(r) +
                  ", which does not hold it");
    if (out.expert_replica[e] != r)
      return fail("expert " + std::to_string(e) + " uses replicas " + std::to_string(out.expert_replica[e]) + " and " +
                  std::to_string(r) + " in one batch");
  }
  for (int e = 0; e < E; ++e)
    if (total[static_cast<size_t>(e)] == 0 && out.expert_replica[e] != -1)
      return fail("expert " + std::to_string(e) + " is not activated but has replica " + std::to_string(out.expert_replica[e]));
  if (out.replica_offsets[0] != 0 || out.replica_offsets[R] != valid) return fail("replica_offsets do not span the valid choices");
  std::vector<char> seen(static_cast<size_t>(N), 0);
  int32_t amax = 0, experts = 0;
  for (int g = 0; g < G; ++g) {
    if (out.instance_item_offsets[g] != out.replica_offsets[t.instance_offsets[g]])
      return fail("instance " + std::to_string(g) + " item offset disagrees with its first replica");
    int32_t a = 0;
    for (int32_t r = t.instance_offsets[g]; r < t.instance_offsets[g + 1]; ++r) {
      const int32_t b = out.replica_offsets[r], e2 = out.replica_offsets[r + 1];
      if (e2 < b) return fail("replica " + std::to_string(r) + " has a negative item count");
      if (e2 > b) {
        if (out.active_offsets[g] + a >= out.active_offsets[g + 1] || out.active_replicas[out.active_offsets[g] + a] != r)
          return fail("instance " + std::to_string(g) + ": active replica list misses replica " + std::to_string(r));
        ++a;
      }
      for (int32_t i = b; i < e2; ++i) {
        const int32_t c = out.items[i];
        if (c < 0 || c >= N) return fail("item " + std::to_string(i) + " out of range");
        if (seen[static_cast<size_t>(c)]++) return fail("choice " + std::to_string(c) + " listed twice");
        if (out.choice_replica[c] != r) return fail("choice " + std::to_string(c) + " listed under the wrong replica");
        if (i > b && out.items[i - 1] >= c) return fail("replica " + std::to_string(r) + " items not ascending");
      }
    }
    if (out.active_offsets[g + 1] - out.active_offsets[g] != a || out.activated[g] != a)
      return fail("instance " + std::to_string(g) + ": a_i is " + std::to_string(out.activated[g]) + " but it runs " +
                  std::to_string(a) + " replicas");
    amax = std::max(amax, a);
    experts += a;
  }
  if (out.active_offsets[0] != 0 || out.instance_item_offsets[G] != valid) return fail("instance offsets do not span");
  if (out.summary[kAebsMaxActivated] != amax || out.summary[kAebsActivatedExperts] != experts ||
      out.summary[kAebsInvalidChoices] != invalid || out.summary[kAebsValidChoices] != valid)
    return fail("summary disagrees with the lists");
  return Status::Ok();
}

}  // namespace cpu
}  // namespace janus
