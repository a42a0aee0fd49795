// bench_aebs: the AEBS kernel (gpu/cuda/aebs.h) per layer batch, against the empty-kernel
// launch floor and against the CPU reference (gpu/cpu/aebs.h), for B in {1 .. 4096},
// E in {64, 160, 256}, k in {6, 8}, n_e in {8, 16, 32}, C = ceil(E/n_e) + 2. Every
// configuration is also checked bit for bit against the CPU (mismatch column; the
// program exits 1 on any mismatch). It never asserts on time.
//
//   build/bench/bench_aebs [--goal-only] [--iters N] [--sweep] [--phases]
//
// --sweep: for the goal configuration (E=160 k=8 n_e=16), every B timed again with the
//   cluster size forced to 1, 2, 4, 8, 16 (clamped to the device's limit) and with and
//   without the shared-memory sort, each variant checked bit for bit too (to tune the
//   planner's choice, gpu/cuda/aebs.cu kTargetPerBlock);
// --phases: for the goal configuration, per B, the median clock64() cycles thread 0 of
//   block 0 spends in each phase of an instrumented launch (AebsLaunchOptions::clocks).
//
// Columns: a_max and moves (repair moves) are means over the 8 inputs; multi = experts with
// several replicas (the greedy's sequential part); blk = blocks (the cluster size); warp =
// warps per block; stg = ids staged in shared memory (s: also the sorted scatter); gpu us
// = median event time of one launch on a stream (launch overhead on the GPU side
// included), graph us = median time per kernel inside a replayed CUDA graph of 16
// launches, cpu us = median of the CPU reference, one thread; mism =
// output arrays that differ from the CPU's, summed over the 8 inputs. Inputs rotate over 8
// device buffers (uniform and Zipf s = 1 routing); the layout is Algorithm 3 placement
// from the Zipf popularity (so replica counts differ between experts).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/cuda/cuda_bench_util.h"
#include "gpu/cpu/aebs.h"
#include "gpu/cuda/aebs.h"
#include "gpu/cuda/device.h"
#include "runtime/scheduling/aebs_synthetic.h"
#include "runtime/scheduling/expert_placement.h"

using namespace janus;

namespace {

#define OK(expr)                                                 \
  do {                                                           \
    ::janus::Status s_ = (expr);                                 \
    if (!s_.ok()) {                                              \
      std::fprintf(stderr, "%s\n", s_.to_string().c_str());      \
      std::exit(1);                                              \
    }                                                            \
  } while (0)

__global__ void empty_kernel() {}

constexpr int kBuffers = 8;

// Median of per-launch event times, in us.
template <class F>
double event_median_us(cudaStream_t s, int iters, F&& launch) {
  std::vector<cudaEvent_t> ev(static_cast<size_t>(2 * iters));
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < 10; ++i) launch(i);
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(ev[static_cast<size_t>(2 * i)], s));
    launch(i);
    CK(cudaEventRecord(ev[static_cast<size_t>(2 * i + 1)], s));
  }
  CK(cudaStreamSynchronize(s));
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, ev[static_cast<size_t>(2 * i)], ev[static_cast<size_t>(2 * i + 1)]));
    t.push_back(ms * 1e3);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  return bench::median(t);
}

// Median time per captured launch when a graph of `per_graph` launches is replayed.
template <class F>
double graph_median_us(cudaStream_t s, int replays, int per_graph, F&& launch) {
  cudaGraph_t g;
  cudaGraphExec_t x;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < per_graph; ++i) launch(i);
  CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&x, g, 0));
  const double t = bench::time_graph(x, s, replays, /*warmup=*/3) * 1e6 / per_graph;
  cudaGraphExecDestroy(x);
  cudaGraphDestroy(g);
  return t;
}

