// Helpers for the multi-node tests: the fixture model and its reference tokens, graph
// specs spread over nodes, and `janus node` processes started (fork + exec of the built
// janus binary, optionally inside a network namespace) when the coordinator listens.
// Every node process dies with the test process (PR_SET_PDEATHSIG), so a failed test
// leaves nothing running.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "actors/deployment.h"
#include "transformers_fixture.h"

namespace janus::test {

constexpr const char* kSecret = "janus-test-secret";

/// The qwen3_moe fixture (3 layers, 8 experts top-2, hidden 64), its prompts and the
/// reference engine's greedy tokens (16 per prompt).
struct Reference {
  std::string dir;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> tokens;
};

inline const Reference& reference() {
  static const Reference r = [] {
    const TransformersFixture& f = transformers_fixture("qwen3_moe");
    Reference x{f.dir, f.prompts, {}};
    auto out = reference_tokens(x.dir, greedy_requests(x.prompts, 16));
    if (out.ok()) x.tokens = *out;
    return x;
  }();
  return r;
}

/// Where nodes go: their names, hosts, and the node of each shard and instance.
struct Layout {
  std::vector<std::pair<std::string, std::string>> nodes;  // name, host
  std::vector<std::string> shard_nodes, instance_nodes;
};

/// 2 attention nodes x 2 shards, 2 MoE nodes x 2 instances, on `host` (loopback).
inline Layout two_by_two(const std::string& host = "127.0.0.1") {
  return {{{"a1", host}, {"a2", host}, {"m1", host}, {"m2", host}}, {"a1", "a1", "a2", "a2"}, {"m1", "m1", "m2", "m2"}};
}

inline GraphSpec cluster_spec(const Layout& l, const std::string& mode, const std::string& transport, const std::string& side = "moe",
                              int micro_batches = 1) {
  const Reference& r = reference();
  GraphSpec g;
  g.source = "<net test>";
  g.model.path = r.dir;
  g.attention.shards = static_cast<int>(l.shard_nodes.size());
  g.attention.nodes = l.shard_nodes;
  g.attention.micro_batches = micro_batches;
  g.attention.max_batch = 8;
  g.attention.kv_blocks = 64;
  g.experts.instances = static_cast<int>(l.instance_nodes.size());
  g.experts.nodes = l.instance_nodes;
  g.experts.slots = (8 + g.experts.instances - 1) / g.experts.instances + 1;  // spare slots: replicas for AEBS to pick from
  g.router.side = side;
  g.scheduler.policy = "aebs";
  g.scheduler.seed = 3;
  for (const auto& [name, host] : l.nodes) {
    NodeSpec n;
    n.name = name;
    n.host = host;
    g.nodes.push_back(n);
  }
  g.coordinator.listen = "127.0.0.1:0";
  g.coordinator.secret = kSecret;
  g.coordinator.join_timeout_s = 30;
  g.exchange.mode = mode;
  g.exchange.transport = transport;
  g.exchange.spin_us = 200;
  g.workload.prompts = r.prompts;
  g.workload.max_new_tokens = 16;
  g.workload.ignore_eos = true;
  return g;
}

/// A child process (a node), its log file.
struct Process {
  pid_t pid = -1;
  std::string name, log;
  int status = -1;  // once reaped

