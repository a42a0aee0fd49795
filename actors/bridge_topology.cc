#include "actors/bridge_topology.h"

#include <algorithm>

namespace janus::actors {

Status BridgeTopology::reset(std::vector<Node> nodes, std::vector<int32_t> shard_node, std::vector<int32_t> instance_node) {
  nodes_ = std::move(nodes);
  shard_node_ = std::move(shard_node);
  instance_node_ = std::move(instance_node);
  return rebuild();
}

Status BridgeTopology::update(const std::vector<int32_t>& instance_node, const std::vector<int32_t>& shard_node, uint32_t lost) {
  if (instance_node.size() != instance_node_.size() || lost >= nodes_.size())
    return invalid_argument("a directory update for another deployment");
  for (int32_t n : shard_node)
    if (n < 0 || static_cast<size_t>(n) >= nodes_.size() || nodes_[static_cast<size_t>(n)].moe)
      return invalid_argument("a directory update puts a shard on node " + std::to_string(n));
  if (!lost_.count(lost)) lost_[lost] = "moved away by the scaler";
  moving_.erase(lost);
  instance_node_ = instance_node;
  if (!shard_node.empty()) shard_node_ = shard_node;
  return rebuild();
}

BridgeTopology::Loss BridgeTopology::lose(uint32_t index, const std::string& reason) {
  if (index >= nodes_.size() || lost_.count(index)) return Loss::kIgnored;
  // Asked before the node counts as lost: it must not count as its own replacement.
  const bool recovering = recoverable(index);
  lost_[index] = reason;
  if (!recovering) return Loss::kFatal;
  moving_.insert(index);
  return Loss::kRecovering;
}

bool BridgeTopology::recoverable(uint32_t index) const {
  if (!scaler_recovers_) return false;
  for (const Node& x : nodes_)
    if (x.moe == nodes_[index].moe && x.index != index && !lost_.count(x.index)) return true;
  return false;
}

std::optional<BridgeTopology::Absent> BridgeTopology::absent() const {
  for (const auto& [n, why] : lost_) {
    const bool needed =
        std::find(exchange_.moe_nodes.begin(), exchange_.moe_nodes.end(), n) != exchange_.moe_nodes.end() || rank_[n] >= 0;
    if (needed) return Absent{n, why, moving_.count(n) != 0};
  }
  return std::nullopt;
}

const std::string& BridgeTopology::name_of(uint32_t n) const {
  static const std::string unknown = "?";
  return n < nodes_.size() ? nodes_[n].name : unknown;
}

bool BridgeTopology::hosts_shard(uint32_t n, int32_t shard) const {
  const std::vector<int32_t>& s = shards_of_[n];
  return std::find(s.begin(), s.end(), shard) != s.end();
}

// Who exchanges with whom, from the directory less the nodes that went away (a node whose
// members are moving still counts: the step that needs it is dropped, not failed).
Status BridgeTopology::rebuild() {
  instances_on_.assign(nodes_.size(), 0);
  rank_.assign(nodes_.size(), -1);
  for (int32_t x : instance_node_)
    if (x >= 0 && static_cast<size_t>(x) < nodes_.size()) ++instances_on_[static_cast<size_t>(x)];
  exchange_ = {};
  shards_of_.assign(nodes_.size(), {});
  for (size_t s = 0; s < shard_node_.size(); ++s) shards_of_.at(static_cast<size_t>(shard_node_[s])).push_back(static_cast<int32_t>(s));
  for (const Node& x : nodes_) {
    if (lost_.count(x.index) && !moving_.count(x.index)) continue;
    if (x.moe) {
      exchange_.moe_nodes.push_back(x.index);
      exchange_.instances.push_back(instances_on_[x.index]);
    } else {
      rank_[x.index] = static_cast<int>(exchange_.attention_nodes.size());
      exchange_.attention_nodes.push_back(x.index);
      exchange_.shards.push_back(static_cast<int>(shards_of_[x.index].size()));
    }
  }
  if (exchange_.moe_nodes.empty() || exchange_.attention_nodes.empty())
    return invalid_argument("the directory has no MoE node or no attention node");
  return Status::Ok();
}

}  // namespace janus::actors
