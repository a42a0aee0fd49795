// The sandbox configs and console commands run in: what a user's Lua can and cannot do.
#include <doctest/doctest.h>
#include <lauxlib.h>
#include <lua.h>

#include <chrono>
#include <thread>

#include "runtime/config/lua_config.h"
#include "runtime/config/lua_sandbox.h"

using namespace janus;

namespace {

// Runs `code` as a chunk; returns its error message, or "" when it ran.
std::string run(LuaSandbox& s, const std::string& code) {
  Status st = s.load(code, "=test");
  if (st.ok()) st = s.call(0, 0);
  return st.ok() ? "" : st.message();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("lua sandbox: no files, modules or bytecode; plain Lua works") {
  LuaSandbox s;
  CHECK(run(s, "x = 0; for i = 1, 100 do x = x + i end; assert(x == 5050); assert(string.rep('a', 3) == 'aaa')") == "");
  for (const char* name : {"load", "loadfile", "dofile", "require", "io", "os", "package", "debug"}) {
    lua_getglobal(s.state(), name);
    CHECK_MESSAGE(lua_isnil(s.state(), -1), name);
    lua_pop(s.state(), 1);
  }
  CHECK(contains(run(s, "loadfile('/etc/passwd')"), "attempt to call a nil value (global 'loadfile')"));
  // A binary chunk (as string.dump makes) is refused before it can reach the VM.
  CHECK(run(s, "code = string.dump(function() return 1 end)") == "");
  lua_getglobal(s.state(), "code");
  size_t n = 0;
  const char* bytes = lua_tolstring(s.state(), -1, &n);
  const std::string bytecode(bytes, n);
  lua_pop(s.state(), 1);
  Status st = s.load(bytecode, "=bytecode");
  REQUIRE_FALSE(st.ok());
  CHECK(contains(st.message(), "attempt to load a binary chunk"));
  CHECK(lua_gettop(s.state()) == 0);  // nothing was left on the stack
}

TEST_CASE("lua sandbox: a loop that never ends runs out of budget, and the state stays usable") {
  LuaLimits limits;
  limits.instructions = 20'000'000;
  LuaSandbox s(limits);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = run(s, "while true do end");
  CHECK(contains(e, "test:1: interrupted: more than 20 million Lua instructions"));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
  // Each call gets the whole budget again.
  CHECK(run(s, "local x = 0; for i = 1, 1000000 do x = x + 1 end") == "");
}

TEST_CASE("lua sandbox: interrupt() from another thread stops a running call") {
  LuaLimits limits;
  limits.instructions = int64_t{1} << 60;  // only the interrupt can stop it
  LuaSandbox s(limits);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    s.interrupt();
  });
  const std::string e = run(s, "while true do end");
  stopper.join();
  CHECK(contains(e, "test:1: interrupted (the deployment is shutting down"));
  CHECK(run(s, "y = 1") == "");  // the flag was for that call only
}

TEST_CASE("lua sandbox: memory past the cap fails as a Lua error, and is given back") {
  LuaLimits limits;
  limits.memory_bytes = size_t{8} << 20;
  LuaSandbox s(limits);
  const std::string e = run(s, "local t = {} for i = 1, 1e8 do t[i] = i end");
  CHECK(contains(e, "not enough memory"));
  lua_gc(s.state(), LUA_GCCOLLECT);
  CHECK(s.memory_in_use() < (size_t{1} << 20));
  CHECK(run(s, "z = string.rep('x', 1000)") == "");
}

TEST_CASE("configs run in the sandbox: a looping or memory-hungry config fails naming itself") {
  auto loop = load_lua_config_string("attention{shards = 1}\nwhile true do end\n", "loop.lua");
  REQUIRE_FALSE(loop.ok());
  CHECK(contains(loop.status().message(), "loop.lua:2: interrupted"));
  auto hungry = load_lua_config_string("local s = string.rep('x', 1e9)\n", "hungry.lua");
  REQUIRE_FALSE(hungry.ok());
  CHECK(contains(hungry.status().message(), "not enough memory"));
  auto ok = load_lua_config_string("attention{shards = 2}\n", "ok.lua");
  REQUIRE(ok.ok());
  CHECK(ok->attention.shards == 2);
}