  bool running() {
    if (pid < 0 || status >= 0) return false;
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      status = st;
      return false;
    }
    return true;
  }
  /// Waits up to `timeout_s`; the exit code, 128 + signal, or -1 when still running.
  int wait(double timeout_s) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (running() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (status < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void kill_now() {
    if (running()) {
      ::kill(pid, SIGKILL);
      wait(5);
    }
  }
  std::string output() const { return read_file(log); }
};

/// Starts `args` (argv[0] a path or a name on PATH) with stdout and stderr into `log`.
inline Process start_process(std::vector<std::string> args, const std::string& log) {
  Process p;
  p.log = log;
  // Everything the child needs is made before fork: this process has threads, and the
  // child may only make async-signal-safe calls until it execs.
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int fd = open(p.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const pid_t parent = getpid();
  p.pid = fork();
  if (p.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(99);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp(argv[0], argv.data());
    _exit(127);
  }
  if (fd >= 0) close(fd);
  return p;
}

/// Starts `janus node` (argv prefix e.g. {"ip", "netns", "exec", "ns1"} to run it elsewhere).
inline Process start_node(const std::string& name, const std::string& join, const std::string& secret, const std::string& log_dir,
                          const std::vector<std::string>& prefix = {}, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = prefix;
  args.push_back(std::string(JANUS_BINARY_DIR) + "/janus");
  for (const char* a : {"node", "--join"}) args.push_back(a);
  args.push_back(join);
  args.push_back("--name");
  args.push_back(name);
  args.push_back("--secret");
  args.push_back(secret);
  args.push_back("--threads");
  args.push_back("2");
  args.push_back("--connect-timeout");
  args.push_back("20");
  args.insert(args.end(), extra.begin(), extra.end());
  Process p = start_process(std::move(args), log_dir + "/node-" + name + ".log");
  p.name = name;
  return p;
}

/// A deployment whose nodes are child processes of this test.
struct Cluster {
  TempDir dir;
  std::unique_ptr<Deployment> deployment;
  std::map<std::string, Process> nodes;
  Status status = Status::Ok();

  Deployment& d() { return *deployment; }
  ~Cluster() {
    if (deployment) deployment->shutdown();
    for (auto& [n, p] : nodes)
      if (p.wait(10) < 0) p.kill_now();
  }
  std::string logs() {
    std::string s;
    for (auto& [n, p] : nodes) s += "---- " + n + "\n" + p.output();
    return s;
  }
  /// What a stalled deployment looks like from the coordinator: the step clock, every
  /// request's progress, the actors with mail waiting, each node's failed layer batches,
  /// then the nodes' logs. Printed where a test gives up waiting.
  std::string diagnosis() {
    std::ostringstream o;
    Deployment& dep = *deployment;
    if (auto c = dep.step_clock(); c.ok()) o << "step " << c->step << (c->in_step ? " (in a step)" : " (between steps)") << (c->paused ? " paused" : "") << "\n";
    for (const RequestSnapshot& r : dep.requests())
      o << "request " << r.id << " " << r.state << " shard " << r.shard << " " << r.generated << "/" << r.max_new_tokens << " age " << r.age_s << " s\n";
    for (const ActorSnapshot& a : dep.actors())
      if (a.mailbox > 0 || !a.alive) o << "actor " << a.name << "@" << a.node << (a.alive ? "" : " (not answering)") << " mailbox " << a.mailbox << " handled " << a.messages << "\n";
    for (const NodeSnapshot& n : dep.nodes()) {
      o << "node " << n.name << (n.alive ? "" : " (not answering)") << " failed batches " << n.failed_batches << " stale drops " << n.dropped_stale << " sent " << n.frames_sent << " received " << n.frames_received << "\n";
      for (const std::string& p : n.pending) o << "  " << p << "\n";
    }
    return o.str() + logs();
  }
};

/// Creates the deployment; each node starts when the coordinator listens. `prefix_of`
/// gives a node's argv prefix (its network namespace), `join_host` where nodes dial; `o`
/// the coordinator's options (its on_listening is replaced).
inline DeploymentOptions cluster_options() {
  DeploymentOptions o;
  o.threads = 2;
  return o;
}

inline std::unique_ptr<Cluster> start_cluster(GraphSpec spec, const std::string& join_host = "127.0.0.1",
                                              std::map<std::string, std::vector<std::string>> prefix_of = {},
                                              const std::string& secret = kSecret, DeploymentOptions o = cluster_options()) {
  auto c = std::make_unique<Cluster>();
  Cluster* raw = c.get();
  std::vector<std::string> names;
  for (const NodeSpec& n : spec.nodes) names.push_back(n.name);
  o.on_listening = [raw, names, join_host, prefix_of, secret](uint16_t port) {
    for (const std::string& n : names) {
      auto it = prefix_of.find(n);
      raw->nodes[n] = start_node(n, join_host + ":" + std::to_string(port), secret, raw->dir.path(),
                                 it == prefix_of.end() ? std::vector<std::string>{} : it->second);
    }
  };
  auto d = Deployment::create(std::move(spec), o);
  if (!d.ok()) {
    c->status = d.status();
    return c;
  }
  c->deployment = std::move(*d);
  return c;
}

/// Runs the workload; "" when every request produced the reference tokens, else what differed.
inline std::string check_reference_tokens(Deployment& d) {
  const Reference& r = reference();
  auto results = d.run_workload();
  if (results.size() != r.tokens.size()) return "got " + std::to_string(results.size()) + " results";
  for (size_t i = 0; i < results.size(); ++i) {
    if (!results[i].ok()) return "request " + std::to_string(i) + " failed: " + results[i].status().to_string();
    if (results[i]->tokens != r.tokens[i]) return "request " + std::to_string(i) + " produced different tokens";
  }
  return "";
}

}  // namespace janus::test
