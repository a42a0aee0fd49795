#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/deployment.h"
#include "runtime/lua_config.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus run [CONFIG] [--json] [--trace FILE] [--threads N]

Builds the deployment a Lua graph config describes and runs its workload; without CONFIG,
the default deployment (examples/configs/default.lua: the tiny Qwen3-MoE on the CPU, 2
attention shards x 2 micro-batches, 4 expert instances, EGate, AEBS).
Prints each request's tokens (as JSON lines with --json), then a summary: tokens/s,
TTFT and TPOT percentiles, and per MoE layer the mean and max of a_max (the most
distinct experts any instance ran in a layer batch). --trace writes a Chrome trace
(open in Perfetto) and reports how long attention and expert work overlapped.
)";

namespace {

std::string ids_text(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) s += (s.empty() ? "" : " ") + std::to_string(x);
  return s;
}

}  // namespace

int cmd_run(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "json"}, {"trace", "threads"});
  if (!parsed.ok()) return fail("run", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (a.positional().size() > 1) return fail("run", std::string("at most one CONFIG file\n") + kHelp, 2);
  auto threads = a.get_int("threads", 0);
  if (!threads.ok()) return fail("run", threads.status().message(), 2);
  Result<GraphSpec> spec = a.positional().empty() ? Result<GraphSpec>(default_graph_spec()) : load_lua_config(a.positional()[0]);
  if (!spec.ok()) return fail("run", spec.status().message());
  DeploymentOptions opts;
  opts.trace = a.has("trace");
  opts.progress = true;
  opts.threads = static_cast<int>(*threads);
  auto d = Deployment::create(*spec, opts);
  if (!d.ok()) return fail("run", d.status().message());
  auto results = (*d)->run_workload();
  int failures = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    if (!r.ok()) {
      ++failures;
      std::fprintf(stderr, "request %zu failed: %s\n", i, r.status().message().c_str());
      continue;
    }
    if (a.flag("json")) {
      nlohmann::json j = {{"id", i}, {"prompt", r->prompt}, {"tokens", r->tokens}, {"finish_reason", r->finish_reason}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("request %zu: [%s] -> [%s] (%s)\n", i, ids_text(r->prompt).c_str(), ids_text(r->tokens).c_str(),
                  r->finish_reason.c_str());
    }
  }
  MetricsSnapshot m = (*d)->metrics();
  std::printf("\n%llu requests, %lld tokens in %.3f s: %.1f tokens/s\n", static_cast<unsigned long long>(m.completed),
              static_cast<long long>(m.tokens), m.elapsed_s, m.tokens_per_s);
  std::printf("TTFT  p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n", m.ttft_s.p50 * 1e3, m.ttft_s.p90 * 1e3, m.ttft_s.p99 * 1e3);
  std::printf("TPOT  p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n", m.tpot_s.p50 * 1e3, m.tpot_s.p90 * 1e3, m.tpot_s.p99 * 1e3);
  std::printf("a_max per MoE layer (%s; distinct experts on the busiest instance):\n", m.policy.c_str());
  for (const LayerAmax& l : m.amax)
    std::printf("  layer %2d  mean %5.2f  max %3d  over %llu layer batches\n", l.layer, l.mean, l.max,
                static_cast<unsigned long long>(l.batches));
  if (a.has("trace")) {
    const Trace& t = (*d)->trace();
    std::ofstream out(a.get("trace"));
    out << t.to_chrome_json();
    std::printf("trace: %s (%zu spans); attention busy %.2f ms, experts busy %.2f ms, overlapping %.2f ms\n",
                a.get("trace").c_str(), t.spans().size(), t.busy_seconds("attention") * 1e3, t.busy_seconds("experts") * 1e3,
                t.overlap_seconds("attention", "experts") * 1e3);
  }
  (*d)->shutdown();
  return failures == 0 ? 0 : 1;
}

}  // namespace janus::cli
