// Expert replication and placement (Janus Appendix B, Algorithm 3): how many replicas
// each logical expert gets and which instances hold them, from activation statistics
// (runtime/scheduling/activation_stats.h). The result is an ExpertLayout; AEBS
// (runtime/scheduling/scheduling_policy.h) then picks one replica per activated expert per batch.
//
// Replica counts: one replica per expert, then the n_e*C - E spare slots one at a time to
// the expert with the largest load per replica c(e)/R(e) (ties: fewer replicas, then the
// lower id), never more than n_e replicas of one expert (two replicas of an expert never
// share an instance). Without statistics (load empty or all zero) the spare slots go
// round-robin in id order: experts 0, 1, 2, ... then again from 0.
//
// Placement, Algorithm 3: replicas in descending per-replica load c(e)/R(e) (ties: lower
// expert id), each to the instance with a free slot that does not hold that expert yet
// and the smallest added co-activation penalty sum_{j on g} a(e, j); ties to the smaller
// per-replica load already on the instance, then fewer filled slots, then the lower id.
// When every instance with a free slot already holds e, a bounded swap: move one replica
// j from an instance g without e to an instance h with a free slot that lacks j, put e on
// g, choosing the (g, j, h) with the smallest change in co-activation load
// Delta I = a(e, g\j) - a(j, g\j) + a(j, h) (ties: lowest g, slot, h). Such a swap always
// exists (h holds at most C-1 experts besides e, g holds C, so g has one h lacks).
//
// Co-activation load of an instance: I(g) = sum over pairs {e, f} on g of a(e, f); the
// paper's objective is min max_g I(g).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/expert_layout.h"
#include "runtime/base/status.h"

namespace janus {

/// R(e) for E experts on n_e instances of C slots; load is c(e) ([E]) or empty.
/// Refused: E, n_e or C not positive, n_e*C < E, a load of the wrong size, negative or
/// not finite.
Result<std::vector<int>> replica_counts(int num_experts, int num_instances, int slots, const std::vector<double>& load);

struct PlacementInput {
  int num_experts = 0;
  int num_instances = 0;
  int slots = 0;
  std::vector<double> load;          // c(e) [E], or empty (no statistics)
  std::vector<double> coactivation;  // a(e, f) [E*E] row-major, or empty (all zero)
  std::vector<int> replicas;         // R(e) [E], or empty: replica_counts(load)
};

/// Algorithm 3. Refused with a clear message: the replica_counts errors, a co-activation
/// matrix of the wrong size, negative or not finite (or asymmetric), given replica counts
/// outside [1, n_e] or summing to more than n_e*C.
Result<ExpertLayout> place_experts(const PlacementInput& in);

/// placement = "auto": expert e on instance e mod n_e, then the spare slots (by
/// replica_counts: the hottest experts when load is given, else in id order) each on the
/// least-filled instance that lacks the expert (ties: the first after e's home instance).
Result<ExpertLayout> auto_placement(int num_experts, int num_instances, int slots, const std::vector<double>& load = {});

/// I(g) for every instance of a layout, for a co-activation matrix [E*E].
std::vector<double> coactivation_load(const ExpertLayout& layout, const std::vector<double>& coactivation);

/// max_g I(g).
double max_coactivation_load(const ExpertLayout& layout, const std::vector<double>& coactivation);

}  // namespace janus
