// CPU twin of the GPU expert instance (gpu/cuda/moe.h): a grouped SwiGLU FFN over the
// replica slots an instance holds, for the (row, choice) pairs routed to it, and the
// weighted sum per row. Same arithmetic as CpuForward::experts: each slot's FFN runs once
// over its gathered rows (cpu::swiglu_ffn), and a row's weighted outputs are summed in
// double, here in choice order.
#pragma once

#include <cstdint>

#include "runtime/base/dtype.h"

namespace janus::cpu {

/// One replica slot's weights: gate and up [inter, hidden], down [hidden, inter].
struct ExpertSlotWeights {
  const void* gate = nullptr;
  const void* up = nullptr;
  const void* down = nullptr;
};

/// out[r] = sum over choices j with slot[r, j] in [0, num_slots) of
/// weight[r, j] * down(silu(gate x[r]) * up x[r]) of that slot; with accumulate,
/// out[r] += that sum. x and out are [rows, hidden]; slot and weight [rows, top_k].
void moe_grouped_ffn(const float* x, int64_t rows, int top_k, const int32_t* slot, const float* weight,
                     const ExpertSlotWeights* slots, DType dtype, int num_slots, int64_t hidden, int64_t inter,
                     bool accumulate, float* out);

/// Twin of cuda::moe_choices_from_routing: an instance's slot and weight per (row,
/// choice) from the router's ids and weights when every expert has one replica.
void moe_choices_from_routing(const int32_t* ids, const float* weights, int64_t choices, const int32_t* slot_of,
                              int num_experts, int32_t* choice_slot, float* choice_weight);

}  // namespace janus::cpu
