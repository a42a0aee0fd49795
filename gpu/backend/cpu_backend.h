// The CPU backend: the reference kernels (runtime/model/cpu_forward.h) behind the actor compute
// interface, on host tensors. Activations are F32, MoE partial sums F64 (see cpu_forward.h
// for why), so the actor graph on the CPU reproduces the reference engine exactly.
#pragma once

#include <memory>

#include "gpu/backend/backend.h"

namespace janus {

std::unique_ptr<AttentionBackend> make_cpu_attention_backend(std::shared_ptr<const Model> model, const BackendOptions& options);
std::unique_ptr<RouterBackend> make_cpu_router_backend(std::shared_ptr<const Model> model);
std::unique_ptr<ExpertBackend> make_cpu_expert_backend(std::shared_ptr<const Model> model);

}  // namespace janus
