#include <cstdio>
#include <filesystem>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/model/presets.h"
#include "runtime/text/tokenizer.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus make-model --preset NAME --out DIR [--seed N] [--dtype f32|bf16|f16]
                        [--vocab-size N] [--tokenizer DIR]
       janus make-model --list

Writes DIR/config.json and DIR/model.safetensors with deterministic random weights of a
preset shape: the same preset, seed and dtype give the same bytes everywhere.

  --vocab-size N   the model's vocabulary instead of the preset's (embedding and LM head
                   rows), so a tiny model can pair with a real tokenizer
  --tokenizer DIR  a Hugging Face tokenizer folder (tokenizer.json, ...): its files are
                   copied into the model folder, the vocabulary defaults to the tokenizer's
                   size, and the model's bos/eos ids become the tokenizer's
)";

namespace {
// The files of a Hugging Face tokenizer folder that `janus serve` reads beside the model.
const char* const kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                       "chat_template.jinja", "special_tokens_map.json"};
}  // namespace

int cmd_make_model(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "list"}, {"preset", "out", "seed", "dtype", "vocab-size", "tokenizer"});
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
  ModelPreset preset = *p;
  std::unique_ptr<text::Tokenizer> tok;
  if (a.has("tokenizer")) {
    auto t = text::Tokenizer::load(a.get("tokenizer"));
    if (!t.ok()) return fail("make-model", "--tokenizer: " + t.status().to_string(), 2);
    tok = std::move(*t);
    preset.config.vocab_size = static_cast<int>(tok->vocab_size());
    std::vector<int32_t> eos = tok->eos_ids();
    if (!eos.empty()) preset.config.eos_token_ids = eos;
    if (tok->bos_id()) preset.config.bos_token_id = *tok->bos_id();
  }
  if (a.has("vocab-size")) {
    auto v = a.get_int("vocab-size", 0);
    if (!v.ok()) return fail("make-model", v.status().message(), 2);
    if (*v < 2 || *v > (1 << 22)) return fail("make-model", "--vocab-size must be between 2 and 4194304, got " + a.get("vocab-size"), 2);
    if (tok && static_cast<size_t>(*v) < tok->vocab_size())
      return fail("make-model", "--vocab-size " + a.get("vocab-size") + " is smaller than the tokenizer's vocabulary (" +
                                    std::to_string(tok->vocab_size()) + " ids)", 2);
    preset.config.vocab_size = static_cast<int>(*v);
  }
  for (int32_t id : preset.config.eos_token_ids)
    if (id >= preset.config.vocab_size)
      return fail("make-model", "the eos id " + std::to_string(id) + " is outside a vocabulary of " + std::to_string(preset.config.vocab_size) +
                                    " (give a larger --vocab-size)", 2);
  if (preset.config.bos_token_id >= preset.config.vocab_size) preset.config.bos_token_id = 0;
  Status s = make_model(preset, a.get("out"), static_cast<uint64_t>(*seed), dt, /*progress=*/true);
  if (s.ok() && tok) {
    namespace fs = std::filesystem;
    for (const char* f : kTokenizerFiles) {
      const fs::path from = fs::path(a.get("tokenizer")) / f;
      if (!fs::exists(from)) continue;
      std::error_code ec;
      fs::copy_file(from, fs::path(a.get("out")) / f, fs::copy_options::overwrite_existing, ec);
      if (ec) s = io_error(from.string() + ": cannot copy into " + a.get("out") + ": " + ec.message());
    }
  }
  if (!s.ok()) return fail("make-model", s.to_string());
  std::fprintf(stderr, "wrote %s (%s, seed %lld, %s, vocabulary %d%s)\n", a.get("out").c_str(), p->name.c_str(),
               static_cast<long long>(*seed), dtype_name(dt), preset.config.vocab_size, tok ? ", with the tokenizer" : "");
  return 0;
}

}  // namespace janus::cli
