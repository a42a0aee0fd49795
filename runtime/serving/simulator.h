// `janus simulate`: a deployment in virtual time, on as many devices as wanted, from the
// performance model measured by `janus profile`.
//
// What is real and what is simulated. The decisions are the runtime's own code: the
// Frontend's admission rule (runtime/scheduling/kv_admission.h), the Scheduler's policies on each
// layer batch's routing (runtime/scheduling/scheduling_policy.h: AEBS, random_replica, primary), its
// activation window (runtime/scheduling/activation_stats.h), the Scaler's placement (Algorithm 3,
// runtime/scheduling/expert_placement.h) and its Algorithm 2 decision (runtime/config/scaling_decision.h).
// What is simulated is the backend: each step's time is computed, not measured, from
//
//   * attention per shard:  max(c_a, alpha * rows + c_kv * context tokens)  per layer,
//     the profile's roofline scaled by bytes to the simulated model (below);
//   * experts: T(a_max) per MoE layer, the profile's measured curve, where a_max comes
//     from running the real policy on sampled top-k routing (Zipf-skewed popularity per
//     layer, seeded);
//   * the network: a link model (per-GPU NIC bandwidth and latency across nodes, NVLink
//     inside a node) applied to the bytes each system's exchange moves (below), plus the
//     runtime's own messaging cost per layer batch from the profile.
//
// Scaling a profile to another model (say the 1-layer "dsv2-slice" measured on an H100 to
// the 60-layer DeepSeek-V2): the attention roofline's fixed cost and per-row cost scale
// with the weight bytes one layer's attention reads, the per-context-token cost with the
// KV bytes per token, the expert curve with the bytes of one expert; the per-step work
// outside the layers (LM head, dense MLPs) is charged at the bandwidth the profiled
// attention achieved. All of these assume the memory-bound regime decode runs in.
//
// Systems (how a deployment of n_a + n_e or d devices spends a step; per MoE layer):
//   janus       MoE-side gate, complete activations to every MoE node (two-phase: one
//               inter-node copy per node, NVLink fan-out inside), AEBS over replicas,
//               shared experts on the attention side while it waits (paper §2.1):
//               T = T_attn + max(T_shared, T_exchange + T(a_max))
//   megascale   MegaScale-Infer-like: attention-side gate, each token's activation sent
//               to every instance hosting one of its chosen replicas, random replica
//               (EPLB-like), ping-pong over m micro-batches, and only plans whose
//               attention and MoE times are within `balance` of each other:
//               T = m * max(T_attn(B/m), T_exchange(B/m) + T(a_max(B/m)))
//   monolithic  SGLang-like: attention tensor-parallel over groups of 8 GPUs (weights
//               split 8 ways, MLA's latent KV replicated), experts expert-parallel over
//               all d GPUs without replicas, all-to-all dispatch and combine; d in steps
//               of 8: T = T_attn/TP + T_allreduce + 2 * T_all2all + T(a_max)
//   monolithic-dp  the same with data-parallel attention (each GPU its own rows and a
//               whole copy of the attention weights, SGLang's --enable-dp-attention)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/config/graph_spec.h"
#include "runtime/model/model_config.h"
#include "runtime/scheduling/perf_model.h"
#include "runtime/base/status.h"
#include "runtime/config/workload.h"

namespace janus {

/// What the simulator needs to know of a model: sizes, not weights.
struct SimShape {
  std::string name;
  int layers = 0, sparse_layers = 0, experts = 0, top_k = 0, hidden = 0;
  double expert_bytes = 0;              // one expert of one layer
  double attention_layer_bytes = 0;     // attention-side weights one MoE layer reads (incl. shared experts)
  double shared_layer_bytes = 0;        // the shared experts' part of it (Janus overlaps them with the exchange)
  double step_bytes = 0;                // per step outside the MoE layers: LM head, dense layers' MLPs
  double attention_bytes = 0;           // every weight an attention replica holds
  double kv_bytes_per_token_layer = 0;  // KV cache bytes per token per layer
  double act_bytes = 2;                 // bytes per activation element on the wire (BF16)

