#include "runtime/scheduling/activation_stats.h"

#include <algorithm>
#include <string>

namespace janus {

Result<ActivationStats> ActivationStats::create(int num_layers, int num_experts, int window) {
  if (num_layers <= 0) return invalid_argument("activation stats: num_layers must be positive");
  if (num_experts <= 0) return invalid_argument("activation stats: num_experts must be positive");
  if (window <= 0) return invalid_argument("activation stats: the window must hold at least one batch");
  ActivationStats s;
  s.num_experts_ = num_experts;
  s.window_ = window;
  s.layers_.resize(static_cast<size_t>(num_layers));
  for (auto& l : s.layers_) l.counts.assign(static_cast<size_t>(num_experts), 0);
  return s;
}

const ActivationStats::Layer& ActivationStats::L(int layer) const {
  static const Layer empty;
  if (layer < 0 || layer >= num_layers()) return empty;
  return layers_[static_cast<size_t>(layer)];
}

void ActivationStats::apply(Layer& l, const int32_t* ids, int64_t tokens, int k, int sign) {
  const size_t E = static_cast<size_t>(num_experts_);
  scratch_.resize(static_cast<size_t>(k));
  for (int64_t t = 0; t < tokens; ++t) {
    // The token's distinct experts (k is small: insertion into a tiny sorted list).
    int n = 0;
    for (int j = 0; j < k; ++j) {
      const int32_t e = ids[t * k + j];
      if (std::find(scratch_.begin(), scratch_.begin() + n, e) == scratch_.begin() + n) scratch_[static_cast<size_t>(n++)] = e;
    }
    for (int a = 0; a < n; ++a) {
      const size_t ea = static_cast<size_t>(scratch_[static_cast<size_t>(a)]);
      l.counts[ea] += sign;
      for (int b = a + 1; b < n; ++b) {
        const size_t eb = static_cast<size_t>(scratch_[static_cast<size_t>(b)]);
        l.pairs[ea * E + eb] += sign;
        l.pairs[eb * E + ea] += sign;
      }
    }
  }
  l.tokens += sign * tokens;
}

Status ActivationStats::record(int layer, const int32_t* ids, int64_t tokens, int k) {
  if (layer < 0 || layer >= num_layers())
    return invalid_argument("activation stats: layer " + std::to_string(layer) + " outside [0, " +
                            std::to_string(num_layers()) + ")");
  if (k <= 0) return invalid_argument("activation stats: k must be positive");
  if (tokens < 0) return invalid_argument("activation stats: negative token count");
  if (tokens > 0 && !ids) return invalid_argument("activation stats: null expert ids");
  Layer& l = layers_[static_cast<size_t>(layer)];
  if (l.k != 0 && l.k != k)
    return invalid_argument("activation stats: layer " + std::to_string(layer) + " was recorded with k = " +
                            std::to_string(l.k) + ", now k = " + std::to_string(k));
  for (int64_t c = 0; c < tokens * k; ++c)
    if (ids[c] < 0 || ids[c] >= num_experts_)
      return invalid_argument("activation stats: layer " + std::to_string(layer) + " token " + std::to_string(c / k) +
                              " slot " + std::to_string(c % k) + " names expert " + std::to_string(ids[c]) +
                              ", outside [0, " + std::to_string(num_experts_) + ")");
  l.k = k;
  if (l.pairs.empty()) l.pairs.assign(static_cast<size_t>(num_experts_) * static_cast<size_t>(num_experts_), 0);
  apply(l, ids, tokens, k, +1);
  l.batches.push_back({std::vector<int32_t>(ids, ids + tokens * k)});
  while (static_cast<int>(l.batches.size()) > window_) {
    const Batch& old = l.batches.front();
    apply(l, old.ids.data(), static_cast<int64_t>(old.ids.size()) / k, k, -1);
    l.batches.pop_front();
  }
  return Status::Ok();
}

int64_t ActivationStats::coactivation(int layer, int e, int f) const {
  const Layer& l = L(layer);
  if (l.pairs.empty() || e < 0 || f < 0 || e >= num_experts_ || f >= num_experts_) return 0;
  return l.pairs[static_cast<size_t>(e) * static_cast<size_t>(num_experts_) + static_cast<size_t>(f)];
}

std::vector<int64_t> ActivationStats::coactivation_matrix(int layer) const {
  const Layer& l = L(layer);
  std::vector<int64_t> m(static_cast<size_t>(num_experts_) * static_cast<size_t>(num_experts_), 0);
  if (!l.pairs.empty()) std::copy(l.pairs.begin(), l.pairs.end(), m.begin());
  return m;
}

std::vector<double> ActivationStats::activation_probability(int layer) const {
  const Layer& l = L(layer);
  std::vector<double> p(static_cast<size_t>(num_experts_), 0.0);
  if (l.tokens > 0)
    for (size_t e = 0; e < p.size(); ++e) p[e] = static_cast<double>(l.counts[e]) / static_cast<double>(l.tokens);
  return p;
}

RoutingTrace ActivationStats::routing(int layer) const {
  const Layer& l = L(layer);
  RoutingTrace t;
  t.k = l.k;
  for (const Batch& b : l.batches) t.ids.insert(t.ids.end(), b.ids.begin(), b.ids.end());
  return t;
}

std::vector<int64_t> ActivationStats::total_counts() const {
  std::vector<int64_t> c(static_cast<size_t>(num_experts_), 0);
  for (const Layer& l : layers_)
    for (size_t e = 0; e < c.size(); ++e) c[e] += l.counts[e];
  return c;
}

std::vector<int64_t> ActivationStats::total_coactivation() const {
  std::vector<int64_t> m(static_cast<size_t>(num_experts_) * static_cast<size_t>(num_experts_), 0);
  for (const Layer& l : layers_)
    for (size_t i = 0; i < l.pairs.size(); ++i) m[i] += l.pairs[i];
  return m;
}

void ActivationStats::clear() {
  for (Layer& l : layers_) {
    l.k = 0;
    l.tokens = 0;
    l.batches.clear();
    std::fill(l.counts.begin(), l.counts.end(), 0);
    l.pairs.clear();
  }
}

}  // namespace janus
