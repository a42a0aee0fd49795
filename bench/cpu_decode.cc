// bench_cpu_decode: decode speed of the reference engine on the CPU for a preset model
// (default: the tiny default model), against the bytes-over-bandwidth floor and against
// Hugging Face transformers generate() on the same checkpoint, in the same run.
//
//   build/bench/bench_cpu_decode [--preset tiny-qwen3-moe] [--steps 64] [--no-peer]
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "bench/bench_util.h"
#include "runtime/base/parallel.h"
#include "runtime/model/presets.h"
#include "runtime/base/progress.h"
#include "runtime/model/reference_engine.h"

using namespace janus;

int main(int argc, char** argv) {
  std::string preset = kDefaultPreset;
  int steps = 64;
  bool peer = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--preset" && i + 1 < argc) preset = argv[++i];
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--no-peer") peer = false;
    else {
      std::fprintf(stderr, "usage: bench_cpu_decode [--preset NAME] [--steps N] [--no-peer]\n");
      return 2;
    }
  }
  const ModelPreset* p = find_preset(preset);
  if (!p) {
    std::fprintf(stderr, "no preset %s\n", preset.c_str());
    return 2;
  }
  auto dir = ensure_preset_model(preset, kDefaultSeed, p->default_dtype, true);
  if (!dir.ok()) return std::fprintf(stderr, "%s\n", dir.status().to_string().c_str()), 1;
  auto model = Model::load(*dir);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().to_string().c_str()), 1;
  const ModelConfig& c = (*model)->config();
  const double bw = bench::host_copy_bandwidth();
  const double peak = bench::host_peak_flops(cpu_threads());
  std::printf("model %s (%s), %d threads, host copy bandwidth %.1f GB/s, fp32 peak %.1f GFLOP/s\n", preset.c_str(),
              dir->c_str(), cpu_threads(), bw / 1e9, peak / 1e9);

  ReferenceEngine engine(*model);
  std::printf("\n%6s %12s %10s %12s %12s %10s %8s %16s %9s\n", "batch", "tokens/s", "TPOT ms", "bytes/step", "GFLOP/step",
              "floor ms", "floor%", "transformers t/s", "speedup");
  for (int batch : {1, 4, 16}) {
    std::vector<GenerateRequest> reqs(static_cast<size_t>(batch));
    for (int b = 0; b < batch; ++b) {
      reqs[b].prompt = {static_cast<int32_t>(3 + b), 17, static_cast<int32_t>(40 + 7 * b), 99};
      reqs[b].max_new_tokens = steps;
      reqs[b].stop_at_eos = false;
    }
    // Decode time = time(steps new tokens) - time(1 new token: the prefill), each the
    // median of 5 runs after a warm-up.
    auto timed = [&](int new_tokens) {
      for (auto& r : reqs) r.max_new_tokens = new_tokens;
      std::vector<double> t;
      for (int rep = 0; rep < 6; ++rep) {
        double t0 = bench::now_s();
        auto res = engine.generate(reqs);
        if (!res.ok()) std::exit(1);
        if (rep > 0) t.push_back(bench::now_s() - t0);
      }
      return bench::median(t);
    };
    const double t_prefill = timed(1);
    const double t_all = timed(steps);
    const double decode_s = t_all - t_prefill;
    const double tps = batch * (steps - 1) / decode_s;
    const double tpot_ms = decode_s / (steps - 1) * 1e3;
    // Bytes a decode step must read: attention, norms, LM head and embeddings rows, and
    // the experts the batch activates (counted from the routing of this batch: at most
    // batch*top_k distinct per layer, at most all).
    double bytes = static_cast<double>((*model)->weight_bytes() - (*model)->expert_bytes());
    const double per_expert = static_cast<double>((*model)->expert_bytes()) / std::max(1, c.num_sparse_layers() * c.num_experts);
    bytes += c.num_sparse_layers() * std::min(c.num_experts, batch * c.top_k) * per_expert;
    // Multiply-adds a step must do: every non-expert matrix but the embedding once per
    // row, top_k experts per row per sparse layer.
    const double dense_params = static_cast<double>((*model)->weight_bytes() - (*model)->expert_bytes()) / dtype_size(p->default_dtype) -
                                static_cast<double>(c.vocab_size) * c.hidden_size * (c.tie_word_embeddings ? 0 : 1);
    const double flops = 2.0 * batch * (dense_params + c.num_sparse_layers() * c.top_k * per_expert / dtype_size(p->default_dtype));
    const double floor_ms = std::max(bytes / bw, flops / peak) * 1e3;
    std::string peer_tps = "n/a";
    std::string speedup = "";
    if (peer) {
      std::string out = bench::capture("python3 " + bench::source_dir() + "/bench/peers/hf_decode.py --model " + *dir +
                                       " --batch " + std::to_string(batch) + " --steps " + std::to_string(steps) + " 2>/dev/null");
      try {
        auto j = nlohmann::json::parse(out);
        double hf = j["tokens_per_s"].get<double>();
        char b[32];
        std::snprintf(b, sizeof b, "%.1f", hf);
        peer_tps = b;
        std::snprintf(b, sizeof b, "%.1fx", tps / hf);
        speedup = b;
      } catch (...) {
        peer_tps = "unavailable";
      }
    }
    std::printf("%6d %12.1f %10.3f %12s %12.4f %10.4f %7.1f%% %16s %9s\n", batch, tps, tpot_ms, human_bytes(bytes).c_str(), flops / 1e9, floor_ms,
                100.0 * floor_ms / tpot_ms, peer_tps.c_str(), speedup.c_str());
  }
  return 0;
}
