// `janus profile`: measures the coefficients of the performance model (runtime/scheduling/perf_model.h)
// on the backends a deployment config actually uses — attention over the paged cache at
// several batches and context lengths, the expert FFN at several numbers of activated
// experts, and the runtime's per-layer-batch messaging cost — and fits them.
#pragma once

#include <string>

#include "runtime/config/graph_spec.h"
#include "runtime/scheduling/perf_model.h"

namespace janus {

struct ProfileOptions {
  int repeats = 5;       // timings per point (the median is kept)
  bool progress = true;
  bool comm = true;      // also measure the messaging cost with the null backend
};

/// Profiles the first shard's and the first instance's devices of the (unresolved) spec.
Result<PerfModel> profile_deployment(GraphSpec spec, const ProfileOptions& options);

}  // namespace janus
