// LinkProbe: measures a node's links for the cost model (transport/cost_model.h). An
// attention node measures its links to the MoE nodes; a MoE node the links among the MoE
// nodes (Case 2's relay), each pair once. Per peer, in rounds of one probe each: reps
// half round trips at each of a few payload sizes (their medians), then one round of a
// burst of small probes answered one by one (the per-message cost); fit_link makes the
// peer's LinkFit from them. The peer echoes every probe (NodeLink).
//
// The owner drives it: send_round() starts a round (and arms a timeout for it under the
// round's generation), on_reply() says when the round ended, finished() when every peer
// was measured.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/bridge_topology.h"
#include "actors/node_link.h"
#include "transport/buffer_pool.h"
#include "transport/cost_model.h"

namespace janus::actors {

class LinkProbe {
 public:
  /// `reps` scales the default repetitions (24 at the smallest size); 0: the defaults.
  LinkProbe(NodeLink& link, transport::BufferPool& pool, const BridgeTopology& topology, uint32_t me, bool moe, int reps,
            std::string who);

  /// Acquires the probes' payload; call once, before the first round.
  Status start();
  /// Every peer measured: fits() is the result.
  bool finished() const { return peer_i_ >= peers_.size(); }
  const std::vector<transport::LinkFit>& fits() const { return fits_; }

  /// Sends the next round to the current peer (not finished()); returns the round's
  /// generation.
  uint64_t send_round();
  /// A probe reply from `from`: true when it ended the round (start the next one).
  bool on_reply(const ExchangeFrame& f, uint32_t from);
  /// Whether `gen` is the round in progress (so its timeout counts).
  bool in_round(uint64_t gen) const { return gen == gen_; }
  /// The peer being measured.
  uint32_t peer() const { return peers_[peer_i_]; }

 private:
  void send_probe();

  NodeLink& link_;
  transport::BufferPool& pool_;
  const BridgeTopology& topology_;
  const uint32_t me_;
  const std::string who_;

  std::vector<uint32_t> peers_;
  size_t peer_i_ = 0;
  std::vector<size_t> sizes_{0, 16384, 262144, 1048576};
  std::vector<int> reps_{24, 8, 4, 3};
  size_t size_i_ = 0;
  int rep_ = 0;
  std::vector<double> samples_, medians_, sizes_done_;
  bool burst_ = false;
  int burst_left_ = 0;
  double t0_ = 0;
  uint64_t seq_ = 0, gen_ = 0;
  std::vector<transport::LinkFit> fits_;
  transport::PoolBlock payload_;
  std::shared_ptr<void> payload_hold_;
};

}  // namespace janus::actors
