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

}  // namespace

TEST_CASE("janus run with four janus node processes prints what one process prints") {
  TempDir dir;
  const std::string example = read_file(source_dir() + "/examples/configs/nodes/loopback.lua");
  REQUIRE(example.find("coordinator{listen=\"127.0.0.1:7411\"}") != std::string::npos);
  // The example as shipped, on a port of the system's choosing (tests run in parallel).
  const std::string port_file = dir / "port";
  std::string config = example;
  config.replace(config.find("coordinator{listen=\"127.0.0.1:7411\"}"), std::string("coordinator{listen=\"127.0.0.1:7411\"}").size(),
                 "coordinator{listen=\"127.0.0.1:0\", port_file=\"" + port_file + "\", join_timeout_s=30}");
  write_file(dir / "nodes.lua", config);
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
  const std::string port = wait_for_file(port_file, 60);
  REQUIRE_MESSAGE(!port.empty(), coordinator.output());
  std::map<std::string, Process> nodes;
  for (const char* n : {"a1", "a2", "m1", "m2"})
    nodes[n] = start_node(n, "127.0.0.1:" + port.substr(0, port.size() - 1), kSecret, dir.path());
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
