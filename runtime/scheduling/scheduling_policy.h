// How a layer batch's routing choices become work for expert instances: every (token,
// logical expert) choice is mapped to one physical replica of that expert.
//
// Policies (one interface, chosen by name in a config):
//   aebs            Janus Algorithm 1: minimise the largest number of distinct activated
//                   experts on any instance (a_max), the quantity a memory-bound MoE layer
//                   costs. Deterministic visiting order and tie-breaking: see aebs.h.
//   random_replica  a seeded uniform choice among an expert's replicas per (batch, expert)
//                   (EPLB-like: balances in expectation, ignores the batch).
//   primary         always the first replica (no balancing).
//   token_balanced  each choice to the replica whose instance has the fewest tokens so far.
//
// The mapping is per logical expert and layer batch: all tokens that chose expert e go to
// the same replica, so an instance runs each of its activated experts exactly once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/expert_layout.h"
#include "runtime/base/status.h"

namespace janus {

class SchedulingPolicy {
 public:
  virtual ~SchedulingPolicy() = default;
  virtual std::string name() const = 0;

  /// For `tokens` rows of `k` logical expert ids (row-major), writes the physical replica
  /// of each choice to replica_out (same shape). `batch_id` feeds seeded policies so that
  /// a layer batch always gets the same answer. Refuses (invalid_argument) expert ids
  /// outside the layout.
  virtual Status assign(const ExpertLayout& layout, const int32_t* expert_ids, int64_t tokens, int k, uint64_t batch_id,
                        int32_t* replica_out) = 0;
};

/// "aebs", "random_replica", "primary", "token_balanced"; `seed` feeds random_replica.
Result<std::unique_ptr<SchedulingPolicy>> make_scheduling_policy(const std::string& name, uint64_t seed = 0);

/// The built-in policy names (registered ones are not among them).
const std::vector<std::string>& scheduling_policy_names();

// -- policies registered at run time (the Python bindings' @janus.policy) ----------------
//
// A registered policy is made by its factory wherever a built-in one would be
// (scheduler{policy=...}, make_scheduling_policy), and its answers are checked before the
// Scheduler uses them: every replica must exist and hold the expert its (token, slot)
// chose, else assign() fails (invalid_argument naming the token, slot and replica) and so
// does the layer batch, while the deployment keeps serving.

/// Makes one instance of a registered policy; `seed` is the scheduler's seed.
using SchedulingPolicyFactory = std::function<Result<std::unique_ptr<SchedulingPolicy>>(uint64_t seed)>;

/// Registers (or, for a name registered before, replaces) a policy. Refused
/// (invalid_argument): an empty name, a built-in's name, a null factory.
Status register_scheduling_policy(const std::string& name, SchedulingPolicyFactory factory);
/// Removes a registered policy (deployments already made keep their instance); false when
/// none had that name.
bool unregister_scheduling_policy(const std::string& name);
/// Built-in names, then the registered ones in name order.
std::vector<std::string> known_scheduling_policy_names();
/// A built-in or registered policy's name.
bool is_scheduling_policy_name(const std::string& name);

/// Checks an assignment: every replica in [0, num_replicas) and holding the expert its
/// choice named. `policy` names the policy in the error.
Status check_assignment(const std::string& policy, const ExpertLayout& layout, const int32_t* expert_ids, int64_t n,
                        const int32_t* replicas);

/// a_i: the number of distinct logical experts each instance must run for an assignment.
std::vector<int> activated_experts_per_instance(const ExpertLayout& layout, const int32_t* replicas, int64_t n);

/// max_i a_i.
int max_activated_experts(const ExpertLayout& layout, const int32_t* replicas, int64_t n);

}  // namespace janus
