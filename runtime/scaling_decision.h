// The Scaler's decision rule, shared by the Scaler actor and `janus simulate`: for a
// measured demand, Janus Algorithm 2 (runtime/perf_model.h) with a_max bounded per
// (layer, n_e, B) from the recent per-expert activation probabilities (Appendix A), on the
// placement the Scaler would install for each n_e.
#pragma once

#include <vector>

#include "runtime/graph_spec.h"
#include "runtime/perf_model.h"

namespace janus {

/// What the Scheduler's window says about the routing (SchedulerStats carries the same).
struct ActivationWindow {
  std::vector<double> load;                      // c(e) over all layers, [E] (empty: none yet)
  std::vector<std::vector<double>> probability;  // per layer P(token activates e), [L][E]
};

/// The (n_a, n_e) Algorithm 2 picks for `lambda` output tokens/s within the scaler{}
/// bounds; when no configuration meets the SLO, infeasible with the reason (callers then
/// give the deployment everything the bounds allow). `slots` is C, experts per instance.
ScalingDecision decide_scaling(const PerfModel& model, const ScalerSpec& scaler, int slots, double lambda,
                               const ActivationWindow& window);

}  // namespace janus
