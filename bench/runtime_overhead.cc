// bench_runtime_overhead: what the actor runtime itself costs per layer batch — message
// hops, scheduling, bookkeeping — with the null backend (no math), for 1-4 shards x 1-8
// expert instances, beside one CAF message hop measured in the same run (the floor a
// message-passing design pays per hop).
//
//   build/bench/bench_runtime_overhead [--steps 64] [--threads 2]
#include <unistd.h>

#include <caf/all.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench/bench_util.h"
#include "actors/deployment.h"
#include "runtime/base/progress.h"

using namespace janus;

namespace {

using ping_atom = caf::atom_constant<caf::atom("ping")>;

// Half a round trip between two actors in one actor system, in microseconds.
double caf_hop_us(int threads) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", threads);
  caf::actor_system sys{cfg};
  auto pong = sys.spawn([](caf::event_based_actor*) -> caf::behavior {
    return {[](ping_atom, int n) { return n; }};
  });
  const int n = 50000;
  double t = 0;
  sys.spawn([=, &t](caf::event_based_actor* self) {
    auto start = std::make_shared<double>(bench::now_s());
    auto left = std::make_shared<int>(n);
    auto step = std::make_shared<std::function<void()>>();
    *step = [=, &t] {
      self->request(pong, caf::infinite, ping_atom::value, *left).then([=, &t](int) {
        if (--*left == 0) {
          t = bench::now_s() - *start;
          self->send_exit(pong, caf::exit_reason::user_shutdown);
          self->quit();
        } else {
          (*step)();
        }
      });
    };
    (*step)();
  });
  sys.await_all_actors_done();
  return t / n / 2 * 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 64, threads = 2;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_runtime_overhead [--steps N] [--threads N]\n");
      return 2;
    }
  }
  const double hop = caf_hop_us(threads);
  std::printf("null backend (no math), tiny-qwen3-moe shapes (4 MoE layers), micro_batches 1, %d CAF threads\n", threads);
  std::printf("one CAF message hop (half a request/response round trip): %.2f us\n\n", hop);
  std::printf("%6s %9s %13s %12s %14s %12s %10s\n", "shards", "instances", "layer batches", "us/batch", "hops/batch", "us/hop",
              "hop floor");
  const int shard_counts[] = {1, 2, 3, 4}, instance_counts[] = {1, 2, 4, 8};
  ProgressBar bar("runtime overhead", 16, "configs");
  const bool tty = isatty(STDOUT_FILENO) != 0;
  int done = 0;
  for (int s : shard_counts)
    for (int n : instance_counts) {
      GraphSpec g = default_graph_spec();
      g.attention.shards = s;
      g.attention.micro_batches = 1;
      g.experts.instances = n;
      g.experts.slots = 0;  // ceil(32 / n)
      g.workload.prompts.clear();
      for (int r = 0; r < 4 * s; ++r) g.workload.prompts.push_back({1 + r});
      g.workload.max_new_tokens = steps;
      g.workload.ignore_eos = true;
      DeploymentOptions o;
      o.null_backend = true;
      o.threads = threads;
      auto d = Deployment::create(g, o);
      if (!d.ok()) {
        std::fprintf(stderr, "%s\n", d.status().to_string().c_str());
        return 1;
      }
      (*d)->run_workload();  // warm-up
      // The median of 5 runs of the workload, per layer batch.
      std::vector<double> per_batch;
      uint64_t batches = 0;
      for (int rep = 0; rep < 5; ++rep) {
        const MetricsSnapshot before = (*d)->metrics();
        const double t0 = bench::now_s();
        for (auto& r : (*d)->run_workload())
          if (!r.ok()) return std::fprintf(stderr, "%s\n", r.status().to_string().c_str()), 1;
        const double secs = bench::now_s() - t0;
        const MetricsSnapshot after = (*d)->metrics();
        batches = 0;
        for (size_t l = 0; l < after.amax.size(); ++l) batches += after.amax[l].batches - before.amax[l].batches;
        per_batch.push_back(secs / static_cast<double>(batches) * 1e6);
      }
      const double per = bench::median(per_batch);
      // Hops on the critical path of one layer batch: shards -> router, router ->
      // scheduler, scheduler -> instances, instances -> scheduler, scheduler -> shards.
      const int hops = 2 * s + 2 * n + 1;
      bar.update(++done);
      std::printf("%s%6d %9d %13llu %12.1f %14d %12.2f %10.2f%s\n", tty ? "\r" : "", s, n, static_cast<unsigned long long>(batches),
                  per, hops, per / hops, hop, tty ? "\033[K" : "");
    }
  bar.finish();
  return 0;
}
