#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/output_file.h"
#include "runtime/console/console_remote.h"
#include "runtime/console/repl.h"
#include "actors/deployment.h"
#include "runtime/config/lua_config.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus run [CONFIG] [--json] [--trace FILE] [--threads N]
                 [--console [--eval CODE | --console-script FILE]]
                 [--listen [HOST:]PORT [--secret-file F | --secret S] [--port-file FILE]]

Builds the deployment a Lua graph config describes and runs its workload; without CONFIG,
the default deployment (examples/configs/default.lua: the tiny Qwen3-MoE on the CPU, 2
attention shards x 2 micro-batches, 4 expert instances, EGate, AEBS).
Prints each request's tokens (as JSON lines with --json), then a summary: tokens/s,
TTFT and TPOT percentiles, and per MoE layer the mean and max of a_max (the most
distinct experts any instance ran in a layer batch). --trace writes a Chrome trace
(open in Perfetto) and reports how long attention and expert work overlapped.

--console opens the Lua console on the running deployment (help() lists its commands);
--eval / --console-script run console code without a terminal. --listen publishes the
console for `janus console --connect HOST:PORT` (loopback unless HOST says otherwise),
authenticated by the secret of --secret-file (or --secret, which `ps` shows, or
$JANUS_SECRET; on loopback, else a random one printed on stderr; beyond loopback one must
be given); the deployment then keeps serving after its workload until SIGINT or SIGTERM.
The console port speaks Janus's own protocol (HMAC proof of the secret, bounded frames,
handshake timeouts, back-off after failures); no actor framework listens on it.
)";

namespace {

std::string ids_text(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) s += (s.empty() ? "" : " ") + std::to_string(x);
  return s;
}

Status parse_listen(const std::string& text, std::string* host, uint16_t* port) {
  std::string p = text;
  *host = "127.0.0.1";
  if (auto colon = text.rfind(':'); colon != std::string::npos) {
    *host = text.substr(0, colon);
    p = text.substr(colon + 1);
  }
  char* end = nullptr;
  long v = std::strtol(p.c_str(), &end, 10);
  if (p.empty() || *end != '\0' || v < 0 || v > 65535) return invalid_argument("--listen: '" + text + "' is not [HOST:]PORT");
  *port = static_cast<uint16_t>(v);
  return Status::Ok();
}

void print_results(const std::vector<Result<GenerateResult>>& results, bool json, int* failures) {
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    if (!r.ok()) {
      ++*failures;
      std::fprintf(stderr, "request %zu failed: %s\n", i, r.status().message().c_str());
      continue;
    }
    if (json) {
      nlohmann::json j = {{"id", i}, {"prompt", r->prompt}, {"tokens", r->tokens}, {"finish_reason", r->finish_reason}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("request %zu: [%s] -> [%s] (%s)\n", i, ids_text(r->prompt).c_str(), ids_text(r->tokens).c_str(),
                  r->finish_reason.c_str());
    }
  }
}

