#include <doctest/doctest.h>

#include "actors/bridge_topology.h"

using namespace janus;
using namespace janus::actors;

namespace {

// Five nodes, the kinds interleaved so that a rank is not a node index:
//   0 m1 (MoE: instances 0, 3)   1 a1 (shards 0, 1)   2 m2 (MoE: instances 1, 2, 4)
//   3 a2 (shards 2, 4)           4 a3 (shard 3)
std::vector<BridgeTopology::Node> five_nodes() {
  return {{0, "m1", true}, {1, "a1", false}, {2, "m2", true}, {3, "a2", false}, {4, "a3", false}};
}
const std::vector<int32_t> kShardNode = {1, 1, 3, 4, 3};
const std::vector<int32_t> kInstanceNode = {0, 2, 2, 0, 2};

BridgeTopology five(bool recover) {
  BridgeTopology t(recover);
  REQUIRE(t.reset(five_nodes(), kShardNode, kInstanceNode).ok());
  return t;
}

}  // namespace

TEST_CASE("the directory gives attention ranks, designated MoE nodes and per-node counts") {
  BridgeTopology t = five(false);
  CHECK(t.size() == 5);
  CHECK(t.rank(0) == -1);
  CHECK(t.rank(1) == 0);
  CHECK(t.rank(2) == -1);
  CHECK(t.rank(3) == 1);
  CHECK(t.rank(4) == 2);
  const transport::ExchangeTopology& x = t.exchange();
  CHECK(x.attention_nodes == std::vector<uint32_t>{1, 3, 4});
  CHECK(x.moe_nodes == std::vector<uint32_t>{0, 2});
  CHECK(x.shards == std::vector<int>{2, 2, 1});
  CHECK(x.instances == std::vector<int>{2, 3});
  // Rank k's designated node is moe_nodes[k % 2].
  CHECK(t.designated_for(1) == 0);
  CHECK(t.designated_for(3) == 2);
  CHECK(t.designated_for(4) == 0);
  CHECK(t.shards_of(1) == std::vector<int32_t>{0, 1});
  CHECK(t.shards_of(3) == std::vector<int32_t>{2, 4});
  CHECK(t.shards_of(0).empty());
  CHECK(t.hosts_shard(3, 4));
  CHECK_FALSE(t.hosts_shard(3, 3));
  CHECK(t.instances_on(0) == 2);
  CHECK(t.instances_on(2) == 3);
  CHECK(t.instances_on(1) == 0);
  CHECK(t.is_moe(2));
  CHECK_FALSE(t.is_moe(3));
  CHECK(t.name_of(3) == "a2");
  CHECK(t.name_of(9) == "?");
  CHECK_FALSE(t.absent().has_value());
}

TEST_CASE("a directory without a MoE node or without an attention node is refused") {
  BridgeTopology only_attention;
  Status s = only_attention.reset({{0, "a1", false}, {1, "a2", false}}, {0, 1}, {});
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("no MoE node or no attention node") != std::string::npos);
  BridgeTopology only_moe;
  CHECK_FALSE(only_moe.reset({{0, "m1", true}}, {}, {0}).ok());
}

TEST_CASE("without recovery a lost node is fatal and stays in the exchange, so what needs it fails") {
  BridgeTopology t = five(false);
  CHECK_FALSE(t.recoverable(0));  // m2 is left, but the Scaler does not recover
  CHECK(t.lose(9, "gone") == BridgeTopology::Loss::kIgnored);
  CHECK(t.lose(4, "killed") == BridgeTopology::Loss::kFatal);
  CHECK(t.lose(4, "again") == BridgeTopology::Loss::kIgnored);
  CHECK(t.lose(0, "crashed") == BridgeTopology::Loss::kFatal);
  // Nothing rebuilt: ranks and members are as they were.
  CHECK(t.rank(4) == 2);
  CHECK(t.exchange().moe_nodes == std::vector<uint32_t>{0, 2});
  // The lowest index first, with the reason it was lost for.
  auto gone = t.absent();
  REQUIRE(gone.has_value());
  CHECK(gone->node == 0);
  CHECK(gone->reason == "crashed");
  CHECK_FALSE(gone->moving);
}

