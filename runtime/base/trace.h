// A timeline of what each actor did when, for one run: spans (actor, what, step, layer,
// micro-batch, start, end). Off unless enabled; recording is a mutex-guarded append, cheap
// next to the work it measures. Exported as Chrome trace JSON (open in Perfetto or
// chrome://tracing) and summarised: how long attention and expert work overlapped, the
// evidence that a ping-pong pipeline (micro_batches >= 2) keeps both pools busy.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace janus {

struct TraceSpan {
  std::string actor;
  std::string what;  // "attention", "experts", "route", "schedule", "sample", ...
  uint64_t step = 0;
  int layer = -1;
  int micro_batch = -1;
  double start_s = 0, end_s = 0;
};

class Trace {
 public:
  void enable(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  void record(TraceSpan span);
  std::vector<TraceSpan> spans() const;
  void clear();

  /// Seconds during which at least one span of kind `a` and one of kind `b` ran at once.
  double overlap_seconds(const std::string& a, const std::string& b) const;
  /// Total seconds covered by spans of a kind (union of intervals).
  double busy_seconds(const std::string& what) const;
  std::string to_chrome_json() const;

 private:
  bool enabled_ = false;
  mutable std::mutex mu_;
  std::vector<TraceSpan> spans_;
};

}  // namespace janus
