// The console's brain: a Lua 5.4 state bound to a live Deployment.
//
// Every command is a Lua function that prints for people (aligned tables, shaded heat
// maps, units on every number) or, in JSON mode, for scripts, and returns the same data
// as a Lua table:
//
//   actors()   graph()   requests()   trace(id)   experts(layer)   placement()   amax()
//   pause()    step(n)   resume()     kill(name)  slow(name, ms)   scale{attention=N, moe=N}
//   generate({ids...}, {max_new_tokens=N})        watch()          help()
//
// Anything else is plain Lua. A Lua error, a bad argument or a failing command comes back
// as an error text; the deployment is never touched by it. The engine is shared by the
// local console (janus run --console), the remote one (the Inspector behind janus console
// --connect) and the non-interactive forms (--eval, a script), so they all answer alike.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/deployment.h"

struct lua_State;

namespace janus {
class LuaSandbox;
}

namespace janus {

struct ConsoleOutput {
  bool ok = true;
  std::string text;   // what the code printed (and its value, for plain expressions)
  std::string error;  // when !ok
  bool watch = false; // the code asked for watch(): the front end should run its loop
};

class ConsoleEngine {
 public:
  explicit ConsoleEngine(Deployment& deployment);
  ~ConsoleEngine();
  ConsoleEngine(const ConsoleEngine&) = delete;
  ConsoleEngine& operator=(const ConsoleEngine&) = delete;

  /// Runs one line or chunk of Lua; `json` makes commands print JSON. A chunk that runs
  /// past its instruction budget, or is interrupted, fails with "interrupted ...".
  ConsoleOutput eval(const std::string& code, bool json = false);
  /// From any thread (a signal handler's thread, a shutting-down server): the command
  /// running now stops at its next Lua instruction check.
  void interrupt();
  /// One frame of watch(): the live view, as text.
  std::string watch_frame();
  /// Commands, actor names and Lua globals that start with `prefix`.
  std::vector<std::string> complete(const std::string& prefix);
  /// The command names, for help and completion.
  static const std::vector<std::string>& commands();

 private:
  friend struct ConsoleBindings;
  Deployment& d_;
  std::unique_ptr<LuaSandbox> sandbox_;
  lua_State* L_ = nullptr;  // sandbox_'s
  std::mutex mu_;
  std::string out_;
  bool json_ = false;
  bool printed_ = false;
  bool watch_ = false;
};

/// Text helpers shared by the console's renderers (exposed for tests).
std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
/// One character per value, shaded by its size relative to the maximum: " ░▒▓█".
std::string shade(uint64_t value, uint64_t max);

}  // namespace janus
