#include "runtime/base/trace.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace janus {
namespace {

using Interval = std::pair<double, double>;

std::vector<Interval> merged(std::vector<Interval> v) {
  std::sort(v.begin(), v.end());
  std::vector<Interval> out;
  for (const Interval& i : v) {
    if (!out.empty() && i.first <= out.back().second) out.back().second = std::max(out.back().second, i.second);
    else out.push_back(i);
  }
  return out;
}

std::vector<Interval> intervals_of(const std::vector<TraceSpan>& spans, const std::string& what) {
  std::vector<Interval> v;
  for (const TraceSpan& s : spans)
    if (s.what == what) v.emplace_back(s.start_s, s.end_s);
  return merged(std::move(v));
}

}  // namespace

void Trace::record(TraceSpan span) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(mu_);
  spans_.push_back(std::move(span));
}

std::vector<TraceSpan> Trace::spans() const {
  std::lock_guard<std::mutex> lk(mu_);
  return spans_;
}

void Trace::clear() {
  std::lock_guard<std::mutex> lk(mu_);
  spans_.clear();
}

double Trace::overlap_seconds(const std::string& a, const std::string& b) const {
  const auto all = spans();
  const auto x = intervals_of(all, a), y = intervals_of(all, b);
  double total = 0;
  size_t i = 0, j = 0;
  while (i < x.size() && j < y.size()) {
    const double lo = std::max(x[i].first, y[j].first), hi = std::min(x[i].second, y[j].second);
    if (hi > lo) total += hi - lo;
    if (x[i].second < y[j].second) ++i;
    else ++j;
  }
  return total;
}

double Trace::busy_seconds(const std::string& what) const {
  double total = 0;
  for (const Interval& i : intervals_of(spans(), what)) total += i.second - i.first;
  return total;
}

std::string Trace::to_chrome_json() const {
  using nlohmann::json;
  json events = json::array();
  const auto all = spans();
  double t0 = all.empty() ? 0 : all.front().start_s;
  for (const TraceSpan& s : all) t0 = std::min(t0, s.start_s);
  for (const TraceSpan& s : all)
    events.push_back({{"name", s.what + (s.layer >= 0 ? " L" + std::to_string(s.layer) : "") +
                                   (s.micro_batch >= 0 ? " mb" + std::to_string(s.micro_batch) : "")},
                      {"cat", s.what},
                      {"ph", "X"},
                      {"ts", (s.start_s - t0) * 1e6},
                      {"dur", (s.end_s - s.start_s) * 1e6},
                      {"pid", 1},
                      {"tid", s.actor},
                      {"args", {{"step", s.step}, {"layer", s.layer}, {"micro_batch", s.micro_batch}}}});
  return json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump();
}

}  // namespace janus
