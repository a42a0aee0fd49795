// bench_exchange: per-layer exchange time between attention and MoE nodes — 4 shards x 8
// expert instances on 2 attention hosts + 2 MoE hosts (network namespaces joined by veth
// links and a bridge, tests/net/netns.h), transport tcp — for single-phase, Case 1 and
// Case 2, sweeping the rows each shard puts in a layer batch, beside the cost model's
// prediction for the same layer batch (transport/cost_model.h: the links probed at
// start-up, bytes over bandwidth plus latency and per-message costs: the floor this run
// is held to).
//
// The null backend (no math) runs on every node, so a layer batch's time is the exchange
// and the runtime's own hops; the exchange of a sample is round − moe (dispatch posted →
// every partial sum in, less the slowest MoE node's time from its last input to its
// result), as the attention node's bridge records it (ExchangeSample). The model has a
// realistic hidden size (2048 unless --hidden), so rows carry realistic bytes: 4·H per row
// to the MoE side (F32 activations), 8·H per row back (F64 partial sums).
//
// One deployment per mode; inside it, for each R, 4·R requests with one-token prompts are
// admitted at once (the step clock is paused while they are submitted), so every step's
// layer batch has exactly R rows per shard (prefill included: the prompt is one token).
// The first step of each R is left out (buffer pools grow then). Needs root (namespaces);
// without it, says why and exits 0.
//
// A second sweep (smaller R) runs with every host's link shaped by tc tbf to --shape-mbit
// (1000 by default; 0 skips it): a NIC slower than the CPU's copies, where the links and
// not the shared cores are the bottleneck the model assumes.
//
//   build/bench/bench_exchange [--rows 1,2,4,...,512] [--steps 16] [--hidden 2048] [--modes single,case1,case2]
//                              [--spin-us 200] [--shape-mbit 1000] [--shape-rows 1,4,16,64] [--threads 2]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "net/cluster_util.h"  // tests/net: Process, start_node, Cluster
#include "net/netns.h"         // tests/net: Hosts
#include "actors/deployment.h"
#include "runtime/scheduling/kv_admission.h"
#include "runtime/model/presets.h"
#include "runtime/base/progress.h"

using namespace janus;
using janus::test::Cluster;
using janus::test::Hosts;

namespace {

const char* kModes[3] = {"single", "case1", "case2"};
int mode_index(const std::string& m) {
  for (int i = 0; i < 3; ++i)
    if (m == kModes[i]) return i;
  return -1;
}

// A Qwen3-MoE shape with hidden H (the bytes a row carries), 128 experts top-8 like
// Qwen3-30B-A3B, 4 MoE layers; attention and expert matrices kept small (the null backend
// never reads them, and every node process loads the checkpoint).
Result<std::string> exchange_model(int hidden) {
  ModelPreset p = *find_preset("tiny-qwen3-moe");
  p.name = "bench-exchange-h" + std::to_string(hidden);
  p.description = "bench_exchange: hidden " + std::to_string(hidden) + ", 4 layers, 128 experts top-8";
  ModelConfig& c = p.config;
  c.hidden_size = hidden;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.num_experts = 128;
  c.top_k = 8;
  c.moe_intermediate_size = 16;
  c.vocab_size = 512;
  c.sparse_layer.assign(static_cast<size_t>(c.num_layers), true);
  const std::string dir = preset_cache_dir(p.name, 0, DType::kBF16);
  std::error_code ec;
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "model.safetensors", ec) && fs::exists(fs::path(dir) / "config.json", ec)) return dir;
  const std::string tmp = dir + ".tmp" + std::to_string(getpid());
  fs::remove_all(tmp, ec);
  JANUS_TRY(make_model(p, tmp, 0, DType::kBF16, true));
  fs::rename(tmp, dir, ec);
  if (ec) return io_error(dir + ": " + ec.message());
  return dir;
}

struct Topology {
  test::Layout layout;
  std::map<std::string, std::vector<std::string>> prefix;
};

