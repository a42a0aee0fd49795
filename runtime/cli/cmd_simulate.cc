#include <cstdio>
#include <sstream>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/output_file.h"
#include "runtime/config/lua_config.h"
#include "runtime/model/model_config.h"
#include "runtime/model/presets.h"
#include "runtime/serving/simulation_config.h"
#include "runtime/serving/simulator.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus simulate CONFIG [--study] [--out DIR] [--system NAME] [--quiet]

Runs CONFIG's deployment in virtual time against the performance model of its
simulate{profile=...} (what `janus profile` measured), scaled to simulate{shape=...}:
the Frontend's admission, the Scheduler's policy and activation window, the Scaler's
placement and Algorithm 2 are the runtime's own code; only step times are computed.

Without --study it serves CONFIG's workload{} arrivals, with scaler{policy="slo"}
rescaling as it goes, and reports TTFT/TPOT, goodput, device-hours and every scaling
decision. With --study it runs the per-GPU throughput study of the paper's Fig. 9 shape:
for each system (janus, megascale, monolithic, monolithic-dp), batch and TPOT SLO of simulate{}, every
deployment within max_devices GPUs, and the best one within the SLO
(monolithic: TP-8 attention; monolithic-dp: data-parallel attention).

  --out DIR      also write CSVs there (study.csv, candidates.csv or decisions.csv,
                 requests.csv); plot them with scripts/plot_simulation.py
  --system NAME  override simulate{system=} (serving mode)
  --quiet        no progress bar
)";

