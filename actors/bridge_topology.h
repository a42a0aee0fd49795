// BridgeTopology: who a bridge exchanges with. Built from the coordinator's directory
// (every node, where each shard and expert instance lives) less the nodes that went away;
// it derives, in one place, the attention ranks (which fix each attention node's
// designated MoE node for Case 2), the shards per attention node and the instances per
// MoE node that the cost model and the exchange read.
//
// It also decides what losing a node means: when the Scaler recovers and another node of
// the same kind is left, the lost node's members are about to move (DirectoryUpdate), so
// the node stays in the exchange until the update names their new places and a layer
// batch that needs it is dropped for the re-run; otherwise the node is gone and what
// needs it fails. Plain C++ (no actors), so it is tested on its own.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "transport/cost_model.h"

namespace janus::actors {

class BridgeTopology {
 public:
  /// A node as the exchange sees it (the directory's NodeInfo less its handles).
  struct Node {
    uint32_t index = 0;
    std::string name;
    bool moe = false;
  };

  /// What losing a node means for the layer batches in flight.
  enum class Loss {
    kIgnored,     // not a node of the directory, or already lost
    kRecovering,  // the Scaler moves its members: drop what is in flight, the step re-runs
    kFatal,       // nothing can replace it: fail what is in flight
  };

  /// A node that went away and that the current topology still exchanges with.
  struct Absent {
    uint32_t node = 0;
    std::string reason;
    bool moving = false;  // its members are being moved (the step is about to re-run)
  };

  /// `scaler_recovers`: the deployment's Scaler moves a lost node's members elsewhere.
  explicit BridgeTopology(bool scaler_recovers = false) : scaler_recovers_(scaler_recovers) {}

  /// The directory: every node (in index order), and the node of each shard and of each
  /// instance. Fails when it leaves no MoE node or no attention node.
  Status reset(std::vector<Node> nodes, std::vector<int32_t> shard_node, std::vector<int32_t> instance_node);

  /// A lost node's members are elsewhere now: where each instance (and, when not empty,
  /// each shard) lives. The lost node leaves the exchange.
  Status update(const std::vector<int32_t>& instance_node, const std::vector<int32_t>& shard_node, uint32_t lost);

  /// Node `index`'s process went away for `reason`.
  Loss lose(uint32_t index, const std::string& reason);

  /// Whether the Scaler will recover from losing node `index`: it recovers at all, and
  /// another node of its kind is left.
  bool recoverable(uint32_t index) const;

  /// The first lost node (by index) that the exchange still has in it; none when none.
  std::optional<Absent> absent() const;

  size_t size() const { return nodes_.size(); }
  bool is_moe(uint32_t n) const { return nodes_[n].moe; }
  /// "?" for an index outside the directory.
  const std::string& name_of(uint32_t n) const;
  /// Attention rank of node `n`; -1 for a MoE node and a lost attention node.
  int rank(uint32_t n) const { return rank_[n]; }
  /// Node `n`'s shards, ascending.
  const std::vector<int32_t>& shards_of(uint32_t n) const { return shards_of_[n]; }
  bool hosts_shard(uint32_t n, int32_t shard) const;
  int instances_on(uint32_t n) const { return instances_on_[n]; }
  const std::vector<int32_t>& shard_node() const { return shard_node_; }
  const std::vector<int32_t>& instance_node() const { return instance_node_; }
  /// Case 2: attention node `origin`'s designated MoE node.
  uint32_t designated_for(uint32_t origin) const { return exchange_.designated(static_cast<size_t>(rank_[origin])); }
  /// The nodes taking part, as the cost model reads them.
  const transport::ExchangeTopology& exchange() const { return exchange_; }

 private:
  Status rebuild();

  bool scaler_recovers_ = false;
  std::vector<Node> nodes_;
  std::vector<int32_t> shard_node_, instance_node_;
  std::vector<std::vector<int32_t>> shards_of_;  // by node index, ascending
  std::vector<int> instances_on_;                // by node index
  std::vector<int> rank_;                        // attention rank by node index, -1 for MoE nodes
  transport::ExchangeTopology exchange_;
  std::map<uint32_t, std::string> lost_;  // nodes whose bridge went down, and why
  std::set<uint32_t> moving_;             // lost nodes whose members the Scaler is moving
};

}  // namespace janus::actors