GraphSpec exchange_spec(const Topology& t, const Hosts& hosts, const std::string& model_dir, const std::string& mode, int max_rows,
                        int steps, int spin_us) {
  GraphSpec g;
  g.source = "<bench_exchange>";
  g.model.path = model_dir;
  g.attention.shards = static_cast<int>(t.layout.shard_nodes.size());
  g.attention.nodes = t.layout.shard_nodes;
  g.attention.micro_batches = 1;
  g.attention.max_batch = max_rows;
  g.attention.kv_blocks = max_rows * kv_blocks_needed(1, steps, g.attention.block_size);
  g.experts.instances = static_cast<int>(t.layout.instance_nodes.size());
  g.experts.nodes = t.layout.instance_nodes;
  g.experts.slots = 0;  // 128 / 8
  g.router.side = "moe";
  g.scheduler.policy = "aebs";
  g.scheduler.seed = 3;
  for (const auto& [name, host] : t.layout.nodes) {
    NodeSpec n;
    n.name = name;
    n.host = host;
    g.nodes.push_back(n);
  }
  g.coordinator.listen = hosts.coordinator_host() + ":0";
  g.coordinator.secret = test::kSecret;
  g.coordinator.join_timeout_s = 60;
  g.exchange.mode = mode;
  g.exchange.transport = "tcp";
  g.exchange.spin_us = spin_us;
  g.workload.prompts = {{1}};
  g.workload.max_new_tokens = steps;
  g.workload.ignore_eos = true;
  return g;
}

// test::start_cluster, with the null backend: what is timed is the exchange alone.
std::unique_ptr<Cluster> start(GraphSpec spec, const Hosts& hosts, const Topology& t, int threads) {
  DeploymentOptions o;
  o.threads = threads;
  o.null_backend = true;
  return test::start_cluster(std::move(spec), hosts.coordinator_host(), t.prefix, test::kSecret, o);
}

struct Counters {
  uint64_t sent = 0, received = 0;
};
std::map<std::string, Counters> counters(const std::vector<NodeSnapshot>& ns) {
  std::map<std::string, Counters> out;
  for (const NodeSnapshot& n : ns) out[n.name] = {n.payload_bytes_sent, n.payload_bytes_received};
  return out;
}

/// One (mode, R): what the attention nodes recorded.
struct Cell {
  bool ran = false;
  std::string error;
  size_t samples = 0;
  double exchange_s = 0, exchange_p90_s = 0, round_s = 0, moe_s = 0;
  double predicted_s[3] = {0, 0, 0};  // medians of what the deployment predicted
  double a_out = 0, a_in = 0, m_out = 0, m_in = 0;  // payload bytes per node per layer batch
  double wall_s = 0;
  std::vector<std::string> modes_seen;
};

double pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

Cell run_rows(Deployment& d, const std::string& mode, int R, int shards, int steps, int layers, double timeout_s) {
  Cell cell;
  cell.ran = true;
  auto clock = d.pause();
  if (!clock.ok()) {
    cell.error = clock.status().to_string();
    return cell;
  }
  const uint64_t step0 = clock->step;
  const auto before = counters(d.nodes());
  std::vector<RequestHandle> hs;
  const int n = shards * R;
  for (int i = 0; i < n; ++i) {
    GenerateRequest g;
    g.prompt = {1 + i % 500};
    g.max_new_tokens = steps;
    g.stop_at_eos = false;
    hs.push_back(d.submit(std::move(g)));
  }
  // Every request is queued before the clock runs again: all are admitted in one step.
  for (int i = 0; i < 500 && d.metrics().queued < static_cast<uint64_t>(n); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const double t0 = bench::now_s();
  (void)d.resume();
  for (auto& h : hs) {
    const double left = timeout_s - (bench::now_s() - t0);
    if (left <= 0 || h.result.wait_for(std::chrono::duration<double>(left)) != std::future_status::ready) {
      cell.error = "timed out after " + std::to_string(static_cast<int>(timeout_s)) + " s";
      return cell;
    }
    const auto& r = h.result.get();
    if (!r.ok()) {
      cell.error = r.status().to_string();
      return cell;
    }
  }
  cell.wall_s = bench::now_s() - t0;
  const std::vector<NodeSnapshot> ns = d.nodes();
  const auto after = counters(ns);
  std::vector<double> ex, round, moe, pred[3];
  int attention_nodes = 0, moe_nodes = 0;
  for (const NodeSnapshot& node : ns) {
    const Counters& b = before.at(node.name);
    const Counters& a = after.at(node.name);
    const double per = 1.0 / (static_cast<double>(steps) * layers);
    if (node.role == "attention") {
      ++attention_nodes;
      cell.a_out += static_cast<double>(a.sent - b.sent) * per;
      cell.a_in += static_cast<double>(a.received - b.received) * per;
    } else {
      ++moe_nodes;
      cell.m_out += static_cast<double>(a.sent - b.sent) * per;
      cell.m_in += static_cast<double>(a.received - b.received) * per;
    }
    for (const ExchangeSample& e : node.exchanges) {
      if (e.step <= step0 + 1) continue;  // earlier R, and this R's first step
      if (std::find(cell.modes_seen.begin(), cell.modes_seen.end(), e.mode) == cell.modes_seen.end()) cell.modes_seen.push_back(e.mode);
      if (e.rows != 2 * R || e.mode != mode) continue;
      ex.push_back(e.exchange_s);
      round.push_back(e.round_s);
      moe.push_back(e.moe_s);
      for (int k = 0; k < 3; ++k) pred[k].push_back(e.predicted_s[k]);
    }
  }
  if (attention_nodes) cell.a_out /= attention_nodes, cell.a_in /= attention_nodes;
  if (moe_nodes) cell.m_out /= moe_nodes, cell.m_in /= moe_nodes;
  cell.samples = ex.size();
  cell.exchange_s = bench::median(ex);
  cell.exchange_p90_s = pct(ex, 0.9);
  cell.round_s = bench::median(round);
  cell.moe_s = bench::median(moe);
  for (int k = 0; k < 3; ++k) cell.predicted_s[k] = bench::median(pred[k]);
  return cell;
}

std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ','))
    if (!x.empty()) v.push_back(std::atoi(x.c_str()));
  return v;
}

