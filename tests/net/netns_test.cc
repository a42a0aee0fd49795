// Two attention hosts and two MoE hosts emulated with network namespaces and veth links
// (made and removed here; skipped with a message where namespaces cannot be made): the
// nodes reach each other over tcp;ofi_rxm on their own addresses, and single-phase, Case 1,
// Case 2 and auto all produce exactly the reference engine's tokens.
#include <doctest/doctest.h>

#include "cluster_util.h"
#include "netns.h"

using namespace janus;
using namespace janus::test;

TEST_CASE("2 attention hosts + 2 MoE hosts in network namespaces") {
  Hosts hosts({"a1", "a2", "m1", "m2"});
  if (!hosts.ok()) {
    MESSAGE("SKIPPED: network namespaces unavailable: " << hosts.why());
    return;
  }
  Layout l;
  std::map<std::string, std::vector<std::string>> prefix;
  const char* names[] = {"a1", "a2", "m1", "m2"};
  for (size_t i = 0; i < 4; ++i) {
    l.nodes.push_back({names[i], hosts.host(i)});
    prefix[names[i]] = hosts.prefix(i);
  }
  l.shard_nodes = {"a1", "a1", "a2", "a2"};
  l.instance_nodes = {"m1", "m1", "m2", "m2"};
  for (const char* mode : {"single", "case1", "case2", "auto"}) {
    CAPTURE(mode);
    GraphSpec spec = cluster_spec(l, mode, "auto");  // distinct hosts: auto picks tcp
    spec.coordinator.listen = hosts.coordinator_host() + ":0";
    auto cluster = start_cluster(spec, hosts.coordinator_host(), prefix);
    REQUIRE_MESSAGE(cluster->status.ok(), (cluster->status.to_string() + "\n" + cluster->logs()));
    Deployment& d = cluster->d();
    CHECK_MESSAGE(check_reference_tokens(d) == "", cluster->logs());
    for (const NodeSnapshot& n : d.nodes()) {
      CAPTURE(n.name);
      CHECK(n.transport == "tcp");
      CHECK(n.host.rfind("10.231.", 0) == 0);
      CHECK(n.frames_received > 0);
      CHECK(n.dropped_malformed + n.dropped_truncated + n.dropped_size_mismatch + n.dropped_unknown_sender + n.transport_dropped == 0);
    }
    // The links between hosts were probed: attention -> MoE and MoE <-> MoE.
    CHECK(d.links().size() >= 5);
  }
}
