// The janus subcommands. Each takes the arguments after its name and returns the
// process exit code (0 ok, 1 failure, 2 bad usage); errors go to stderr, results to stdout.
#pragma once

#include <string>
#include <vector>

namespace janus::cli {

using Argv = std::vector<std::string>;

int cmd_make_model(const Argv& args);
int cmd_generate(const Argv& args);
int cmd_run(const Argv& args);
int cmd_serve(const Argv& args);
int cmd_graph(const Argv& args);
int cmd_console(const Argv& args);
int cmd_bench_serve(const Argv& args);
int cmd_profile(const Argv& args);
int cmd_node(const Argv& args);
int cmd_simulate(const Argv& args);

/// Prints "janus <command>: <message>" to stderr and returns `code`.
int fail(const std::string& command, const std::string& message, int code = 1);

}  // namespace janus::cli
