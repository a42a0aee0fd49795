#include <cstdio>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "actors/deployment.h"
#include "runtime/config/lua_config.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus graph CONFIG [--json]

Resolves a Lua graph config against its model and prints the actor graph: actors,
devices, the placement of expert replicas. Errors name the config file and line.
)";

int cmd_graph(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "json"}, {});
  if (!parsed.ok()) return fail("graph", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (a.positional().size() != 1) return fail("graph", std::string("one CONFIG file is required\n") + kHelp, 2);
  auto spec = load_lua_config(a.positional()[0]);
  if (!spec.ok()) return fail("graph", spec.status().message());
  auto model = Deployment::load_model(*spec, true);
  if (!model.ok()) return fail("graph", model.status().message());
  spec->model_dir = (*model)->dir();
  Status s = resolve_graph(*spec, (*model)->config(), Deployment::cuda_device_count());
  if (!s.ok()) return fail("graph", s.message());
  if (a.flag("json")) std::printf("%s\n", graph_to_json(*spec, (*model)->config()).c_str());
  else std::fputs(graph_to_text(*spec, (*model)->config()).c_str(), stdout);
  return 0;
}

}  // namespace janus::cli