// Number of output arrays in which the GPU result differs from the CPU's.
int mismatches(const AebsTableView& t, const AebsOutputs& d, AebsHostOutputs& c, int64_t n) {
  AebsHostOutputs g;
  g.resize(t, n);
  auto back = [](std::vector<int32_t>& v, const int32_t* p, size_t count) {
    CK(cudaMemcpy(v.data(), p, count * sizeof(int32_t), cudaMemcpyDeviceToHost));
  };
  const size_t E = static_cast<size_t>(t.num_experts), R = static_cast<size_t>(t.num_replicas),
               G = static_cast<size_t>(t.num_instances), valid = static_cast<size_t>(c.summary[kAebsValidChoices]),
               act = static_cast<size_t>(c.summary[kAebsActivatedExperts]);
  back(g.summary, d.summary, kAebsSummarySize);
  back(g.choice_replica, d.choice_replica, static_cast<size_t>(n));
  back(g.expert_replica, d.expert_replica, E);
  back(g.replica_offsets, d.replica_offsets, R + 1);
  back(g.items, d.items, valid);
  back(g.instance_item_offsets, d.instance_item_offsets, G + 1);
  back(g.activated, d.activated, G);
  back(g.active_offsets, d.active_offsets, G + 1);
  back(g.active_replicas, d.active_replicas, act);
  auto same = [](const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t count) {
    return std::equal(a.begin(), a.begin() + static_cast<long>(count), b.begin());
  };
  return !same(g.summary, c.summary, kAebsSummarySize) + !same(g.choice_replica, c.choice_replica, static_cast<size_t>(n)) +
         !same(g.expert_replica, c.expert_replica, E) + !same(g.replica_offsets, c.replica_offsets, R + 1) +
         !same(g.items, c.items, valid) + !same(g.instance_item_offsets, c.instance_item_offsets, G + 1) +
         !same(g.activated, c.activated, G) + !same(g.active_offsets, c.active_offsets, G + 1) +
         !same(g.active_replicas, c.active_replicas, act);
}

struct Timing {
  double gpu = 0, graph = 0;
  int mism = 0;
  double amax = 0, moves = 0;
};

// Times one configuration and launch variant on the 8 inputs and checks it against the CPU.
Timing time_variant(const AebsReplicaTable& table, const cuda::AebsDeviceTable& dt, int k, int64_t B,
                    const std::vector<int32_t*>& d_ids, std::vector<cuda::AebsDeviceOutputs>& outs,
                    std::vector<AebsHostOutputs>& cpu, cudaStream_t s, int iters, const cuda::AebsLaunchOptions& opt) {
  const int64_t n = B * k;
  auto launch = [&](int i) {
    const size_t b = static_cast<size_t>(i % kBuffers);
    OK(cuda::aebs_launch(dt, d_ids[b], B, k, outs[b].out, s, opt));
  };
  Timing t;
  t.gpu = event_median_us(s, iters, launch);
  t.graph = graph_median_us(s, 30, 16, launch);
  for (int b = 0; b < kBuffers; ++b) {
    const size_t bi = static_cast<size_t>(b);
    CK(cudaMemsetAsync(outs[bi].storage, 0x7b, outs[bi].bytes, s));  // poison: unwritten outputs show
    launch(b);
    CK(cudaStreamSynchronize(s));
    t.mism += mismatches(table.view(), outs[bi].out, cpu[bi], n);
    t.amax += cpu[bi].summary[kAebsMaxActivated];
    t.moves += cpu[bi].summary[kAebsRepairs];
  }
  t.amax /= kBuffers;
  t.moves /= kBuffers;
  return t;
}

