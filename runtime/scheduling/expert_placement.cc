#include "runtime/scheduling/expert_placement.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace janus {

namespace {

Status check_shape(int E, int G, int C) {
  if (E <= 0) return invalid_argument("expert placement: the model has no experts");
  if (G <= 0) return invalid_argument("expert placement: no expert instances");
  if (C <= 0) return invalid_argument("expert placement: slots per instance must be positive");
  if (static_cast<int64_t>(G) * C < E)
    return invalid_argument("expert placement: " + std::to_string(G) + " instances x " + std::to_string(C) + " slots = " +
                            std::to_string(static_cast<int64_t>(G) * C) + " slots, fewer than the " + std::to_string(E) +
                            " experts (every expert needs at least one)");
  if (static_cast<int64_t>(G) * C > (int64_t{1} << 30)) return invalid_argument("expert placement: too many slots");
  return Status::Ok();
}

Status check_load(int E, const std::vector<double>& load) {
  if (load.empty()) return Status::Ok();
  if (static_cast<int>(load.size()) != E)
    return invalid_argument("expert placement: " + std::to_string(load.size()) + " expert loads for " + std::to_string(E) +
                            " experts");
  for (size_t e = 0; e < load.size(); ++e)
    if (!std::isfinite(load[e]) || load[e] < 0)
      return invalid_argument("expert placement: load of expert " + std::to_string(e) + " is " + std::to_string(load[e]) +
                              " (must be finite and >= 0)");
  return Status::Ok();
}

struct Builder {
  int E, G, C;
  const std::vector<double>* coact;  // may be empty
  std::vector<std::vector<int32_t>> on;
  std::vector<double> slot_load;  // sum of per-replica loads on each instance
  std::vector<double> weight;     // per-replica load of each expert

  double a(int e, int f) const {
    if (coact->empty() || e == f) return 0;
    return (*coact)[static_cast<size_t>(e) * static_cast<size_t>(E) + static_cast<size_t>(f)];
  }
  bool holds(int g, int e) const {
    const auto& v = on[static_cast<size_t>(g)];
    return std::find(v.begin(), v.end(), e) != v.end();
  }
  // sum over experts x on g except `skip` of a(e, x).
  double penalty(int g, int e, int skip = -1) const {
    double s = 0;
    for (int32_t x : on[static_cast<size_t>(g)])
      if (x != skip) s += a(e, x);
    return s;
  }

  // Places one replica of e: Algorithm 3's choice, or the swap. `prefer` orders
  // otherwise-equal instances (ascending key), e.g. distance from the expert's home.
  Status place(int e, const std::vector<int>& prefer) {
    const double w = weight[static_cast<size_t>(e)];
    int best = -1;
    double best_pen = 0, best_load = 0;
    for (int g = 0; g < G; ++g) {
      if (static_cast<int>(on[static_cast<size_t>(g)].size()) >= C || holds(g, e)) continue;
      const double pen = penalty(g, e), ld = slot_load[static_cast<size_t>(g)];
      bool better = best < 0;
      if (!better) {
        const size_t gi = static_cast<size_t>(g), bi = static_cast<size_t>(best);
        if (pen != best_pen)
          better = pen < best_pen;
        else if (ld != best_load)
          better = ld < best_load;
        else if (on[gi].size() != on[bi].size())
          better = on[gi].size() < on[bi].size();
        else
          better = prefer[gi] < prefer[bi];
      }
      if (better) {
        best = g;
        best_pen = pen;
        best_load = ld;
      }
    }
    if (best >= 0) {
      on[static_cast<size_t>(best)].push_back(e);
      slot_load[static_cast<size_t>(best)] += w;
      return Status::Ok();
    }
    // Bounded swap: (g without e, j on g, h with a free slot lacking j).
    int bg = -1, bs = -1, bh = -1;
    double best_delta = 0;
    for (int g = 0; g < G; ++g) {
      if (holds(g, e)) continue;
      const auto& vg = on[static_cast<size_t>(g)];
      for (size_t s = 0; s < vg.size(); ++s) {
        const int j = vg[s];
        const double base = penalty(g, e, j) - penalty(g, j, j);
        for (int h = 0; h < G; ++h) {
          if (h == g || static_cast<int>(on[static_cast<size_t>(h)].size()) >= C || holds(h, j)) continue;
          const double delta = base + penalty(h, j);
          if (bg < 0 || delta < best_delta) {
            bg = g;
            bs = static_cast<int>(s);
            bh = h;
            best_delta = delta;
          }
        }
      }
    }
    if (bg < 0)
      return internal_error("expert placement: no instance can take a replica of expert " + std::to_string(e) +
                            " (no free slot, no swap)");
    const int j = on[static_cast<size_t>(bg)][static_cast<size_t>(bs)];
    on[static_cast<size_t>(bg)][static_cast<size_t>(bs)] = e;
    on[static_cast<size_t>(bh)].push_back(j);
    slot_load[static_cast<size_t>(bg)] += w - weight[static_cast<size_t>(j)];
    slot_load[static_cast<size_t>(bh)] += weight[static_cast<size_t>(j)];
    return Status::Ok();
  }
};

}  // namespace

