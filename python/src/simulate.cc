// janus._janus.simulate: runtime/serving/simulator.h, with the tables `janus simulate`
// prints as lists of dicts (one per row: pandas.DataFrame(records) reads them as they are).
#include <optional>

#include "python/src/bindings.h"
#include "python/src/common.h"
#include "runtime/config/lua_config.h"
#include "runtime/serving/simulation_config.h"

namespace janus::python {

namespace {

py::dict candidate_record(const StudyCandidate& c) {
  py::dict d;
  d["system"] = sim_system_name(c.config.system);
  d["config"] = c.config.name();
  d["attention"] = c.config.attention;
  d["moe"] = c.config.moe;
  d["devices"] = c.config.devices();
  d["batch"] = c.batch;
  d["tpot_ms"] = c.tpot_s * 1e3;
  d["tpot_p99_ms"] = c.tpot_p99_s * 1e3;
  d["tokens_per_s_per_device"] = c.tokens_per_s_per_device;
  d["attention_ms"] = c.mean.attention * 1e3;
  d["exchange_ms"] = c.mean.exchange * 1e3;
  d["experts_ms"] = c.mean.experts * 1e3;
  d["amax"] = c.mean.amax;
  d["infeasible"] = c.infeasible;
  return d;
}

py::dict run(const GraphSpec& g, bool study, std::optional<std::string> system_name) {
  SimCosts costs = unwrap(sim_costs_from_spec(g));
  py::dict out;
  if (study) {
    StudyOptions o = sim_study_options(g);
    Result<StudyResult> r = [&] {
      py::gil_scoped_release nogil;
      return run_study(costs, o);
    }();
    StudyResult s = unwrap(std::move(r));
    py::list rows, candidates;
    for (const StudyRow& row : s.rows) {
      py::dict d = candidate_record(row.best);
      d["system"] = sim_system_name(row.system);
      d["batch"] = row.batch;
      d["slo_ms"] = row.slo_ms;
      d["feasible"] = row.feasible;
      rows.append(d);
    }
    for (const StudyCandidate& c : s.candidates) candidates.append(candidate_record(c));
    out["rows"] = rows;
    out["candidates"] = candidates;
    out["wall_s"] = s.wall_s;
    return out;
  }
  const SimSystem system = unwrap(parse_sim_system(system_name.value_or(g.simulate.system)));
  SimServingOptions o = unwrap(sim_serving_options(g, costs, system));
  Result<SimServingReport> r = [&] {
    py::gil_scoped_release nogil;
    return simulate_serving(costs, o);
  }();
  SimServingReport s = unwrap(std::move(r));
  out["system"] = sim_system_name(system);
  out["submitted"] = s.submitted;
  out["completed"] = s.completed;
  out["virtual_s"] = s.virtual_s;
  out["wall_s"] = s.wall_s;
  out["steps"] = s.steps;
  out["tokens"] = s.tokens;
  out["goodput_requests"] = s.goodput_requests;
  out["device_seconds"] = s.device_seconds;
  out["moved_requests"] = s.moved_requests;
  py::list requests;
  for (size_t i = 0; i < s.ttft.size(); ++i) {
    py::dict d;
    d["ttft_ms"] = s.ttft[i] * 1e3;
    d["tpot_ms"] = i < s.tpot.size() ? s.tpot[i] * 1e3 : 0.0;
    requests.append(d);
  }
  out["requests"] = requests;
  py::list decisions;
  for (const SimDecision& x : s.decisions) {
    py::dict d;
    d["t_s"] = x.t_s; d["lambda"] = x.lambda; d["attention"] = x.attention; d["moe"] = x.moe; d["feasible"] = x.feasible;
    d["changed"] = x.changed; d["predicted_tpot_ms"] = x.predicted_tpot * 1e3;
    decisions.append(d);
  }
  out["decisions"] = decisions;
  py::list devices;
  for (auto [t, n] : s.devices_over_time) {
    py::dict d;
    d["t_s"] = t; d["devices"] = n;
    devices.append(d);
  }
  out["devices"] = devices;
  return out;
}

}  // namespace

void bind_simulate(py::module_& m) {
  m.def("simulate_file", [](const std::string& path, bool study, std::optional<std::string> system) {
    return run(unwrap(load_lua_config(path)), study, system);
  }, py::arg("path"), py::arg("study") = false, py::arg("system") = py::none());
  m.def("simulate_string", [](const std::string& code, const std::string& chunkname, bool study, std::optional<std::string> system) {
    return run(unwrap(load_lua_config_string(code, chunkname)), study, system);
  }, py::arg("code"), py::arg("chunkname") = "<string>", py::arg("study") = false, py::arg("system") = py::none());
}

}  // namespace janus::python
