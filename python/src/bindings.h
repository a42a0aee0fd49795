// One function per binding source; module.cc calls them in order.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/model/reference_engine.h"

namespace janus::python {

void bind_engine(pybind11::module_& m);      // engine.cc: ReferenceEngine
void bind_deployment(pybind11::module_& m);  // deployment.cc: Deployment, requests, inspection
void bind_policy(pybind11::module_& m);      // policy.cc: scheduling policies written in Python
void bind_text(pybind11::module_& m);        // text.cc: tokenizers and chat templates
void bind_simulate(pybind11::module_& m);    // simulate.cc: the simulator

/// The GenerateRequest of the keyword arguments Engine.generate and Deployment.submit share
/// (engine.cc); a seed of None is 0.
GenerateRequest make_request(std::vector<int32_t> ids, int max_new_tokens, double temperature, std::optional<uint64_t> seed,
                             double top_p, int top_k, bool stop_at_eos);

/// atexit: every live Deployment shut down, every Python policy unregistered.
void shutdown_all_deployments();
void unregister_python_policies();
void mark_finalizing();

}  // namespace janus::python
