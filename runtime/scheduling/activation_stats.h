// Activation statistics over a sliding window: for each MoE layer, the routing of the last
// W layer batches, the per-expert activation counts c(e) and the pairwise co-activation
// counts a(e, e') the placement (runtime/scheduling/expert_placement.h, Janus Appendix B) and the
// a_max estimator (runtime/scheduling/amax_estimator.h) read. The Scheduler feeds it the top-k ids of
// every layer batch it schedules.
//
// c(e)     tokens in the window whose top-k contains e (a token naming e twice counts once);
// a(e, f)  tokens in the window whose top-k contains both e and f (e != f; symmetric;
//          a(e, e) = 0). Token-level co-activation: two experts that the same tokens pick
//          are activated together in every batch of those tokens, so spreading them
//          apart lets AEBS split a small batch's activated set across instances.
//
// Updating costs O(T k^2) per batch (adding the new batch, subtracting the one that
// leaves the window); reading is O(1) per entry. Memory: E^2 int32 per layer seen, plus
// the window's ids.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "runtime/base/status.h"

namespace janus {

/// Recorded routing: `tokens()` rows of k logical expert ids.
struct RoutingTrace {
  int k = 0;
  std::vector<int32_t> ids;
  int64_t tokens() const { return k > 0 ? static_cast<int64_t>(ids.size()) / k : 0; }
};

class ActivationStats {
 public:
  ActivationStats() = default;
  /// invalid_argument unless num_layers, num_experts and window are positive.
  static Result<ActivationStats> create(int num_layers, int num_experts, int window);

  /// Adds one layer batch (tokens x k ids) and drops the oldest one of that layer when the
  /// window is full. Refused (nothing recorded): layer out of range, an id outside
  /// [0, E), k different from earlier batches of the layer, k <= 0.
  Status record(int layer, const int32_t* expert_ids, int64_t tokens, int k);

  // Accessors take a layer in [0, num_layers()); others read as empty.
  int num_layers() const { return static_cast<int>(layers_.size()); }
  int num_experts() const { return num_experts_; }
  int window() const { return window_; }

  /// Batches and tokens currently in the layer's window.
  int batches(int layer) const { return static_cast<int>(L(layer).batches.size()); }
  int64_t tokens(int layer) const { return L(layer).tokens; }
  /// c(e) for the layer, [E].
  const std::vector<int64_t>& counts(int layer) const { return L(layer).counts; }
  /// a(e, f) for the layer.
  int64_t coactivation(int layer, int e, int f) const;
  /// The full a matrix of a layer, [E*E] row-major (all zeros before the first batch).
  std::vector<int64_t> coactivation_matrix(int layer) const;
  /// c(e) / tokens: the probability that a token activates e (zeros with no tokens).
  std::vector<double> activation_probability(int layer) const;
  /// The window's routing of a layer, oldest batch first.
  RoutingTrace routing(int layer) const;

  /// Sums over all layers (placement of one layout shared by every layer uses these).
  std::vector<int64_t> total_counts() const;
  std::vector<int64_t> total_coactivation() const;

  void clear();

 private:
  struct Batch {
    std::vector<int32_t> ids;  // tokens x k
  };
  struct Layer {
    int k = 0;
    int64_t tokens = 0;
    std::deque<Batch> batches;
    std::vector<int64_t> counts;
    std::vector<int32_t> pairs;  // [E*E], allocated on the first batch
  };
  // Out-of-range layers read as an empty layer (accessors never crash).
  const Layer& L(int layer) const;
  void apply(Layer& l, const int32_t* ids, int64_t tokens, int k, int sign);

  int num_experts_ = 0, window_ = 0;
  std::vector<Layer> layers_;
  std::vector<int32_t> scratch_;
};

}  // namespace janus
