#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/base/parallel.h"
#include "runtime/model/presets.h"
#include "runtime/model/reference_engine.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus generate [--model DIR | --preset NAME] --prompt-ids 5,17,99 [--prompt-ids ...]
                      [--max-new-tokens N] [--print-logits] [--ignore-eos]
                      [--temperature T] [--top-p P] [--top-k K] [--seed S] [--threads N]

Runs the single-process reference engine. Each --prompt-ids is one request; all are
decoded as one batch. Prints one JSON object per prompt on stdout:
  {"prompt":[...],"tokens":[...]}   (+ "last_logits": logits after prefill, with --print-logits)
Greedy unless --temperature > 0. Without --model, the tiny default preset is used (made on
first run).
)";

int cmd_generate(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "print-logits", "ignore-eos", "stats"},
                            {"model", "preset", "prompt-ids", "max-new-tokens", "temperature", "top-p", "top-k", "seed",
                             "threads"});
  if (!parsed.ok()) return fail("generate", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (!a.has("prompt-ids")) return fail("generate", std::string("at least one --prompt-ids is required\n") + kHelp, 2);
  auto max_new = a.get_int("max-new-tokens", 16);
  auto temperature = a.get_double("temperature", 0.0);
  auto top_p = a.get_double("top-p", 1.0);
  auto top_k = a.get_int("top-k", 0);
  auto seed = a.get_int("seed", 0);
  auto threads = a.get_int("threads", 0);
  for (const Status* s : {&max_new.status(), &temperature.status(), &top_p.status(), &top_k.status(), &seed.status(),
                          &threads.status()})
    if (!s->ok()) return fail("generate", s->message(), 2);
  set_cpu_threads(static_cast<int>(*threads));

  std::string dir = a.get("model");
  if (dir.empty()) {
    const std::string preset = a.get("preset", kDefaultPreset);
    const ModelPreset* p = find_preset(preset);
    if (p == nullptr) return fail("generate", "no preset named '" + preset + "'", 2);
    auto d = ensure_preset_model(preset, kDefaultSeed, p->default_dtype, /*progress=*/true);
    if (!d.ok()) return fail("generate", d.status().to_string());
    dir = *d;
  }
  auto model = Model::load(dir);
  if (!model.ok()) return fail("generate", model.status().to_string());

  std::vector<GenerateRequest> reqs;
  int index = 0;
  for (const std::string& ids : a.all("prompt-ids")) {
    auto prompt = parse_id_list(ids, "--prompt-ids #" + std::to_string(index));
    if (!prompt.ok()) return fail("generate", prompt.status().message(), 2);
    GenerateRequest r;
    r.prompt = *prompt;
    r.max_new_tokens = static_cast<int>(*max_new);
    r.stop_at_eos = !a.flag("ignore-eos");
    r.want_prompt_logits = a.flag("print-logits");
    r.sampling.temperature = static_cast<float>(*temperature);
    r.sampling.top_p = static_cast<float>(*top_p);
    r.sampling.top_k = static_cast<int>(*top_k);
    // Each request draws from its own stream, so batching never changes its tokens.
    r.sampling.seed = static_cast<uint64_t>(*seed) * 1000003ull + static_cast<uint64_t>(index);
    reqs.push_back(std::move(r));
    ++index;
  }
  ReferenceEngine engine(*model);
  auto t0 = std::chrono::steady_clock::now();
  auto results = engine.generate(reqs);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!results.ok()) return fail("generate", results.status().to_string());
  int64_t produced = 0;
  for (const GenerateResult& r : *results) {
    nlohmann::json j;
    j["prompt"] = r.prompt;
    j["tokens"] = r.tokens;
    if (a.flag("print-logits")) j["last_logits"] = r.last_logits;
    std::printf("%s\n", j.dump().c_str());
    produced += static_cast<int64_t>(r.tokens.size());
  }
  if (a.flag("stats"))
    std::fprintf(stderr, "generated %lld tokens in %.3f s (%.1f tokens/s)\n", static_cast<long long>(produced), secs,
                 produced / secs);
  return 0;
}

}  // namespace janus::cli