Result<std::vector<int>> replica_counts(int E, int G, int C, const std::vector<double>& load) {
  JANUS_TRY(check_shape(E, G, C));
  JANUS_TRY(check_load(E, load));
  std::vector<int> R(static_cast<size_t>(E), 1);
  const int64_t spare = static_cast<int64_t>(G) * C - E;
  const bool stats = !load.empty() && std::any_of(load.begin(), load.end(), [](double x) { return x > 0; });
  if (!stats) {
    // Round-robin in id order, each expert capped at G replicas.
    int64_t given = 0;
    for (int round = 1; round < G && given < spare; ++round)
      for (int e = 0; e < E && given < spare; ++e, ++given) ++R[static_cast<size_t>(e)];
    return R;
  }
  for (int64_t s = 0; s < spare; ++s) {
    int best = -1;
    for (int e = 0; e < E; ++e) {
      const size_t ei = static_cast<size_t>(e);
      if (R[ei] >= G) continue;
      if (best < 0) {
        best = e;
        continue;
      }
      const size_t bi = static_cast<size_t>(best);
      // load[e]/R[e] vs load[best]/R[best], compared without dividing.
      const double lhs = load[ei] * R[bi], rhs = load[bi] * R[ei];
      if (lhs > rhs || (lhs == rhs && R[ei] < R[bi])) best = e;
    }
    if (best < 0) break;  // every expert on every instance: the rest stay empty
    ++R[static_cast<size_t>(best)];
  }
  return R;
}

Result<ExpertLayout> place_experts(const PlacementInput& in) {
  const int E = in.num_experts, G = in.num_instances, C = in.slots;
  JANUS_TRY(check_shape(E, G, C));
  JANUS_TRY(check_load(E, in.load));
  if (!in.coactivation.empty()) {
    if (in.coactivation.size() != static_cast<size_t>(E) * static_cast<size_t>(E))
      return invalid_argument("expert placement: co-activation matrix has " + std::to_string(in.coactivation.size()) +
                              " entries, expected " + std::to_string(E) + " x " + std::to_string(E));
    for (int e = 0; e < E; ++e)
      for (int f = 0; f < E; ++f) {
        const double x = in.coactivation[static_cast<size_t>(e) * static_cast<size_t>(E) + static_cast<size_t>(f)];
        if (!std::isfinite(x) || x < 0)
          return invalid_argument("expert placement: co-activation (" + std::to_string(e) + ", " + std::to_string(f) +
                                  ") is " + std::to_string(x) + " (must be finite and >= 0)");
        if (x != in.coactivation[static_cast<size_t>(f) * static_cast<size_t>(E) + static_cast<size_t>(e)])
          return invalid_argument("expert placement: co-activation matrix is not symmetric at (" + std::to_string(e) + ", " +
                                  std::to_string(f) + ")");
      }
  }
  std::vector<int> R;
  if (in.replicas.empty()) {
    JANUS_ASSIGN_OR_RETURN(R, replica_counts(E, G, C, in.load));
  } else {
    if (static_cast<int>(in.replicas.size()) != E)
      return invalid_argument("expert placement: " + std::to_string(in.replicas.size()) + " replica counts for " +
                              std::to_string(E) + " experts");
    int64_t sum = 0;
    for (int e = 0; e < E; ++e) {
      const int r = in.replicas[static_cast<size_t>(e)];
      if (r < 1 || r > G)
        return invalid_argument("expert placement: expert " + std::to_string(e) + " has " + std::to_string(r) +
                                " replicas, outside [1, " + std::to_string(G) + "] (at most one per instance)");
      sum += r;
    }
    if (sum > static_cast<int64_t>(G) * C)
      return invalid_argument("expert placement: " + std::to_string(sum) + " replicas do not fit in " + std::to_string(G) +
                              " x " + std::to_string(C) + " slots");
    R = in.replicas;
  }
  // Replicas by descending per-replica load, ties to the lower expert id.
  std::vector<int> order(static_cast<size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  auto w = [&](int e) { return in.load.empty() ? 0.0 : in.load[static_cast<size_t>(e)] / R[static_cast<size_t>(e)]; };
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return w(a) > w(b); });
  Builder b{E, G, C, &in.coactivation, std::vector<std::vector<int32_t>>(static_cast<size_t>(G)),
            std::vector<double>(static_cast<size_t>(G), 0.0), std::vector<double>(static_cast<size_t>(E))};
  for (int e = 0; e < E; ++e) b.weight[static_cast<size_t>(e)] = w(e);
  std::vector<int> prefer(static_cast<size_t>(G));
  std::iota(prefer.begin(), prefer.end(), 0);
  for (int e : order)
    for (int r = 0; r < R[static_cast<size_t>(e)]; ++r) JANUS_TRY(b.place(e, prefer));
  return ExpertLayout::create(E, C, std::move(b.on));
}

