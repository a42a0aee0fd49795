#include "gpu/cpu/moe.h"

#include <algorithm>
#include <vector>

#include "gpu/cpu/kernels.h"
#include "runtime/base/parallel.h"

namespace janus::cpu {

void moe_grouped_ffn(const float* x, int64_t rows, int top_k, const int32_t* slot, const float* weight,
                     const ExpertSlotWeights* slots, DType dtype, int num_slots, int64_t hidden, int64_t inter,
                     bool accumulate, float* out) {
  const int64_t n = rows * top_k;
  // Entries grouped by slot, (row, choice) ascending inside a slot: the GPU's work list.
  std::vector<int64_t> begin(static_cast<size_t>(num_slots) + 1, 0), entry_of(static_cast<size_t>(n), -1);
  for (int64_t i = 0; i < n; ++i)
    if (slot[i] >= 0 && slot[i] < num_slots) ++begin[static_cast<size_t>(slot[i]) + 1];
  for (int s = 0; s < num_slots; ++s) begin[s + 1] += begin[s];
  std::vector<int64_t> entry_choice(static_cast<size_t>(begin[num_slots]));
  {
    std::vector<int64_t> next(begin.begin(), begin.end() - 1);
    for (int64_t i = 0; i < n; ++i)
      if (slot[i] >= 0 && slot[i] < num_slots) {
        const int64_t e = next[static_cast<size_t>(slot[i])]++;
        entry_choice[static_cast<size_t>(e)] = i;
        entry_of[static_cast<size_t>(i)] = e;
      }
  }
  std::vector<float> ys(static_cast<size_t>(begin[num_slots] * hidden));
  parallel_for(num_slots, 1, [&](int64_t s0, int64_t s1) {
    std::vector<float> xs, scratch;
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t e0 = begin[static_cast<size_t>(s)], m = begin[static_cast<size_t>(s) + 1] - e0;
      if (m == 0) continue;
      xs.resize(static_cast<size_t>(m * hidden));
      scratch.resize(static_cast<size_t>(2 * m * inter));
      for (int64_t i = 0; i < m; ++i)
        std::copy_n(x + entry_choice[static_cast<size_t>(e0 + i)] / top_k * hidden, hidden, xs.data() + i * hidden);
      const ExpertSlotWeights& w = slots[s];
      swiglu_ffn(xs.data(), m, hidden, inter, w.gate, dtype, w.up, dtype, w.down, dtype, scratch.data(),
                 ys.data() + e0 * hidden);
    }
  });
  std::vector<double> acc(static_cast<size_t>(hidden));
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int j = 0; j < top_k; ++j) {
      const int64_t e = entry_of[static_cast<size_t>(r * top_k + j)];
      if (e < 0) continue;
      const double w = weight[r * top_k + j];
      const float* y = ys.data() + e * hidden;
      for (int64_t d = 0; d < hidden; ++d) acc[static_cast<size_t>(d)] += w * static_cast<double>(y[d]);
    }
    float* o = out + r * hidden;
    for (int64_t d = 0; d < hidden; ++d)
      o[d] = accumulate ? o[d] + static_cast<float>(acc[static_cast<size_t>(d)]) : static_cast<float>(acc[static_cast<size_t>(d)]);
  }
}

void moe_choices_from_routing(const int32_t* ids, const float* weights, int64_t choices, const int32_t* slot_of,
                              int num_experts, int32_t* choice_slot, float* choice_weight) {
  for (int64_t i = 0; i < choices; ++i) {
    const int32_t e = ids[i];
    const int32_t s = e >= 0 && e < num_experts ? slot_of[e] : -1;
    choice_slot[i] = s;
    choice_weight[i] = s >= 0 ? weights[i] : 0.f;
  }
}

}  // namespace janus::cpu