namespace {

// The paper's Fig. 9 points (arXiv 2512.13525 v3, §5; docs/paper-notes.md §3): Janus on DeepSeek-V2.
std::string paper_point(int batch, double slo_ms) {
  if (batch == 64) return "1A6E ~99";
  if (batch == 256) return slo_ms <= 150 ? "5A10E ~170 (tight)" : "2A6E ~240 (relaxed)";
  if (batch == 512) return slo_ms <= 150 ? "infeasible (strictest)" : "4A6E ~340 (most relaxed)";
  return "";
}

int run_study_mode(const GraphSpec& g, const SimCosts& costs, const std::string& out, bool quiet) {
  StudyOptions o = sim_study_options(g);
  o.progress = !quiet;
  std::printf("study: %s, %d-in/%d-out requests, up to %d GPUs; %d expert slots per instance (%d instances at least)\n",
              costs.shape.name.c_str(), o.prompt, o.output, o.max_devices, costs.expert_slots(),
              costs.expert_slots() > 0 ? (costs.shape.experts + costs.expert_slots() - 1) / costs.expert_slots() : 0);
  std::printf("per MoE layer: attention max(%.1f us, %.3f us/row + %.5f us/context token), experts T(a) e.g. %.1f us at a=8, "
              "%.1f us at a=27; per step %.2f ms outside the layers\n",
              costs.c_a * 1e6, costs.alpha * 1e6, costs.c_kv * 1e6, costs.expert_time(8) * 1e6, costs.expert_time(27) * 1e6,
              costs.step_fixed_s * 1e3);
  auto r = run_study(costs, o);
  if (!r.ok()) return fail("simulate", r.status().message());
  std::printf("\n%-10s %5s %6s %-10s %5s %9s %9s %9s  %8s %8s %8s %6s  %s\n", "system", "batch", "SLO ms", "config", "GPUs",
              "TPOT ms", "p99 ms", "tok/s/GPU", "attn ms", "exch ms", "MoE ms", "a_max", "paper (Janus, Fig. 9)");
  for (const StudyRow& row : r->rows) {
    const StudyCandidate& c = row.best;
    const std::string paper = row.system == SimSystem::kJanus ? paper_point(row.batch, row.slo_ms) : "";
    if (!row.feasible) {
      std::printf("%-10s %5d %6.0f %-10s %5s %9s %9s %9s  %8s %8s %8s %6s  %s\n", sim_system_name(row.system), row.batch, row.slo_ms,
                  "infeasible", "-", "-", "-", "-", "-", "-", "-", "-", paper.c_str());
      continue;
    }
    std::printf("%-10s %5d %6.0f %-10s %5d %9.1f %9.1f %9.1f  %8.1f %8.1f %8.1f %6.1f  %s\n", sim_system_name(row.system), row.batch,
                row.slo_ms, c.config.name().c_str(), c.config.devices(), c.tpot_s * 1e3, c.tpot_p99_s * 1e3,
                c.tokens_per_s_per_device, c.mean.attention * 1e3, c.mean.exchange * 1e3, c.mean.experts * 1e3, c.mean.amax,
                paper.c_str());
  }
  std::printf("\nper-GPU throughput, Janus over the others (same batch and SLO):\n");
  for (int B : o.batches)
    for (double slo : o.slos_ms) {
      const StudyRow *j = nullptr, *ms = nullptr, *mono = nullptr, *dp = nullptr;
      for (const StudyRow& row : r->rows) {
        if (row.batch != B || row.slo_ms != slo) continue;
        if (row.system == SimSystem::kJanus) j = &row;
        if (row.system == SimSystem::kMegaScale) ms = &row;
        if (row.system == SimSystem::kMonolithic) mono = &row;
        if (row.system == SimSystem::kMonolithicDp) dp = &row;
      }
      auto ratio = [&](const StudyRow* other) -> std::string {
        if (!j || !j->feasible) return "janus infeasible";
        if (!other || !other->feasible) return "other infeasible";
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2fx", j->best.tokens_per_s_per_device / other->best.tokens_per_s_per_device);
        return buf;
      };
      std::printf("  B=%-4d SLO %3.0f ms: vs megascale %-16s vs monolithic (TP attention) %-16s vs monolithic-dp %s\n", B, slo,
                  ratio(ms).c_str(), ratio(mono).c_str(), ratio(dp).c_str());
    }
  std::printf("(paper, Fig. 8: up to 2.2x over MegaScale-Infer and 4.7x over SGLang)\n");
  std::printf("%zu deployments evaluated in %.1f s\n", r->candidates.size(), r->wall_s);
  if (!out.empty()) {
    for (const auto& [name, text] : {std::pair<const char*, std::string>{"study.csv", study_csv(*r)}, {"candidates.csv", candidates_csv(*r)}})
      if (Status w = write_output(out + "/" + name, text); !w.ok()) return fail("simulate", w.message());
    std::printf("wrote %s/study.csv and %s/candidates.csv\n", out.c_str(), out.c_str());
  }
  return 0;
}

int run_serving_mode(const GraphSpec& g, const SimCosts& costs, SimSystem system, const std::string& out, bool quiet) {
  auto options = sim_serving_options(g, costs, system);
  if (!options.ok()) return fail("simulate", options.status().message());
  SimServingOptions o = std::move(*options);
  o.progress = !quiet;
  std::printf("simulating %zu requests on %s (%s, %s) from %s\n", o.requests.size(), o.initial.name().c_str(),
              sim_system_name(system), costs.shape.name.c_str(), g.simulate.profile.c_str());
  auto r = simulate_serving(costs, o);
  if (!r.ok()) return fail("simulate", r.status().message());
  const double mean_devices = r->virtual_s > 0 ? r->device_seconds / r->virtual_s : 0;
  std::printf("\n%d of %d requests done, %lld tokens in %lld steps; %.1f s of virtual time in %.2f s (%.0fx real time)\n",
              r->completed, r->submitted, static_cast<long long>(r->tokens), static_cast<long long>(r->steps), r->virtual_s,
              r->wall_s, r->wall_s > 0 ? r->virtual_s / r->wall_s : 0.0);
  std::printf("TTFT ms  p50 %8.1f  p90 %8.1f  p99 %8.1f\n", percentile(r->ttft, 50) * 1e3, percentile(r->ttft, 90) * 1e3,
              percentile(r->ttft, 99) * 1e3);
  std::printf("TPOT ms  p50 %8.1f  p90 %8.1f  p99 %8.1f\n", percentile(r->tpot, 50) * 1e3, percentile(r->tpot, 90) * 1e3,
              percentile(r->tpot, 99) * 1e3);
  std::printf("throughput %.1f tokens/s on %.2f GPUs on average (%.1f tokens/s/GPU); %.3f GPU-hours; goodput %.1f%% of "
              "requests within TTFT %.0f ms and TPOT %.0f ms\n",
              r->virtual_s > 0 ? r->tokens / r->virtual_s : 0.0, mean_devices,
              r->device_seconds > 0 ? r->tokens / r->device_seconds : 0.0, r->device_seconds / 3600,
              r->submitted ? 100.0 * r->goodput_requests / r->submitted : 0.0, o.slo_ttft_s * 1e3, o.slo_tpot_s * 1e3);
  if (!r->decisions.empty()) {
    std::printf("\nscaling decisions (Algorithm 2 every %.0f s, TPOT SLO %.0f ms):\n%9s %12s %8s %12s  %s\n", g.scaler.interval_s,
                g.scaler.tpot_slo_ms, "t s", "demand t/s", "config", "model TPOT", "");
    for (const SimDecision& d : r->decisions)
      std::printf("%9.1f %12.1f %8s %9.1f ms  %s\n", d.t_s, d.lambda,
                  (std::to_string(d.attention) + "A" + std::to_string(d.moe) + "E").c_str(), d.predicted_tpot * 1e3,
                  !d.feasible ? "infeasible: everything allowed" : d.changed ? "rescale" : "");
  }
  if (r->moved_requests) std::printf("%d requests resumed on another shard after theirs retired\n", r->moved_requests);
  if (!out.empty()) {
    std::ostringstream d, dv;
    d << "t_s,lambda,attention,moe,feasible,changed,predicted_tpot_ms\n";
    for (const SimDecision& x : r->decisions)
      d << x.t_s << ',' << x.lambda << ',' << x.attention << ',' << x.moe << ',' << x.feasible << ',' << x.changed << ','
        << x.predicted_tpot * 1e3 << '\n';
    dv << "t_s,devices\n";
    for (auto [t, n] : r->devices_over_time) dv << t << ',' << n << '\n';
    for (const auto& [name, text] : {std::pair<const char*, std::string>{"decisions.csv", d.str()}, {"devices.csv", dv.str()}})
      if (Status w = write_output(out + "/" + name, text); !w.ok()) return fail("simulate", w.message());
    std::printf("wrote %s/decisions.csv and %s/devices.csv\n", out.c_str(), out.c_str());
  }
  return r->completed == r->submitted ? 0 : 1;
}

}  // namespace

int cmd_simulate(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "study", "quiet"}, {"out", "system"});
  if (!parsed.ok()) return fail("simulate", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (a.positional().size() != 1) return fail("simulate", std::string("needs one CONFIG\n") + kHelp, 2);
  auto spec = load_lua_config(a.positional()[0]);
  if (!spec.ok()) return fail("simulate", spec.status().message());
  auto costs = sim_costs_from_spec(*spec);
  if (!costs.ok()) return fail("simulate", costs.status().message());
  const std::string out = a.get("out", "");
  if (!out.empty())
    if (Status w = make_output_dir(out); !w.ok()) return fail("simulate", w.message());
  if (a.flag("study")) return run_study_mode(*spec, *costs, out, a.flag("quiet"));
  auto system = parse_sim_system(a.get("system", spec->simulate.system));
  if (!system.ok()) return fail("simulate", system.status().message(), 2);
  return run_serving_mode(*spec, *costs, *system, out, a.flag("quiet"));
}

}  // namespace janus::cli
