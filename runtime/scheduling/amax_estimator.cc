#include "runtime/scheduling/amax_estimator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <set>

namespace janus {

Result<AmaxBound> amax_analytic_bound(const ExpertLayout& layout, const std::vector<double>& p, int64_t batch) {
  if (static_cast<int>(p.size()) != layout.num_experts())
    return invalid_argument("a_max bound: " + std::to_string(p.size()) + " activation probabilities for " +
                            std::to_string(layout.num_experts()) + " experts");
  if (batch < 0) return invalid_argument("a_max bound: negative batch size");
  for (size_t e = 0; e < p.size(); ++e)
    if (!(p[e] >= 0 && p[e] <= 1))
      return invalid_argument("a_max bound: activation probability of expert " + std::to_string(e) + " is " +
                              std::to_string(p[e]) + ", outside [0, 1]");
  AmaxBound b;
  b.instance_mean.assign(static_cast<size_t>(layout.num_instances()), 0.0);
  for (int g = 0; g < layout.num_instances(); ++g)
    for (int32_t e : layout.experts_on(g))
      b.instance_mean[static_cast<size_t>(g)] += 1.0 - std::pow(1.0 - p[static_cast<size_t>(e)], static_cast<double>(batch));
  b.mean_max = *std::max_element(b.instance_mean.begin(), b.instance_mean.end());
  const double n = layout.num_instances();
  b.amax = std::min<double>(layout.slots(), b.mean_max + std::sqrt(2.0 * b.mean_max * std::log(n))) + 1.0;
  return b;
}

std::vector<double> uniform_activation(int num_experts, int k) {
  return std::vector<double>(static_cast<size_t>(std::max(num_experts, 0)),
                             num_experts > 0 ? std::min(1.0, static_cast<double>(k) / num_experts) : 0.0);
}

Result<std::vector<double>> activation_probability(const RoutingTrace& trace, int num_experts) {
  if (trace.k <= 0 || trace.ids.size() % static_cast<size_t>(trace.k) != 0)
    return invalid_argument("activation probability: the trace's k does not divide its ids");
  std::vector<double> p(static_cast<size_t>(num_experts), 0.0);
  const int64_t T = trace.tokens();
  if (T == 0) return p;
  std::vector<int32_t> row;
  for (int64_t t = 0; t < T; ++t) {
    row.assign(trace.ids.begin() + t * trace.k, trace.ids.begin() + (t + 1) * trace.k);
    std::sort(row.begin(), row.end());
    row.erase(std::unique(row.begin(), row.end()), row.end());
    for (int32_t e : row) {
      if (e < 0 || e >= num_experts)
        return invalid_argument("activation probability: trace names expert " + std::to_string(e) + ", outside [0, " +
                                std::to_string(num_experts) + ")");
      p[static_cast<size_t>(e)] += 1;
    }
  }
  for (double& x : p) x /= static_cast<double>(T);
  return p;
}

Result<AmaxStats> amax_monte_carlo(const RoutingTrace& trace, const ExpertLayout& layout, SchedulingPolicy& policy,
                                   int64_t batch, int samples, uint64_t seed) {
  if (trace.k <= 0 || trace.tokens() == 0) return invalid_argument("a_max Monte Carlo: the routing trace is empty");
  if (batch < 0) return invalid_argument("a_max Monte Carlo: negative batch size");
  if (samples <= 0) return invalid_argument("a_max Monte Carlo: samples must be positive");
  const int k = trace.k;
  const int64_t T = trace.tokens();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, T - 1);
  std::vector<int32_t> ids(static_cast<size_t>(batch * k)), reps(ids.size());
  std::vector<int> amax(static_cast<size_t>(samples));
  for (int s = 0; s < samples; ++s) {
    for (int64_t t = 0; t < batch; ++t) {
      const int64_t row = pick(rng);
      std::copy_n(trace.ids.begin() + row * k, k, ids.begin() + t * k);
    }
    JANUS_TRY(policy.assign(layout, ids.data(), batch, k, static_cast<uint64_t>(s), reps.data())
                  .with_context("a_max Monte Carlo"));
    amax[static_cast<size_t>(s)] = max_activated_experts(layout, reps.data(), static_cast<int64_t>(reps.size()));
  }
  AmaxStats st;
  st.batch = batch;
  st.samples = samples;
  double sum = 0, sq = 0;
  for (int a : amax) {
    sum += a;
    sq += static_cast<double>(a) * a;
  }
  st.mean = sum / samples;
  st.stddev = std::sqrt(std::max(0.0, sq / samples - st.mean * st.mean));
  std::sort(amax.begin(), amax.end());
  // Nearest-rank quantile.
  auto q = [&](double f) {
    const int64_t i = static_cast<int64_t>(std::ceil(f * samples)) - 1;
    return amax[static_cast<size_t>(std::clamp<int64_t>(i, 0, samples - 1))];
  };
  st.p50 = q(0.5);
  st.p99 = q(0.99);
  st.max = amax.back();
  return st;
}

