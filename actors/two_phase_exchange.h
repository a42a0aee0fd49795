// TwoPhaseExchange: one node's side of the layer exchange between the attention nodes and
// the MoE nodes (DESIGN.md "Data plane", the paper's §3.3), per layer batch:
//
//   attention node: phase 1 gathers the node's shards' rows into one payload
//   (BridgeStaging::pack), then sends
//     single: every shard's rows to every instance (the baseline: no aggregation)
//     Case 1: one payload to each MoE node
//     Case 2: one payload to the node's designated MoE node, which relays it to the others
//   and hands each shard its partial sums when they are all in, as views of the payloads
//   (in MoE node order, then part order).
//
//   MoE node: hands the rows to its router (EGate) or scheduler (AGate) mirror, and when
//   its results for an origin's shards are in, sums them per row (BridgeStaging::reduce)
//   and sends one payload to the origin (Case 1), or to the origin's designated node,
//   which adds the MoE nodes' sums in node order and sends one payload (Case 2);
//   single-phase sends every instance's partial to the origin on its own.
//
// "auto" picks Case 1 or Case 2 per layer batch with the cost model (transport/
// cost_model.h) fitted from the links probed at start-up. Case 1 and Case 2 add the same
// numbers in the same order, so they give identical tokens.
//
// Frames go out through the NodeLink; what is for this node's actors goes out through an
// ExchangeOutlet. Everything runs on the owning bridge's thread.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "actors/bridge_staging.h"
#include "actors/bridge_topology.h"
#include "actors/messages.h"
#include "actors/node_link.h"
#include "actors/node_protocol.h"
#include "actors/wire_codec.h"
#include "transport/cost_model.h"

namespace janus::actors {

/// Where the exchange hands what it has for this node's own actors.
class ExchangeOutlet {
 public:
  virtual ~ExchangeOutlet() = default;
  /// A shard on this node: its partial sums (or the error) for a layer batch.
  virtual void to_shard(MoeResult r) = 0;
  /// A MoE node: a shard's rows for the router (EGate) or scheduler (AGate) mirror.
  virtual void to_moe_side(ShardActivations a) = 0;
  /// Results are coming in: keep polling.
  virtual void on_activity() = 0;
};

/// What the exchange needs of the deployment and of this node.
struct ExchangeSettings {
  uint32_t node = 0;  // this node's index
  bool moe = false;   // a MoE node (else an attention node)
  int64_t hidden = 0;
  int top_k = 0;
  bool egate = true;
  bool auto_mode = true;                       // choose Case 1 or Case 2 per layer batch
  ExchangeMode pinned = ExchangeMode::kCase1;  // the mode when not auto
  bool full_duplex = false;                    // the transport carries both directions at once (verbs)
  std::string who;                             // for the log
};

class TwoPhaseExchange {
 public:
  TwoPhaseExchange(ExchangeSettings settings, const BridgeTopology& topology, NodeLink& link, BridgeStaging& staging,
                   BridgeStats& stats, ExchangeOutlet& outlet);

  /// A membership of `epoch`: a new epoch drops what was in flight (its frames are refused now).
  void enter_epoch(uint32_t epoch);
  uint32_t epoch() const { return epoch_; }

  /// A measured link for the cost model.
  void add_link(const transport::LinkFit& f) { cost_.add(f); }

  /// Whether node `from` may send this node the dispatch or combine `f` now (the epoch,
  /// the origin, the mode's route): empty when it may, else why not (and *fault).
  std::string admit(const ExchangeFrame& f, uint32_t from, FrameFault* fault) const;

  // -- attention node ----------------------------------------------------------------------
  /// A local shard's rows for a layer batch: dispatched once every shard here sent its own.
  void on_activations(ShardActivations& a);

  // -- MoE node --------------------------------------------------------------------------------
  /// A local scheduler's result for a shard of some attention node.
  void on_result(MoeResult& r);

  // -- frames ----------------------------------------------------------------------------------
  void on_dispatch(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base);
  void on_combine(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base);

