// bench_amax: a_max (the most distinct activated experts on one instance, what a
// memory-bound MoE layer costs) per scheduling policy, beside the exact optimum
// (runtime/scheduling/aebs_optimum.h) and the Appendix A bound, on
//   1. synthetic routing: uniform and Zipf (s = 0.5, 1.0, 1.5) top-k, Algorithm 3
//      placement from a warm-up window of the same routing;
//   2. the greedy's visiting-order and tie-break variants against the optimum;
//   3. routing recorded from the reference engine on the fixture checkpoints
//      (tests/fixtures/qwen3_moe, tests/fixtures/mixtral), replayed per layer batch and
//      resampled (Monte Carlo) at several B, on a small instance setup.
// CPU only; it prints tables and never asserts on time.
//
//   build/bench/bench_amax [--batches N]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "gpu/cpu/aebs.h"
#include "runtime/scheduling/activation_stats.h"
#include "runtime/scheduling/aebs_optimum.h"
#include "runtime/scheduling/aebs_synthetic.h"
#include "runtime/scheduling/amax_estimator.h"
#include "runtime/scheduling/expert_placement.h"
#include "runtime/model/reference_engine.h"
#include "runtime/scheduling/scheduling_policy.h"

using namespace janus;

namespace {

template <class T>
T value_or_die(Result<T> r, const char* what) {
  if (!r.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, r.status().to_string().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

struct Dist {
  std::vector<int> v;
  double mean() const {
    double s = 0;
    for (int x : v) s += x;
    return v.empty() ? 0 : s / static_cast<double>(v.size());
  }
  int p99() const {
    if (v.empty()) return 0;
    std::vector<int> s = v;
    std::sort(s.begin(), s.end());
    return s[std::min(s.size() - 1, static_cast<size_t>(std::ceil(0.99 * static_cast<double>(s.size()))) - 1)];
  }
  int max() const { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }
};

const std::vector<std::string> kPolicies = {"aebs", "random_replica", "primary", "token_balanced"};

// a_max of each policy, of Algorithm 1 alone and of the optimum over a list of layer
// batches, and the repair moves AEBS made.
struct Eval {
  std::map<std::string, Dist> policy;
  Dist opt, alg1, repairs;
};
Eval evaluate(const ExpertLayout& l, const std::vector<std::vector<int32_t>>& batches, int k, uint64_t seed) {
  Eval ev;
  for (const auto& name : kPolicies) {
    auto p = value_or_die(make_scheduling_policy(name, seed), "policy");
    for (size_t b = 0; b < batches.size(); ++b) {
      const auto& ids = batches[b];
      const int64_t B = static_cast<int64_t>(ids.size()) / k;
      std::vector<int32_t> out(ids.size());
      Status st = p->assign(l, ids.data(), B, k, b, out.data());
      if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.to_string().c_str());
        std::exit(1);
      }
      ev.policy[name].v.push_back(max_activated_experts(l, out.data(), static_cast<int64_t>(out.size())));
    }
  }
  const AebsReplicaTable full = AebsReplicaTable::build(l), alg1 = AebsReplicaTable::build(l, AebsVisitOrder::kFewestReplicasFirst, 0);
  AebsHostOutputs o;
  for (const auto& ids : batches) {
    const int64_t B = static_cast<int64_t>(ids.size()) / k;
    ev.opt.v.push_back(value_or_die(optimal_max_activated(l, ids.data(), B, k), "optimum"));
    o.resize(full.view(), B * k);
    if (!cpu::aebs(full.view(), ids.data(), B, k, o.outputs()).ok()) std::exit(1);
    ev.repairs.v.push_back(o.summary[kAebsRepairs]);
    if (!cpu::aebs(alg1.view(), ids.data(), B, k, o.outputs()).ok()) std::exit(1);
    ev.alg1.v.push_back(o.summary[kAebsMaxActivated]);
  }
  return ev;
}

double reduction(double a, double base) { return base > 0 ? 100.0 * (base - a) / base : 0; }

void print_eval_header() {
  std::printf("%-8s %4s | %10s %5s %10s %10s %6s | %6s %9s %4s | %7s %7s | %5s\n", "routing", "B", "aebs", "alg1", "random_rep",
              "primary", "tokbal", "opt", "alg1-opt", "rep", "vs rand", "vs prim", "bound");
  std::printf("%-8s %4s | %10s %5s %10s %10s %6s | %6s %9s %4s | %7s %7s | %5s\n", "", "", "mean p99", "mean", "mean p99",
              "mean p99", "mean", "mean", "mean max", "mean", "", "", "");
}

void print_eval_row(const std::string& routing, int64_t B, const Eval& ev, double bound) {
  const Dist& a = ev.policy.at("aebs");
  const Dist& r = ev.policy.at("random_replica");
  const Dist& p = ev.policy.at("primary");
  const Dist& t = ev.policy.at("token_balanced");
  Dist gap;
  for (size_t i = 0; i < a.v.size(); ++i) {
    gap.v.push_back(ev.alg1.v[i] - ev.opt.v[i]);
    if (a.v[i] != ev.opt.v[i]) std::printf("  (aebs above the optimum in batch %zu)\n", i);
  }
  char b[16] = "all", bd[16] = "-";
  if (B > 0) std::snprintf(b, sizeof b, "%lld", static_cast<long long>(B));
  if (bound > 0) std::snprintf(bd, sizeof bd, "%.2f", bound);
  std::printf("%-8s %4s | %5.2f %4d %5.2f %5.2f %4d %5.2f %4d %6.2f | %6.2f %5.3f %3d %4.2f | %6.1f%% %6.1f%% | %5s\n",
              routing.c_str(), b, a.mean(), a.p99(), ev.alg1.mean(), r.mean(), r.p99(), p.mean(), p.p99(), t.mean(),
              ev.opt.mean(), gap.mean(), gap.max(), ev.repairs.mean(), reduction(a.mean(), r.mean()), reduction(a.mean(), p.mean()),
              bd);
}

// Algorithm 3 placement from the statistics of a window of routing batches.
ExpertLayout place_from(const std::vector<std::vector<int32_t>>& window, int E, int k, int G, int C) {
  auto stats = value_or_die(ActivationStats::create(1, E, static_cast<int>(window.size())), "stats");
  for (const auto& ids : window) {
    Status st = stats.record(0, ids.data(), static_cast<int64_t>(ids.size()) / k, k);
    if (!st.ok()) std::exit(1);
  }
  PlacementInput in{E, G, C, {}, {}, {}};
  for (int64_t c : stats.counts(0)) in.load.push_back(static_cast<double>(c));
  for (int64_t a : stats.coactivation_matrix(0)) in.coactivation.push_back(static_cast<double>(a));
  return value_or_die(place_experts(in), "placement");
}

void synthetic(int batches) {
  struct Setup {
    int E, k, G, C;
  };
  std::printf("== 1. synthetic routing: a_max per policy over %d layer batches; Algorithm 3 placement from a warm-up\n"
              "      window of 32 x 256 tokens of the same routing; opt = exact optimum (max-flow);\n"
              "      vs rand / vs prim = reduction of mean a_max by AEBS; bound = Appendix A bound (p from the window)\n"
              "      aebs = greedy + repair (gpu/cpu/aebs.h), alg1 = the greedy alone, rep = repair moves per batch\n",
              batches);
  for (Setup s : {Setup{160, 8, 16, 12}, Setup{64, 6, 8, 10}, Setup{256, 8, 32, 10}}) {
    std::printf("\nE=%d k=%d n_e=%d C=%d (%d spare slots)\n", s.E, s.k, s.G, s.C, s.G * s.C - s.E);
    print_eval_header();
    for (double zipf : {0.0, 0.5, 1.0, 1.5}) {
      std::vector<std::vector<int32_t>> warm;
      for (int b = 0; b < 32; ++b) warm.push_back(value_or_die(synthetic_routing(s.E, s.k, 256, zipf, 11, 100000 + b), "routing"));
      const ExpertLayout l = place_from(warm, s.E, s.k, s.G, s.C);
      RoutingTrace trace{s.k, {}};
      for (const auto& w : warm) trace.ids.insert(trace.ids.end(), w.begin(), w.end());
      const auto p = value_or_die(activation_probability(trace, s.E), "probability");
      for (int64_t B : {16, 64, 256}) {
        std::vector<std::vector<int32_t>> bs;
        for (int b = 0; b < batches; ++b)
          bs.push_back(value_or_die(synthetic_routing(s.E, s.k, B, zipf, 11, static_cast<uint64_t>(B * 1000 + b)), "routing"));
        const Eval ev = evaluate(l, bs, s.k, 5);
        const double bound = value_or_die(amax_analytic_bound(l, p, B), "bound").amax;
        char name[16];
        std::snprintf(name, sizeof name, zipf == 0 ? "uniform" : "zipf%.1f", zipf);
        print_eval_row(name, B, ev, bound);
      }
    }
  }
}

void greedy_rules(int batches) {
  std::printf("\n== 2. greedy rules: mean a_max above the optimum (lower is better) over %d batches per row;\n"
              "      kernel = fewest-replicas-first order + least-pending tie-break (gpu/cpu/aebs.h);\n"
              "      paper = expert-id order + lowest-instance tie-break (Algorithm 1 as listed)\n",
              batches);
  struct Rule {
    const char* name;
    GreedyOrder o;
    GreedyTieBreak t;
  };
  const Rule rules[] = {{"kernel", GreedyOrder::kFewestReplicasFirst, GreedyTieBreak::kLeastPending},
                        {"fewest+low", GreedyOrder::kFewestReplicasFirst, GreedyTieBreak::kLowestInstance},
                        {"paper", GreedyOrder::kExpertId, GreedyTieBreak::kLowestInstance},
                        {"id+pend", GreedyOrder::kExpertId, GreedyTieBreak::kLeastPending},
                        {"tokens+low", GreedyOrder::kMostTokensFirst, GreedyTieBreak::kLowestInstance},
                        {"tokens+pend", GreedyOrder::kMostTokensFirst, GreedyTieBreak::kLeastPending},
                        {"most-rep+low", GreedyOrder::kMostReplicasFirst, GreedyTieBreak::kLowestInstance}};
  std::printf("%-16s %-8s %-6s %4s %6s", "E k n_e C", "routing", "layout", "B", "opt");
  for (const Rule& r : rules) std::printf(" %12s", r.name);
  std::printf("\n");
  std::map<std::string, double> sum;
  int rows = 0;
  struct Setup {
    int E, k, G, C;
  };
  for (Setup s : {Setup{160, 8, 16, 12}, Setup{64, 6, 8, 10}, Setup{64, 8, 32, 4}, Setup{256, 8, 32, 10}})
    for (double zipf : {0.0, 1.0, 1.5})
      for (bool stats : {false, true})
        for (int64_t B : {4, 16, 64}) {
          const ExpertLayout l = stats ? value_or_die(place_experts({s.E, s.G, s.C, synthetic_popularity(s.E, zipf, 3), {}, {}}), "p")
                                       : value_or_die(auto_placement(s.E, s.G, s.C), "auto");
          std::map<std::string, double> excess;
          double opt = 0;
          for (int b = 0; b < batches; ++b) {
            const auto ids = value_or_die(synthetic_routing(s.E, s.k, B, zipf, 3, static_cast<uint64_t>(b)), "routing");
            const int o = value_or_die(optimal_max_activated(l, ids.data(), B, s.k), "opt");
            opt += o;
            for (const Rule& r : rules)
              excess[r.name] += value_or_die(greedy_max_activated(l, ids.data(), B, s.k, r.o, r.t), "greedy") - o;
          }
          char setup[32];
          std::snprintf(setup, sizeof setup, "%d %d %d %d", s.E, s.k, s.G, s.C);
          std::printf("%-16s %-8.1f %-6s %4lld %6.2f", setup, zipf, stats ? "alg3" : "auto", static_cast<long long>(B),
                      opt / batches);
          for (const Rule& r : rules) {
            std::printf(" %12.3f", excess[r.name] / batches);
            sum[r.name] += excess[r.name] / batches;
          }
          std::printf("\n");
          ++rows;
        }
  std::printf("%-16s %-8s %-6s %4s %6s", "mean of rows", "", "", "", "");
  for (const Rule& r : rules) std::printf(" %12.4f", sum[r.name] / rows);
  std::printf("\n");
}

void fixtures(int batches) {
  const int G = 4, C = 3;
  std::printf("\n== 3. routing recorded from the reference engine on the fixture checkpoints (E=8 experts, top-2);\n"
              "      instances: n_e=%d, C=%d (%d slots, %d spare); Algorithm 3 placement from the recorded statistics\n"
              "      of each layer (in-sample); 'engine all' = the engine's own layer batches (prefill and decode\n"
              "      steps of 16 requests), 'mc B' = %d batches of B tokens resampled from the recording\n",
              G, C, G * C, G * C - 8, batches);
  for (const char* fixture : {"qwen3_moe", "mixtral"}) {
    const std::string dir = std::string(JANUS_SOURCE_DIR) + "/tests/fixtures/" + fixture;
    auto model = value_or_die(Model::load(dir), "model");
    const ModelConfig& cfg = model->config();
    std::map<int, std::vector<std::vector<int32_t>>> recorded;  // layer -> layer batches
    ReferenceEngineOptions opt;
    opt.on_route = [&](int layer, const int32_t* ids, int64_t rows, int k) {
      recorded[layer].emplace_back(ids, ids + rows * k);
    };
    ReferenceEngine engine(model, opt);
    // 3 rounds of 16 requests: random prompts of 4..24 tokens, 24 greedy tokens each.
    uint64_t x = 12345;
    auto next = [&]() {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      return x;
    };
    for (int round = 0; round < 3; ++round) {
      std::vector<GenerateRequest> reqs(16);
      for (auto& r : reqs) {
        const int len = 4 + static_cast<int>(next() % 21);
        for (int t = 0; t < len; ++t) r.prompt.push_back(static_cast<int32_t>(next() % static_cast<uint64_t>(cfg.vocab_size)));
        r.max_new_tokens = 24;
        r.stop_at_eos = false;
      }
      value_or_die(engine.generate(reqs), "generate");
    }
    for (auto& [layer, lbs] : recorded) {
      const int k = cfg.top_k, E = cfg.num_experts;
      const ExpertLayout l = place_from(lbs, E, k, G, C);
      RoutingTrace trace{k, {}};
      int64_t tokens = 0;
      for (const auto& b : lbs) {
        trace.ids.insert(trace.ids.end(), b.begin(), b.end());
        tokens += static_cast<int64_t>(b.size()) / k;
      }
      const auto p = value_or_die(activation_probability(trace, E), "probability");
      std::string ps;
      for (double q : p) {
        char b[16];
        std::snprintf(b, sizeof b, " %.2f", q);
        ps += b;
      }
      std::printf("\n%s layer %d: %zu layer batches, %lld tokens; p(e) =%s\n  layout: %s\n", fixture, layer, lbs.size(),
                  static_cast<long long>(tokens), ps.c_str(), l.to_string().c_str());
      print_eval_header();
      print_eval_row("engine", 0, evaluate(l, lbs, k, 5), 0);
      for (int64_t B : {1, 2, 4, 8, 16}) {
        std::vector<std::vector<int32_t>> bs;
        for (int b = 0; b < batches; ++b) {
          std::vector<int32_t> ids;
          for (int64_t t = 0; t < B; ++t) {
            const int64_t row = static_cast<int64_t>(next() % static_cast<uint64_t>(tokens));
            ids.insert(ids.end(), trace.ids.begin() + row * k, trace.ids.begin() + (row + 1) * k);
          }
          bs.push_back(std::move(ids));
        }
        print_eval_row("mc", B, evaluate(l, bs, k, 5), value_or_die(amax_analytic_bound(l, p, B), "bound").amax);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int batches = 300;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--batches" && i + 1 < argc) {
      batches = std::max(10, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_amax [--batches N]\n");
      return 2;
    }
  }
  const double t0 = bench::now_s();
  synthetic(batches);
  greedy_rules(std::max(10, batches * 2 / 3));
  fixtures(batches);
  std::printf("\n%.1f s\n", bench::now_s() - t0);
  return 0;
}
