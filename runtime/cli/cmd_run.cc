#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/presets.h"
#include "runtime/reference_engine.h"

namespace janus::cli {

int cmd_run(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "json"}, {});
  if (!parsed.ok()) return fail("run", parsed.status().message(), 2);
  const ModelPreset* p = find_preset(kDefaultPreset);
  auto dir = ensure_preset_model(kDefaultPreset, kDefaultSeed, p->default_dtype, true);
  if (!dir.ok()) return fail("run", dir.status().to_string());
  auto model = Model::load(*dir);
  if (!model.ok()) return fail("run", model.status().to_string());
  std::vector<GenerateRequest> reqs;
  for (std::vector<int32_t> prompt : {std::vector<int32_t>{5, 17, 99}, {42, 7, 300, 11, 256, 8}, {100}, {9, 8, 7, 6, 5, 4, 3, 2}}) {
    GenerateRequest r;
    r.prompt = prompt;
    r.max_new_tokens = 24;
    reqs.push_back(r);
  }
  ReferenceEngine engine(*model);
  auto t0 = std::chrono::steady_clock::now();
  auto res = engine.generate(reqs);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!res.ok()) return fail("run", res.status().to_string());
  int64_t n = 0;
  for (size_t i = 0; i < res->size(); ++i) {
    nlohmann::json j = {{"id", i}, {"prompt", (*res)[i].prompt}, {"tokens", (*res)[i].tokens}};
    std::printf("%s\n", j.dump().c_str());
    n += static_cast<int64_t>((*res)[i].tokens.size());
  }
  std::printf("%lld tokens in %.3f s: %.1f tokens/s\n", static_cast<long long>(n), secs, n / secs);
  return 0;
}

}  // namespace janus::cli
