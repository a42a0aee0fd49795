#include "runtime/scheduling/scheduling_policy.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>

#include "gpu/cpu/aebs.h"
#include "runtime/base/splitmix64.h"

namespace janus {

namespace {

Status check_input(const std::string& policy, const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k,
                   const int32_t* out) {
  if (layout.num_experts() == 0) return invalid_argument("scheduling policy '" + policy + "': empty expert layout");
  if (tokens < 0) return invalid_argument("scheduling policy '" + policy + "': negative token count");
  if (k <= 0) return invalid_argument("scheduling policy '" + policy + "': k must be positive");
  if (tokens == 0) return Status::Ok();
  if (!ids || !out) return invalid_argument("scheduling policy '" + policy + "': null expert ids or output");
  const int E = layout.num_experts();
  for (int64_t c = 0; c < tokens * k; ++c)
    if (ids[c] < 0 || ids[c] >= E)
      return invalid_argument("scheduling policy '" + policy + "': token " + std::to_string(c / k) + " slot " +
                              std::to_string(c % k) + " chose expert " + std::to_string(ids[c]) + ", outside [0, " +
                              std::to_string(E) + ")");
  return Status::Ok();
}

// Maps every choice through a per-expert replica table.
void apply(const std::vector<int32_t>& expert_replica, const int32_t* ids, int64_t n, int32_t* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = expert_replica[static_cast<size_t>(ids[c])];
}

class AebsPolicy final : public SchedulingPolicy {
 public:
  std::string name() const override { return "aebs"; }
  Status assign(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, uint64_t, int32_t* out) override {
    JANUS_TRY(check_input(name(), layout, ids, tokens, k, out));
    if (tokens == 0) return Status::Ok();
    // The table is rebuilt only when the layout changes (compared by content: a layout
    // object may be replaced at the same address).
    if (!have_table_ || layout.num_experts() != table_experts_ || layout.slots() != table_slots_ ||
        layout.placement() != table_placement_) {
      table_ = AebsReplicaTable::build(layout);
      table_experts_ = layout.num_experts();
      table_slots_ = layout.slots();
      table_placement_ = layout.placement();
      have_table_ = true;
    }
    const AebsTableView view = table_.view();
    bufs_.resize(view, tokens * k);
    AebsOutputs o = bufs_.outputs();
    o.choice_replica = out;
    return cpu::aebs(view, ids, tokens, k, o).with_context("scheduling policy 'aebs'");
  }

 private:
  bool have_table_ = false;
  int table_experts_ = 0, table_slots_ = 0;
  std::vector<std::vector<int32_t>> table_placement_;
  AebsReplicaTable table_;
  AebsHostOutputs bufs_;
};

// EPLB-like: each expert's replica is a hash of (seed, batch, expert), uniform over its
// replicas; the same (seed, batch_id) always gives the same answer.
class RandomReplicaPolicy final : public SchedulingPolicy {
 public:
  explicit RandomReplicaPolicy(uint64_t seed) : seed_(seed) {}
  std::string name() const override { return "random_replica"; }
  Status assign(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, uint64_t batch_id,
                int32_t* out) override {
    JANUS_TRY(check_input(name(), layout, ids, tokens, k, out));
    if (tokens == 0) return Status::Ok();
    const int E = layout.num_experts();
    rep_.resize(static_cast<size_t>(E));
    const uint64_t base = splitmix64(splitmix64(seed_) ^ batch_id);
    for (int e = 0; e < E; ++e) {
      const auto& reps = layout.replicas_of(e);
      const uint64_t h = splitmix64(base ^ (static_cast<uint64_t>(e) * 0xd1b54a32d192ed03ull));
      rep_[static_cast<size_t>(e)] = reps[static_cast<size_t>(h % reps.size())];
    }
    apply(rep_, ids, tokens * k, out);
    return Status::Ok();
  }

