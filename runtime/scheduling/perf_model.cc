#include "runtime/scheduling/perf_model.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace janus {

using nlohmann::json;

double PerfModel::layer_time(int layer, double batch, int n_a, int n_e, double s_ctx, const AmaxFn& amax) const {
  const LayerCoefficients& c = layers[static_cast<size_t>(layer)];
  const double b = batch / std::max(1, n_a);
  const double t_attn = std::max(c.c_a, c.alpha * b + c.c_kv * b * s_ctx);
  const double t_moe = c.beta > 0 ? moe_time(layer, amax(layer, n_e, batch)) : 0.0;
  const double t_comm = c.c_comm + c.comm_per_member * (n_a + n_e) + c.comm_per_row * batch + c.comm_per_shard_row * b;
  return t_attn + t_moe + t_comm;
}

double PerfModel::moe_time(int layer, double a) const {
  const LayerCoefficients& c = layers[static_cast<size_t>(layer)];
  if (c.beta <= 0 && c.c_e <= 0) return 0.0;
  if (moe_curve.size() < 2) return c.beta * a + c.c_e;
  size_t i = 1;
  while (i + 1 < moe_curve.size() && moe_curve[i].first < a) ++i;
  const auto [a0, t0] = moe_curve[i - 1];
  const auto [a1, t1] = moe_curve[i];
  const double t = t0 + (t1 - t0) * (a - a0) / std::max(1e-9, a1 - a0);
  return std::max(a <= moe_curve.front().first ? moe_curve.front().second : 0.0, t);
}

double PerfModel::tpot(double batch, int n_a, int n_e, double s_ctx, const AmaxFn& amax) const {
  double t = 0;
  for (size_t l = 0; l < layers.size(); ++l) t += layer_time(static_cast<int>(l), batch, n_a, n_e, s_ctx, amax);
  return t;
}

double PerfModel::max_batch(int n_a, double s_ctx) const {
  double per_shard = max_batch_per_shard;
  if (device_bytes > 0 && kv_bytes_per_token > 0)
    per_shard = std::min(per_shard, std::floor((device_bytes - attention_weight_bytes) / (kv_bytes_per_token * s_ctx)));
  return std::max(0.0, per_shard) * n_a;
}

double steady_batch(const std::function<double(double)>& tpot_of_batch, double lambda, double b_max) {
  auto f = [&](double b) { return b - lambda * tpot_of_batch(b); };
  if (b_max < 1) return -1;
  if (f(1) >= 0) return 1;
  if (f(b_max) < 0) return -1;
  double lo = 1, hi = b_max;  // f(lo) < 0 <= f(hi)
  while (hi - lo > 1) {
    const double mid = std::floor((lo + hi) / 2);
    if (f(mid) >= 0) hi = mid;
    else lo = mid;
  }
  return hi;
}

ScalingDecision solve_scaling(const PerfModel& m, double lambda, double slo, double s_ctx, const PerfModel::AmaxFn& amax,
                              const ScalingBounds& bounds) {
  ScalingDecision best;
  best.why = "no configuration within the bounds meets the SLO";
  const int min_moe = std::max(bounds.min_moe, m.slots > 0 ? (m.num_experts + m.slots - 1) / m.slots : 1);
  for (int n_a = bounds.min_attention; n_a <= bounds.max_attention; ++n_a)
    for (int n_e = min_moe; n_e <= bounds.max_moe; ++n_e) {
      if (n_a + n_e > bounds.max_devices) continue;
      if (best.feasible && n_a + n_e > best.attention + best.moe) continue;  // cannot beat the best
      const double b_max = m.max_batch(n_a, s_ctx);
      auto tp = [&](double b) { return m.tpot(b, n_a, n_e, s_ctx, amax); };
      const double b = steady_batch(tp, lambda, b_max);
      if (b < 0) continue;  // demand cannot be sustained
      const double t = tp(b);
      if (t > slo) continue;
      const bool better = !best.feasible || n_a + n_e < best.attention + best.moe ||
                          (n_a + n_e == best.attention + best.moe && t < best.tpot);
      if (better) {
        best.feasible = true;
        best.attention = n_a;
        best.moe = n_e;
        best.batch = b;
        best.tpot = t;
        best.tokens_per_s_per_device = b / t / (n_a + n_e);
        best.why.clear();
      }
    }
  return best;
}

