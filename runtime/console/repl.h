// The console's front end on a terminal: readline line editing, history and tab
// completion, and the watch() loop; plus the non-interactive forms (--eval, a script).
// It only talks to an evaluator, so the same front end serves a local engine and a
// remote deployment.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/console/console_engine.h"

namespace janus {

struct ConsoleHooks {
  std::function<ConsoleOutput(const std::string& code, bool json)> eval;
  std::function<std::string()> watch_frame;
  std::function<std::vector<std::string>(const std::string& prefix)> complete;
};

/// Reads lines until EOF (Ctrl-D) or quit()/exit; returns the process exit code.
int run_repl(const ConsoleHooks& hooks, const std::string& banner);

/// Runs code non-interactively: prints what it prints, errors to stderr; exit code 1 when
/// it failed. watch() shows one frame.
int run_console_code(const ConsoleHooks& hooks, const std::string& code, bool json);

}  // namespace janus
