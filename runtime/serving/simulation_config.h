// What a config's simulate{}, model{}, attention{}, experts{}, scaler{} and workload{}
// sections mean to the simulator (runtime/serving/simulator.h): the costs, the serving
// options and the study options that `janus simulate` and janus.simulate() run.
#pragma once

#include "runtime/base/status.h"
#include "runtime/config/graph_spec.h"
#include "runtime/serving/simulator.h"

namespace janus {

/// The profile (simulate{profile=}) scaled to simulate{shape=} (or the model{} section's
/// shape), with the link and memory settings of simulate{} and the Janus system's policy
/// from scheduler{} (AEBS without one). Refused: no profile, an
/// unknown shape or preset, a profile that does not load.
Result<SimCosts> sim_costs_from_spec(const GraphSpec& g);

/// Serving in virtual time: the initial deployment (monolithic systems: the config's
/// devices rounded up to whole nodes), the scaler, the SLOs, and the workload's arrivals
/// (its fixed prompts all at t = 0, else the planned arrivals).
Result<SimServingOptions> sim_serving_options(const GraphSpec& g, const SimCosts& costs, SimSystem system);

/// The per-GPU throughput study's batches, SLOs, request shape and device bound.
StudyOptions sim_study_options(const GraphSpec& g);

}  // namespace janus
