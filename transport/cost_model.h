// The cost model of a layer's exchange between nodes: which of the paper's two-phase
// regimes (Case 1: one payload per attention node per MoE node; Case 2: one payload per
// attention node to a designated MoE node, which relays it to the others) is cheaper for
// a layer batch of a given size on the links this deployment has, and what the baseline
// single-phase exchange (every shard to every instance) would cost.
//
// Each directed link (node -> node) is fitted at start-up from probes over the transport
// (actors/bridge.h): half round trips of messages of a few sizes give T(S) = c + S / b by
// least squares, and a burst of small messages gives the per-message cost o that a
// node's NIC and CPU pay for each message it sends or takes in; the latency proper is
// a = c - o. A phase of an exchange is a set of transfers that run at once; it takes
//
//   max over its transfers of a  +  max over nodes of what that node's link carries,
//                                   sum over its messages of (o + bytes / b)
//
// (every node's link serializes its messages; latencies overlap). What a node's link
// carries depends on who moves the bytes: an RDMA NIC (verbs) is full duplex, so a node
// pays for the busier direction only; with a software transport (tcp, shm) the node's
// CPU copies every byte it sends and every byte it receives, so it pays for both. The
// difference is Case 2's: its relay and gather phases make each MoE node send and
// receive at once (measured on veth: Case 2 took 1.8-2.2x a full-duplex prediction),
// and an exchange's phases run one after the other: Case 1 and single-phase have one
// phase each way, Case 2 two (the relay, and on the way back the reduction at the
// designated node). Compute on the way (the phase-1 copy, the reduction of partial sums)
// is not in the model; the benchmark shows what that leaves out.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/status.h"

namespace janus::transport {

enum class ExchangeMode : uint8_t { kSingle = 0, kCase1 = 1, kCase2 = 2 };

const char* exchange_mode_name(ExchangeMode m);
/// "single", "case1", "case2".
Result<ExchangeMode> parse_exchange_mode(const std::string& name);

struct LinkFit {
  uint32_t from = 0, to = 0;   // node indices
  double latency_s = 0;        // a
  double per_message_s = 0;    // o
  double bytes_per_s = 0;      // b
  double rtt_small_s = 0;      // what it was fitted from: the smallest message's round trip
  int samples = 0;

  /// One message of `bytes` alone on the link.
  double one(uint64_t bytes) const { return latency_s + per_message_s + static_cast<double>(bytes) / bytes_per_s; }
};

/// Fits a link from probe results: `half_rtt[i]` seconds for messages of `bytes[i]` (at
/// least two distinct sizes), and `burst_s` seconds for `burst` small messages sent back
/// to back and answered one by one (0 when not measured).
Result<LinkFit> fit_link(uint32_t from, uint32_t to, const std::vector<double>& bytes, const std::vector<double>& half_rtt,
                         int burst, double burst_s);

/// One transfer of a phase: `messages` messages carrying `bytes` in all.
struct Transfer {
  uint32_t from = 0, to = 0;
  uint64_t messages = 1;
  uint64_t bytes = 0;
};

/// Who is where: node indices of the attention nodes (in order; an attention node's rank
/// is its position here) and of the MoE nodes, shards per attention node, instances per
/// MoE node. Attention node k's designated MoE node (Case 2) is moe_nodes[k % |moe_nodes|].
struct ExchangeTopology {
  std::vector<uint32_t> attention_nodes, moe_nodes;
  std::vector<int> shards;     // per attention node
  std::vector<int> instances;  // per MoE node

  uint32_t designated(size_t attention_rank) const { return moe_nodes[attention_rank % moe_nodes.size()]; }
};

/// A layer batch: rows of each shard of each attention node, and bytes per row each way
/// (activations to the MoE side, partial sums back).
struct ExchangeLoad {
  std::vector<std::vector<int64_t>> rows;  // [attention node rank][shard on it]
  uint64_t forward_bytes_per_row = 0;
  uint64_t reverse_bytes_per_row = 0;
};

class CostModel {
 public:
  /// Full duplex (an RDMA NIC: sends and receives overlap) or not (software transports,
  /// the default: a node's CPU carries both directions).
  void set_full_duplex(bool on) { full_duplex_ = on; }
  bool full_duplex() const { return full_duplex_; }
  void add(const LinkFit& f);
  bool empty() const { return links_.empty(); }
  const std::vector<LinkFit> links() const;
  /// The fit of from -> to; a link that was not probed gets the slowest probed link's
  /// numbers (or nominal loopback TCP figures when nothing was probed).
  LinkFit link(uint32_t from, uint32_t to) const;

  double phase_time(const std::vector<Transfer>& transfers) const;
  /// The phases of `mode` for this topology and load, in order (forward ones, then reverse).
  std::vector<std::vector<Transfer>> phases(ExchangeMode mode, const ExchangeTopology& t, const ExchangeLoad& l) const;
  /// Predicted seconds of the whole exchange (forward and back) of one layer batch.
  double predict(ExchangeMode mode, const ExchangeTopology& t, const ExchangeLoad& l) const;
  /// Case 1 or Case 2, whichever is predicted cheaper (Case 1 on a tie: one hop fewer).
  ExchangeMode choose(const ExchangeTopology& t, const ExchangeLoad& l) const;

  /// The table, one link per line: "a1 -> m1: a 12.3 us, o 1.2 us, b 1.84 GB/s".
  std::string to_string(const std::vector<std::string>& node_names) const;

 private:
  std::map<std::pair<uint32_t, uint32_t>, LinkFit> links_;
  bool full_duplex_ = false;
};

}  // namespace janus::transport
