#include "runtime/scheduling/aebs_optimum.h"

#include <algorithm>
#include <functional>
#include <string>

namespace janus {

namespace {

// The activated experts of a batch, their choice counts and hosting instances.
struct Problem {
  int instances = 0;
  std::vector<int32_t> experts;             // activated, ascending id
  std::vector<int32_t> count;               // choices per activated expert
  std::vector<std::vector<int32_t>> hosts;  // instances holding each activated expert, ascending
};

Result<Problem> make_problem(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k) {
  if (tokens < 0 || k <= 0) return invalid_argument("aebs optimum: tokens must be >= 0 and k > 0");
  const int E = layout.num_experts();
  std::vector<int32_t> total(static_cast<size_t>(E), 0);
  for (int64_t c = 0; c < tokens * k; ++c) {
    if (ids[c] < 0 || ids[c] >= E)
      return invalid_argument("aebs optimum: token " + std::to_string(c / k) + " slot " + std::to_string(c % k) +
                              " chose expert " + std::to_string(ids[c]) + ", outside [0, " + std::to_string(E) + ")");
    ++total[static_cast<size_t>(ids[c])];
  }
  Problem p;
  p.instances = layout.num_instances();
  for (int e = 0; e < E; ++e) {
    if (!total[static_cast<size_t>(e)]) continue;
    p.experts.push_back(e);
    p.count.push_back(total[static_cast<size_t>(e)]);
    std::vector<int32_t> h;
    for (int32_t r : layout.replicas_of(e)) h.push_back(layout.instance_of(r));
    p.hosts.push_back(std::move(h));
  }
  return p;
}

// Max flow with instance capacity L, grown from the current assignment (assign[x] is an
// instance or -1). Returns true when every expert is assigned.
bool augment_all(const Problem& p, int L, std::vector<int32_t>& assign, std::vector<int32_t>& load) {
  const size_t n = p.experts.size();
  std::vector<std::vector<int32_t>> on(static_cast<size_t>(p.instances));
  for (size_t x = 0; x < n; ++x)
    if (assign[x] >= 0) on[static_cast<size_t>(assign[x])].push_back(static_cast<int32_t>(x));
  std::vector<int> visited(static_cast<size_t>(p.instances), -1);
  int stamp = 0;
  // Finds a path from expert x to an instance with spare capacity, moving experts along it.
  std::function<bool(int32_t)> dfs = [&](int32_t x) -> bool {
    for (int32_t g : p.hosts[static_cast<size_t>(x)]) {
      if (visited[static_cast<size_t>(g)] == stamp) continue;
      visited[static_cast<size_t>(g)] = stamp;
      auto& lst = on[static_cast<size_t>(g)];
      if (load[static_cast<size_t>(g)] < L) {
        assign[static_cast<size_t>(x)] = g;
        ++load[static_cast<size_t>(g)];
        lst.push_back(x);
        return true;
      }
      for (size_t i = 0; i < lst.size(); ++i) {
        const int32_t y = lst[i];
        if (y == x) continue;
        // Try to move y elsewhere, freeing its place on g for x.
        --load[static_cast<size_t>(g)];
        const int32_t old = assign[static_cast<size_t>(y)];
        assign[static_cast<size_t>(y)] = -1;
        lst.erase(lst.begin() + static_cast<long>(i));
        if (dfs(y)) {
          assign[static_cast<size_t>(x)] = g;
          ++load[static_cast<size_t>(g)];
          on[static_cast<size_t>(g)].push_back(x);
          return true;
        }
        assign[static_cast<size_t>(y)] = old;
        ++load[static_cast<size_t>(g)];
        on[static_cast<size_t>(g)].insert(on[static_cast<size_t>(g)].begin() + static_cast<long>(i), y);
      }
    }
    return false;
  };
  bool progress = true, all = false;
  while (progress) {
    progress = false;
    all = true;
    for (size_t x = 0; x < n; ++x) {
      if (assign[x] >= 0) continue;
      ++stamp;
      if (dfs(static_cast<int32_t>(x)))
        progress = true;
      else
        all = false;
    }
    if (all) break;
  }
  return all;
}

}  // namespace

Result<int> optimal_max_activated(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k,
                                  std::vector<int32_t>* expert_replica) {
  JANUS_ASSIGN_OR_RETURN(Problem p, make_problem(layout, ids, tokens, k));
  const size_t n = p.experts.size();
  std::vector<int32_t> assign(n, -1), load(static_cast<size_t>(p.instances), 0);
  int L = static_cast<int>((n + static_cast<size_t>(p.instances) - 1) / static_cast<size_t>(p.instances));
  while (!augment_all(p, L, assign, load)) ++L;
  if (n == 0) L = 0;
  if (expert_replica) {
    expert_replica->assign(static_cast<size_t>(layout.num_experts()), -1);
    for (size_t x = 0; x < n; ++x)
      (*expert_replica)[static_cast<size_t>(p.experts[x])] = layout.replica_on(p.experts[x], assign[x]);
  }
  return L;
}

Result<int> exhaustive_max_activated(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, int64_t max_nodes) {
  JANUS_ASSIGN_OR_RETURN(Problem p, make_problem(layout, ids, tokens, k));
  std::vector<int32_t> load(static_cast<size_t>(p.instances), 0);
  std::vector<size_t> multi;
  for (size_t x = 0; x < p.experts.size(); ++x) {
    if (p.hosts[x].size() == 1)
      ++load[static_cast<size_t>(p.hosts[x][0])];
    else
      multi.push_back(x);
  }
  std::stable_sort(multi.begin(), multi.end(), [&](size_t a, size_t b) { return p.hosts[a].size() < p.hosts[b].size(); });
  const int n = static_cast<int>(p.experts.size());
  int best = n + 1;
  int64_t nodes = 0;
  bool gave_up = false;
  std::function<void(size_t, int)> search = [&](size_t i, int cur_max) {
    if (gave_up) return;
    if (++nodes > max_nodes) {
      gave_up = true;
      return;
    }
    if (cur_max >= best) return;
    if (i == multi.size()) {
      best = cur_max;
      return;
    }
    // Lower bound: the remaining experts spread perfectly over all instances.
    int64_t sum = 0;
    for (int32_t l : load) sum += l;
    const int64_t rest = static_cast<int64_t>(multi.size() - i);
    const int lb = static_cast<int>((sum + rest + p.instances - 1) / p.instances);
    if (std::max(cur_max, lb) >= best) return;
    for (int32_t g : p.hosts[multi[i]]) {
      ++load[static_cast<size_t>(g)];
      search(i + 1, std::max(cur_max, load[static_cast<size_t>(g)]));
      --load[static_cast<size_t>(g)];
    }
  };
  search(0, n == 0 ? 0 : *std::max_element(load.begin(), load.end()));
  if (gave_up) return unsupported("aebs exhaustive search: more than " + std::to_string(max_nodes) + " nodes");
  return best;
}

const char* greedy_order_name(GreedyOrder o) {
  switch (o) {
    case GreedyOrder::kFewestReplicasFirst: return "fewest-replicas-first";
    case GreedyOrder::kExpertId: return "expert-id";
    case GreedyOrder::kMostTokensFirst: return "most-tokens-first";
    case GreedyOrder::kMostReplicasFirst: return "most-replicas-first";
  }
  return "?";
}

const char* greedy_tiebreak_name(GreedyTieBreak t) {
  return t == GreedyTieBreak::kLowestInstance ? "lowest-instance" : "least-pending";
}

Result<int> greedy_max_activated(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, GreedyOrder order,
                                 GreedyTieBreak tie) {
  JANUS_ASSIGN_OR_RETURN(Problem p, make_problem(layout, ids, tokens, k));
  std::vector<int32_t> load(static_cast<size_t>(p.instances), 0), pending(static_cast<size_t>(p.instances), 0);
  std::vector<size_t> multi;
  for (size_t x = 0; x < p.experts.size(); ++x) {
    if (p.hosts[x].size() == 1) {
      ++load[static_cast<size_t>(p.hosts[x][0])];
    } else {
      multi.push_back(x);
      for (int32_t g : p.hosts[x]) ++pending[static_cast<size_t>(g)];
    }
  }
  auto key = [&](size_t x) -> std::pair<int64_t, int64_t> {
    switch (order) {
      case GreedyOrder::kFewestReplicasFirst: return {static_cast<int64_t>(p.hosts[x].size()), p.experts[x]};
      case GreedyOrder::kExpertId: return {0, p.experts[x]};
      case GreedyOrder::kMostTokensFirst: return {-static_cast<int64_t>(p.count[x]), p.experts[x]};
      case GreedyOrder::kMostReplicasFirst: return {-static_cast<int64_t>(p.hosts[x].size()), p.experts[x]};
    }
    return {0, 0};
  };
  std::sort(multi.begin(), multi.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
  for (size_t x : multi) {
    int32_t best = -1;
    for (int32_t g : p.hosts[x]) {
      if (best < 0) {
        best = g;
        continue;
      }
      const auto gi = static_cast<size_t>(g), bi = static_cast<size_t>(best);
      const bool better = load[gi] < load[bi] ||
                          (load[gi] == load[bi] && tie == GreedyTieBreak::kLeastPending && pending[gi] < pending[bi]);
      if (better) best = g;
    }
    for (int32_t g : p.hosts[x]) --pending[static_cast<size_t>(g)];
    ++load[static_cast<size_t>(best)];
  }
  return p.experts.empty() ? 0 : *std::max_element(load.begin(), load.end());
}

}  // namespace janus
