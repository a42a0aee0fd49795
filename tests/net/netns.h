// Emulated hosts on one machine: a network namespace per host, each with a veth link to a
// bridge in the root namespace (where the coordinator listens), on a private /24. Made
// and removed by whoever holds the Hosts object (the multi-host test, bench_exchange);
// needs root (CAP_NET_ADMIN) and iproute2, and says why when it cannot.
//
// A host's link can be shaped (tc tbf): a rate on its veth emulates a NIC of that speed.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace janus::test {

class Hosts {
 public:
  /// `names`: one namespace each. Hosts are 10.231.S.11, .12, ...; the bridge is .1.
  explicit Hosts(std::vector<std::string> names) : names_(std::move(names)) {
    tag_ = std::to_string(getpid() % 100000);
    subnet_ = "10.231." + std::to_string(getpid() % 200 + 20);
    if (geteuid() != 0) {
      why_ = "needs root (CAP_NET_ADMIN) to make network namespaces";
      return;
    }
    if (!run("ip -V")) {
      why_ = "iproute2 ('ip') is not installed";
      return;
    }
    cleanup();
    bridge_ = "jb" + tag_;
    const std::string probe = "jn" + tag_ + "-probe";
    if (!run("ip netns add " + probe)) {
      why_ = "'ip netns add' failed here (no permission to make network namespaces?)";
      return;
    }
    run("ip netns del " + probe);
    bool ok = run("ip link add " + bridge_ + " type bridge") && run("ip addr add " + subnet_ + ".1/24 dev " + bridge_) &&
              run("ip link set " + bridge_ + " up");
    for (size_t i = 0; ok && i < names_.size(); ++i) {
      const std::string ns = ns_of(i), outer = "jv" + tag_ + std::to_string(i), inner = "jw" + tag_ + std::to_string(i);
      ok = run("ip netns add " + ns) && run("ip link add " + outer + " type veth peer name " + inner) &&
           run("ip link set " + inner + " netns " + ns) && run("ip link set " + outer + " master " + bridge_) &&
           run("ip link set " + outer + " up") && in_ns(i, "ip link set lo up") && in_ns(i, "ip link set " + inner + " name eth0") &&
           in_ns(i, "ip addr add " + host(i) + "/24 dev eth0") && in_ns(i, "ip link set eth0 up");
      if (ok) made_.push_back(ns);
    }
    if (!ok) {
      why_ = "setting up namespaces, veth links and a bridge failed (see the command above)";
      cleanup();
    }
  }

  ~Hosts() { cleanup(); }
  Hosts(const Hosts&) = delete;
  Hosts& operator=(const Hosts&) = delete;

  bool ok() const { return why_.empty(); }
  const std::string& why() const { return why_; }
  /// Where the coordinator listens: the bridge's address in the root namespace.
  std::string coordinator_host() const { return subnet_ + ".1"; }
  std::string host(size_t i) const { return subnet_ + "." + std::to_string(11 + i); }
  std::string ns_of(size_t i) const { return "jn" + tag_ + "-" + names_[i]; }
  /// argv prefix that runs a program in host i's namespace.
  std::vector<std::string> prefix(size_t i) const { return {"ip", "netns", "exec", ns_of(i)}; }

  /// Shapes host i's outgoing traffic to `mbit` Mbit/s (0: unshaped) on both ends of its
  /// link, so that what it sends and what it receives both pass a NIC of that speed.
  bool shape(size_t i, int mbit) {
    const std::string outer = "jv" + tag_ + std::to_string(i);
    run("tc qdisc del dev " + outer + " root");
    in_ns(i, "tc qdisc del dev eth0 root");
    if (mbit <= 0) return true;
    const std::string rate = std::to_string(mbit) + "mbit";
    const std::string burst = std::to_string(std::max(32, mbit / 8)) + "kb";  // ~1 ms at rate
    return in_ns(i, "tc qdisc add dev eth0 root tbf rate " + rate + " burst " + burst + " latency 50ms") &&
           run("tc qdisc add dev " + outer + " root tbf rate " + rate + " burst " + burst + " latency 50ms");
  }

 private:
  static bool run(const std::string& cmd) {
    const int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
    return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
  }
  bool in_ns(size_t i, const std::string& cmd) { return run("ip netns exec " + ns_of(i) + " " + cmd); }

  void cleanup() {
    for (size_t i = 0; i < names_.size(); ++i) run("ip netns del " + ns_of(i));
    made_.clear();
    if (!bridge_.empty()) run("ip link del " + bridge_);
    run("ip link del jb" + tag_);
  }

  std::vector<std::string> names_, made_;
  std::string tag_, subnet_, bridge_, why_;
};

}  // namespace janus::test
