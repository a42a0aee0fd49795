// An expert instance: the experts it holds (their weights and the device table of slot
// pointers per layer) and the grouped FFN over a layer's work list (moe_expert_layer).
#include <algorithm>
#include <array>
#include <map>
#include <string>

#include "gpu/backend/cuda/ops.h"
#include "gpu/cuda/device.h"
#include "gpu/cuda/moe.h"

namespace janus::cuda {

Status load_experts(ExpertState& instance, const std::vector<int32_t>& experts) {
  const ModelConfig& c = instance.model->config();
  std::vector<bool> seen(static_cast<size_t>(c.num_experts), false);
  for (int32_t e : experts) {
    if (e < 0 || e >= c.num_experts)
      return invalid_argument("set_experts: expert " + std::to_string(e) + " does not exist (the model has " +
                              std::to_string(c.num_experts) + ")");
    if (seen[static_cast<size_t>(e)]) return invalid_argument("set_experts: expert " + std::to_string(e) + " is listed twice");
    seen[static_cast<size_t>(e)] = true;
  }
  if (instance.table && experts == instance.experts) return Status::Ok();
  // Load the new experts first (the old ones stay usable until the switch).
  std::map<int32_t, std::vector<std::array<WeightRef, 3>>> next;
  for (int32_t e : experts) {
    auto it = instance.held.find(e);
    if (it != instance.held.end()) {
      next[e] = it->second;
      continue;
    }
    std::vector<std::array<WeightRef, 3>> per_layer(static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      if (!c.is_sparse(l)) continue;
      const ExpertWeights& w = instance.model->weights().layers[static_cast<size_t>(l)].experts[static_cast<size_t>(e)];
      auto& s = per_layer[static_cast<size_t>(l)];
      JANUS_ASSIGN_OR_RETURN(s[0], device_weight(instance.engine.ordinal, w.gate, instance.wdt));
      JANUS_ASSIGN_OR_RETURN(s[1], device_weight(instance.engine.ordinal, w.up, instance.wdt));
      JANUS_ASSIGN_OR_RETURN(s[2], device_weight(instance.engine.ordinal, w.down, instance.wdt));
    }
    next[e] = std::move(per_layer);
  }
  // Slot pointer arrays: [layer][gate, up, down][slot] device pointers.
  const size_t C = experts.size(), L = static_cast<size_t>(c.num_layers);
  std::vector<const void*> ptrs(std::max<size_t>(L * 3 * C, 1), nullptr);
  for (size_t s = 0; s < C; ++s) {
    const auto& per_layer = next.at(experts[s]);
    for (size_t l = 0; l < L; ++l)
      for (size_t m = 0; m < 3; ++m)
        if (per_layer[l][m]) ptrs[(l * 3 + m) * C + s] = per_layer[l][m]->data;
  }
  JANUS_ASSIGN_OR_RETURN(std::shared_ptr<void> table, instance.engine.pool->alloc(ptrs.size() * sizeof(void*)));
  JANUS_TRY(instance.engine.upload_to(table.get(), ptrs.data(), ptrs.size() * sizeof(void*)));
  std::vector<int32_t> slot_of(static_cast<size_t>(c.num_experts), -1);
  for (size_t s = 0; s < C; ++s) slot_of[static_cast<size_t>(experts[s])] = static_cast<int32_t>(s);
  JANUS_ASSIGN_OR_RETURN(std::shared_ptr<void> slot_of_device, instance.engine.pool->alloc(slot_of.size() * 4));
  JANUS_TRY(instance.engine.upload_to(slot_of_device.get(), slot_of.data(), slot_of.size() * 4));
  // A wait off the step path (a placement is loaded before it takes effect): the old slot
  // table and the dropped experts' weights are freed below, and queued layers of this
  // stream may still read them.
  JANUS_TRY(instance.engine.sync());
  instance.table = std::move(table);
  instance.slot_of_device = std::move(slot_of_device);
  instance.held.swap(next);  // dropped experts are freed with `next`
  instance.experts = experts;
  instance.slot_of = std::move(slot_of);
  return Status::Ok();
}

namespace {

Status check_expert_input(const ModelConfig& c, int layer, const Tensor& h_in) {
  if (layer < 0 || layer >= c.num_layers || !c.is_sparse(layer))
    return invalid_argument("experts: layer " + std::to_string(layer) + " is not a MoE layer");
  if (h_in.cols != c.hidden_size || (h_in.dtype != kF32 && h_in.dtype != DType::kBF16))
    return invalid_argument("experts: activations " + shape(h_in) + ", want F32 or BF16 of width " + std::to_string(c.hidden_size));
  return Status::Ok();
}

// The grouped FFN of `layer` over per-(row, choice) slots and weights already in device
// memory ([n * k] each, `choice` slots then weights), into out.
Status queue_expert_layer(ExpertState& instance, int layer, const Tensor& h_in, const void* choice, Tensor& out) {
  const ModelConfig& c = instance.model->config();
  const int64_t n = h_in.rows;
  const int k = c.top_k;
  const size_t nk = static_cast<size_t>(n) * k;
  Tensor h;
  JANUS_TRY(instance.engine.input(h_in, &h));
  const int C = static_cast<int>(instance.experts.size());
  MoeArgs a;
  a.x = h.data;
  a.x_dtype = h.dtype;
  a.rows = n;
  a.choice_slot = static_cast<const int32_t*>(choice);
  a.choice_weight = reinterpret_cast<const float*>(static_cast<const int32_t*>(choice) + nk);
  a.top_k = k;
  const void* const* table = static_cast<const void* const*>(instance.table.get());
  a.experts.gate = table + (static_cast<size_t>(layer) * 3 + 0) * C;
  a.experts.up = table + (static_cast<size_t>(layer) * 3 + 1) * C;
  a.experts.down = table + (static_cast<size_t>(layer) * 3 + 2) * C;
  a.experts.dtype = instance.wdt;
  a.experts.num_slots = C;
  a.experts.hidden = c.hidden_size;
  a.experts.inter = c.moe_intermediate_size;
  a.out = out.data;
  a.out_dtype = kF32;
  a.accumulate = false;
  a.workspace_bytes = moe_workspace_bytes(n, k, C, c.hidden_size, c.moe_intermediate_size);
  JANUS_ASSIGN_OR_RETURN(a.workspace, instance.engine.scratch(a.workspace_bytes));
  return moe_expert_layer(a, instance.engine.stream);
}

}  // namespace

Status run_experts(ExpertState& instance, int layer, const Tensor& h_in, const std::vector<ExpertWork>& work, Tensor* partial) {
  const ModelConfig& c = instance.model->config();
  JANUS_TRY(check_expert_input(c, layer, h_in));
  const int64_t n = h_in.rows;
  JANUS_ASSIGN_OR_RETURN(Tensor out, instance.engine.tensor(kF32, n, c.hidden_size));
  if (n == 0) {
    *partial = std::move(out);
    return Status::Ok();
  }
  if (work.empty() || instance.experts.empty()) {
    if (!work.empty()) return invalid_argument("experts: work for an instance that holds no experts");
    JANUS_CUDA_TRY(cudaMemsetAsync(out.data, 0, out.bytes(), instance.engine.stream));
    JANUS_TRY(instance.engine.finish({&out}));
    *partial = std::move(out);
    return Status::Ok();
  }
  // The work list as the kernel wants it: per (row, choice) this instance's slot (-1:
  // none) and gate weight, each row's items in the order given (the combine sums them
  // in that order).
  const int k = c.top_k;
  const size_t nk = static_cast<size_t>(n) * k;
  JANUS_ASSIGN_OR_RETURN(void* stage, instance.engine.stage(nk * 8));
  auto* slot = static_cast<int32_t*>(stage);
  auto* weight = reinterpret_cast<float*>(slot + nk);
  std::fill(slot, slot + nk, -1);
  std::fill(weight, weight + nk, 0.f);
  instance.fill.assign(static_cast<size_t>(n), 0);
  for (const ExpertWork& w : work) {
    if (w.row < 0 || w.row >= n)
      return invalid_argument("experts: work item for row " + std::to_string(w.row) + " of a batch of " + std::to_string(n));
    const int32_t s = w.expert >= 0 && w.expert < c.num_experts ? instance.slot_of[static_cast<size_t>(w.expert)] : -1;
    if (s < 0) return invalid_argument("experts: expert " + std::to_string(w.expert) + " is not held by this instance");
    int& f = instance.fill[static_cast<size_t>(w.row)];
    if (f >= k)
      return invalid_argument("experts: row " + std::to_string(w.row) + " has more than top_k = " + std::to_string(k) +
                              " work items");
    slot[static_cast<size_t>(w.row) * k + f] = s;
    weight[static_cast<size_t>(w.row) * k + f] = w.weight;
    ++f;
  }
  JANUS_ASSIGN_OR_RETURN(void* choice, instance.engine.scratch(nk * 8));
  JANUS_CUDA_TRY(cudaMemcpyAsync(choice, stage, nk * 8, cudaMemcpyHostToDevice, instance.engine.stream));
  JANUS_TRY(queue_expert_layer(instance, layer, h_in, choice, out));
  JANUS_TRY(instance.engine.finish({&out}));
  *partial = std::move(out);
  return Status::Ok();
}

Status run_routed_experts(ExpertState& instance, int layer, const Tensor& h_in, const DeviceRouting& routing, Tensor* partial) {
  const ModelConfig& c = instance.model->config();
  JANUS_TRY(check_expert_input(c, layer, h_in));
  const int64_t n = h_in.rows;
  if (routing.rows != n || routing.top_k != c.top_k || routing.device.cols != n * c.top_k || routing.device.rows != 2)
    return invalid_argument("experts: device routing of " + std::to_string(routing.rows) + " rows x " +
                            std::to_string(routing.top_k) + " for a batch of " + std::to_string(n) + " rows x " +
                            std::to_string(c.top_k));
  JANUS_ASSIGN_OR_RETURN(Tensor out, instance.engine.tensor(kF32, n, c.hidden_size));
  if (n == 0) {
    *partial = std::move(out);
    return Status::Ok();
  }
  if (instance.experts.empty()) {  // no work can be here: the partial sums are zero
    JANUS_CUDA_TRY(cudaMemsetAsync(out.data, 0, out.bytes(), instance.engine.stream));
    JANUS_TRY(instance.engine.finish({&out}));
    *partial = std::move(out);
    return Status::Ok();
  }
  Tensor r;
  JANUS_TRY(instance.engine.input(routing.device, &r));  // a device wait on the gate's marker
  const size_t nk = static_cast<size_t>(n) * c.top_k;
  JANUS_ASSIGN_OR_RETURN(void* choice, instance.engine.scratch(nk * 8));
  const auto* ids = static_cast<const int32_t*>(r.data);
  JANUS_TRY(moe_choices_from_routing(ids, reinterpret_cast<const float*>(ids + nk), static_cast<int64_t>(nk),
                                     static_cast<const int32_t*>(instance.slot_of_device.get()), c.num_experts,
                                     static_cast<int32_t*>(choice), reinterpret_cast<float*>(static_cast<int32_t*>(choice) + nk),
                                     instance.engine.stream));
  JANUS_TRY(queue_expert_layer(instance, layer, h_in, choice, out));
  JANUS_TRY(instance.engine.finish({&out}));
  *partial = std::move(out);
  return Status::Ok();
}

}  // namespace janus::cuda