 private:
  uint64_t seed_;
  std::vector<int32_t> rep_;
};

class PrimaryPolicy final : public SchedulingPolicy {
 public:
  std::string name() const override { return "primary"; }
  Status assign(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, uint64_t, int32_t* out) override {
    JANUS_TRY(check_input(name(), layout, ids, tokens, k, out));
    for (int64_t c = 0; c < tokens * k; ++c) out[c] = layout.replicas_of(ids[c]).front();
    return Status::Ok();
  }
};

// Token balancing: the activated experts in descending choice count (ties: lower id)
// each take the replica whose instance has the fewest choices so far (ties: lower
// instance id); all choices of one expert go to that replica. Longest-processing-time
// first, the classic makespan greedy, applied to tokens instead of distinct experts.
class TokenBalancedPolicy final : public SchedulingPolicy {
 public:
  std::string name() const override { return "token_balanced"; }
  Status assign(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, uint64_t, int32_t* out) override {
    JANUS_TRY(check_input(name(), layout, ids, tokens, k, out));
    if (tokens == 0) return Status::Ok();
    const int E = layout.num_experts();
    count_.assign(static_cast<size_t>(E), 0);
    for (int64_t c = 0; c < tokens * k; ++c) ++count_[static_cast<size_t>(ids[c])];
    order_.clear();
    for (int e = 0; e < E; ++e)
      if (count_[static_cast<size_t>(e)] > 0) order_.push_back(e);
    std::stable_sort(order_.begin(), order_.end(),
                     [&](int32_t a, int32_t b) { return count_[static_cast<size_t>(a)] > count_[static_cast<size_t>(b)]; });
    load_.assign(static_cast<size_t>(layout.num_instances()), 0);
    rep_.assign(static_cast<size_t>(E), -1);
    for (int32_t e : order_) {
      int32_t best = -1;
      for (int32_t r : layout.replicas_of(e))
        if (best < 0 || load_[static_cast<size_t>(layout.instance_of(r))] < load_[static_cast<size_t>(layout.instance_of(best))])
          best = r;
      rep_[static_cast<size_t>(e)] = best;
      load_[static_cast<size_t>(layout.instance_of(best))] += count_[static_cast<size_t>(e)];
    }
    apply(rep_, ids, tokens * k, out);
    return Status::Ok();
  }

 private:
  std::vector<int64_t> count_, load_;
  std::vector<int32_t> order_, rep_;
};

// A registered policy behind a check of its every answer: the Scheduler indexes instance
// tables by the replica ids it returns, so an answer out of range must never reach it.
class CheckedPolicy final : public SchedulingPolicy {
 public:
  CheckedPolicy(std::string name, std::unique_ptr<SchedulingPolicy> inner) : name_(std::move(name)), inner_(std::move(inner)) {}
  std::string name() const override { return name_; }
  Status assign(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, uint64_t batch_id, int32_t* out) override {
    JANUS_TRY(check_input(name_, layout, ids, tokens, k, out));
    if (tokens == 0) return Status::Ok();
    JANUS_TRY(inner_->assign(layout, ids, tokens, k, batch_id, out));
    return check_assignment(name_, layout, ids, tokens * k, out);
  }

