#include "runtime/serving/load_driver.h"

#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/base/progress.h"

namespace janus {

ServeReport serve_workload(Deployment& d, const std::vector<PlannedRequest>& plan, const Slo& slo, bool progress,
                           const std::function<void(double)>& on_tick) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto since = [&] { return std::chrono::duration<double>(clock::now() - start).count(); };
  ServeReport rep;
  rep.slo = slo;
  rep.requests = static_cast<int>(plan.size());
  rep.devices = d.spec().attention.shards + d.spec().experts.instances;
  rep.records.resize(plan.size());
  std::mutex mu;
  std::vector<RequestHandle> handles;
  std::unique_ptr<ProgressBar> bar;
  if (progress) bar = std::make_unique<ProgressBar>("serving", static_cast<int64_t>(plan.size()), "requests");
  double next_tick = 0.1;
  auto tick = [&] {
    const double t = since();
    if (on_tick && t >= next_tick) {
      on_tick(t);
      next_tick = t + 0.1;
    }
  };
  for (size_t i = 0; i < plan.size(); ++i) {
    while (since() < plan[i].at_s) {
      tick();
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(0.01, plan[i].at_s - since())));
    }
    GenerateRequest r;
    r.prompt = plan[i].prompt;
    r.max_new_tokens = plan[i].max_new_tokens;
    r.stop_at_eos = false;  // planned lengths are the lengths
    RequestRecord* rec = &rep.records[i];
    rec->submit_s = since();
    handles.push_back(d.submit(r, [rec, &mu, &since](int32_t token) {
      std::lock_guard<std::mutex> lk(mu);
      const double t = since();
      if (rec->first_s < 0) rec->first_s = t;
      rec->last_s = t;
      ++rec->tokens;
      rec->streamed.push_back(token);
    }));
  }
  size_t done = 0;
  for (size_t i = 0; i < handles.size(); ++i) {
    while (handles[i].result.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
      tick();
      if (bar) bar->update(static_cast<int64_t>(done));
    }
    auto res = handles[i].result.get();
    std::lock_guard<std::mutex> lk(mu);
    rep.records[i].ok = res.ok();
    if (!res.ok()) rep.records[i].error = res.status().message();
    else rep.records[i].result = res->tokens;
    ++done;
    if (bar) bar->update(static_cast<int64_t>(done));
  }
  if (bar) bar->finish();
  rep.duration_s = since();
  std::vector<double> ttft, tpot;
  for (const RequestRecord& r : rep.records) {
    if (!r.ok) {
      ++rep.failed;
      continue;
    }
    ++rep.completed;
    rep.tokens += r.tokens;
    if (r.tokens > 0) ttft.push_back(r.ttft());
    if (r.tokens > 1) tpot.push_back(r.tpot());
    if (r.tokens > 0 && r.ttft() <= slo.ttft_s && r.tpot() <= slo.tpot_s) ++rep.within_slo;
  }
  rep.tokens_per_s = rep.duration_s > 0 ? static_cast<double>(rep.tokens) / rep.duration_s : 0;
  rep.tokens_per_s_per_device = rep.devices > 0 ? rep.tokens_per_s / rep.devices : 0;
  rep.goodput_rps = rep.duration_s > 0 ? rep.within_slo / rep.duration_s : 0;
  rep.ttft_p50 = percentile(ttft, 50);
  rep.ttft_p90 = percentile(ttft, 90);
  rep.ttft_p99 = percentile(ttft, 99);
  rep.tpot_p50 = percentile(tpot, 50);
  rep.tpot_p90 = percentile(tpot, 90);
  rep.tpot_p99 = percentile(tpot, 99);
  return rep;
}

std::string ServeReport::to_text() const {
  char b[1024];
  std::snprintf(b, sizeof b,
                "%d requests (%d completed, %d failed) in %.2f s on %d devices\n"
                "throughput %.1f tokens/s, %.1f tokens/s per device\n"
                "TTFT  p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n"
                "TPOT  p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n"
                "goodput %.2f requests/s within the SLO (TTFT <= %.0f ms, TPOT <= %.0f ms): %d of %d requests\n",
                requests, completed, failed, duration_s, devices, tokens_per_s, tokens_per_s_per_device, ttft_p50 * 1e3,
                ttft_p90 * 1e3, ttft_p99 * 1e3, tpot_p50 * 1e3, tpot_p90 * 1e3, tpot_p99 * 1e3, goodput_rps, slo.ttft_s * 1e3,
                slo.tpot_s * 1e3, within_slo, requests);
  return b;
}

std::string ServeReport::to_json() const {
  nlohmann::json j = {{"requests", requests},
                      {"completed", completed},
                      {"failed", failed},
                      {"within_slo", within_slo},
                      {"duration_s", duration_s},
                      {"devices", devices},
                      {"tokens", tokens},
                      {"tokens_per_s", tokens_per_s},
                      {"tokens_per_s_per_device", tokens_per_s_per_device},
                      {"goodput_rps", goodput_rps},
                      {"slo", {{"ttft_ms", slo.ttft_s * 1e3}, {"tpot_ms", slo.tpot_s * 1e3}}},
                      {"ttft_ms", {{"p50", ttft_p50 * 1e3}, {"p90", ttft_p90 * 1e3}, {"p99", ttft_p99 * 1e3}}},
                      {"tpot_ms", {{"p50", tpot_p50 * 1e3}, {"p90", tpot_p90 * 1e3}, {"p99", tpot_p99 * 1e3}}}};
  return j.dump();
}

ScenarioPlayer::ScenarioPlayer(Deployment& d, std::vector<ScenarioEvent> events) : d_(d), events_(std::move(events)) {
  std::stable_sort(events_.begin(), events_.end(), [](const ScenarioEvent& x, const ScenarioEvent& y) { return x.at_s < y.at_s; });
}

std::vector<std::string> ScenarioPlayer::advance(double t) {
  std::vector<std::string> lines;
  for (; next_ < events_.size() && events_[next_].at_s <= t; ++next_) {
    const ScenarioEvent& e = events_[next_];
    Status s = e.op == "kill"   ? d_.kill(e.actor)
               : e.op == "slow" ? d_.slow(e.actor, e.ms)
               : e.op == "scale" ? d_.scale(e.attention, e.moe)
                                 : invalid_argument("unknown scenario action '" + e.op + "'");
    char head[64];
    std::snprintf(head, sizeof head, "t=%.2f s: ", t);
    std::string what = e.op == "scale" ? "scale to " + std::to_string(e.attention) + "A" + std::to_string(e.moe) + "E"
                       : e.op == "slow" ? "slow " + e.actor + " by " + std::to_string(e.ms) + " ms"
                                        : e.op + " " + e.actor;
    lines.push_back(head + what + (e.where.empty() ? "" : " (" + e.where + ")") + ": " + (s.ok() ? "done" : s.message()));
    results_.push_back(s);
  }
  return lines;
}

}  // namespace janus
