#include "runtime/serving/simulation_config.h"

#include "runtime/model/model_config.h"
#include "runtime/model/presets.h"

namespace janus {

namespace {

Result<SimShape> shape_of(const GraphSpec& g) {
  if (g.simulate.shape != "model") return SimShape::builtin(g.simulate.shape);
  ModelConfig c;
  double wb = 4;
  if (!g.model.path.empty()) {
    JANUS_ASSIGN_OR_RETURN(c, load_model_config(g.model.path));
    wb = g.model.dtype == "f32" ? 4 : 2;
  } else {
    const ModelPreset* p = find_preset(g.model.preset);
    if (p == nullptr) return not_found("no model preset named '" + g.model.preset + "'");
    c = p->config;
    const std::string dt = g.model.dtype.empty() ? dtype_name(p->default_dtype) : g.model.dtype;
    wb = dt == "f32" ? 4 : 2;
  }
  return SimShape::from_config(c, wb);
}

}  // namespace

Result<SimCosts> sim_costs_from_spec(const GraphSpec& g) {
  const SimulateSpec& m = g.simulate;
  if (m.profile.empty())
    return invalid_argument(g.source + ": simulate{} needs 'profile' (the JSON janus profile writes)" +
                            (m.where.empty() ? std::string(" — the config has no simulate{} section") : ""));
  JANUS_ASSIGN_OR_RETURN(PerfModel pm, PerfModel::load(m.profile));
  JANUS_ASSIGN_OR_RETURN(SimShape shape, shape_of(g));
  JANUS_ASSIGN_OR_RETURN(SimCosts c, SimCosts::from_profile(pm, shape));
  c.device_bytes = m.device_gb * 1e9;
  c.memory_fraction = m.memory_fraction;
  c.link.gpus_per_node = m.gpus_per_node;
  c.link.nic_bytes_per_s = m.nic_gbps * 1e9 / 8;
  c.link.nic_latency_s = m.nic_latency_us * 1e-6;
  c.link.nvlink_bytes_per_s = m.nvlink_gbps * 1e9 / 8;
  c.link.nvlink_latency_s = m.nvlink_latency_us * 1e-6;
  c.zipf = m.zipf;
  c.sampled_layers = m.sampled_layers;
  c.seed = m.seed;
  if (!g.scheduler.where.empty()) c.janus_policy = g.scheduler.policy;  // only where the config has scheduler{}
  c.micro_batches = m.micro_batches;
  c.balance = m.balance;
  return c;
}

Result<SimServingOptions> sim_serving_options(const GraphSpec& g, const SimCosts& costs, SimSystem system) {
  SimServingOptions o;
  o.initial.system = system;
  if (system == SimSystem::kMonolithic || system == SimSystem::kMonolithicDp) {
    const int d = g.attention.shards + g.experts.instances, n = costs.link.gpus_per_node;
    o.initial.attention = d <= n ? d : (d + n - 1) / n * n;
    o.initial.moe = 0;
  } else {
    o.initial.attention = g.attention.shards;
    o.initial.moe = g.experts.instances;
  }
  o.block_size = g.attention.block_size;
  o.max_batch_per_shard = g.attention.max_batch;
  o.scaler = g.scaler;
  o.scaling_model = scaling_model(costs);
  o.weight_load_bytes_per_s = g.simulate.weight_load_gbps * 1e9 / 8;
  o.duration_s = g.simulate.duration_s;
  o.slo_ttft_s = g.workload.slo_ttft_ms / 1e3;
  o.slo_tpot_s = g.workload.slo_tpot_ms / 1e3;
  ArrivalSpec arrivals = g.workload.arrivals;
  if (arrivals.kind == "all" && !g.workload.prompts.empty()) {
    for (const auto& p : g.workload.prompts) o.requests.push_back({0.0, p, g.workload.max_new_tokens});
  } else {
    JANUS_ASSIGN_OR_RETURN(o.requests, plan_workload(arrivals, 1000, 1 << 20));
  }
  return o;
}

StudyOptions sim_study_options(const GraphSpec& g) {
  const SimulateSpec& m = g.simulate;
  StudyOptions o;
  o.batches = m.study_batches;
  o.slos_ms = m.study_slos_ms;
  o.prompt = m.study_prompt;
  o.output = m.study_output;
  o.max_devices = m.max_devices;
  return o;
}

}  // namespace janus
