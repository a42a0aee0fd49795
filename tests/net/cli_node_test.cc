// The README's multi-node commands as a user types them: `janus run` on the example config
// (examples/configs/nodes/loopback.lua) waits for its nodes, four `janus node` processes
// join it, and the run prints the same tokens as the same config without nodes{} (one
// process), then the per-node data-plane summary; every process exits 0.
#include <doctest/doctest.h>

#include <regex>

#include "cluster_util.h"

using namespace janus;
using namespace janus::test;

namespace {

// The "request N: [...] -> [...] (reason)" lines of a run's output.
std::vector<std::string> request_lines(const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);)
    if (l.rfind("request ", 0) == 0) lines.push_back(l);
  return lines;
}

std::string wait_for_file(const std::string& path, double timeout_s) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < end) {
    std::string s = read_file(path);
    if (!s.empty() && s.back() == '\n') return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return "";
}

/// The README's example config, listening on a port of the system's choosing (tests run in
/// parallel) that it writes to `port_file`.
std::string loopback_config(const std::string& port_file) {
  std::string config = read_file(source_dir() + "/examples/configs/nodes/loopback.lua");
  const std::string listen = "coordinator{listen=\"127.0.0.1:7411\"}";
  REQUIRE(config.find(listen) != std::string::npos);
  config.replace(config.find(listen), listen.size(),
                 "coordinator{listen=\"127.0.0.1:0\", port_file=\"" + port_file + "\", join_timeout_s=30}");
  return config;
}

/// The example's four nodes, joining the coordinator once it wrote its port.
std::map<std::string, Process> start_loopback_nodes(Process& coordinator, const std::string& port_file, const std::string& log_dir) {
  const std::string port = wait_for_file(port_file, 60);
  REQUIRE_MESSAGE(!port.empty(), coordinator.output());
  std::map<std::string, Process> nodes;
  for (const char* n : {"a1", "a2", "m1", "m2"}) nodes[n] = start_node(n, "127.0.0.1:" + port.substr(0, port.size() - 1), kSecret, log_dir);
  return nodes;
}

}  // namespace

TEST_CASE("janus run with four janus node processes prints what one process prints") {
  TempDir dir;
  const std::string example = read_file(source_dir() + "/examples/configs/nodes/loopback.lua");
  // The example as shipped, on a port of the system's choosing (tests run in parallel).
  const std::string port_file = dir / "port";
  write_file(dir / "nodes.lua", loopback_config(port_file));
  // The same deployment in one process: the example without its nodes.
  std::string single = example;
  const size_t begin = single.find("\nnodes{\n");
  REQUIRE(begin != std::string::npos);
  single.erase(begin + 1, single.find("\n}\n", begin) + 3 - (begin + 1));
  single = std::regex_replace(single, std::regex("(coordinator|exchange)\\{[^}]*\\}"), "");
  single = std::regex_replace(single, std::regex(", nodes=\\{[^}]*\\}"), "");
  REQUIRE(single.find("nodes{") == std::string::npos);
  REQUIRE(single.find("nodes=") == std::string::npos);
  write_file(dir / "single.lua", single);

  const std::string janus = std::string(JANUS_BINARY_DIR) + "/janus";
  Process one = start_process({janus, "run", dir / "single.lua", "--threads", "2"}, dir / "single.log");
  REQUIRE(one.wait(120) == 0);
  const std::vector<std::string> expected = request_lines(one.output());
  REQUIRE(expected.size() == 4);

  setenv("JANUS_SECRET", kSecret, 1);
  Process coordinator = start_process({janus, "run", dir / "nodes.lua", "--threads", "2"}, dir / "coordinator.log");
  std::map<std::string, Process> nodes = start_loopback_nodes(coordinator, port_file, dir.path());
  const int rc = coordinator.wait(120);
  std::string logs = coordinator.output();
  for (auto& [n, p] : nodes) logs += "---- " + n + "\n" + p.output();
  REQUIRE_MESSAGE(rc == 0, logs);
  CHECK(request_lines(coordinator.output()) == expected);
  const std::string out = coordinator.output();
  CHECK_MESSAGE(out.find("nodes (data plane over shm)") != std::string::npos, out);
  CHECK(out.find("exchange per layer batch") != std::string::npos);
  // The coordinator shut its nodes down: each leaves on its own, with 0.
  for (auto& node : nodes) {  // not a structured binding: clang 14 cannot capture one
    const std::string& n = node.first;
    Process& p = node.second;
    CAPTURE(n);
    CHECK_MESSAGE(p.wait(30) == 0, p.output());
  }
  unsetenv("JANUS_SECRET");
}

