// The Scaler's decision rule, shared by the Scaler actor and `janus simulate`: for a
// measured demand, Janus Algorithm 2 (runtime/scheduling/perf_model.h) with a_max bounded per
// (layer, n_e, B) from the recent per-expert activation probabilities (Appendix A), on the
// placement the Scaler would install for each n_e.
#pragma once

#include <vector>

#include "runtime/config/graph_spec.h"
#include "runtime/scheduling/perf_model.h"

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

/// Hysteresis, so that bursty demand does not make the deployment flap between
/// neighbouring configurations (each change moves requests and weights): growing happens
/// at once, since the SLO is at stake; shrinking only once `shrink_after` decisions in a row
/// asked for fewer devices, and then to the most any of them asked for. A decision that
/// grows one pool and shrinks the other grows it and keeps the other.
class ShrinkHold {
 public:
  explicit ShrinkHold(int shrink_after) : after_(shrink_after < 1 ? 1 : shrink_after) {}
  struct Target {
    int attention = 0, moe = 0;
    bool held = false;  // Algorithm 2 asked for less, and the hold kept the current size
  };
  /// Where to go from (attention, moe) when Algorithm 2 picks (want_attention, want_moe).
  Target next(int attention, int moe, int want_attention, int want_moe);

 private:
  int after_;
  int streak_ = 0;
  int most_attention_ = 0, most_moe_ = 0;
};

}  // namespace janus
