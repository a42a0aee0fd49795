// The exact optimum of the AEBS problem, to measure the greedy (gpu/cpu/aebs.h) against.
//
// Each activated expert must run on exactly one instance that holds a replica of it, and
// an instance's cost a_g is the number of experts it runs. Minimising max_g a_g is
// scheduling unit jobs on machines with eligibility sets, which is a bipartite
// b-matching: a_max <= L is feasible iff a flow of value |activated| exists in
//   source -> expert (capacity 1) -> hosting instance (1) -> sink (L).
// So the optimum is polynomial: optimal_max_activated finds the smallest feasible L with
// augmenting paths (O(|activated| * edges) at most, microseconds at E = 256). A
// branch-and-bound over every expert's replica choice (exhaustive_max_activated) checks
// it on small cases.
//
// Also greedy variants (visiting order, tie-break) used only to measure which
// deterministic rule to give the kernels (bench_amax section 2).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/base/expert_layout.h"
#include "runtime/base/status.h"

namespace janus {

/// The smallest achievable a_max for the batch. When expert_replica is given it receives
/// an optimal choice per expert ([E], -1 for experts not activated). invalid_argument
/// for expert ids outside the layout.
Result<int> optimal_max_activated(const ExpertLayout& layout, const int32_t* expert_ids, int64_t tokens, int k,
                                  std::vector<int32_t>* expert_replica = nullptr);

/// The same by branch and bound over replica choices; unsupported when it would visit
/// more than max_nodes search nodes.
Result<int> exhaustive_max_activated(const ExpertLayout& layout, const int32_t* expert_ids, int64_t tokens, int k,
                                     int64_t max_nodes = 20'000'000);

enum class GreedyOrder {
  kFewestReplicasFirst,  // ascending replica count, then id (the kernels' default)
  kExpertId,             // ascending id (the paper's listing)
  kMostTokensFirst,      // descending choices in this batch, then id
  kMostReplicasFirst,    // descending replica count, then id
};
enum class GreedyTieBreak {
  kLowestInstance,  // argmin (load, instance id) (the paper's listing)
  kLeastPending,    // argmin (load, activated multi-replica experts still to visit that the instance could take, id):
                    // the kernels' rule
};
const char* greedy_order_name(GreedyOrder o);
const char* greedy_tiebreak_name(GreedyTieBreak t);

/// a_max of Algorithm 1 alone (single-replica experts first, then the others in `order`;
/// no repair): with kFewestReplicasFirst and kLeastPending it equals gpu/cpu/aebs.h with
/// max_repairs = 0.
Result<int> greedy_max_activated(const ExpertLayout& layout, const int32_t* expert_ids, int64_t tokens, int k,
                                 GreedyOrder order, GreedyTieBreak tie = GreedyTieBreak::kLowestInstance);

}  // namespace janus