Result<ExpertLayout> auto_placement(int E, int G, int C, const std::vector<double>& load) {
  JANUS_TRY(check_shape(E, G, C));
  JANUS_TRY(check_load(E, load));
  JANUS_ASSIGN_OR_RETURN(std::vector<int> R, replica_counts(E, G, C, load));
  static const std::vector<double> kNoCoactivation;
  Builder b{E, G, C, &kNoCoactivation, std::vector<std::vector<int32_t>>(static_cast<size_t>(G)),
            std::vector<double>(static_cast<size_t>(G), 0.0), std::vector<double>(static_cast<size_t>(E), 0.0)};
  for (int e = 0; e < E; ++e) b.on[static_cast<size_t>(e % G)].push_back(e);
  // Extra replicas, hottest first (id order without statistics).
  std::vector<int> order(static_cast<size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  if (!load.empty())
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
      return load[static_cast<size_t>(x)] / R[static_cast<size_t>(x)] > load[static_cast<size_t>(y)] / R[static_cast<size_t>(y)];
    });
  // Zero co-activation and zero slot loads: place() picks the least-filled instance, ties
  // to the first one after the expert's home instance.
  std::vector<int> prefer(static_cast<size_t>(G));
  for (int r = 1; r < G; ++r)
    for (int e : order) {
      if (R[static_cast<size_t>(e)] <= r) continue;
      for (int g = 0; g < G; ++g) prefer[static_cast<size_t>(g)] = ((g - e % G) % G + G) % G;
      JANUS_TRY(b.place(e, prefer));
    }
  return ExpertLayout::create(E, C, std::move(b.on));
}

std::vector<double> coactivation_load(const ExpertLayout& layout, const std::vector<double>& coact) {
  const size_t E = static_cast<size_t>(layout.num_experts());
  std::vector<double> I(static_cast<size_t>(layout.num_instances()), 0.0);
  if (coact.size() != E * E) return I;
  for (int g = 0; g < layout.num_instances(); ++g) {
    const auto& v = layout.experts_on(g);
    for (size_t i = 0; i < v.size(); ++i)
      for (size_t j = i + 1; j < v.size(); ++j)
        I[static_cast<size_t>(g)] += coact[static_cast<size_t>(v[i]) * E + static_cast<size_t>(v[j])];
  }
  return I;
}

double max_coactivation_load(const ExpertLayout& layout, const std::vector<double>& coact) {
  const auto I = coactivation_load(layout, coact);
  return I.empty() ? 0.0 : *std::max_element(I.begin(), I.end());
}

}  // namespace janus
