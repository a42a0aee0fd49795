#include <algorithm>
#include <cstdio>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "actors/deployment.h"
#include "runtime/config/lua_config.h"
#include "runtime/serving/load_driver.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus bench-serve [CONFIG] [--arrivals poisson|gamma|trace] [--rate R] [--requests N]
                         [--shape K] [--trace FILE] [--prompt-len N] [--output-len N]
                         [--slo-ttft-ms X] [--slo-tpot-ms Y] [--seed S] [--json]

Serves a generated workload in real time on the deployment of CONFIG (default: the tiny
default deployment) and reports TTFT and TPOT percentiles, throughput per device and
goodput under the SLO, with a progress bar while it runs. The workload comes from the
config's workload{} (arrivals, lengths, slo) with the options overriding it; scenario
events of the config (at(t, kill "expert-2"), ...) are replayed at their times.
)";

int cmd_bench_serve(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "json"},
                            {"arrivals", "rate", "requests", "shape", "trace", "prompt-len", "output-len", "slo-ttft-ms",
                             "slo-tpot-ms", "seed", "threads"});
  if (!parsed.ok()) return fail("bench-serve", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  Result<GraphSpec> spec = a.positional().empty() ? Result<GraphSpec>(default_graph_spec()) : load_lua_config(a.positional()[0]);
  if (!spec.ok()) return fail("bench-serve", spec.status().message());
  WorkloadSpec& w = spec->workload;
  ArrivalSpec& arr = w.arrivals;
  if (arr.kind == "all") arr.kind = "poisson";
  if (a.has("arrivals")) arr.kind = a.get("arrivals");
  if (a.has("trace")) {
    arr.kind = "trace";
    arr.trace = a.get("trace");
  }
  auto num = [&](const char* k, double dflt) -> Result<double> { return a.get_double(k, dflt); };
  for (auto [key, target] : {std::pair<const char*, double*>{"rate", &arr.rate}, {"shape", &arr.shape},
                             {"slo-ttft-ms", &w.slo_ttft_ms}, {"slo-tpot-ms", &w.slo_tpot_ms}}) {
    auto v = num(key, *target);
    if (!v.ok()) return fail("bench-serve", v.status().message(), 2);
    *target = *v;
  }
  if (a.has("rate")) arr.rate_points.clear();
  auto requests = a.get_int("requests", arr.requests);
  auto plen = a.get_int("prompt-len", 0), olen = a.get_int("output-len", 0), seed = a.get_int("seed", static_cast<int64_t>(arr.seed));
  auto threads = a.get_int("threads", 0);
  for (const Status* s : {&requests.status(), &plen.status(), &olen.status(), &seed.status(), &threads.status()})
    if (!s->ok()) return fail("bench-serve", s->message(), 2);
  arr.requests = static_cast<int>(*requests);
  arr.seed = static_cast<uint64_t>(*seed);
  if (*plen > 0) arr.prompt = LengthDist{"fixed", static_cast<double>(*plen)};
  if (*olen > 0) arr.output = LengthDist{"fixed", static_cast<double>(*olen)};

  DeploymentOptions opts;
  opts.progress = true;
  opts.threads = static_cast<int>(*threads);
  auto d = Deployment::create(*spec, opts);
  if (!d.ok()) return fail("bench-serve", d.status().message());
  const GraphSpec& g = (*d)->spec();
  auto plan = plan_workload(g.workload.arrivals, (*d)->model().config().vocab_size, g.attention.max_seq_len);
  if (!plan.ok()) return fail("bench-serve", plan.status().message());
  Slo slo{g.workload.slo_ttft_ms / 1e3, g.workload.slo_tpot_ms / 1e3};
  std::fprintf(stderr, "bench-serve: %zu requests, %s arrivals\n", plan->size(), g.workload.arrivals.kind.c_str());
  if (const auto clamped = std::count_if(plan->begin(), plan->end(), [](const PlannedRequest& r) { return r.clamped; }))
    std::fprintf(stderr, "bench-serve: %lld requests' drawn or traced lengths were cut to fit max_seq_len %d\n",
                 static_cast<long long>(clamped), g.attention.max_seq_len);
  ScenarioPlayer scenario(**d, g.scenario);
  ServeReport rep = serve_workload(**d, *plan, slo, true, [&](double t) {
    for (const std::string& line : scenario.advance(t)) std::fprintf(stderr, "bench-serve: %s\n", line.c_str());
  });
  if (a.flag("json")) std::printf("%s\n", rep.to_json().c_str());
  else std::fputs(rep.to_text().c_str(), stdout);
  if (!a.flag("json")) {
    // What the Scaler did meanwhile: recoveries and autoscaling decisions.
    for (const RecoveryInfo& r : (*d)->recoveries())
      std::printf("recovery: %s: detected %.2f ms after the kill, new membership installed %.2f ms after detection\n",
                  r.what.c_str(), r.died_s > 0 ? (r.detected_s - r.died_s) * 1e3 : -1.0, (r.installed_s - r.detected_s) * 1e3);
    const auto decisions = (*d)->scaling_decisions();
    if (!decisions.empty()) std::printf("scaling decisions (Algorithm 2):\n%9s %12s %8s %10s  %s\n", "t s", "demand t/s", "config", "model TPOT", "");
    const double t0 = decisions.empty() ? 0 : decisions.front().t_s;
    for (const ScalingInfo& x : decisions)
      std::printf("%9.2f %12.1f %8s %7.2f ms  %s\n", x.t_s - t0, x.lambda,
                  (std::to_string(x.attention) + "A" + std::to_string(x.moe) + "E").c_str(), x.tpot_s * 1e3,
                  !x.feasible ? ("infeasible: " + x.note).c_str() : x.changed ? "rescale" : "");
  }
  (*d)->shutdown();
  return rep.failed == 0 ? 0 : 1;
}

}  // namespace janus::cli
