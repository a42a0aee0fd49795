#include "runtime/config/scaling_decision.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "runtime/scheduling/amax_estimator.h"
#include "runtime/scheduling/expert_placement.h"

namespace janus {

ScalingDecision decide_scaling(const PerfModel& m, const ScalerSpec& sp, int slots, double lambda, const ActivationWindow& w) {
  const int E = m.num_experts, k = m.top_k, L = static_cast<int>(m.layers.size());
  std::vector<std::vector<double>> p = w.probability;
  p.resize(static_cast<size_t>(L));
  for (auto& pl : p) {
    double sum = 0;
    for (double x : pl) sum += x;
    if (pl.size() != static_cast<size_t>(E) || sum == 0) pl = uniform_activation(E, k);  // no traffic yet
  }
  std::map<int, ExpertLayout> layouts;
  std::map<std::tuple<int, int, int64_t>, double> memo;
  PerfModel::AmaxFn amax = [&](int layer, int n_e, double batch) -> double {
    const int64_t b = static_cast<int64_t>(std::ceil(batch));
    const auto key = std::make_tuple(layer, n_e, b);
    if (auto it = memo.find(key); it != memo.end()) return it->second;
    if (!layouts.count(n_e)) {
      auto l = auto_placement(E, n_e, slots, w.load.size() == static_cast<size_t>(E) ? w.load : std::vector<double>{});
      if (!l.ok()) return memo[key] = slots;  // this n_e cannot hold the experts: the worst case
      layouts.emplace(n_e, std::move(*l));
    }
    auto bound = amax_analytic_bound(layouts.at(n_e), p[static_cast<size_t>(layer)], b);
    return memo[key] = bound.ok() ? bound->amax : slots;
  };
  const ScalingBounds bounds{sp.min_attention, sp.max_attention, sp.min_moe, sp.max_moe, sp.max_attention + sp.max_moe};
  PerfModel sized = m;
  sized.slots = slots;
  return solve_scaling(sized, lambda, sp.tpot_slo_ms / 1e3, sp.context, amax, bounds);
}

ShrinkHold::Target ShrinkHold::next(int attention, int moe, int want_attention, int want_moe) {
  if (want_attention >= attention && want_moe >= moe) {
    streak_ = 0;
    return {want_attention, want_moe, false};
  }
  if (want_attention > attention || want_moe > moe) {
    streak_ = 0;
    return {std::max(attention, want_attention), std::max(moe, want_moe), false};
  }
  most_attention_ = streak_ == 0 ? want_attention : std::max(most_attention_, want_attention);
  most_moe_ = streak_ == 0 ? want_moe : std::max(most_moe_, want_moe);
  if (++streak_ < after_) return {attention, moe, true};
  streak_ = 0;
  return {most_attention_, most_moe_, false};
}

}  // namespace janus
