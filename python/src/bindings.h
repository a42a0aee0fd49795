// One function per binding source; module.cc calls them in order.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "runtime/model/reference_engine.h"

namespace janus::python {

void bind_engine(pybind11::module_& m);      // engine.cc: ReferenceEngine
void bind_deployment(pybind11::module_& m);  // deployment.cc: Deployment, requests, inspection
void bind_policy(pybind11::module_& m);      // policy.cc: scheduling policies written in Python
void bind_text(pybind11::module_& m);        // text.cc: tokenizers and chat templates
void bind_simulate(pybind11::module_& m);    // simulate.cc: the simulator

/// The GenerateRequest of the keyword arguments Engine.generate and Deployment.submit share
/// (request.cc): every GenerateRequest field but the prompt, by its name (the sampling
/// fields unnested; a seed of None is 0, logprobs of None is -1). An unknown keyword or a
/// value of the wrong type raises TypeError naming it and `fn`, as Python's own calls do.
GenerateRequest make_request(std::vector<int32_t> ids, const pybind11::kwargs& kw, const char* fn);
/// The keywords make_request reads `r` back from, with the prompt as "ids".
pybind11::dict request_kwargs(const GenerateRequest& r);
/// (logprob, [(token, logprob), ...]) of one generated token.
pybind11::object logprobs_tuple(const TokenLogprobs& lp);
/// A float32 array that owns `values` (no copy).
pybind11::array_t<float> owning_array(std::vector<float> values);
/// tokens, finish_reason, prompt, logprobs (None unless asked: a list of logprobs_tuple)
/// and last_logits (None or owning_array): what janus.Generation is made of.
pybind11::dict result_dict(GenerateResult r, bool asked_logprobs);

/// atexit: every live Deployment shut down, every Python policy unregistered.
void shutdown_all_deployments();
void unregister_python_policies();
void mark_finalizing();

}  // namespace janus::python
