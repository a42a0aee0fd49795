// The expert half of a MoE layer on one expert instance: a grouped SwiGLU FFN over the
// replica slots the instance holds, for the (row, slot) pairs the scheduler assigned to
// it, and the weighted combine of the results into per-row partial sums (or straight
// into the residual stream). CPU twin: cpu::moe_grouped_ffn (gpu/cpu/moe.h).
//
// Work list (built on the device by moe_build_work_list, CSR by slot): for each slot s,
// entries [slot_offsets[s], slot_offsets[s + 1]) hold the rows of x routed to s, rows
// ascending; active_slots lists the slots with work. entry_of maps each (row, choice)
// back to its entry, so the combine reads each row's results in choice order: the sum
// is deterministic (no atomics), run to run and whatever the slot order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::cuda {

/// The replica slots of an instance. Each pointer array has num_slots device pointers
/// and lives in device memory; every slot has the same dtype and shape.
struct MoeExperts {
  const void* const* gate = nullptr;  // [inter, hidden] each
  const void* const* up = nullptr;    // [inter, hidden] each
  const void* const* down = nullptr;  // [hidden, inter] each
  DType dtype = DType::kBF16;         // F32 or BF16
  int num_slots = 0;
  int64_t hidden = 0, inter = 0;
};

struct MoeArgs {
  const void* x = nullptr;  // [rows, hidden] activations, F32 or BF16
  DType x_dtype = DType::kBF16;
  int64_t rows = 0;
  // [rows, top_k]: the slot of each (row, choice) on this instance (-1: elsewhere), and
  // its gate weight.
  const int32_t* choice_slot = nullptr;
  const float* choice_weight = nullptr;
  int top_k = 0;
  MoeExperts experts;
  // [rows, hidden]: out[r] = sum over the row's choices here of weight * ffn(x[r]), in
  // choice order (fp32); with accumulate, out[r] += that sum (the residual add).
  void* out = nullptr;
  DType out_dtype = DType::kF32;
  bool accumulate = false;
  void* workspace = nullptr;  // moe_workspace_bytes
  size_t workspace_bytes = 0;
};

/// Device pointers of the work list and the per-entry results inside a MoE workspace.
struct MoeWorkList {
  int32_t* slot_offsets = nullptr;  // [num_slots + 1]
  int32_t* active_slots = nullptr;  // [num_slots], ascending; the first *num_active are valid
  int32_t* num_active = nullptr;    // [1]
  int32_t* entry_row = nullptr;     // [rows * top_k]
  int32_t* entry_of = nullptr;      // [rows * top_k]: entry of (row, choice), -1 if not here
  // [entries, inter]: silu(gate x) * up x per entry; BF16 on tensor cores, else F32.
  void* entry_act = nullptr;
  float* entry_out = nullptr;  // [entries, hidden]: the FFN's output per entry, unweighted
};

size_t moe_workspace_bytes(int64_t rows, int top_k, int num_slots, int64_t hidden, int64_t inter);

MoeWorkList moe_work_list(void* workspace, int64_t rows, int top_k, int num_slots, int64_t hidden, int64_t inter);

/// Whether moe_grouped_ffn streams the weights on tensor cores (BF16 weights, hidden and
/// inter multiples of 64) rather than running the fp32 fallback.
bool moe_uses_tensor_cores(const MoeArgs& a);

/// Builds the work list from a.choice_slot into the workspace.
Status moe_build_work_list(const MoeArgs& a, cudaStream_t stream);

/// Runs every active slot's SwiGLU FFN over its rows (needs the work list), leaving one
/// fp32 output row per entry in the workspace.
Status moe_grouped_ffn(const MoeArgs& a, cudaStream_t stream);

/// Weighted sum of each row's entry outputs into a.out.
Status moe_combine(const MoeArgs& a, cudaStream_t stream);

/// The instance's (row, choice) slots and weights straight from the router's device
/// routing, when every expert has one replica (nothing for a scheduling policy to choose):
/// choice_slot[i] = slot_of[ids[i]] (-1 where this instance does not hold the expert or
/// the id is outside [0, num_experts)), choice_weight[i] = weights[i] where held, else 0.
/// Each row's held choices keep their order, so moe_combine sums them as it sums the
/// scheduler's work list. CPU twin: cpu::moe_choices_from_routing (gpu/cpu/moe.h).
Status moe_choices_from_routing(const int32_t* ids, const float* weights, int64_t choices, const int32_t* slot_of,
                                int num_experts, int32_t* choice_slot, float* choice_weight, cudaStream_t stream);

/// moe_build_work_list, moe_grouped_ffn, moe_combine.
Status moe_expert_layer(const MoeArgs& a, cudaStream_t stream);

}  // namespace janus::cuda