Result<AmaxTable> AmaxTable::build(const std::vector<RoutingTrace>& traces, const std::vector<ExpertLayout>& layouts,
                                   const std::vector<int64_t>& batches, const std::string& policy_name, int samples,
                                   uint64_t seed) {
  if (traces.empty()) return invalid_argument("a_max table: no routing traces");
  if (layouts.empty()) return invalid_argument("a_max table: no layouts");
  if (batches.empty()) return invalid_argument("a_max table: no batch sizes");
  for (int64_t b : batches)
    if (b <= 0) return invalid_argument("a_max table: batch sizes must be positive, got " + std::to_string(b));
  const int E = layouts.front().num_experts();
  std::set<int> seen;
  for (const auto& l : layouts) {
    if (l.num_experts() != E) return invalid_argument("a_max table: layouts for different expert counts");
    if (!seen.insert(l.num_instances()).second)
      return invalid_argument("a_max table: two layouts with " + std::to_string(l.num_instances()) + " instances");
  }
  JANUS_ASSIGN_OR_RETURN(auto policy, make_scheduling_policy(policy_name, seed));
  AmaxTable table;
  for (size_t layer = 0; layer < traces.size(); ++layer) {
    const RoutingTrace& tr = traces[layer];
    if (tr.tokens() == 0) return invalid_argument("a_max table: the trace of layer " + std::to_string(layer) + " is empty");
    JANUS_ASSIGN_OR_RETURN(auto p, activation_probability(tr, E));
    for (const auto& l : layouts)
      for (int64_t b : batches) {
        Entry e;
        e.instances = l.num_instances();
        e.batch = b;
        e.layer = static_cast<int>(layer);
        JANUS_ASSIGN_OR_RETURN(e.mc, amax_monte_carlo(tr, l, *policy, b, samples, seed ^ (layer * 0x9e3779b97f4a7c15ull)));
        JANUS_ASSIGN_OR_RETURN(auto bound, amax_analytic_bound(l, p, b));
        e.bound = bound.amax;
        table.entries_.push_back(e);
      }
  }
  return table;
}

Result<AmaxTable> AmaxTable::build(const ActivationStats& stats, const std::vector<ExpertLayout>& layouts,
                                   const std::vector<int64_t>& batches, const std::string& policy, int samples, uint64_t seed) {
  std::vector<RoutingTrace> traces;
  for (int l = 0; l < stats.num_layers(); ++l)
    if (stats.batches(l) > 0) traces.push_back(stats.routing(l));
  if (traces.empty()) return invalid_argument("a_max table: the activation statistics hold no batches");
  return build(traces, layouts, batches, policy, samples, seed);
}

Result<double> AmaxTable::lookup(int instances, int64_t batch, int layer) const {
  std::map<int, std::vector<std::pair<int64_t, double>>> per_layer;
  for (const Entry& e : entries_)
    if (e.instances == instances && (layer < 0 || e.layer == layer)) per_layer[e.layer].push_back({e.batch, e.mc.mean});
  if (per_layer.empty())
    return not_found("a_max table: no entry for " + std::to_string(instances) + " instances" +
                     (layer >= 0 ? " in layer " + std::to_string(layer) : ""));
  double worst = 0;
  for (auto& [l, pts] : per_layer) {
    std::sort(pts.begin(), pts.end());
    double v;
    if (batch <= pts.front().first) {
      v = pts.front().second;
    } else if (batch >= pts.back().first) {
      v = pts.back().second;
    } else {
      size_t i = 1;
      while (pts[i].first < batch) ++i;
      const auto [b0, v0] = pts[i - 1];
      const auto [b1, v1] = pts[i];
      v = v0 + (v1 - v0) * static_cast<double>(batch - b0) / static_cast<double>(b1 - b0);
    }
    worst = std::max(worst, v);
  }
  return worst;
}

std::string AmaxTable::to_string() const {
  std::string s = "layer  n_e      B   mean   p99  max  bound\n";
  char buf[128];
  for (const Entry& e : entries_) {
    std::snprintf(buf, sizeof buf, "%5d %4d %6lld %6.2f %5d %4d %6.2f\n", e.layer, e.instances,
                  static_cast<long long>(e.batch), e.mc.mean, e.mc.p99, e.mc.max, e.bound);
    s += buf;
  }
  return s;
}

}  // namespace janus