std::pair<double, double> fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  if (x.size() < 2) return {0, y.empty() ? 0 : y[0]};
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sx += x[i];
    sy += y[i];
    sxx += x[i] * x[i];
    sxy += x[i] * y[i];
  }
  const double den = n * sxx - sx * sx;
  if (std::abs(den) < 1e-30) return {0, sy / n};
  const double a = (n * sxy - sx * sy) / den;
  return {a, (sy - a * sx) / n};
}

std::string PerfModel::to_json() const {
  json ls = json::array();
  for (const LayerCoefficients& c : layers)
    ls.push_back({{"c_a", c.c_a}, {"alpha", c.alpha}, {"c_kv", c.c_kv}, {"beta", c.beta}, {"c_e", c.c_e},
                  {"c_comm", c.c_comm}, {"comm_per_member", c.comm_per_member}, {"comm_per_row", c.comm_per_row}, {"comm_per_shard_row", c.comm_per_shard_row}});
  json j = {{"source", source},
            {"units", "seconds"},
            {"num_experts", num_experts},
            {"top_k", top_k},
            {"slots", slots},
            {"attention_weight_bytes", attention_weight_bytes},
            {"kv_bytes_per_token", kv_bytes_per_token},
            {"attention_layer_bytes", attention_layer_bytes},
            {"expert_bytes", expert_bytes},
            {"device_bytes", device_bytes},
            {"max_batch_per_shard", max_batch_per_shard},
            {"moe_curve", moe_curve},
            {"layers", ls}};
  return j.dump(2) + "\n";
}

Result<PerfModel> PerfModel::from_json(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return invalid_argument(where + ": malformed JSON: " + e.what());
  }
  PerfModel m;
  try {
    m.source = j.value("source", "");
    m.num_experts = j.at("num_experts").get<int>();
    m.top_k = j.at("top_k").get<int>();
    m.slots = j.at("slots").get<int>();
    m.attention_weight_bytes = j.value("attention_weight_bytes", 0.0);
    m.kv_bytes_per_token = j.value("kv_bytes_per_token", 0.0);
    m.attention_layer_bytes = j.value("attention_layer_bytes", 0.0);
    m.expert_bytes = j.value("expert_bytes", 0.0);
    m.device_bytes = j.value("device_bytes", 0.0);
    m.max_batch_per_shard = j.value("max_batch_per_shard", 1024.0);
    if (j.contains("moe_curve")) m.moe_curve = j.at("moe_curve").get<std::vector<std::pair<double, double>>>();
    for (const json& l : j.at("layers")) {
      LayerCoefficients c;
      c.c_a = l.at("c_a").get<double>();
      c.alpha = l.at("alpha").get<double>();
      c.c_kv = l.at("c_kv").get<double>();
      c.beta = l.at("beta").get<double>();
      c.c_e = l.at("c_e").get<double>();
      c.c_comm = l.value("c_comm", 0.0);
      c.comm_per_member = l.value("comm_per_member", 0.0);
      c.comm_per_row = l.value("comm_per_row", 0.0);
      c.comm_per_shard_row = l.value("comm_per_shard_row", 0.0);
      m.layers.push_back(c);
    }
  } catch (const json::exception& e) {
    return invalid_argument(where + ": " + e.what());
  }
  if (m.layers.empty()) return invalid_argument(where + ": no layers");
  for (size_t i = 0; i < m.moe_curve.size(); ++i)
    if (m.moe_curve[i].first <= (i ? m.moe_curve[i - 1].first : 0.0) || m.moe_curve[i].second < 0)
      return invalid_argument(where + ": moe_curve must list (activated experts, seconds) with increasing positive a");
  if (m.num_experts <= 0 || m.top_k <= 0 || m.slots <= 0) return invalid_argument(where + ": num_experts, top_k and slots must be positive");
  return m;
}

Result<PerfModel> PerfModel::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(path + ": cannot read the performance model");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json(ss.str(), path);
}

}  // namespace janus