std::string kib(double bytes) {
  char b[32];
  if (bytes >= 1024.0 * 1024) std::snprintf(b, sizeof b, "%.2fM", bytes / (1024.0 * 1024));
  else std::snprintf(b, sizeof b, "%.1fK", bytes / 1024.0);
  return b;
}

std::string ms(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", s * 1e3);
  return b;
}

struct Sweep {
  std::string title;
  int shape_mbit = 0;
  std::vector<int> rows;
  std::map<std::pair<int, int>, Cell> cells;  // (mode, R)
  std::map<int, std::vector<LinkSnapshot>> links;  // by mode
};

void print_links(const std::vector<LinkSnapshot>& links) {
  std::printf("%-10s %9s %9s %10s %12s\n", "link", "a us", "o us", "b GB/s", "rtt(0B) us");
  for (const LinkSnapshot& l : links)
    std::printf("%-10s %9.1f %9.2f %10.3f %12.1f\n", (l.from + ">" + l.to).c_str(), l.latency_s * 1e6, l.per_message_s * 1e6,
                l.bytes_per_s / 1e9, l.rtt_small_s * 1e6);
}

void print_sweep(const Sweep& s, const std::vector<int>& modes, int hidden) {
  std::printf("\n== %s\n", s.title.c_str());
  for (int m : modes) {
    auto it = s.links.find(m);
    if (it == s.links.end()) continue;
    std::printf("\nlinks probed at start-up of the %s deployment (the cost model's input: T(S) = a + o + S/b)\n", kModes[m]);
    print_links(it->second);
  }
  std::printf(
      "\nper layer batch, median over the attention nodes' samples (steps 2..N of each R); exch = round - moe;\n"
      "pred = the cost model's prediction for that layer batch (the floor); ratio = exch / pred;\n"
      "a>/a< = payload bytes an attention node sends/receives, m>/m< = a MoE node's (measured counters)\n\n");
  std::printf("%5s %-6s %4s %10s %10s %10s %7s %10s %10s %9s %9s %9s %9s\n", "R", "mode", "n", "exch ms", "p90 ms", "pred ms", "ratio",
              "round ms", "moe ms", "a>", "a<", "m>", "m<");
  for (int R : s.rows)
    for (int m : modes) {
      auto it = s.cells.find({m, R});
      if (it == s.cells.end() || !it->second.ran) continue;
      const Cell& c = it->second;
      if (!c.error.empty()) {
        std::printf("%5d %-6s  failed: %s\n", R, kModes[m], c.error.c_str());
        continue;
      }
      const double pred = c.predicted_s[m];
      std::printf("%5d %-6s %4zu %10s %10s %10s %6.2fx %10s %10s %9s %9s %9s %9s\n", R, kModes[m], c.samples, ms(c.exchange_s).c_str(),
                  ms(c.exchange_p90_s).c_str(), ms(pred).c_str(), pred > 0 ? c.exchange_s / pred : 0.0, ms(c.round_s).c_str(),
                  ms(c.moe_s).c_str(), kib(c.a_out).c_str(), kib(c.a_in).c_str(), kib(c.m_out).c_str(), kib(c.m_in).c_str());
    }

  // Which mode the cost model picks vs which measured fastest.
  std::printf(
      "\nmodel pick = argmin of the predictions (medians over every deployment's samples at that R: all three modes);\n"
      "auto = what exchange.mode=\"auto\" would run (the runtime chooses between case1 and case2 only);\n"
      "fastest = least measured exch; cost = measured exch of the model's pick over the fastest\n\n");
  std::printf("%5s %12s %12s %12s %12s %12s %12s %-7s %-7s %-7s %6s\n", "R", "single ms", "(pred)", "case1 ms", "(pred)", "case2 ms",
              "(pred)", "pick", "auto", "fastest", "cost");
  int agree = 0, total = 0;
  for (int R : s.rows) {
    double meas[3] = {-1, -1, -1}, pred[3] = {0, 0, 0};
    int npred[3] = {0, 0, 0};
    for (int m : modes) {
      auto it = s.cells.find({m, R});
      if (it == s.cells.end() || !it->second.ran || !it->second.error.empty() || it->second.samples == 0) continue;
      meas[m] = it->second.exchange_s;
      for (int k = 0; k < 3; ++k) {
        pred[k] += it->second.predicted_s[k];
        ++npred[k];
      }
    }
    int pick = -1, fastest = -1;
    for (int k = 0; k < 3; ++k) {
      if (npred[k]) pred[k] /= npred[k];
      if (npred[k] && (pick < 0 || pred[k] < pred[pick])) pick = k;
      if (meas[k] >= 0 && (fastest < 0 || meas[k] < meas[fastest])) fastest = k;
    }
    if (pick < 0) continue;
    const int autopick = pred[2] < pred[1] ? 2 : 1;
    auto cellv = [&](int k) { return meas[k] >= 0 ? ms(meas[k]) : std::string("-"); };
    char cost[16] = "-";
    if (fastest >= 0 && meas[pick] >= 0) std::snprintf(cost, sizeof cost, "%.2fx", meas[pick] / meas[fastest]);
    if (fastest >= 0 && meas[pick] >= 0) {
      ++total;
      agree += pick == fastest;
    }
    std::printf("%5d %12s %12s %12s %12s %12s %12s %-7s %-7s %-7s %6s\n", R, cellv(0).c_str(), ms(pred[0]).c_str(), cellv(1).c_str(),
                ms(pred[1]).c_str(), cellv(2).c_str(), ms(pred[2]).c_str(), kModes[pick], kModes[autopick],
                fastest >= 0 ? kModes[fastest] : "-", cost);
  }
  std::printf("\nthe model's pick was the fastest at %d of %d R (hidden %d: %d B/row out, %d B/row back)\n", agree, total, hidden,
              hidden * 4, hidden * 8);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> rows = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
  std::vector<int> modes = {0, 1, 2};
  int steps = 16, hidden = 2048, spin_us = 200, shape_mbit = 1000, threads = 2;
  std::vector<int> shape_rows = {1, 4, 16, 64};
  double timeout_s = 240;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--rows") rows = parse_ints(next());
    else if (a == "--steps") steps = std::atoi(next().c_str());
    else if (a == "--hidden") hidden = std::atoi(next().c_str());
    else if (a == "--spin-us") spin_us = std::atoi(next().c_str());
    else if (a == "--shape-mbit") shape_mbit = std::atoi(next().c_str());
    else if (a == "--shape-rows") shape_rows = parse_ints(next());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--timeout") timeout_s = std::atof(next().c_str());
    else if (a == "--modes") {
      modes.clear();
      std::stringstream ss(next());
      std::string m;
      while (std::getline(ss, m, ',')) {
        const int k = mode_index(m);
        if (k < 0) return std::fprintf(stderr, "bench_exchange: mode %s (single, case1, case2)\n", m.c_str()), 2;
        modes.push_back(k);
      }
    } else {
      std::fprintf(stderr,
                   "usage: bench_exchange [--rows 1,2,...,512] [--steps N] [--hidden H] [--modes single,case1,case2] [--spin-us US]\n"
                   "                      [--shape-mbit MBIT [--shape-rows 1,4,16,64]] [--threads N] [--timeout S]\n");
      return 2;
    }
  }
  if (rows.empty() || modes.empty() || steps < 2 || hidden < 8) return std::fprintf(stderr, "bench_exchange: bad options\n"), 2;

  Hosts hosts({"a1", "a2", "m1", "m2"});
  if (!hosts.ok()) {
    std::printf("bench_exchange: SKIPPED: network namespaces unavailable: %s\n", hosts.why().c_str());
    return 0;
  }
  Topology t;
  const char* names[] = {"a1", "a2", "m1", "m2"};
  for (size_t i = 0; i < 4; ++i) {
    t.layout.nodes.push_back({names[i], hosts.host(i)});
    t.prefix[names[i]] = hosts.prefix(i);
  }
  t.layout.shard_nodes = {"a1", "a1", "a2", "a2"};
  t.layout.instance_nodes = {"m1", "m1", "m1", "m1", "m2", "m2", "m2", "m2"};
  const int shards = 4;

  auto model_dir = exchange_model(hidden);
  if (!model_dir.ok()) return std::fprintf(stderr, "bench_exchange: %s\n", model_dir.status().to_string().c_str()), 1;
  const int layers = 4;

  std::printf("bench_exchange: 4 attention shards (a1: 0,1; a2: 2,3) x 8 expert instances (m1: 0-3; m2: 4-7), each node a\n");
  std::printf("`janus node` in its own network namespace (veth + bridge), exchange.transport = tcp, null backend (no math)\n");
  std::printf("model: Qwen3-MoE shape, hidden %d, 4 MoE layers, 128 experts top-8, EGate; a row is %d B out (F32 activations),\n",
              hidden, hidden * 4);
  std::printf("%d B back (F64 partial sums); %d steps per R (4R one-token requests admitted together), spin %d us, %d CAF threads\n",
              hidden * 8, steps, spin_us, threads);
  std::printf("%ld cores, load average %.2f at start\n", sysconf(_SC_NPROCESSORS_ONLN), [] {
    double l[1] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : 0.0;
  }());
  std::fflush(stdout);

  std::vector<Sweep> sweeps;
  {
    Sweep s;
    s.title = "unshaped veth links";
    s.rows = rows;
    sweeps.push_back(s);
  }
  if (shape_mbit > 0) {
    Sweep s;
    s.title = "every host's link shaped to " + std::to_string(shape_mbit) + " Mbit/s each way (tc tbf)";
    s.shape_mbit = shape_mbit;
    s.rows = shape_rows;
    sweeps.push_back(s);
  }
  int64_t total = 0;
  for (const Sweep& s : sweeps) total += static_cast<int64_t>(s.rows.size() * modes.size());
  ProgressBar bar("bench_exchange", total, "runs");
  int64_t done = 0;
  for (Sweep& s : sweeps) {
    for (size_t i = 0; i < 4; ++i)
      if (!hosts.shape(i, s.shape_mbit)) {
        std::fprintf(stderr, "bench_exchange: shaping host %zu to %d Mbit/s failed (tc)\n", i, s.shape_mbit);
        return 1;
      }
    const int max_rows = *std::max_element(s.rows.begin(), s.rows.end());
    for (int m : modes) {
      std::fprintf(stderr, "\nbench_exchange: starting the %s deployment (%s)\n", kModes[m], s.title.c_str());
      auto cluster = start(exchange_spec(t, hosts, *model_dir, kModes[m], max_rows, steps, spin_us), hosts, t, threads);
      if (!cluster->status.ok() || !cluster->deployment) {
        std::fprintf(stderr, "bench_exchange: the %s deployment failed: %s\n%s\n", kModes[m], cluster->status.to_string().c_str(),
                     cluster->logs().c_str());
        return 1;
      }
      Deployment& d = cluster->d();
      s.links[m] = d.links();
      for (int R : s.rows) {
        Cell c = run_rows(d, kModes[m], R, shards, steps, layers, timeout_s);
        s.cells[{m, R}] = c;
        bar.update(++done);
        if (!c.error.empty()) {
          std::fprintf(stderr, "bench_exchange: %s, R = %d: %s\n%s\n", kModes[m], R, c.error.c_str(), cluster->logs().c_str());
          break;
        }
        if (c.modes_seen.size() != 1 || c.modes_seen[0] != kModes[m])
          std::fprintf(stderr, "bench_exchange: %s, R = %d: the nodes recorded %zu modes\n", kModes[m], R, c.modes_seen.size());
      }
    }
  }
  bar.finish();
  for (int i = 0; i < 4; ++i) hosts.shape(static_cast<size_t>(i), 0);
  for (const Sweep& s : sweeps) print_sweep(s, modes, hidden);
  double l[1] = {0};
  std::printf("\nload average %.2f at the end (other work on this machine shows up as noise)\n", getloadavg(l, 1) == 1 ? l[0] : 0.0);
  return 0;
}