// Median cycles per phase of instrumented launches (thread 0 of block 0).
std::vector<double> phase_cycles(const cuda::AebsDeviceTable& dt, int k, int64_t B, const std::vector<int32_t*>& d_ids,
                                 std::vector<cuda::AebsDeviceOutputs>& outs, cudaStream_t s) {
  long long* d_clk = nullptr;
  CK(cudaMalloc(reinterpret_cast<void**>(&d_clk), sizeof(long long) * cuda::kAebsClockStamps));
  std::vector<std::vector<double>> per(cuda::kAebsClockStamps);
  for (int i = 0; i < 60; ++i) {
    const size_t b = static_cast<size_t>(i % kBuffers);
    CK(cudaMemsetAsync(d_clk, 0, sizeof(long long) * cuda::kAebsClockStamps, s));
    cuda::AebsLaunchOptions opt;
    opt.clocks = d_clk;
    OK(cuda::aebs_launch(dt, d_ids[b], B, k, outs[b].out, s, opt));
    long long h[cuda::kAebsClockStamps];
    CK(cudaMemcpyAsync(h, d_clk, sizeof h, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    if (i < 10) continue;  // warm-up
    long long prev = h[0];
    for (int p = 1; p < cuda::kAebsClockStamps; ++p) {
      if (h[p] == 0) {  // a stamp this launch's path does not take
        per[static_cast<size_t>(p)].push_back(0);
        continue;
      }
      per[static_cast<size_t>(p)].push_back(static_cast<double>(h[p] - prev));
      prev = h[p];
    }
    per[0].push_back(static_cast<double>(prev - h[0]));
  }
  cudaFree(d_clk);
  std::vector<double> med(cuda::kAebsClockStamps);
  for (int p = 0; p < cuda::kAebsClockStamps; ++p) med[static_cast<size_t>(p)] = bench::median(per[static_cast<size_t>(p)]);
  return med;
}

}  // namespace

int main(int argc, char** argv) {
  bool goal_only = false, sweep = false, phases = false;
  int iters = 300;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--goal-only") {
      goal_only = true;
    } else if (a == "--sweep") {
      sweep = true;
    } else if (a == "--phases") {
      phases = true;
    } else if (a == "--iters" && i + 1 < argc) {
      iters = std::max(10, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_aebs [--goal-only] [--iters N] [--sweep] [--phases]\n");
      return 2;
    }
  }
  if (cuda::device_count() == 0) {
    std::printf("bench_aebs: no CUDA device, nothing to measure\n");
    return 0;
  }
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const double floor_ev = event_median_us(s, iters, [&](int) { empty_kernel<<<1, 32, 0, s>>>(); });
  const double floor_gr = graph_median_us(s, 30, 16, [&](int) { empty_kernel<<<1, 32, 0, s>>>(); });
  int clock_khz = 0;
  CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  std::printf("AEBS kernel on %s\n", cuda::device_description(0).c_str());
  std::printf("floor: empty kernel %.2f us per launch (event), %.2f us per kernel in a graph; goals for E=160 k=8 n_e=16: "
              "<= 10 us at B <= 256, <= 45 us at B = 4096 (gpu us column)\n\n",
              floor_ev, floor_gr);
  std::printf("%4s %2s %3s %3s %5s %6s %5s %5s %3s %4s %3s %8s %8s %8s %7s %9s %4s\n", "E", "k", "n_e", "C", "B", "a_max",
              "moves", "multi", "blk", "warp", "stg", "gpu us", "graph us", "cpu us", "cpu/gpu", "goal", "mism");
  int total_mism = 0, goals = 0, goals_met = 0;
  std::vector<std::string> sweep_lines, phase_lines;
  const double t_start = bench::now_s();
  for (int E : {64, 160, 256})
    for (int k : {6, 8})
      for (int G : {8, 16, 32}) {
        const bool goal_cfg = E == 160 && k == 8 && G == 16;
        if (goal_only && !goal_cfg) continue;
        const int C = (E + G - 1) / G + 2;
        auto layout = place_experts({E, G, C, synthetic_popularity(E, 1.0, 7), {}, {}});
        OK(layout.status());
        const AebsReplicaTable table = AebsReplicaTable::build(*layout);
        cuda::AebsDeviceTable dt;
        OK(cuda::aebs_upload_table(table.view(), &dt));
        for (int64_t B : {1, 16, 64, 256, 1024, 4096}) {
          const int64_t n = B * k;
          std::vector<std::vector<int32_t>> ids(kBuffers);
          std::vector<int32_t*> d_ids(kBuffers);
          std::vector<cuda::AebsDeviceOutputs> outs(kBuffers);
          std::vector<AebsHostOutputs> cpu(kBuffers);
          for (int b = 0; b < kBuffers; ++b) {
            const size_t bi = static_cast<size_t>(b);
            auto r = synthetic_routing(E, k, B, b % 2 ? 1.0 : 0.0, 7, static_cast<uint64_t>(b));
            OK(r.status());
            ids[bi] = *r;
            CK(cudaMalloc(reinterpret_cast<void**>(&d_ids[bi]), sizeof(int32_t) * static_cast<size_t>(n)));
            CK(cudaMemcpy(d_ids[bi], r->data(), sizeof(int32_t) * static_cast<size_t>(n), cudaMemcpyHostToDevice));
            OK(cuda::aebs_alloc_outputs(table.view(), n, &outs[bi]));
            cpu[bi].resize(table.view(), n);
            OK(cpu::aebs(table.view(), ids[bi].data(), B, k, cpu[bi].outputs()));
          }
          const Timing t = time_variant(table, dt, k, B, d_ids, outs, cpu, s, iters, {});
          // The CPU's time on the same inputs.
          std::vector<double> ct;
          const int reps = static_cast<int>(std::clamp<int64_t>(20000 / n, 4, 200));
          for (int r = 0; r < reps; ++r) {
            const size_t bi = static_cast<size_t>(r % kBuffers);
            const double t0 = bench::now_s();
            Status st = cpu::aebs(table.view(), ids[bi].data(), B, k, cpu[bi].outputs());
            ct.push_back((bench::now_s() - t0) * 1e6);
            if (!st.ok()) return 1;
          }
          const double cpu_us = bench::median(ct);
          std::string goal;
          if (goal_cfg && (B <= 256 || B == 4096)) {
            const double lim = B <= 256 ? 10 : 45;
            ++goals;
            goals_met += t.gpu <= lim;
            char g[32];
            std::snprintf(g, sizeof g, "<=%.0f %s", lim, t.gpu <= lim ? "met" : "MISS");
            goal = g;
          }
          const auto shape = cuda::aebs_launch_shape(dt, n);
          std::printf("%4d %2d %3d %3d %5lld %6.2f %5.2f %5d %3d %4d %3s %8.2f %8.2f %8.2f %6.1fx %9s %4d\n", E, k, G, C,
                      static_cast<long long>(B), t.amax, t.moves, table.view().num_multi, shape.blocks, shape.warps,
                      shape.sorted ? "s" : (shape.staged ? "y" : "n"), t.gpu, t.graph, cpu_us, cpu_us / t.gpu, goal.c_str(),
                      t.mism);
          std::fflush(stdout);
          total_mism += t.mism;
          if (goal_cfg && sweep) {
            std::vector<std::pair<int, bool>> done;
            for (int blocks : {1, 2, 4, 8, 16})
              for (int sorted : {1, 0}) {
                cuda::AebsLaunchOptions opt;
                opt.blocks = blocks;
                opt.sorted = sorted;
                const auto sh = cuda::aebs_launch_shape(dt, n, opt);
                const std::pair<int, bool> key{sh.blocks, sh.sorted};
                if (std::find(done.begin(), done.end(), key) != done.end()) continue;  // clamped to a shape already timed
                done.push_back(key);
                const Timing v = time_variant(table, dt, k, B, d_ids, outs, cpu, s, iters, opt);
                total_mism += v.mism;
                char line[160];
                std::snprintf(line, sizeof line, "%5lld %3d %4d %5d %4s %8.2f %8.2f %4d", static_cast<long long>(B), sh.blocks,
                              sh.warps, sh.seg, sh.sorted ? "yes" : "no", v.gpu, v.graph, v.mism);
                sweep_lines.push_back(line);
              }
          }
          if (goal_cfg && phases) {
            const std::vector<double> c = phase_cycles(dt, k, B, d_ids, outs, s);
            char line[256];
            std::snprintf(line, sizeof line, "%5lld %7.0f %7.0f %7.0f %7.0f %7.0f %7.0f %7.0f %7.0f %7.0f | %7.0f cyc = %6.2f us",
                          static_cast<long long>(B), c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[0],
                          c[0] / (clock_khz * 1e-3));
            phase_lines.push_back(line);
          }
          for (int b = 0; b < kBuffers; ++b) {
            cudaFree(d_ids[static_cast<size_t>(b)]);
            cuda::aebs_free_outputs(&outs[static_cast<size_t>(b)]);
          }
        }
        cuda::aebs_free_table(&dt);
      }
  if (!sweep_lines.empty()) {
    std::printf("\nsweep, E=160 k=8 n_e=16 (device cluster limit applies):\n%5s %3s %4s %5s %4s %8s %8s %4s\n", "B", "blk",
                "warp", "seg", "sort", "gpu us", "graph us", "mism");
    for (const auto& l : sweep_lines) std::printf("%s\n", l.c_str());
  }
  if (!phase_lines.empty()) {
    std::printf("\nphases, E=160 k=8 n_e=16, median clock64() cycles of thread 0 of block 0 (%.0f MHz nominal):\n", clock_khz * 1e-3);
    std::printf("%5s %7s %7s %7s %7s %7s %7s %7s %7s %7s | %s\n", "B", "stage", "rank", "prefix", "greedy", "repair", "scan",
                "scatter", "drain", "exit", "start to exit");
    for (const auto& l : phase_lines) std::printf("%s\n", l.c_str());
    std::printf("(stage: table+ids to shared; rank: per-warp counts; prefix: warp/cluster prefix and activation; greedy:\n"
                " warp 0's greedy; repair: its repair moves; scan: barrier + replica offsets; scatter: items into the shared\n"
                " sort (0 when not sorted); drain: sorted items to global (or the plain scatter); exit: the cluster's final\n"
                " barrier. Stores still in flight at exit are not counted)\n");
  }
  std::printf("\ngoals met: %d of %d; GPU vs CPU mismatches: %d; %.1f s\n", goals_met, goals, total_mism,
              bench::now_s() - t_start);
  cudaStreamDestroy(s);
  return total_mism == 0 ? 0 : 1;
}
