// AEBS, Activated-Expert-Balanced Scheduling (Janus Algorithm 1), the CPU reference: the
// exact, bit-for-bit twin of the CUDA kernel in gpu/cuda/aebs.h. Both read the replica
// table and write the outputs described in gpu/cpu/aebs_table.h.
//
// The algorithm, for one layer batch (T tokens x k logical expert choices):
//   1. the activated set: every expert some choice names (counts per expert);
//   2. every activated expert with one replica takes it: load[g] += 1 on its instance
//      (the order does not matter: there is no choice);
//   3. Algorithm 1's greedy: the activated experts with several replicas, in the table's
//      visit_order, each take the replica on the instance with the smallest
//      (load, pending, instance id) and then load[g] += 1, where pending[g] counts the
//      activated multi-replica experts not yet visited (the current one excluded) that
//      instance g also hosts;
//   4. repair (ours; table.max_repairs = 0 turns it off): while a_max = L exceeds the
//      lower bound ceil(activated / n_e), find an augmenting path from an instance at L to
//      one at <= L-2 through instances that can pass a multi-replica expert on, and move
//      one expert along each edge (the max instance loses one, the target gains one);
//      stop when no path exists or after max_repairs moves;
//   5. every choice is rewritten to its expert's replica; the work lists are a stable
//      counting sort of the choices by replica id.
// load means distinct activated experts (the paper's objective a_max = max_g load[g]),
// not tokens: an instance's MoE time is proportional to the experts it runs.
//
// Why the repair: minimising a_max is scheduling unit jobs on machines with eligibility
// sets, a bipartite b-matching (runtime/scheduling/aebs_optimum.h). An assignment is optimal iff no
// such path exists (the difference to an optimal assignment decomposes into paths, one
// of which starts at a max instance and ends at one the optimum loads more, so <= L-2).
// So a stopped repair without hitting max_repairs is an optimal a_max, not an
// approximation. The greedy alone is optimal in most batches but systematically one
// above the optimum once nearly every expert is activated (B >= 64 at E = 160, n_e = 16:
// mean excess 0.4 to 1.0, i.e. 4-10% of a_max; bench_amax section 1); the default
// max_repairs = n_e closes any gap of one. On the GPU a move costs one breadth-first search
// over 64-bit instance sets in one warp; the loop ends at once when L reaches the bound or
// no path exists. A move may also just lower the number of instances at L (the optimum
// unchanged); bench_amax reports the moves per batch (0 to 2 on average in its settings).
//
// Visiting order (AebsVisitOrder), fixed when the table is built so that every device
// visits identically:
//   kFewestReplicasFirst (default)  multi-replica experts by ascending replica count, then
//                                   ascending expert id: the least flexible experts choose
//                                   first, while the loads are still even (the "most
//                                   constrained first" rule of list scheduling with
//                                   eligibility sets; step 2 is its extreme case).
//   kExpertId                        ascending expert id (the paper's listing order).
// Tie-break among equally loaded instances: the one fewer later experts may still want
// (least pending), then the lowest instance id. Both only reorder Algorithm 1's choices
// among equal loads or constrained experts, at the cost of one comparison in the kernel's
// warp-wide argmin. bench_amax section 2 measures the greedy's excess over the optimum per
// rule on 72 settings (E 64..256, n_e 8..32, B 4..64, uniform and Zipf routing, two
// layouts): mean 0.013 for this rule, 0.047 for the paper's (id order, lowest id), 0.126
// for descending token count (which would also cost a sort per batch on the GPU).
//
// Repair determinism: the search is breadth first from all instances at L at once; a
// newly reached instance's parent is the lowest-id instance of the previous level that
// reaches it; the target is the lowest-id instance at <= L-2 on the first level that has
// one; on each edge g -> h the expert moved is the activated multi-replica expert on g
// that h hosts and that comes first in visit_order.
//
// Work lists: choices in ascending flat index t*k + j within each replica.
//
// Invalid expert ids (outside [0, E)): the choice gets replica -1, is left out of every
// count and list, and summary[kAebsInvalidChoices] counts it; the CPU function also
// returns invalid_argument naming the first one (the GPU cannot return an error without
// a host synchronisation: callers read the summary).
#pragma once

#include <cstdint>
#include <vector>

#include "gpu/cpu/aebs_table.h"
#include "runtime/base/expert_layout.h"
#include "runtime/base/status.h"

namespace janus {

enum class AebsVisitOrder { kFewestReplicasFirst, kExpertId };

/// Owns the arrays of an AebsTableView built from an ExpertLayout.
class AebsReplicaTable {
 public:
  AebsReplicaTable() = default;
  /// max_repairs < 0: one per instance (enough to close a gap of one to the optimum);
  /// 0: Algorithm 1 alone, as the paper lists it.
  static AebsReplicaTable build(const ExpertLayout& layout, AebsVisitOrder order = AebsVisitOrder::kFewestReplicasFirst,
                                int max_repairs = -1);

  /// A view of this table's host arrays (valid while the table lives and is not moved).
  AebsTableView view() const;

  int num_experts() const { return num_experts_; }
  int num_instances() const { return num_instances_; }
  int num_replicas() const { return static_cast<int>(replica_instance.size()); }

  std::vector<int32_t> expert_offsets, expert_replicas, replica_instance, replica_expert, instance_offsets, visit_order;
  std::vector<uint64_t> instance_mask;  // empty when n_e > 64

 private:
  int num_experts_ = 0, num_instances_ = 0, max_replicas_ = 0, max_repairs_ = 0;
};

/// Host buffers for AebsOutputs, sized for a table and up to `max_choices` choices.
struct AebsHostOutputs {
  std::vector<int32_t> choice_replica, expert_replica, replica_offsets, items, instance_item_offsets, activated,
      active_offsets, active_replicas, summary;
  void resize(const AebsTableView& t, int64_t max_choices);
  AebsOutputs outputs();
};

namespace cpu {

/// AEBS over `tokens` rows of `k` expert ids (row-major). Fills every output array.
/// Returns invalid_argument when an id is outside [0, E) (after filling the outputs as
/// the GPU does) or when the sizes are out of range.
Status aebs(const AebsTableView& table, const int32_t* expert_ids, int64_t tokens, int k, const AebsOutputs& out);

/// Checks that outputs are a consistent AEBS result for the ids (used by tests and the
/// benchmark): every valid choice is on a replica of its expert, one replica per expert,
/// the work lists hold each valid choice once in order, a_i and the active lists agree.
/// Returns internal_error describing the first inconsistency.
Status aebs_check_outputs(const AebsTableView& table, const int32_t* expert_ids, int64_t tokens, int k,
                          const AebsOutputs& out);

}  // namespace cpu
}  // namespace janus
