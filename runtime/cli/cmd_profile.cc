#include <cstdio>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/output_file.h"
#include "runtime/config/lua_config.h"
#include "runtime/serving/profiler.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus profile [CONFIG] [--out FILE] [--repeats N] [--no-comm]

Measures the performance model's coefficients (attention roofline, MoE time per activated
expert, messaging per layer batch) on the backends of CONFIG's first shard and first expert
instance, prints them and writes them as JSON (default: profile.json) for the Scaler
(scaler{policy="slo", profile=FILE}) and `janus simulate`.
)";

int cmd_profile(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "no-comm"}, {"out", "repeats"});
  if (!parsed.ok()) return fail("profile", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  Result<GraphSpec> spec = a.positional().empty() ? Result<GraphSpec>(default_graph_spec()) : load_lua_config(a.positional()[0]);
  if (!spec.ok()) return fail("profile", spec.status().message());
  auto repeats = a.get_int("repeats", 5);
  if (!repeats.ok() || *repeats < 1) return fail("profile", "--repeats must be a positive integer", 2);
  const std::string out = a.get("out", "profile.json");
  if (Status w = check_writable(out); !w.ok()) return fail("profile", w.message());
  ProfileOptions opt;
  opt.repeats = static_cast<int>(*repeats);
  opt.comm = !a.flag("no-comm");
  auto pm = profile_deployment(*spec, opt);
  if (!pm.ok()) return fail("profile", pm.status().message());
  const LayerCoefficients& l = pm->layers.front();
  std::printf("%s\n", pm->source.c_str());
  std::printf("attention  T = max(c_a, alpha*b + c_kv*b*S):  c_a %.2f us, alpha %.3f us/row, c_kv %.5f us/row/token\n", l.c_a * 1e6,
              l.alpha * 1e6, l.c_kv * 1e6);
  for (const LayerCoefficients& c : pm->layers)
    if (c.beta > 0) {
      std::printf("experts    T = beta*a_max + c_e:                beta %.2f us/expert, c_e %.2f us\n", c.beta * 1e6, c.c_e * 1e6);
      std::printf("messaging  T = c_comm + per_member*(n_a+n_e):   c_comm %.2f us, per member %.2f us\n", c.c_comm * 1e6,
                  c.comm_per_member * 1e6);
      break;
    }
  if (Status w = write_output(out, pm->to_json()); !w.ok()) return fail("profile", w.message());
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace janus::cli