// Multi-node deployments: what each node's data plane did, and per exchange mode the
// measured exchange time (round trip less MoE compute) beside the cost model's prediction,
// so that a researcher sees at once whether the model that picks Case 1 or Case 2 is right.
void print_nodes(Deployment& d) {
  const std::vector<NodeSnapshot> nodes = d.nodes();
  if (nodes.empty()) return;
  std::printf("nodes (data plane over %s):\n", nodes[0].transport.c_str());
  std::printf("  %-8s %-9s %10s %10s %12s %12s %8s %8s\n", "node", "role", "frames out", "frames in", "payload out", "payload in",
              "relayed", "dropped");
  std::map<std::string, std::vector<const ExchangeSample*>> by_mode;
  for (const NodeSnapshot& n : nodes) {
    const uint64_t dropped = n.dropped_truncated + n.dropped_malformed + n.dropped_wrong_epoch + n.dropped_size_mismatch +
                             n.dropped_unknown_sender + n.transport_dropped;
    std::printf("  %-8s %-9s %10llu %10llu %9.2f MB %9.2f MB %8llu %8llu%s\n", n.name.c_str(), n.role.c_str(),
                static_cast<unsigned long long>(n.frames_sent), static_cast<unsigned long long>(n.frames_received),
                static_cast<double>(n.payload_bytes_sent) / 1e6, static_cast<double>(n.payload_bytes_received) / 1e6,
                static_cast<unsigned long long>(n.relayed), static_cast<unsigned long long>(dropped), n.alive ? "" : "  (gone)");
    for (const ExchangeSample& e : n.exchanges) by_mode[e.mode].push_back(&e);
  }
  if (by_mode.empty()) return;
  std::printf("exchange per layer batch (median over the recent ones; predicted by the cost model):\n");
  const std::map<std::string, int> column = {{"single", 0}, {"case1", 1}, {"case2", 2}};
  for (auto& entry : by_mode) {
    // Not a structured binding: clang 14 (the sanitizer build) cannot capture one.
    const std::string& mode = entry.first;
    const auto& xs = entry.second;
    auto median = [&](auto field) {
      std::vector<double> v;
      for (const ExchangeSample* e : xs) v.push_back(field(*e));
      std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
      return v[v.size() / 2];
    };
    const int c = column.count(mode) ? column.at(mode) : 1;
    const double measured = median([](const ExchangeSample& e) { return e.exchange_s; });
    const double predicted = median([c](const ExchangeSample& e) { return e.predicted_s[c]; });
    const double rows = median([](const ExchangeSample& e) { return static_cast<double>(e.rows); });
    std::printf("  %-6s %5zu batches, %6.0f rows per node: %8.1f us measured, %8.1f us predicted (%.2fx)\n", mode.c_str(), xs.size(),
                rows, measured * 1e6, predicted * 1e6, predicted > 0 ? measured / predicted : 0.0);
  }
}

Status print_summary(Deployment& d, const std::string& trace_file) {
  MetricsSnapshot m = d.metrics();
  std::printf("\n%llu requests, %lld tokens in %.3f s: %.1f tokens/s\n", static_cast<unsigned long long>(m.completed),
              static_cast<long long>(m.tokens), m.elapsed_s, m.tokens_per_s);
  std::printf("TTFT  p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n", m.ttft_s.p50 * 1e3, m.ttft_s.p90 * 1e3, m.ttft_s.p99 * 1e3);
  std::printf("TPOT  p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n", m.tpot_s.p50 * 1e3, m.tpot_s.p90 * 1e3, m.tpot_s.p99 * 1e3);
  std::printf("a_max per MoE layer (%s; distinct experts on the busiest instance):\n", m.policy.c_str());
  for (const LayerAmax& l : m.amax)
    std::printf("  layer %2d  mean %5.2f  max %3d  over %llu layer batches\n", l.layer, l.mean, l.max,
                static_cast<unsigned long long>(l.batches));
  print_nodes(d);
  if (!trace_file.empty()) {
    const Trace& t = d.trace();
    if (Status w = write_output(trace_file, t.to_chrome_json()); !w.ok()) return w;
    std::printf("trace: %s (%zu spans); attention busy %.2f ms, experts busy %.2f ms, overlapping %.2f ms\n", trace_file.c_str(),
                t.spans().size(), t.busy_seconds("attention") * 1e3, t.busy_seconds("experts") * 1e3,
                t.overlap_seconds("attention", "experts") * 1e3);
  }
  return Status::Ok();
}

// SIGINT/SIGTERM during a run without --listen: they are blocked in every thread and taken
// here, by one thread of their own, so that no runtime thread (nor a library's handler)
// ends the process in the middle of its work. Before the deployment serves, a signal
// ends the process at once (there is nothing to report, and Deployment::create may be
// waiting for nodes); afterwards it is handed to the main thread, which stops the run.
class StopSignals {
 public:
  explicit StopSignals(const sigset_t& set) : set_(set), watcher_([this] { watch(); }) {}
  ~StopSignals() {
    done_ = true;
    watcher_.join();
  }
  void serving() { serving_ = true; }
  int received() const { return sig_; }