  /// DeepSeek-V2 (236B): 60 layers (the first dense), 160 routed experts top-6 of
  /// intermediate 1536 plus 2 shared, hidden 5120, MLA (KV latent 512 + rope 64), BF16.
  static SimShape deepseek_v2();
  /// A Qwen3-MoE/Mixtral-style checkpoint's shape at `weight_bytes` per parameter.
  static SimShape from_config(const ModelConfig& c, double weight_bytes);
  /// "deepseek-v2"; not_found otherwise (naming the known ones).
  static Result<SimShape> builtin(const std::string& name);
};

/// The network between GPUs.
struct LinkModel {
  int gpus_per_node = 8;
  double nic_bytes_per_s = 50e9;       // per GPU across nodes (400 Gb/s InfiniBand, the paper's)
  double nic_latency_s = 10e-6;
  double nvlink_bytes_per_s = 450e9;   // per GPU per direction inside a node (H100 NVLink: 900 GB/s both ways)
  double nvlink_latency_s = 3e-6;
  double per_message_s = 2e-6;         // extra cost per separate transfer a GPU issues
};

enum class SimSystem { kJanus, kMegaScale, kMonolithic, kMonolithicDp };
const char* sim_system_name(SimSystem s);
Result<SimSystem> parse_sim_system(const std::string& name);

/// Everything a step's time depends on besides the batch.
struct SimCosts {
  SimShape shape;
  double c_a = 0, alpha = 0, c_kv = 0;  // per MoE layer, scaled to the shape
  double step_fixed_s = 0;              // per step on each attention replica
  PerfModel expert_model;               // T(a) of one MoE layer (curve or beta, c_e), scaled
  double expert_scale = 1;              // shape expert bytes / profiled expert bytes
  double messaging_s = 0, messaging_per_member_s = 0;  // the runtime's per layer batch
  LinkModel link;
  double device_bytes = 80e9;
  double memory_fraction = 0.92;        // of a device's memory usable for weights and KV
  int micro_batches = 2;                // megascale's ping-pong
  double balance = 2.0;                 // megascale: max(T_attn, T_moe) / min(...) allowed
  double zipf = 0.3;                    // expert popularity skew of the sampled routing
  int sampled_layers = 8;               // MoE layers whose routing is sampled (the rest: their mean)
  uint64_t seed = 1;
  /// The Janus system's scheduling policy (a config's scheduler{policy=}, built-in or
  /// registered: a Python policy runs in virtual time too); megascale keeps random_replica.
  std::string janus_policy = "aebs";

  /// Scales a measured profile to `shape` (see the header comment). Refused: a profile
  /// without the byte counts `janus profile` writes, or without MoE coefficients.
  static Result<SimCosts> from_profile(const PerfModel& profile, const SimShape& shape);

  double usable_bytes() const { return device_bytes * memory_fraction; }
  /// Experts per layer one expert instance can hold (C).
  int expert_slots() const;
  double expert_time(double a) const;
  double attention_time(double rows, double context_tokens) const;
  /// The shared experts' part of attention_time (0 without shared experts).
  double shared_time(double rows) const;
};

/// One deployment shape.
struct SimConfig {
  SimSystem system = SimSystem::kJanus;
  int attention = 1, moe = 1;  // monolithic: `attention` is the device count d, moe = 0
  bool monolithic() const { return system == SimSystem::kMonolithic || system == SimSystem::kMonolithicDp; }
  int devices() const { return monolithic() ? attention : attention + moe; }
  /// GPUs one attention replica spans (monolithic TP), and how many replicas there are.
  int attention_tp(int gpus_per_node) const;
  int attention_groups(int gpus_per_node) const { return monolithic() ? attention / attention_tp(gpus_per_node) : attention; }
  std::string name() const;  // "2A6E", "16 (mono)"
};

/// Time of one decode step and where it went, seconds.
struct SimStepTime {
  double total = 0, attention = 0, exchange = 0, experts = 0, fixed = 0;
  double amax = 0;  // mean a_max over the sampled layers
};

/// The per-step time model with its routing sampler and placement, for one SimConfig.
class StepModel {
 public:
  /// Places the experts (Algorithm 3 from the expected popularity, or from `load` and
  /// `coactivation` when given; monolithic: E/d contiguous per GPU). Refused: a config
  /// whose weights do not fit, with the reason.
  static Result<StepModel> create(const SimCosts& costs, const SimConfig& config, const std::vector<double>& load = {},
                                  const std::vector<double>& coactivation = {});
  /// Step time for these shards' rows and context tokens (one entry per attention shard;
  /// monolithic: per TP group). `step` varies the sampled routing.
  Result<SimStepTime> step(const std::vector<double>& rows, const std::vector<double>& context, uint64_t step);
  /// KV cache blocks of `block_size` tokens one shard (monolithic: one TP group) can hold.
  int kv_blocks(int block_size) const;
  /// The routing of the sampled layers in the last step (layer-major), for activation stats.
  const std::vector<std::vector<int32_t>>& last_routing() const { return last_routing_; }
  const SimConfig& config() const { return config_; }
  const std::vector<int>& sampled_layers() const { return layers_; }

