// The null backend: the shapes and the control flow of a decode step without the math.
// Routing and tokens are deterministic pseudo-random functions of (layer, row, position),
// so schedulers see realistic choices; tensors are allocated but never filled. It exists
// to measure what the runtime itself costs (bench/runtime_overhead).
#pragma once

#include <memory>

#include "gpu/backend/backend.h"

namespace janus {

std::unique_ptr<AttentionBackend> make_null_attention_backend(std::shared_ptr<const Model> model, const BackendOptions& options);
std::unique_ptr<RouterBackend> make_null_router_backend(std::shared_ptr<const Model> model);
std::unique_ptr<ExpertBackend> make_null_expert_backend(std::shared_ptr<const Model> model);

}  // namespace janus