  /// Layer batches in flight here (either side) / waiting for their sums (attention side).
  size_t in_flight() const { return awaits_.size() + gathers_.size() + ingress_.size() + egress_.size(); }
  bool waiting() const { return !awaits_.empty() || !gathers_.empty(); }
  /// Drops what is in flight (it is about to re-run under the next epoch).
  void drop_all();
  /// The bridge re-opened its endpoint (a peer's loss over shm): from now on frames go
  /// out on `link` and are staged in `staging`. Drops what is in flight first, as the
  /// old link's frames can no longer complete.
  void relink(NodeLink& link, BridgeStaging& staging);
  /// Every layer batch waiting here fails (a node went away, the data plane broke).
  void fail_all(const std::string& why);

  /// The most recent layer batches this node dispatched.
  const std::deque<ExchangeRecord>& records() const { return records_; }
  /// One line per layer batch this node still holds (awaited sums, dispatches whose results
  /// are out, sums on their way), saying what each waits for: what a stalled deployment
  /// shows an operator (NodeSnapshot::pending). At most `limit` lines.
  std::vector<std::string> pending(size_t limit = 16) const;

 private:
  struct SingleSlot {
    uint32_t total = 0;
    std::map<uint32_t, Tensor> parts;  // part index -> rows (empty tensor: nothing from it)
  };
  /// An attention node's layer batch, dispatched, waiting for its sums.
  struct Await {
    ExchangeMode mode = ExchangeMode::kCase1;
    uint32_t designated = 0;
    double t0 = 0;
    int64_t rows = 0;
    uint64_t moe_ns = 0;
    double predicted[3] = {0, 0, 0};
    std::map<uint32_t, Contribution> from;                      // case 1 / 2: by MoE node
    std::map<std::pair<uint32_t, int32_t>, SingleSlot> single;  // single: by (MoE node, shard)
  };
  struct Route {
    ExchangeMode mode = ExchangeMode::kCase1;
    uint32_t designated = 0;
  };
  /// A MoE node's layer batch as it came in.
  struct Ingress {
    std::map<uint32_t, Route> routes;  // by origin
    std::map<int32_t, int> copies;     // single: copies of a shard's rows received
    double last_in = 0;
    size_t origins_done = 0;
  };
  /// A MoE node's sums for one origin, on their way out.
  struct Egress {
    std::map<int32_t, MoeResult> results;            // this node's scheduler, by shard
    std::map<uint32_t, Contribution> contributions;  // Case 2 designated: by MoE node (own included)
  };

  uint32_t me() const { return settings_.node; }
  transport::ExchangeLoad load_of(int64_t rows_here) const;
  void dispatch(const LayerBatchKey& key, std::map<int32_t, ShardActivations>& parts);
  bool complete(const Await& a) const;
  void deliver(const LayerBatchKey& key);
  void fail_shards(const LayerBatchKey& key, const std::string& why);
  void fail_await(const LayerBatchKey& key, const std::string& why);
  void origin_part_done(const LayerBatchKey& key, uint32_t origin, int32_t shard);
  void origin_done(const LayerBatchKey& key);
  void send_sums(uint32_t to, const LayerBatchKey& key, ExchangeMode mode, uint32_t origin, const Contribution& c);
  void send_single(const MoeResult& r, uint32_t origin, uint64_t moe_ns);
  void on_peer_sums(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base);
  void finish_designated(const LayerBatchKey& key, uint32_t origin);

  const ExchangeSettings settings_;
  const BridgeTopology& topology_;
  NodeLink* link_;          // never null; relink() replaces it
  BridgeStaging* staging_;  // never null; relink() replaces it
  BridgeStats& stats_;
  ExchangeOutlet& outlet_;
  transport::CostModel cost_;

  bool member_ = false;  // a membership came
  uint32_t epoch_ = 0;

  std::map<LayerBatchKey, std::map<int32_t, ShardActivations>> gathers_;  // attention: phase 1
  std::map<LayerBatchKey, Await> awaits_;                                  // attention: the way back
  std::map<LayerBatchKey, Ingress> ingress_;                               // MoE: in
  std::map<std::pair<LayerBatchKey, uint32_t>, Egress> egress_;            // MoE: out, by origin
  std::deque<ExchangeRecord> records_;
};

}  // namespace janus::actors
