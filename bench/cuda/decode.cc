// bench_decode: end-to-end decode speed of the Janus runtime on one GPU — the whole
// disaggregated actor graph (Frontend, attention shard, Router, Scheduler with AEBS,
// expert instances, all on cuda:0) — for the 8-layer gpu-qwen3-moe preset in BF16, batch
// 1, 16 and 64 by default (prompts of 16 tokens, 64 new tokens, EOS ignored), beside:
//   - the physical floor: the bytes a decode step must read (attention and LM-head
//     weights, the experts the batch activates — counted from the run's own routing — and
//     the KV cache) over the GPU's measured copy bandwidth;
//   - Hugging Face transformers generate() on the same checkpoint, same GPU, bf16, greedy
//     (bench/peers/decode_transformers.py), decode only, in its compiled mode (grouped_mm
//     experts, static cache, torch.compile) and its eager defaults; the speedup is against
//     the faster of the two at each batch;
//   - host time per step: the process's CPU time (every thread: actors, CAF workers,
//     launches) over the timed runs, divided by their tokens;
//   - where a decode step's time goes: per-actor stages from the runtime's trace
//     (attention, route, schedule, experts, combine, sample) and what is left: actor
//     messages, scheduling glue and host/GPU hand-offs.
//
//   bench_decode [--batches 1,16,64] [--new-tokens 64] [--prompt-len 16]
//                [--configs 1x1,1x2,1x4,1x1m2] [--runs 3] [--no-peer] [--no-breakdown]
//                [--peer-modes compiled,eager]
//
// A config "SxI" is S attention shards and I expert instances sharing the GPU (each on its
// own CUDA stream; I instances split the 128 experts, one replica each); "m2" adds a
// second micro-batch (ping-pong). Decode time is from the first token of the batch (end
// of prefill) to the last, median of --runs runs after warm-up.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench/cuda/cuda_bench_util.h"
#include "gpu/backend/cuda/backend.h"
#include "gpu/cuda/device.h"
#include "gpu/backend/cuda/memory.h"
#include "actors/deployment.h"
#include "runtime/model/presets.h"
#include "runtime/base/progress.h"

using namespace janus;

namespace {

// CPU seconds of every thread of this process.
double process_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::atoi(item.c_str()));
  return v;
}

struct Config {
  std::string name;
  int shards = 1, instances = 1, micro_batches = 1;
};

std::vector<Config> parse_configs(const std::string& s) {
  std::vector<Config> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    Config c;
    c.name = item;
    if (std::sscanf(item.c_str(), "%dx%d", &c.shards, &c.instances) != 2) {
      std::fprintf(stderr, "bad config '%s' (want SxI, e.g. 1x2, optionally m2)\n", item.c_str());
      std::exit(2);
    }
    if (item.find('m') != std::string::npos) c.micro_batches = std::atoi(item.substr(item.find('m') + 1).c_str());
    v.push_back(c);
  }
  return v;
}

// The same prompts as the transformers peer: row i, position t.
std::vector<int32_t> prompt(int i, int len, int vocab) {
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (int t = 0; t < len; ++t) p[static_cast<size_t>(t)] = 1 + (i * 131 + t * 17 + 7) % (vocab - 1);
  return p;
}

struct RunResult {
  double t_first = 0, t_last = 0;  // all first tokens out; last token out
  int64_t tokens = 0;
  bool ok = true;
  std::string error;
};

