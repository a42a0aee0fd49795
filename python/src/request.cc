// GenerateRequest from Python keywords, GenerateResult and TokenLogprobs to Python: the
// one place Engine.generate, Deployment.submit and Deployment.workload agree on the names.
#include <string>

#include "python/src/bindings.h"
#include "python/src/common.h"

namespace janus::python {

namespace {

[[noreturn]] void type_error(const std::string& msg) {
  PyErr_SetString(PyExc_TypeError, msg.c_str());
  throw py::error_already_set();
}

template <typename T>
T get(const char* fn, const std::string& key, py::handle v, const char* want) {
  try {
    return v.cast<T>();
  } catch (const py::cast_error&) {
    type_error(std::string(fn) + "(): " + key + " must be " + want + ", got " + std::string(py::str(py::type::handle_of(v).attr("__name__"))));
  }
}

}  // namespace

GenerateRequest make_request(std::vector<int32_t> ids, const py::kwargs& kw, const char* fn) {
  GenerateRequest r;
  r.prompt = std::move(ids);
  for (auto [k, v] : kw) {
    const std::string key = py::str(k);
    if (key == "max_new_tokens") r.max_new_tokens = get<int>(fn, key, v, "an int");
    else if (key == "temperature") r.sampling.temperature = get<float>(fn, key, v, "a float");
    else if (key == "top_p") r.sampling.top_p = get<float>(fn, key, v, "a float");
    else if (key == "top_k") r.sampling.top_k = get<int>(fn, key, v, "an int");
    // None is 0, the seed a request without one gets everywhere else (Lua, HTTP).
    else if (key == "seed") r.sampling.seed = v.is_none() ? 0 : get<uint64_t>(fn, key, v, "None or an int >= 0");
    else if (key == "stop_at_eos") r.stop_at_eos = get<bool>(fn, key, v, "a bool");
    else if (key == "eos_ids") r.eos_ids = get<std::vector<int32_t>>(fn, key, v, "a sequence of ints");
    else if (key == "want_prompt_logits") r.want_prompt_logits = get<bool>(fn, key, v, "a bool");
    else if (key == "logprobs") r.logprobs = v.is_none() ? -1 : get<int>(fn, key, v, "None or an int");
    else type_error(std::string(fn) + "() got an unexpected keyword argument '" + key + "'");
  }
  return r;
}

py::dict request_kwargs(const GenerateRequest& r) {
  py::dict d;
  d["ids"] = r.prompt; d["max_new_tokens"] = r.max_new_tokens; d["temperature"] = r.sampling.temperature;
  d["top_p"] = r.sampling.top_p; d["top_k"] = r.sampling.top_k; d["seed"] = r.sampling.seed; d["stop_at_eos"] = r.stop_at_eos;
  d["eos_ids"] = r.eos_ids; d["want_prompt_logits"] = r.want_prompt_logits;
  d["logprobs"] = r.logprobs >= 0 ? py::object(py::int_(r.logprobs)) : py::none();
  return d;
}

py::object logprobs_tuple(const TokenLogprobs& lp) {
  py::list top;
  for (const TopLogprob& t : lp.top) top.append(py::make_tuple(t.token, t.logprob));
  return py::make_tuple(lp.logprob, top);
}

py::array_t<float> owning_array(std::vector<float> values) {
  auto* v = new std::vector<float>(std::move(values));
  py::capsule owner(v, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>({static_cast<py::ssize_t>(v->size())}, {static_cast<py::ssize_t>(sizeof(float))}, v->data(), owner);
}

py::dict result_dict(GenerateResult r, bool asked_logprobs) {
  py::dict d;
  d["tokens"] = r.tokens;
  d["finish_reason"] = r.finish_reason;
  d["prompt"] = r.prompt;
  // A request that asked but was cancelled before its first token has an empty list, not None.
  if (asked_logprobs) {
    py::list l;
    for (const TokenLogprobs& lp : r.logprobs) l.append(logprobs_tuple(lp));
    d["logprobs"] = l;
  } else {
    d["logprobs"] = py::none();
  }
  d["last_logits"] = r.last_logits.empty() ? py::object(py::none()) : py::object(owning_array(std::move(r.last_logits)));
  return d;
}

}  // namespace janus::python