 private:
  std::string name_;
  std::unique_ptr<SchedulingPolicy> inner_;
};

struct Registry {
  std::mutex mu;
  std::map<std::string, SchedulingPolicyFactory> factories;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: factories may outlive static destruction order
  return *r;
}

bool is_builtin(const std::string& name) {
  const auto& b = scheduling_policy_names();
  return std::find(b.begin(), b.end(), name) != b.end();
}

}  // namespace

Status register_scheduling_policy(const std::string& name, SchedulingPolicyFactory factory) {
  if (name.empty()) return invalid_argument("register_scheduling_policy: the name is empty");
  if (is_builtin(name)) return invalid_argument("register_scheduling_policy: '" + name + "' is a built-in policy");
  if (!factory) return invalid_argument("register_scheduling_policy: '" + name + "' has no factory");
  Registry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  r.factories[name] = std::move(factory);
  return Status::Ok();
}

bool unregister_scheduling_policy(const std::string& name) {
  Registry& r = registry();
  SchedulingPolicyFactory gone;  // destroyed outside the lock (it may hold interpreter objects)
  {
    std::lock_guard<std::mutex> lk(r.mu);
    auto it = r.factories.find(name);
    if (it == r.factories.end()) return false;
    gone = std::move(it->second);
    r.factories.erase(it);
  }
  return true;
}

std::vector<std::string> known_scheduling_policy_names() {
  std::vector<std::string> out = scheduling_policy_names();
  Registry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  for (const auto& [n, f] : r.factories) out.push_back(n);
  return out;
}

bool is_scheduling_policy_name(const std::string& name) {
  if (is_builtin(name)) return true;
  Registry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  return r.factories.count(name) > 0;
}

Status check_assignment(const std::string& policy, const ExpertLayout& layout, const int32_t* ids, int64_t n,
                        const int32_t* replicas) {
  for (int64_t c = 0; c < n; ++c) {
    const int32_t rep = replicas[c];
    if (rep < 0 || rep >= layout.num_replicas())
      return invalid_argument("scheduling policy '" + policy + "': choice " + std::to_string(c) + " (expert " +
                              std::to_string(ids[c]) + ") got replica " + std::to_string(rep) + ", outside [0, " +
                              std::to_string(layout.num_replicas()) + ")");
    if (layout.expert_of(rep) != ids[c])
      return invalid_argument("scheduling policy '" + policy + "': choice " + std::to_string(c) + " chose expert " +
                              std::to_string(ids[c]) + " but got replica " + std::to_string(rep) + ", which holds expert " +
                              std::to_string(layout.expert_of(rep)) + " (on instance " +
                              std::to_string(layout.instance_of(rep)) + ")");
  }
  return Status::Ok();
}

Result<std::unique_ptr<SchedulingPolicy>> make_scheduling_policy(const std::string& name, uint64_t seed) {
  if (!is_builtin(name)) {
    SchedulingPolicyFactory f;
    {
      Registry& r = registry();
      std::lock_guard<std::mutex> lk(r.mu);
      auto it = r.factories.find(name);
      if (it != r.factories.end()) f = it->second;
    }
    if (f) {
      JANUS_ASSIGN_OR_RETURN(std::unique_ptr<SchedulingPolicy> inner, f(seed));
      if (!inner) return internal_error("scheduling policy '" + name + "': its factory made nothing");
      return std::unique_ptr<SchedulingPolicy>(new CheckedPolicy(name, std::move(inner)));
    }
  }
  if (name == "aebs") return std::unique_ptr<SchedulingPolicy>(new AebsPolicy());
  if (name == "random_replica") return std::unique_ptr<SchedulingPolicy>(new RandomReplicaPolicy(seed));
  if (name == "primary") return std::unique_ptr<SchedulingPolicy>(new PrimaryPolicy());
  if (name == "token_balanced") return std::unique_ptr<SchedulingPolicy>(new TokenBalancedPolicy());
  std::string known;
  for (const auto& n : known_scheduling_policy_names()) known += (known.empty() ? "" : ", ") + n;
  return invalid_argument("unknown scheduling policy '" + name + "' (known: " + known + ")");
}

const std::vector<std::string>& scheduling_policy_names() {
  static const std::vector<std::string> names = {"aebs", "random_replica", "primary", "token_balanced"};
  return names;
}

std::vector<int> activated_experts_per_instance(const ExpertLayout& layout, const int32_t* replicas, int64_t n) {
  std::vector<int> a(static_cast<size_t>(layout.num_instances()), 0);
  std::vector<char> seen(static_cast<size_t>(layout.num_replicas()), 0);
  for (int64_t c = 0; c < n; ++c) {
    const int32_t r = replicas[c];
    if (r < 0 || r >= layout.num_replicas() || seen[static_cast<size_t>(r)]) continue;  // invalid ids are not work
    seen[static_cast<size_t>(r)] = 1;
    ++a[static_cast<size_t>(layout.instance_of(r))];
  }
  return a;
}

int max_activated_experts(const ExpertLayout& layout, const int32_t* replicas, int64_t n) {
  const auto a = activated_experts_per_instance(layout, replicas, n);
  return a.empty() ? 0 : *std::max_element(a.begin(), a.end());
}

}  // namespace janus
