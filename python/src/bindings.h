// One function per binding source; module.cc calls them in order.
#pragma once

#include <pybind11/pybind11.h>

namespace janus::python {

void bind_engine(pybind11::module_& m);      // engine.cc: ReferenceEngine
void bind_deployment(pybind11::module_& m);  // deployment.cc: Deployment, requests, inspection
void bind_policy(pybind11::module_& m);      // policy.cc: scheduling policies written in Python
void bind_text(pybind11::module_& m);        // text.cc: tokenizers and chat templates
void bind_simulate(pybind11::module_& m);    // simulate.cc: the simulator

/// atexit: every live Deployment shut down, every Python policy unregistered.
void shutdown_all_deployments();
void unregister_python_policies();
void mark_finalizing();

}  // namespace janus::python