  StepModel(StepModel&&) noexcept;
  StepModel& operator=(StepModel&&) noexcept;
  ~StepModel();

 private:
  StepModel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  SimConfig config_;
  std::vector<int> layers_;
  std::vector<std::vector<int32_t>> last_routing_;
};

/// Whether a config's weights fit: empty when they do, else why not.
std::string sim_memory_check(const SimCosts& costs, const SimConfig& config);

// -- serving in virtual time -----------------------------------------------------------

struct SimServingOptions {
  SimConfig initial;
  std::vector<PlannedRequest> requests;  // arrivals (token ids are not looked at)
  double duration_s = 0;                 // stop admitting after this (0: when all are done)
  int block_size = 16;
  int max_batch_per_shard = 512;
  ScalerSpec scaler;                     // policy "slo": Algorithm 2 every interval
  PerfModel scaling_model;               // the model Algorithm 2 uses (SimCosts::scaling_model)
  double weight_load_bytes_per_s = 25e9; // how fast a new instance loads its experts
  int stats_window = 32;                 // layer batches in the activation window
  double slo_ttft_s = 2, slo_tpot_s = 0.2;
  bool progress = false;
};

struct SimDecision {
  double t_s = 0, lambda = 0;
  int attention = 0, moe = 0;
  bool feasible = false, changed = false;
  double predicted_tpot = 0;
};

struct SimServingReport {
  int submitted = 0, completed = 0;
  double virtual_s = 0, wall_s = 0;
  int64_t steps = 0, tokens = 0;
  std::vector<double> ttft, tpot;        // per completed request, seconds
  double goodput_requests = 0;           // completed within both SLOs
  double device_seconds = 0;             // integral of devices held over time
  std::vector<SimDecision> decisions;
  std::vector<std::pair<double, int>> devices_over_time;  // (t, devices) at each change
  int moved_requests = 0;                // resumed elsewhere after their shard retired
};

/// Runs the Frontend/Scheduler/Scaler decisions against the step model in virtual time.
Result<SimServingReport> simulate_serving(const SimCosts& costs, const SimServingOptions& options);

/// Algorithm 2's view of the simulated model: per-layer coefficients from SimCosts (the
/// Janus system's attention, the expert curve, the exchange at the configs' typical size).
PerfModel scaling_model(const SimCosts& costs);

// -- the per-GPU throughput study (the paper's Fig. 9 shape, docs/paper-notes.md §3) ----

struct StudyOptions {
  std::vector<int> batches = {64, 256, 512};
  std::vector<double> slos_ms = {150, 200};
  std::vector<SimSystem> systems = {SimSystem::kJanus, SimSystem::kMegaScale, SimSystem::kMonolithic, SimSystem::kMonolithicDp};
  int prompt = 16, output = 256;
  int max_devices = 64;
  int steps = 12;  // sampled steps per candidate (routing samples; TPOT is their mean)
  bool progress = false;
};

struct StudyCandidate {
  SimConfig config;
  int batch = 0;
  double tpot_s = 0, tpot_p99_s = 0;  // over the sampled steps
  double tokens_per_s_per_device = 0;
  SimStepTime mean;                   // mean step split
  std::string infeasible;             // memory or balance
};

struct StudyRow {
  SimSystem system;
  int batch = 0;
  double slo_ms = 0;
  bool feasible = false;
  StudyCandidate best;  // the highest per-device throughput within the SLO
};

struct StudyResult {
  std::vector<StudyRow> rows;
  std::vector<StudyCandidate> candidates;  // every config evaluated (for the plot)
  double wall_s = 0;
};

/// For each system, batch and SLO: every deployment shape within max_devices (janus:
/// all n_a, n_e; megascale: the balanced ones; monolithic: d = 8, 16, ...), its steady
/// decode TPOT at that batch of prompt/output requests, and the best within the SLO.
Result<StudyResult> run_study(const SimCosts& costs, const StudyOptions& options);

/// CSV of the rows (system, batch, slo_ms, feasible, config, devices, tpot_ms, tpg, ...).
std::string study_csv(const StudyResult& r);
std::string candidates_csv(const StudyResult& r);

}  // namespace janus
