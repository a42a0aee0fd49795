// Workloads: when requests arrive and how long they are.
//
// Arrivals: all at once (the config's prompts), Poisson (exponential gaps at a rate),
// bursty (Gamma-distributed gaps with the same mean, shape < 1 for bursts, as BurstGPT
// fits its traces), or the replay of a CSV trace (arrival time, prompt length, output
// length). Lengths: fixed, uniform, or lognormal, with ShareGPT-like presets. Token ids
// are drawn at random from the vocabulary (the runtime's cost does not depend on them).
// Everything is seeded: the same spec gives the same plan.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/status.h"

namespace janus {

struct LengthDist {
  std::string kind = "fixed";  // fixed, uniform, lognormal, sharegpt_prompt, sharegpt_output
  double mean = 16;            // fixed: the value; lognormal: the mean
  double min = 1, max = 0;     // uniform bounds; max also caps every kind (0: no cap)
  double sigma = 1.0;          // lognormal: sigma of the underlying normal
};

struct ArrivalSpec {
  std::string kind = "all";  // all, poisson, gamma, trace
  double rate = 10;          // requests per second (poisson, gamma)
  // A load ramp instead of a constant rate: (t_s, requests/s) points, linear in between;
  // arrivals stop at the last point (poisson only).
  std::vector<std::pair<double, double>> rate_points;
  double shape = 0.25;       // gamma: shape k of the gaps (CV^2 = 1/k; < 1 is bursty)
  int requests = 100;        // how many to plan (poisson, gamma)
  std::string trace;         // CSV: arrival_s, prompt_tokens, output_tokens (header optional)
  double time_scale = 1.0;   // trace: multiply arrival times (< 1 replays faster)
  uint64_t seed = 1;
  LengthDist prompt, output;
};

struct PlannedRequest {
  double at_s = 0;  // seconds after the start
  std::vector<int32_t> prompt;
  int max_new_tokens = 0;
  bool clamped = false;  // a drawn or traced length was cut to fit max_len (the driver reports how many)
};

/// Builds the arrival plan. Drawn and traced lengths are clamped to [1, max_len - 1] for
/// prompts and so that prompt + output fits max_len, and such requests are marked
/// `clamped`. Errors: fixed lengths that cannot fit max_len at all (a user asked for
/// exactly that length), bad distribution names or parameters, a trace that cannot be
/// read or has a malformed line (named by number).
Result<std::vector<PlannedRequest>> plan_workload(const ArrivalSpec& spec, int vocab, int max_len);

/// Reads a CSV trace (see ArrivalSpec::trace).
struct TraceRow {
  double at_s;
  int prompt_tokens, output_tokens;
};
Result<std::vector<TraceRow>> read_trace_csv(const std::string& path);

/// Percentiles of a sample (p in [0, 100]); 0 for an empty sample.
double percentile(std::vector<double> values, double p);

}  // namespace janus
