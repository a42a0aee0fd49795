#include "runtime/config/lua_sandbox.h"

// The C++ build of Lua (liblua5.4-c++): included without extern "C", errors are exceptions.
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <cstdlib>

namespace janus {

namespace {

// The hook runs every kHookEvery instructions: rare enough to cost nothing measurable,
// often enough that an interrupt lands within microseconds.
constexpr int kHookEvery = 10000;

LuaSandbox*& sandbox_of(lua_State* L) { return *static_cast<LuaSandbox**>(lua_getextraspace(L)); }

Status pop_error(lua_State* L) {
  std::string msg = lua_tostring(L, -1) ? lua_tostring(L, -1) : "unknown Lua error";
  lua_pop(L, 1);
  return invalid_argument(msg);
}

}  // namespace

void* LuaSandbox::allocate(void* ud, void* ptr, size_t old_size, size_t new_size) {
  auto* self = static_cast<LuaSandbox*>(ud);
  // For a fresh block Lua passes a type tag as old_size, not a size.
  const size_t old_bytes = ptr == nullptr ? 0 : old_size;
  if (new_size == 0) {
    std::free(ptr);
    self->used_ -= old_bytes;
    return nullptr;
  }
  if (new_size > old_bytes && self->used_ - old_bytes + new_size > self->limits_.memory_bytes) return nullptr;
  void* p = std::realloc(ptr, new_size);
  if (p != nullptr) self->used_ = self->used_ - old_bytes + new_size;
  return p;
}

void LuaSandbox::count_hook(lua_State* L, lua_Debug* ar) {
  LuaSandbox* self = sandbox_of(L);
  self->executed_ += kHookEvery;
  const bool interrupted = self->interrupted_.load();
  if (!interrupted && self->executed_ <= self->limits_.instructions) return;
  // luaL_error's own position would name the hook, not the user's line: say where the
  // chunk was when it was stopped.
  std::string where;
  if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0) where = std::string(ar->short_src) + ":" + std::to_string(ar->currentline) + ": ";
  if (interrupted) luaL_error(L, "%sinterrupted (the deployment is shutting down or the command was cancelled)", where.c_str());
  luaL_error(L, "%sinterrupted: more than %d million Lua instructions (a loop that never ends?)", where.c_str(),
             static_cast<int>(self->limits_.instructions / 1'000'000));
}

LuaSandbox::LuaSandbox(LuaLimits limits) : limits_(limits) {
  L_ = lua_newstate(&LuaSandbox::allocate, this);
  if (L_ == nullptr) return;
  sandbox_of(L_) = this;
  luaL_requiref(L_, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L_, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(L_, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(L_, LUA_MATHLIBNAME, luaopen_math, 1);
  luaL_requiref(L_, LUA_UTF8LIBNAME, luaopen_utf8, 1);
  lua_settop(L_, 0);
  for (const char* unsafe : {"dofile", "loadfile", "load", "require"}) {
    lua_pushnil(L_);
    lua_setglobal(L_, unsafe);
  }
  lua_sethook(L_, &LuaSandbox::count_hook, LUA_MASKCOUNT, kHookEvery);
}

LuaSandbox::~LuaSandbox() {
  if (L_ != nullptr) lua_close(L_);
}

Status LuaSandbox::load(const std::string& code, const std::string& chunkname) {
  if (L_ == nullptr) return internal_error("cannot create a Lua state");
  if (luaL_loadbufferx(L_, code.data(), code.size(), chunkname.c_str(), "t") != LUA_OK) return pop_error(L_);
  return Status::Ok();
}

Status LuaSandbox::load_file(const std::string& path) {
  if (L_ == nullptr) return internal_error("cannot create a Lua state");
  if (luaL_loadfilex(L_, path.c_str(), "t") != LUA_OK) return pop_error(L_);
  return Status::Ok();
}

Status LuaSandbox::call(int nargs, int nresults) {
  executed_ = 0;
  interrupted_.store(false);
  if (lua_pcall(L_, nargs, nresults, 0) != LUA_OK) return pop_error(L_);
  return Status::Ok();
}

}  // namespace janus