TEST_CASE("SIGTERM to a coordinator ends its run cleanly: results so far printed, nodes shut down, status 143") {
  TempDir dir;
  const std::string port_file = dir / "port";
  std::string config = loopback_config(port_file);
  // Long generations, so that the signal lands while they run.
  config.replace(config.find("max_new_tokens=24}"), std::string("max_new_tokens=24}").size(), "max_new_tokens=2000, ignore_eos=true}");
  write_file(dir / "nodes.lua", config);
  const std::string janus = std::string(JANUS_BINARY_DIR) + "/janus";
  setenv("JANUS_SECRET", kSecret, 1);
  Process coordinator = start_process({janus, "run", dir / "nodes.lua", "--threads", "2"}, dir / "coordinator.log");
  std::map<std::string, Process> nodes = start_loopback_nodes(coordinator, port_file, dir.path());
  for (auto& [n, p] : nodes)
    for (int i = 0; i < 3000 && p.output().find("joined") == std::string::npos; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // Serving (janus run says so on stderr), and a while into it: the run takes far longer.
  for (int i = 0; i < 6000 && coordinator.output().find("janus run: serving") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE_MESSAGE(coordinator.output().find("janus run: serving") != std::string::npos, coordinator.output());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  REQUIRE(coordinator.running());
  ::kill(coordinator.pid, SIGTERM);
  const int rc = coordinator.wait(60);
  std::string logs = coordinator.output();
  for (auto& [n, p] : nodes) logs += "---- " + n + "\n" + p.output();
  CHECK_MESSAGE(rc == 128 + SIGTERM, logs);
  const std::string out = coordinator.output();
  CHECK_MESSAGE(out.find("stopping; ") != std::string::npos, out);
  // Every request is accounted for: its tokens, or why it did not finish.
  const std::vector<std::string> lines = request_lines(out);
  CHECK_MESSAGE(lines.size() == 4, out);
  for (const std::string& l : lines)
    CHECK_MESSAGE((l.find("->") != std::string::npos || l.find("failed: request failed: the deployment shut down") != std::string::npos), l);
  // The nodes were told to shut down: each leaves on its own, with 0.
  for (auto& node : nodes) {
    // Named, not a structured binding: clang 14 cannot capture bindings in doctest's lambdas.
    const std::string& n = node.first;
    auto& p = node.second;
    CAPTURE(n);
    CHECK_MESSAGE(p.wait(30) == 0, p.output());
  }
  unsetenv("JANUS_SECRET");
}

TEST_CASE("a janus process that crashes dies of its signal and leaves no libinfinipath backtrace file") {
  // libinfinipath (linked through libfabric's psm providers) installs crash handlers that
  // write <exe>.80s-<pid>,<host>.btr into the working directory and call exit() from the
  // handler; transport/fabric.cc takes them back out.
  TempDir dir;
  const std::string janus = std::string(JANUS_BINARY_DIR) + "/janus";
  for (int sig : {SIGSEGV, SIGTERM}) {
    CAPTURE(sig);
    // A node whose coordinator is not there: it keeps retrying for 20 s.
    Process p = start_process({janus, "node", "--join", "127.0.0.1:9", "--name", "x", "--secret", kSecret, "--connect-timeout", "20"},
                              dir / "node.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // past start-up: every library loaded
    REQUIRE(p.running());
    ::kill(p.pid, sig);
    CHECK(p.wait(10) == 128 + sig);
    if (p.running()) p.kill_now();
    for (const auto& e : std::filesystem::directory_iterator(std::filesystem::current_path()))
      CHECK_MESSAGE(e.path().filename().string().rfind("janus.80s-" + std::to_string(p.pid), 0) != 0, e.path().string());
  }
}
