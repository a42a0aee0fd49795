// The plain data AEBS (Janus Algorithm 1) reads and writes, shared by the CPU reference
// (gpu/cpu/aebs.h) and the CUDA kernel (gpu/cuda/aebs.h). Only <cstdint>: CUDA sources
// include it. The pointers are host pointers for the CPU and device pointers for the GPU;
// the layout is identical so one table is built once (AebsReplicaTable) and copied.
//
// Replica table, a compact CSR over an ExpertLayout (runtime/base/expert_layout.h):
//
//   replica ids are instance-major (instance 0's slots, then instance 1's, ...), so
//   the replicas of instance g are the contiguous id range
//   [instance_offsets[g], instance_offsets[g+1]) and a list ordered by replica id is also
//   grouped by instance;
//   the replicas of expert e are expert_replicas[expert_offsets[e] .. expert_offsets[e+1]),
//   in ascending id (= ascending instance) order;
//   instance_mask[e] has bit g set when instance g holds e (n_e <= 64), so the index of
//   e's replica on instance g inside its list is popcount(instance_mask[e] & ((1<<g)-1));
//   visit_order lists the experts with more than one replica in the greedy's visiting
//   order (gpu/cpu/aebs.h says which).
//
// Outputs, for a layer batch of T tokens x k choices ("choice" = flat index t*k + j):
//
//   choice_replica[T*k]   the physical replica of every choice; -1 for an invalid expert id
//   expert_replica[E]     the replica chosen for each logical expert; -1 when not activated
//   replica_offsets[R+1]  the work list: the choices routed to replica r are
//   items[T*k]              items[replica_offsets[r] .. replica_offsets[r+1]) in ascending
//                           choice order; replicas in id order, so instance g's work is the
//                           contiguous items[instance_item_offsets[g] .. [g+1]). Only the
//                           first replica_offsets[R] items are written (invalid choices are
//                           left out).
//   instance_item_offsets[n_e+1]
//   activated[n_e]        a_i, the distinct experts instance i must run
//   active_offsets[n_e+1] the activated replicas of instance g, ascending:
//   active_replicas[R]      active_replicas[active_offsets[g] .. active_offsets[g+1]); an
//                           instance runs each of them once over its gathered choices.
//   summary[kAebsSummarySize]  a_max, activated experts, invalid choices, valid choices,
//                         repair moves made (gpu/cpu/aebs.h step 4).
//
// Everything is int32: T*k, E and R must stay below 2^31 (the launchers check).
#pragma once

#include <cstdint>

namespace janus {

struct AebsTableView {
  int32_t num_experts = 0;    // E
  int32_t num_instances = 0;  // n_e
  int32_t num_replicas = 0;   // R (filled slots)
  int32_t max_replicas = 0;   // the largest replica count of one expert
  int32_t num_multi = 0;      // experts with more than one replica (length of visit_order)
  int32_t max_repairs = 0;    // bound on augmenting-path repairs after the greedy (0: Algorithm 1 alone)
  const int32_t* expert_offsets = nullptr;    // [E+1]
  const int32_t* expert_replicas = nullptr;   // [R]
  const int32_t* replica_instance = nullptr;  // [R]
  const int32_t* replica_expert = nullptr;    // [R]
  const int32_t* instance_offsets = nullptr;  // [n_e+1]
  const uint64_t* instance_mask = nullptr;    // [E], or null when n_e > 64
  const int32_t* visit_order = nullptr;       // [num_multi]
};

enum AebsSummaryField : int {
  kAebsMaxActivated = 0,
  kAebsActivatedExperts = 1,
  kAebsInvalidChoices = 2,
  kAebsValidChoices = 3,
  kAebsRepairs = 4,
};
constexpr int kAebsSummarySize = 5;

struct AebsOutputs {
  int32_t* choice_replica = nullptr;         // [T*k]
  int32_t* expert_replica = nullptr;         // [E]
  int32_t* replica_offsets = nullptr;        // [R+1]
  int32_t* items = nullptr;                  // [T*k]
  int32_t* instance_item_offsets = nullptr;  // [n_e+1]
  int32_t* activated = nullptr;              // [n_e]
  int32_t* active_offsets = nullptr;         // [n_e+1]
  int32_t* active_replicas = nullptr;        // [R]
  int32_t* summary = nullptr;                // [kAebsSummarySize]
};

}  // namespace janus
