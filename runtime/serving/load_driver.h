// Drives a deployment with a planned workload in real time and measures what users feel:
// time to first token (TTFT, queueing included), time per output token (TPOT), throughput
// per device, and goodput under an SLO (requests meeting both TTFT and TPOT targets).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "actors/deployment.h"
#include "runtime/config/workload.h"

namespace janus {

struct Slo {
  double ttft_s = 2.0;
  double tpot_s = 0.2;
};

struct RequestRecord {
  double submit_s = 0, first_s = -1, last_s = -1;  // relative to the start
  int tokens = 0;
  bool ok = false;
  std::string error;
  std::vector<int32_t> streamed;  // tokens as they streamed
  std::vector<int32_t> result;    // the request's final tokens (when ok)
  double ttft() const { return first_s < 0 ? -1 : first_s - submit_s; }
  double tpot() const { return tokens > 1 ? (last_s - first_s) / (tokens - 1) : 0; }
};

struct ServeReport {
  int requests = 0, completed = 0, failed = 0, within_slo = 0;
  double duration_s = 0;
  int64_t tokens = 0;
  double tokens_per_s = 0, tokens_per_s_per_device = 0;
  double goodput_rps = 0;  // requests per second meeting the SLO
  int devices = 0;
  double ttft_p50 = 0, ttft_p90 = 0, ttft_p99 = 0;
  double tpot_p50 = 0, tpot_p90 = 0, tpot_p99 = 0;
  Slo slo;
  std::vector<RequestRecord> records;

  std::string to_text() const;
  std::string to_json() const;
};

/// Submits each planned request at its time, waits for all, reports. `progress` shows a
/// bar on stderr. `on_tick` (optional) is called about every 100 ms with the elapsed time
/// (scenarios hook scaling and faults there).
ServeReport serve_workload(Deployment& d, const std::vector<PlannedRequest>& plan, const Slo& slo, bool progress,
                           const std::function<void(double elapsed_s)>& on_tick = {});

/// Replays a config's scripted events (at(t, kill "expert-2"), slow, scale) on a
/// deployment as their times pass, so the same scenario can be run again.
class ScenarioPlayer {
 public:
  ScenarioPlayer(Deployment& d, std::vector<ScenarioEvent> events);
  /// Runs every event due by `t` seconds; one line per event saying what happened.
  std::vector<std::string> advance(double t);
  /// What each event run so far returned, in order.
  const std::vector<Status>& results() const { return results_; }
  bool done() const { return next_ >= events_.size(); }

 private:
  Deployment& d_;
  std::vector<ScenarioEvent> events_;
  size_t next_ = 0;
  std::vector<Status> results_;
};

}  // namespace janus
