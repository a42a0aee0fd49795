// config.json (runtime/model/model_config.h): it comes with a downloaded checkpoint.
// What parses must validate and survive model_config_to_json unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "runtime/model/model_config.h"
#include "tests/fuzz/fuzz_require.h"

using namespace janus;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = parse_model_config(text, "config.json");
  if (!c.ok()) {
    JANUS_FUZZ_REQUIRE(c.status().message().find("config.json") != std::string::npos);
    return 0;
  }
  JANUS_FUZZ_REQUIRE(c->validate("config.json").ok());
  JANUS_FUZZ_REQUIRE(c->sparse_layer.size() == static_cast<size_t>(c->num_layers));
  const std::string json = model_config_to_json(*c);
  auto back = parse_model_config(json, "written");
  JANUS_FUZZ_REQUIRE(back.ok());
  JANUS_FUZZ_REQUIRE(model_config_to_json(*back) == json);
  return 0;
}
