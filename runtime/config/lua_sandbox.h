// The Lua state for text users write: graph configs (runtime/config/lua_config.h) and
// console commands (runtime/console/console_engine.h), one sandbox for both.
//
// What it keeps out, and why:
// - binary chunks: crafted Lua bytecode crashes the VM (it is not verified on load), so
//   only text chunks load;
// - files and modules: dofile, loadfile, load and require are absent (a console user must
//   not read /etc/passwd through an error message), as are io and os;
// - runaway work: a chunk runs under an instruction budget and stops with an
//   "interrupted" error when it is spent or when another thread calls interrupt(), so a
//   `while true do end` cannot wedge a console or make SIGTERM wait forever;
// - runaway memory: allocations past `memory_bytes` fail as Lua memory errors.
// The budget counts Lua instructions, not wall time, so a command that waits in C (a
// console `generate`) is never cut short by the waiting.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/base/status.h"

struct lua_State;
struct lua_Debug;

namespace janus {

struct LuaLimits {
  int64_t instructions = 250'000'000;  // per call(): about 2 s of pure Lua, far above any config
  size_t memory_bytes = size_t{512} << 20;
};

class LuaSandbox {
 public:
  explicit LuaSandbox(LuaLimits limits = {});
  ~LuaSandbox();
  LuaSandbox(const LuaSandbox&) = delete;
  LuaSandbox& operator=(const LuaSandbox&) = delete;

  /// The state, with the base, table, string, math and utf8 libraries only.
  lua_State* state() const { return L_; }

  /// Compiles a text chunk and pushes it as a function; on failure pushes nothing and
  /// returns the message (a binary chunk is refused here).
  Status load(const std::string& code, const std::string& chunkname);
  Status load_file(const std::string& path);

  /// lua_pcall(nargs, nresults) under the budget; on failure pops the error and returns
  /// it. The interrupt flag is cleared when the call starts.
  Status call(int nargs, int nresults);

  /// From any thread: the running call (if any) fails at its next budget check.
  void interrupt() { interrupted_.store(true); }

  size_t memory_in_use() const { return used_; }

 private:
  static void* allocate(void* ud, void* ptr, size_t old_size, size_t new_size);
  static void count_hook(lua_State* L, lua_Debug* ar);

  LuaLimits limits_;
  lua_State* L_ = nullptr;
  size_t used_ = 0;
  int64_t executed_ = 0;
  std::atomic<bool> interrupted_{false};
};

}  // namespace janus