TEST_CASE("a lost MoE node with another left is recovered: it stays until the update moves its instances") {
  BridgeTopology t = five(true);
  CHECK(t.recoverable(0));
  CHECK(t.lose(0, "crashed") == BridgeTopology::Loss::kRecovering);
  auto gone = t.absent();
  REQUIRE(gone.has_value());
  CHECK(gone->node == 0);
  CHECK(gone->moving);  // the step is dropped for a re-run, not failed
  CHECK(t.exchange().moe_nodes == std::vector<uint32_t>{0, 2});

  // The Scaler moved instances 0 and 3 to m2.
  REQUIRE(t.update({2, 2, 2, 2, 2}, {}, 0).ok());
  CHECK(t.exchange().moe_nodes == std::vector<uint32_t>{2});
  CHECK(t.exchange().instances == std::vector<int>{5});
  CHECK(t.instances_on(0) == 0);
  CHECK(t.instances_on(2) == 5);
  CHECK(t.designated_for(1) == 2);
  CHECK(t.designated_for(3) == 2);
  CHECK(t.designated_for(4) == 2);
  CHECK(t.exchange().attention_nodes == std::vector<uint32_t>{1, 3, 4});  // shards unchanged
  CHECK(t.shards_of(4) == std::vector<int32_t>{3});
  CHECK_FALSE(t.absent().has_value());

  // The last MoE node cannot be replaced: the lost one does not count.
  CHECK_FALSE(t.recoverable(2));
  CHECK(t.lose(2, "crashed too") == BridgeTopology::Loss::kFatal);
  CHECK(t.lose(0, "late report") == BridgeTopology::Loss::kIgnored);
}

TEST_CASE("a lost attention node's shards move to another: ranks close up, designated nodes follow") {
  BridgeTopology t = five(true);
  CHECK(t.lose(1, "killed") == BridgeTopology::Loss::kRecovering);
  // a1's shards 0 and 1 go to a3.
  REQUIRE(t.update(kInstanceNode, {4, 4, 3, 4, 3}, 1).ok());
  CHECK(t.rank(1) == -1);
  CHECK(t.rank(3) == 0);
  CHECK(t.rank(4) == 1);
  CHECK(t.exchange().attention_nodes == std::vector<uint32_t>{3, 4});
  CHECK(t.exchange().shards == std::vector<int>{2, 3});
  CHECK(t.shards_of(4) == std::vector<int32_t>{0, 1, 3});
  CHECK(t.shards_of(1).empty());
  CHECK(t.designated_for(3) == 0);
  CHECK(t.designated_for(4) == 2);
  CHECK(t.exchange().moe_nodes == std::vector<uint32_t>{0, 2});
  CHECK_FALSE(t.absent().has_value());
}

TEST_CASE("an update names a node lost even when its loss was not reported, and odd updates are refused") {
  BridgeTopology t = five(true);
  Status wrong_count = t.update({0, 2}, {}, 0);
  CHECK_FALSE(wrong_count.ok());
  CHECK(wrong_count.message().find("another deployment") != std::string::npos);
  CHECK_FALSE(t.update(kInstanceNode, {}, 5).ok());
  Status on_moe = t.update(kInstanceNode, {1, 1, 3, 0, 3}, 4);
  CHECK_FALSE(on_moe.ok());
  CHECK(on_moe.message().find("puts a shard on node 0") != std::string::npos);
  CHECK_FALSE(t.update(kInstanceNode, {1, 1, 3, -1, 3}, 4).ok());
  // Refused updates change nothing.
  CHECK(t.exchange().attention_nodes == std::vector<uint32_t>{1, 3, 4});
  CHECK_FALSE(t.absent().has_value());

  // m1 leaves without a NodeLost first: out of the exchange, and a later report is moot.
  REQUIRE(t.update({2, 2, 2, 2, 2}, {}, 0).ok());
  CHECK(t.exchange().moe_nodes == std::vector<uint32_t>{2});
  CHECK(t.lose(0, "late report") == BridgeTopology::Loss::kIgnored);
  CHECK_FALSE(t.absent().has_value());
}