 private:
  void watch() {
    while (!done_ && sig_ == 0) {
      const timespec tick{0, 50 * 1000 * 1000};
      const int sig = sigtimedwait(&set_, nullptr, &tick);
      if (sig <= 0) continue;
      if (!serving_) {
        std::fprintf(stderr, "janus run: %s while starting, exiting\n", strsignal(sig));
        std::_Exit(128 + sig);
      }
      sig_ = sig;
    }
  }
  sigset_t set_;
  std::atomic<bool> done_{false}, serving_{false};
  std::atomic<int> sig_{0};
  std::thread watcher_;
};

}  // namespace

int cmd_run(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "json", "console"},
                            {"trace", "threads", "eval", "console-script", "listen", "secret", "secret-file", "port-file"});
  if (!parsed.ok()) return fail("run", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (a.positional().size() > 1) return fail("run", std::string("at most one CONFIG file\n") + kHelp, 2);
  if ((a.has("eval") || a.has("console-script")) && !a.flag("console"))
    return fail("run", "--eval and --console-script need --console", 2);
  auto threads = a.get_int("threads", 0);
  if (!threads.ok()) return fail("run", threads.status().message(), 2);
  std::string listen_host;
  uint16_t listen_port = 0;
  std::string console_secret;  // "" with --listen: a random one, printed, for loopback only
  if (a.has("listen")) {
    Status s = parse_listen(a.get("listen"), &listen_host, &listen_port);
    if (!s.ok()) return fail("run", s.message(), 2);
    auto given = secret_option(a);
    if (!given.ok()) return fail("run", given.status().message(), 2);
    console_secret = *given;
    if (Status c = check_console_listen(listen_host, !console_secret.empty()); !c.ok()) return fail("run", c.message(), 2);
  }
  const bool interactive = a.flag("console") || a.has("listen");

  // Signals go to the main thread only (sigwait below), never to runtime threads.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);

  Result<GraphSpec> spec = a.positional().empty() ? Result<GraphSpec>(default_graph_spec()) : load_lua_config(a.positional()[0]);
  if (!spec.ok()) return fail("run", spec.status().message());
  // `run` serves the config's fixed prompts; configs written for the other drivers would
  // otherwise start a deployment, serve nothing and exit 0.
  if (!interactive) {
    const std::string& cfg = spec->source;
    if (!spec->simulate.profile.empty())
      return fail("run", cfg + " is a simulator config (simulate{}): run it with `janus simulate " + cfg + "`");
    if (spec->workload.arrivals.kind != "all")
      return fail("run", cfg + " generates its requests (workload{arrivals=\"" + spec->workload.arrivals.kind +
                             "\"}): serve it with `janus bench-serve " + cfg + "`");
    if (!spec->scenario.empty())
      return fail("run", cfg + " scripts events (at(...)), which `janus bench-serve " + cfg + "` replays and `janus run` would ignore");
    if (spec->workload.prompts.empty())
      return fail("run", cfg + " has no workload{prompts = ...}: nothing to serve (add prompts, or use --console / --listen)");
  }
  // Blocked only now, before any runtime thread starts (they inherit the mask), so that
  // SIGTERM still ends a process whose config is slow to load.
  // Without --listen a signal stops the run (StopSignals); --listen waits for it below.
  if (!interactive || a.has("listen")) pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::unique_ptr<StopSignals> stop;
  if (!interactive) stop = std::make_unique<StopSignals>(stop_signals);
  for (const char* file : {"trace", "port-file"})
    if (a.has(file))
      if (Status w = check_writable(a.get(file)); !w.ok()) return fail("run", w.message());
  DeploymentOptions opts;
  opts.trace = a.has("trace") || interactive;
  opts.compare_policies = interactive;
  opts.progress = true;
  opts.threads = static_cast<int>(*threads);
  auto d = Deployment::create(*spec, opts);
  if (!d.ok()) return fail("run", d.status().message());
  Deployment& dep = **d;

  std::vector<RequestHandle> handles;
  for (GenerateRequest& r : workload_requests(dep.spec())) handles.push_back(dep.submit(std::move(r)));
  auto collect = [&] {
    std::vector<Result<GenerateResult>> out;
    for (RequestHandle& h : handles) out.push_back(h.result.get());
    return out;
  };

  int failures = 0;
  if (!interactive) {
    stop->serving();
    // On stderr (unbuffered): scripts and tests wait for it before they signal a run.
    std::fprintf(stderr, "janus run: serving %zu requests\n", handles.size());
    // Until every result is in or a stop signal: then the requests still running fail
    // (a stop means now; a long generation could take minutes to finish) with the
    // deployment's shutdown reason, the results so far are printed, the nodes are told to
    // shut down, and the exit status is the signal's (128 + signal).
    for (RequestHandle& h : handles)
      while (stop->received() == 0 && h.result.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
      }
    if (const int sig = stop->received(); sig != 0) {
      const size_t done = static_cast<size_t>(std::count_if(handles.begin(), handles.end(), [](RequestHandle& h) {
        return h.result.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
      }));
      std::fprintf(stderr, "janus run: %s: stopping; %zu of %zu requests had finished, the others fail\n", strsignal(sig), done,
                   handles.size());
      dep.shutdown();  // fails what is still running and tells the nodes to shut down
      print_results(collect(), a.flag("json"), &failures);
      std::fflush(stdout);
      return 128 + sig;
    }
    print_results(collect(), a.flag("json"), &failures);
    Status written = print_summary(dep, a.get("trace"));
    dep.shutdown();
    if (!written.ok()) return fail("run", written.message());
    return failures == 0 ? 0 : 1;
  }

  ConsoleEngine engine(dep);
  std::unique_ptr<ConsoleServer> server;
  if (a.has("listen")) {
    std::string secret = console_secret;
    if (secret.empty()) {
      secret = random_secret();
      std::fprintf(stderr, "console secret: %s\n", secret.c_str());
    }
    auto s = ConsoleServer::start(engine, listen_host, listen_port, secret);
    if (!s.ok()) return fail("run", s.status().message());
    server = std::move(*s);
    std::fprintf(stderr, "console listening on %s:%u\n", listen_host.c_str(), server->port());
    if (a.has("port-file"))
      if (Status w = write_output(a.get("port-file"), std::to_string(server->port()) + "\n"); !w.ok()) return fail("run", w.message());
  }
  ConsoleHooks hooks;
  hooks.eval = [&](const std::string& code, bool json) { return engine.eval(code, json); };
  hooks.watch_frame = [&] { return engine.watch_frame(); };
  hooks.complete = [&](const std::string& p) { return engine.complete(p); };
  int rc = 0;
  if (a.flag("console")) {
    if (a.has("eval")) {
      rc = run_console_code(hooks, a.get("eval"), a.flag("json"));
    } else if (a.has("console-script")) {
      std::ifstream in(a.get("console-script"));
      if (!in) return fail("run", a.get("console-script") + ": cannot read");
      std::string code((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      rc = run_console_code(hooks, code, a.flag("json"));
    } else {
      rc = run_repl(hooks, "janus console on " + dep.spec().source + " — help() lists the commands, Ctrl-D leaves");
    }
  }
  if (server) {
    // Serve until a stop signal; print the workload's results once they are all in.
    bool printed = false;
    int sig = 0;
    for (;;) {
      const timespec tick{0, 100 * 1000 * 1000};
      sig = sigtimedwait(&stop_signals, nullptr, &tick);
      if (sig > 0) break;
      if (!printed && std::all_of(handles.begin(), handles.end(), [](RequestHandle& h) {
            return h.result.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
          })) {
        print_results(collect(), a.flag("json"), &failures);
        std::fflush(stdout);
        printed = true;
      }
    }
    std::fprintf(stderr, "janus run: signal %d, shutting down\n", sig);
    engine.interrupt();  // a console command still running stops now, so the server can close
    server.reset();
  }
  dep.shutdown();
  return rc;
}

}  // namespace janus::cli
