// Lua graph configs (runtime/config/lua_config.h) run in a sandbox: text chunks only, an
// instruction budget and a memory cap. Whatever the code, loading returns (no exception,
// no crash, no hang), says why it refused, and what it accepts it accepts again the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "runtime/config/lua_config.h"
#include "tests/fuzz/fuzz_require.h"

using namespace janus;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string code(reinterpret_cast<const char*>(data), size);
  auto spec = load_lua_config_string(code, "fuzz.lua");
  if (!spec.ok()) {
    JANUS_FUZZ_REQUIRE(!spec.status().message().empty());
    return 0;
  }
  // Loaded twice only when it loaded: a refused runaway loop costs its whole budget.
  auto again = load_lua_config_string(code, "fuzz.lua");
  JANUS_FUZZ_REQUIRE(again.ok());
  JANUS_FUZZ_REQUIRE(spec->attention.shards == again->attention.shards && spec->experts.placement == again->experts.placement);
  return 0;
}
