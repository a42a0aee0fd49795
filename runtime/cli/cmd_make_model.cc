#include <cstdio>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/model/presets.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus make-model --preset NAME --out DIR [--seed N] [--dtype f32|bf16|f16]
       janus make-model --list

Writes DIR/config.json and DIR/model.safetensors with deterministic random weights of a
preset shape: the same preset, seed and dtype give the same bytes everywhere.
)";

int cmd_make_model(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "list"}, {"preset", "out", "seed", "dtype"});
  if (!parsed.ok()) return fail("make-model", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (a.flag("list")) {
    for (const ModelPreset& p : model_presets())
      std::printf("%-16s %s (default dtype %s)\n", p.name.c_str(), p.description.c_str(), dtype_name(p.default_dtype));
    return 0;
  }
  if (!a.has("preset") || !a.has("out")) return fail("make-model", std::string("--preset and --out are required\n") + kHelp, 2);
  const ModelPreset* p = find_preset(a.get("preset"));
  if (p == nullptr) {
    std::string names;
    for (const ModelPreset& q : model_presets()) names += (names.empty() ? "" : ", ") + q.name;
    return fail("make-model", "no preset named '" + a.get("preset") + "' (presets: " + names + ")", 2);
  }
  auto seed = a.get_int("seed", 0);
  if (!seed.ok()) return fail("make-model", seed.status().message(), 2);
  DType dt = p->default_dtype;
  if (a.has("dtype")) {
    const std::string d = a.get("dtype");
    if (d == "f32") dt = DType::kF32;
    else if (d == "bf16") dt = DType::kBF16;
    else if (d == "f16") dt = DType::kF16;
    else return fail("make-model", "--dtype must be f32, bf16 or f16, got '" + d + "'", 2);
  }
  Status s = make_model(*p, a.get("out"), static_cast<uint64_t>(*seed), dt, /*progress=*/true);
  if (!s.ok()) return fail("make-model", s.to_string());
  std::fprintf(stderr, "wrote %s (%s, seed %lld, %s)\n", a.get("out").c_str(), p->name.c_str(), static_cast<long long>(*seed),
               dtype_name(dt));
  return 0;
}

}  // namespace janus::cli
