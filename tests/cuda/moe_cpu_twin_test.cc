// The CPU twin of the expert instance (cpu::moe_grouped_ffn), the oracle of the GPU MoE
// tests, against a double-precision formula. Needs no GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <tuple>

#include "gpu/cpu/moe.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace janus;
using namespace janus::cuda::test;

TEST_CASE("cpu::moe_grouped_ffn is sum_j w_j * down(silu(gate x) * up x) over the choices on the instance") {
  std::mt19937 rng(91);
  for (DType t : {DType::kF32, DType::kBF16})
    for (auto [slots, hidden, inter, rows, top_k] : {std::tuple{4, 16, 8, 5, 2}, {9, 64, 40, 23, 4}}) {
      CAPTURE(name(t));
      CAPTURE(rows);
      std::vector<std::vector<char>> w;
      std::vector<std::vector<float>> wf;
      std::vector<cpu::ExpertSlotWeights> sw(static_cast<size_t>(slots));
      for (int s = 0; s < 3 * slots; ++s) {
        auto v = random_floats(static_cast<size_t>(hidden * inter), rng, 0.3f);
        w.push_back(to_dtype(v, t));
        wf.push_back(round_to(v, t));
      }
      for (int s = 0; s < slots; ++s) sw[s] = {w[3 * s].data(), w[3 * s + 1].data(), w[3 * s + 2].data()};
      auto x = random_floats(static_cast<size_t>(rows * hidden), rng);
      std::vector<int32_t> slot(static_cast<size_t>(rows * top_k));
      std::vector<float> weight(slot.size());
      std::uniform_int_distribution<int> pick(-1, slots);  // -1 and `slots`: not on this instance
      for (size_t i = 0; i < slot.size(); ++i) {
        slot[i] = pick(rng);
        weight[i] = std::uniform_real_distribution<float>(0.1f, 1.f)(rng);
      }
      for (bool accumulate : {false, true}) {
        auto base = random_floats(static_cast<size_t>(rows * hidden), rng);
        std::vector<float> out = base;
        cpu::moe_grouped_ffn(x.data(), rows, top_k, slot.data(), weight.data(), sw.data(), t, slots, hidden, inter,
                             accumulate, out.data());
        std::vector<float> want(out.size());
        for (int r = 0; r < rows; ++r) {
          std::vector<double> acc(static_cast<size_t>(hidden), 0.0);
          for (int j = 0; j < top_k; ++j) {
            const int s = slot[static_cast<size_t>(r * top_k + j)];
            if (s < 0 || s >= slots) continue;
            const std::vector<double> y = janus::test::swiglu_row_f64(x.data() + r * hidden, wf[3 * s].data(), wf[3 * s + 1].data(),
                                                                      wf[3 * s + 2].data(), hidden, inter);
            for (int h = 0; h < hidden; ++h) acc[h] += weight[static_cast<size_t>(r * top_k + j)] * y[h];
          }
          for (int h = 0; h < hidden; ++h)
            want[r * hidden + h] = static_cast<float>((accumulate ? base[r * hidden + h] : 0.0) + acc[h]);
        }
        JANUS_CHECK_CLOSE(out, want, 1e-5, "cpu moe twin");
      }
    }
}
