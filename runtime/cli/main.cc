// janus: the command-line front end of the runtime.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/cli/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(const janus::cli::Argv&);
  const char* summary;
};

const Command kCommands[] = {
    {"run", janus::cli::cmd_run, "run a deployment on its workload (default: the tiny model on CPU)"},
    {"graph", janus::cli::cmd_graph, "print the actor graph a Lua config resolves to"},
    {"console", janus::cli::cmd_console, "attach the Lua console to a running deployment"},
    {"serve", janus::cli::cmd_serve, "serve a model behind an OpenAI-compatible HTTP API (completions, chat, metrics)"},
    {"bench-serve", janus::cli::cmd_bench_serve, "serve a generated workload and report TTFT, TPOT, goodput"},
    {"profile", janus::cli::cmd_profile, "measure the performance model's coefficients on a config's backends"},
    {"simulate", janus::cli::cmd_simulate, "run a deployment in virtual time on the profiled model (up to 64+ GPUs)"},
    {"node", janus::cli::cmd_node, "join a multi-node deployment and host its share of the actors"},
    {"generate", janus::cli::cmd_generate, "generate tokens with the single-process reference engine"},
    {"make-model", janus::cli::cmd_make_model, "write a deterministic random checkpoint of a preset shape"},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: janus <command> [options]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out, "\n'janus <command> --help' describes a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    usage(stdout);
    return 0;
  }
  janus::cli::Argv args(argv + 2, argv + argc);
  for (const Command& c : kCommands)
    if (name == c.name) return c.run(args);
  std::fprintf(stderr, "janus: unknown command '%s'\n\n", name.c_str());
  usage(stderr);
  return 2;
}
