// Estimating a_max, the largest number of distinct activated experts on any instance,
// for the performance model T_moe = beta * a_max(n_e, B) + c_e (Janus Section 3.5,
// Appendix A).
//
// Monte Carlo (the paper's table): for each (n_e, B) and layer, draw B tokens with
// replacement from the layer's recent routing (runtime/scheduling/activation_stats.h), schedule
// them with a policy on the placement for n_e instances, and record a_max; repeat and
// keep the mean, p50, p99 and max. Deterministic for a seed.
//
// Analytic bound (Appendix A): with p_e the probability that a token activates e,
//   E[a_g] <= sum over e on g of [1 - (1 - p_e)^B]        (= C [1 - (1 - k/E)^B] uniform)
//   a_max  <= min(C, abar + sqrt(2 abar ln n_e)) + 1,     abar = max_g of the above.
// One-sided and conservative: it ignores how AEBS spreads the activated set, so it never
// under-predicts (tests/runtime/amax_estimator_test.cc holds it to the Monte Carlo mean).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/scheduling/activation_stats.h"
#include "runtime/base/expert_layout.h"
#include "runtime/scheduling/scheduling_policy.h"
#include "runtime/base/status.h"

namespace janus {

struct AmaxBound {
  std::vector<double> instance_mean;  // the bound on E[a_g] per instance
  double mean_max = 0;                // abar = max_g instance_mean
  double amax = 0;                    // min(C, abar + sqrt(2 abar ln n_e)) + 1
};

/// p [E]: per-token activation probabilities (each in [0, 1]). Refused: wrong size,
/// probabilities outside [0, 1], batch < 0.
Result<AmaxBound> amax_analytic_bound(const ExpertLayout& layout, const std::vector<double>& p, int64_t batch);

/// p_e = k/E for every expert (uniform top-k routing).
std::vector<double> uniform_activation(int num_experts, int k);

/// p_e from a trace: the fraction of its tokens whose top-k contains e.
Result<std::vector<double>> activation_probability(const RoutingTrace& trace, int num_experts);

struct AmaxStats {
  int64_t batch = 0;
  int samples = 0;
  double mean = 0, stddev = 0;
  int p50 = 0, p99 = 0, max = 0;
};

/// `samples` batches of `batch` tokens drawn with replacement from the trace (seeded),
/// each scheduled by `policy` (batch_id = sample index) on `layout`.
Result<AmaxStats> amax_monte_carlo(const RoutingTrace& trace, const ExpertLayout& layout, SchedulingPolicy& policy,
                                   int64_t batch, int samples, uint64_t seed);

/// The (n_e, B, layer) table the scaler looks a_max up in.
class AmaxTable {
 public:
  struct Entry {
    int instances = 0;
    int64_t batch = 0;
    int layer = 0;
    AmaxStats mc;
    double bound = 0;  // the analytic bound with p from the layer's trace
  };

  /// One entry per (layout, batch size, layer trace); layouts for different n_e (one
  /// layout per n_e), all for the trace's experts. Refused: no traces or layouts, a
  /// layout for another expert count, two layouts with one n_e, an empty trace, an
  /// unknown policy, batch sizes not positive.
  static Result<AmaxTable> build(const std::vector<RoutingTrace>& layer_traces, const std::vector<ExpertLayout>& layouts,
                                 const std::vector<int64_t>& batches, const std::string& policy, int samples, uint64_t seed);
  /// The same from the windows of ActivationStats (layers with no batches are skipped).
  static Result<AmaxTable> build(const ActivationStats& stats, const std::vector<ExpertLayout>& layouts,
                                 const std::vector<int64_t>& batches, const std::string& policy, int samples, uint64_t seed);

  const std::vector<Entry>& entries() const { return entries_; }

  /// Mean a_max for n_e instances at batch B in a layer (layer < 0: the largest over
  /// layers, the slowest layer), linear in B between the tabulated batch sizes and
  /// clamped outside them. not_found for an n_e or layer not in the table.
  Result<double> lookup(int instances, int64_t batch, int layer = -1) const;

  /// A printable table, one row per entry.
  std::string to_string() const;

 private:
  std::vector<Entry> entries_;
};

}  // namespace janus