// One batch: every request admitted in one step (the deployment is paused while they are
// submitted), `new_tokens` each.
RunResult run_batch(Deployment& d, int batch, int prompt_len, int new_tokens, int vocab) {
  RunResult out;
  std::vector<double> first(static_cast<size_t>(batch), 0), last(static_cast<size_t>(batch), 0);
  auto paused = d.pause();
  if (!paused.ok()) {
    out.ok = false;
    out.error = paused.status().to_string();
    return out;
  }
  std::vector<RequestHandle> hs;
  for (int i = 0; i < batch; ++i) {
    GenerateRequest r;
    r.prompt = prompt(i, prompt_len, vocab);
    r.max_new_tokens = new_tokens;
    r.stop_at_eos = false;
    hs.push_back(d.submit(r, [&first, &last, i](int32_t) {  // on the Frontend's thread
      const double now = bench::now_s();
      if (first[static_cast<size_t>(i)] == 0) first[static_cast<size_t>(i)] = now;
      last[static_cast<size_t>(i)] = now;
    }));
  }
  auto resumed = d.resume();
  for (auto& h : hs) {
    auto r = h.result.get();
    if (!r.ok()) {
      out.ok = false;
      out.error = r.status().to_string();
    } else {
      out.tokens += static_cast<int64_t>(r->tokens.size());
    }
  }
  if (!resumed.ok()) {
    out.ok = false;
    out.error = resumed.status().to_string();
  }
  out.t_first = *std::max_element(first.begin(), first.end());
  out.t_last = *std::max_element(last.begin(), last.end());
  return out;
}

// Sum over layers of the per-layer a_max (with one instance: distinct experts per layer
// batch), and the number of layer batches, from the Scheduler's statistics.
std::pair<double, double> amax_sums(Deployment& d) {
  double sum = 0, batches = 0;
  for (const LayerAmax& a : d.metrics().amax) {
    sum += a.mean * static_cast<double>(a.batches);
    batches += static_cast<double>(a.batches);
  }
  return {sum, batches};
}

struct Breakdown {
  std::map<std::string, double> ms;  // per decode step
  double experts_sum_ms = 0;         // all instances' expert time, summed
  int steps = 0;
};

// Where a decode step's time goes, from the trace spans inside (t0, t1].
Breakdown breakdown(const Trace& trace, double t0, double t1, int decode_steps) {
  Breakdown b;
  b.steps = decode_steps;
  std::map<std::tuple<uint64_t, int, int>, double> experts_max;
  for (const TraceSpan& s : trace.spans()) {
    if (s.start_s <= t0 || s.end_s > t1) continue;
    const double ms = (s.end_s - s.start_s) * 1e3;
    if (s.what == "experts") {
      double& m = experts_max[{s.step, s.layer, s.micro_batch}];
      m = std::max(m, ms);
      b.experts_sum_ms += ms;
    } else {
      b.ms[s.what] += ms;
    }
  }
  for (const auto& [k, ms] : experts_max) b.ms["experts"] += ms;
  for (auto& [k, v] : b.ms) v /= decode_steps;
  b.experts_sum_ms /= decode_steps;
  return b;
}

