// Janus's performance model and SLO-aware scaling (the paper's Eq. 1-3 and Algorithm 2).
//
// Per layer l, one decode step costs
//   T_attn(l) = max(c_a, alpha * b + c_kv * b * S_ctx)     b = B / n_a rows per shard
//   T_moe(l)  = beta * a_max(l, n_e, B) + c_e              a_max: busiest instance's experts
//   T_comm(l) = c_comm + comm_per_member * (n_a + n_e) + comm_per_row * B + comm_per_shard_row * b
// and TPOT = sum over layers. The coefficients come from `janus profile` on the backends
// a deployment actually uses. Scaling chooses the fewest devices n_a + n_e that keep TPOT
// within the SLO at the batch Little's law implies (B = lambda * TPOT(B), lambda in output
// tokens per second), within memory: n_e * C >= E experts, and each shard's weights plus
// the KV cache of its b requests of S_ctx tokens fit the device.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/base/status.h"

namespace janus {

struct LayerCoefficients {
  double c_a = 0, alpha = 0, c_kv = 0;  // seconds; per row; per row per context token
  double beta = 0, c_e = 0;             // seconds per activated expert; fixed
  double c_comm = 0, comm_per_member = 0, comm_per_row = 0;
  double comm_per_shard_row = 0;        // seconds per row of one shard (its own link)
};

struct PerfModel {
  std::string source;   // what it was measured on ("tiny-qwen3-moe on cpu", ...)
  std::vector<LayerCoefficients> layers;  // every layer (dense layers have beta = c_e = 0)
  int num_experts = 0, top_k = 0, slots = 0;
  double attention_weight_bytes = 0;  // per shard
  double kv_bytes_per_token = 0;      // all layers
  double attention_layer_bytes = 0;   // weights one layer's attention reads (projections, norms)
  double expert_bytes = 0;            // one expert of one layer
  double device_bytes = 0;            // memory of one device
  double max_batch_per_shard = 1024;
  /// The measured T(a) of a MoE layer, (activated experts, seconds) in increasing a.
  /// A GPU's expert FFN is not linear at small a (one expert cannot fill the chip), so
  /// where these points exist moe_time interpolates them (and extrapolates the last
  /// segment) instead of using beta * a + c_e.
  std::vector<std::pair<double, double>> moe_curve;

  /// T_moe of `layer` for `a` activated experts on the busiest instance (0 for dense layers).
  double moe_time(int layer, double a) const;

  /// a_max of a layer for n_e instances at batch B.
  using AmaxFn = std::function<double(int layer, int instances, double batch)>;

  double layer_time(int layer, double batch, int n_a, int n_e, double s_ctx, const AmaxFn& amax) const;
  double tpot(double batch, int n_a, int n_e, double s_ctx, const AmaxFn& amax) const;
  /// The largest batch the shards' memory allows (Eq. 3's M_a constraint).
  double max_batch(int n_a, double s_ctx) const;

  std::string to_json() const;
  static Result<PerfModel> from_json(const std::string& text, const std::string& where);
  static Result<PerfModel> load(const std::string& path);
};

struct ScalingBounds {
  int min_attention = 1, max_attention = 8;
  int min_moe = 1, max_moe = 16;
  int max_devices = 64;
};

struct ScalingDecision {
  bool feasible = false;
  int attention = 0, moe = 0;
  double batch = 0;   // B* from Little's law
  double tpot = 0;    // at B*
  double tokens_per_s_per_device = 0;
  std::string why;    // when infeasible
};

/// Algorithm 2: the feasible (n_a, n_e) with the fewest devices (ties: lower TPOT) for a
/// demand of `lambda` output tokens/s.
ScalingDecision solve_scaling(const PerfModel& model, double lambda, double tpot_slo, double s_ctx,
                              const PerfModel::AmaxFn& amax, const ScalingBounds& bounds);

/// The smallest B in [1, b_max] with B >= lambda * TPOT(B) (the steady-state batch), or
/// -1 when even b_max cannot keep up.
double steady_batch(const std::function<double(double)>& tpot_of_batch, double lambda, double b_max);

/// Least squares y ~ a * x + b over points; returns {a, b}.
std::pair<double, double> fit_line(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace janus