GraphSpec spec_for(const std::string& dir, const Config& c, int experts, int max_batch, int max_seq_len) {
  GraphSpec g;
  g.source = "<bench_decode>";
  g.model.path = dir;
  g.attention.shards = c.shards;
  g.attention.devices = {"cuda:0"};
  g.attention.micro_batches = c.micro_batches;
  // Each shard: room for its share of the largest batch at full length, and a margin.
  g.attention.max_batch = (max_batch + c.shards - 1) / c.shards;
  g.attention.max_seq_len = max_seq_len;
  g.attention.kv_blocks = g.attention.max_batch * (max_seq_len / 16) + 64;
  g.experts.instances = c.instances;
  g.experts.devices = {"cuda:0"};
  g.experts.slots = (experts + c.instances - 1) / c.instances;
  g.router.side = "moe";
  g.scheduler.policy = "aebs";
  return g;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> batches = {1, 16, 64};
  int new_tokens = 64, prompt_len = 16, runs = 3;
  std::string configs_text = "1x1,1x2,1x4,1x1m2";
  bool peer = true, want_breakdown = true;
  std::string peer_modes = "compiled,eager";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--batches") batches = parse_ints(next());
    else if (a == "--new-tokens") new_tokens = std::atoi(next().c_str());
    else if (a == "--prompt-len") prompt_len = std::atoi(next().c_str());
    else if (a == "--configs") configs_text = next();
    else if (a == "--runs") runs = std::max(1, std::atoi(next().c_str()));
    else if (a == "--no-peer") peer = false;
    else if (a == "--peer-modes") peer_modes = next();
    else if (a == "--no-breakdown") want_breakdown = false;
    else {
      std::fprintf(stderr,
                   "usage: bench_decode [--batches 1,16,64] [--new-tokens 64] [--prompt-len 16] [--configs 1x1,1x2,1x4,1x1m2] "
                   "[--runs 3] [--no-peer] [--peer-modes compiled,eager] [--no-breakdown]\n");
      return 2;
    }
  }
  if (new_tokens < 2 || prompt_len < 1 || batches.empty()) return std::fprintf(stderr, "nothing to measure\n"), 2;
  const std::vector<Config> configs = parse_configs(configs_text);
  if (cuda::device_count() == 0) {
    std::printf("bench_decode: no CUDA device, nothing to measure\n");
    return 1;
  }
  const double t_start = bench::now_s();
  auto dir = ensure_preset_model("gpu-qwen3-moe", 0, DType::kBF16, true);
  if (!dir.ok()) return std::fprintf(stderr, "%s\n", dir.status().to_string().c_str()), 1;
  auto model = Model::load(*dir);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().to_string().c_str()), 1;
  const ModelConfig& c = (*model)->config();
  const double t_model = bench::now_s();
  double bw = 0;
  {
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    bw = bench::copy_bandwidth(s);
    CK(cudaStreamDestroy(s));
  }
  std::printf("model gpu-qwen3-moe BF16 (%s): %d layers, hidden %d, %d experts top-%d, %s of weights (%s experts); made/loaded in "
              "%.1f s\n",
              dir->c_str(), c.num_layers, c.hidden_size, c.num_experts, c.top_k, human_bytes(static_cast<double>((*model)->weight_bytes())).c_str(),
              human_bytes(static_cast<double>((*model)->expert_bytes())).c_str(), t_model - t_start);
  std::printf("device %s, copy bandwidth %.0f GB/s (read + write)\n", cuda::device_description(0).c_str(), bw / 1e9);

  // Bytes a decode step reads besides the experts: attention, norms, routers (kept in
  // F32 on the GPU), final norm, LM head, embedding rows, and the KV cache.
  const ModelWeights& w = (*model)->weights();
  double dense_bytes = static_cast<double>(w.final_norm.nbytes() + w.lm_head.nbytes());
  for (const LayerWeights& l : w.layers) {
    dense_bytes += static_cast<double>(l.input_norm.nbytes() + l.post_norm.nbytes() + l.q.nbytes() + l.k.nbytes() + l.v.nbytes() +
                                       l.o.nbytes() + l.q_norm.nbytes() + l.k_norm.nbytes());
    if (l.sparse) dense_bytes += static_cast<double>(l.router.rows * l.router.cols * 4);
  }
  const double expert_bytes = static_cast<double>(3) * c.hidden_size * c.moe_intermediate_size * 2;
  const int max_seq_len = ((prompt_len + new_tokens + 15) / 16) * 16;
  const int max_batch = *std::max_element(batches.begin(), batches.end());

  cuda::retain_weights(true);  // upload once, reuse in every config's deployment
  struct Row {
    double tps = 0, tpot_ms = 0, host_us = 0;
  };
  std::map<std::pair<std::string, int>, Row> results;
  std::map<int, double> distinct;  // batch -> distinct experts per layer per decode step (measured)
  for (const Config& cfg : configs) {
    const double t0 = bench::now_s();
    DeploymentOptions o;
    // Tracing costs a mutex-guarded append per stage (~50 per step, well under 1% of a
    // step): the timed runs are also the ones broken down.
    o.trace = want_breakdown;
    auto d = Deployment::create(spec_for(*dir, cfg, c.num_experts, max_batch, max_seq_len), o);
    if (!d.ok()) {
      std::printf("\nconfig %s: %s\n", cfg.name.c_str(), d.status().to_string().c_str());
      continue;
    }
    const double t_created = bench::now_s();
    // Warm-up: every pool and cuBLAS path at prefill and decode sizes.
    for (int b : batches) run_batch(**d, b, prompt_len, 4, c.vocab_size);
    std::printf("\nconfig %s: %d attention shard(s), %d expert instance(s), %d micro-batch(es) on cuda:0; built in %.1f s "
                "(weight uploads so far: %.1f s in all)\n",
                cfg.name.c_str(), cfg.shards, cfg.instances, cfg.micro_batches, t_created - t0, cuda::weight_upload_seconds());
    std::printf("%6s %10s %9s %10s %9s %7s %12s\n", "batch", "tokens/s", "TPOT ms", "GB/step", "floor ms", "floor%",
                "host us/step");
    std::map<int, std::pair<double, double>> window;  // batch -> decode span of its last timed run
    for (int b : batches) {
      std::vector<double> tpots;
      std::string error;
      const auto s0 = amax_sums(**d);
      const double cpu0 = process_cpu_s();
      for (int r = 0; r < runs; ++r) {
        RunResult rr = run_batch(**d, b, prompt_len, new_tokens, c.vocab_size);
        if (!rr.ok) {
          error = rr.error;
          break;
        }
        tpots.push_back((rr.t_last - rr.t_first) / (new_tokens - 1));
        window[b] = {rr.t_first, rr.t_last};
      }
      const double host_us = (process_cpu_s() - cpu0) / (static_cast<double>(runs) * new_tokens) * 1e6;
      if (!error.empty()) {
        std::printf("%6d failed: %s\n", b, error.c_str());
        window.erase(b);
        continue;
      }
      // Distinct experts per layer per decode step, from the Scheduler's a_max (with one
      // instance a_max is exactly the distinct count): the runs minus as many
      // prefill-only runs of the same prompts (same routing).
      if (cfg.instances == 1 && cfg.micro_batches == 1 && !distinct.count(b)) {
        const auto s1 = amax_sums(**d);
        for (int r = 0; r < runs; ++r) run_batch(**d, b, prompt_len, 1, c.vocab_size);
        const auto s2 = amax_sums(**d);
        const double dsum = (s1.first - s0.first) - (s2.first - s1.first);
        const double dbatches = (s1.second - s0.second) - (s2.second - s1.second);
        if (dbatches > 0) distinct[b] = dsum / dbatches;
      }
      double act = 0;
      if (distinct.count(b)) act = distinct[b];
      else act = c.num_experts * (1.0 - std::pow(1.0 - static_cast<double>(c.top_k) / c.num_experts, b));  // uniform routing
      const double ctx = prompt_len + new_tokens / 2.0;
      const double kv_bytes = static_cast<double>(b) * ctx * c.num_layers * c.num_kv_heads * c.head_dim * 2 * 2;
      const double bytes = dense_bytes + kv_bytes + static_cast<double>(b) * c.hidden_size * 2 +
                           c.num_sparse_layers() * act * expert_bytes;
      const double floor_ms = bytes / bw * 1e3;
      const double tpot = bench::median(tpots);
      Row row{b / tpot, tpot * 1e3, host_us};
      results[{cfg.name, b}] = row;
      std::printf("%6d %10.1f %9.3f %10.2f %9.3f %6.1f%% %12.0f\n", b, row.tps, row.tpot_ms, bytes / 1e9, floor_ms,
                  100.0 * floor_ms / row.tpot_ms, row.host_us);
    }
    if (want_breakdown && !window.empty()) {
      std::printf("  per decode step of the last run (ms; experts = slowest instance per layer batch, summed over layers; "
                  "rest = step - stages: actor messages, scheduling glue, host/GPU hand-offs%s):\n",
                  cfg.micro_batches > 1 ? "; with 2 micro-batches the stages overlap, so rest is not meaningful" : "");
      std::printf("  %6s %9s %9s %7s %8s %8s %8s %7s %7s %7s %12s\n", "batch", "step", "attention", "dense", "route",
                  "schedule", "experts", "combine", "sample", "rest", "experts(sum)");
      const Trace& trace = (*d)->trace();
      for (const auto& [b, w] : window) {
        const Breakdown bd = breakdown(trace, w.first, w.second, new_tokens - 1);
        const double step_ms = (w.second - w.first) / (new_tokens - 1) * 1e3;
        auto get = [&](const char* k) {
          auto it = bd.ms.find(k);
          return it == bd.ms.end() ? 0.0 : it->second;
        };
        double staged = 0;
        for (const auto& [k, v] : bd.ms) staged += v;
        std::printf("  %6d %9.3f %9.3f %7.3f %8.3f %8.3f %8.3f %7.3f %7.3f %7.3f %12.3f\n", b, step_ms, get("attention"),
                    get("dense"), get("route"), get("schedule"), get("experts"), get("combine"), get("sample"), step_ms - staged,
                    bd.experts_sum_ms);
      }
    }
    (*d)->shutdown();
  }
  cuda::retain_weights(false);
  if (!distinct.empty()) {
    std::printf("\ndistinct experts per layer per decode step (measured, of %d):", c.num_experts);
    for (const auto& [b, v] : distinct) std::printf("  batch %d: %.1f", b, v);
    std::printf("\n");
  }

  // The peers: transformers generate() on the same checkpoint and GPU, one process per mode.
  std::vector<std::string> modes;
  if (peer) {
    std::stringstream ms(peer_modes);
    for (std::string m; std::getline(ms, m, ',');)
      if (!m.empty()) modes.push_back(m);
  }
  std::map<std::string, std::map<int, double>> hf;  // mode -> batch -> tokens/s
  std::string peer_note = peer ? "" : "skipped (--no-peer)";
  for (const std::string& mode : modes) {
    std::string bl;
    for (int b : batches) bl += (bl.empty() ? "" : ",") + std::to_string(b);
    const double tp = bench::now_s();
    const std::string log = "/tmp/bench_decode_peer_" + mode + ".log";
    const std::string cmd = "timeout 900 python3 " + bench::source_dir() + "/bench/peers/decode_transformers.py --model " + *dir +
                            " --mode " + mode + " --batches " + bl + " --prompt-len " + std::to_string(prompt_len) +
                            " --new-tokens " + std::to_string(new_tokens) + " 2>" + log;
    std::fprintf(stderr, "running the transformers peer (%s)...\n", mode.c_str());
    const std::string out = bench::capture(cmd);
    std::stringstream ss(out);
    std::string line;
    while (std::getline(ss, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        hf[mode][j["batch"].get<int>()] = j["tokens_per_s"].get<double>();
      } catch (...) {
      }
    }
    const std::string status = hf[mode].empty() ? "unavailable (see " + log + ")" : "ran";
    char note[200];
    std::snprintf(note, sizeof note, "%s%s %s in %.0f s", peer_note.empty() ? "" : "; ", mode.c_str(), status.c_str(),
                  bench::now_s() - tp);
    peer_note += note;
  }
  // Speedup against the fastest peer mode at each batch: compiled is what a user who wants
  // speed would pick, but on the H100 eager beat it at B >= 64 (grouped_mm under compile).
  std::printf("\nsummary (decode tokens/s; best Janus config per batch; transformers %s; speedup against the fastest "
              "peer mode of each batch):\n",
              peer_note.c_str());
  std::printf("%6s %12s %9s %9s %13s", "batch", "janus t/s", "TPOT ms", "config", "host us/step");
  for (const std::string& m : modes) std::printf(" %16s", ("hf " + m + " t/s").c_str());
  std::printf(" %9s\n", "speedup");
  for (int b : batches) {
    std::string best;
    Row br;
    for (const auto& [k, row] : results)
      if (k.second == b && row.tps > br.tps) {
        br = row;
        best = k.first;
      }
    std::printf("%6d %12.1f %9.3f %9s %13.0f", b, br.tps, br.tpot_ms, best.c_str(), br.host_us);
    for (const std::string& m : modes) {
      if (hf[m].count(b)) std::printf(" %16.1f", hf[m][b]);
      else std::printf(" %16s", "n/a");
    }
    double fastest = 0;
    for (const std::string& m : modes)
      if (hf[m].count(b)) fastest = std::max(fastest, hf[m][b]);
    if (fastest > 0) std::printf(" %8.1fx\n", br.tps / fastest);
    else std::printf(" %9s\n", "");
  }
  std::printf("total %.0f s\n", bench::now_s() - t_start);
  return 0;
}
