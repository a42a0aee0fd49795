// NodeLink: a bridge's end of the data plane, on the node's transport endpoint
// (transport/transport.h). A frame is a Cap'n Proto descriptor (actors/wire_codec.h
// ExchangeFrame) under one tag, plus its payload: inline in the descriptor when small,
// else sent apart under a tag of its own from the block it was staged in. The link keeps
// kDescriptorReceives descriptor receives posted, posts a payload's receive when its
// descriptor arrives, and queues sends that meet a full transport queue, in order.
//
// Every frame is checked before anyone sees it: it decodes (integrity, sections inside
// the payload), it says it is from the peer the transport says it came from, and the
// owner admits it (epoch, who may send what: NodeLinkEvents::admit); a payload must be as
// long as its descriptor says. A bad frame is dropped (its payload taken off the wire),
// counted by fault in BridgeStats and logged, and the link goes on. Probes are answered
// here; every other frame goes to the owner.
//
// Not thread safe: everything runs on the owning bridge's thread.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/bridge_topology.h"
#include "actors/node_protocol.h"
#include "actors/wire_codec.h"
#include "transport/buffer_pool.h"
#include "transport/transport.h"

namespace janus::actors {

/// What a link tells its owner, from inside the link's calls.
class NodeLinkEvents {
 public:
  virtual ~NodeLinkEvents() = default;
  /// Whether a frame of the exchange (a dispatch or a combine) from `from` may come here:
  /// empty when it may, else why not (with *fault set).
  virtual std::string admit(const ExchangeFrame& f, uint32_t from, FrameFault* fault) = 0;
  /// A frame that passed every check, with its payload at `base` (kept alive by `hold`).
  virtual void on_frame(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base, uint32_t from) = 0;
  /// A send failed on the wire: the layer batches in flight cannot finish.
  virtual void on_link_failed(const std::string& why) = 0;
  /// Traffic moved: poll again at once.
  virtual void on_activity() = 0;
  /// A frame was dropped (also counted by fault).
  virtual void on_dropped() = 0;
};

class NodeLink {
 public:
  /// `limits`: what frames are checked against (its node count is the topology's).
  NodeLink(transport::Endpoint& endpoint, transport::BufferPool& pool, const BridgeTopology& topology, uint32_t me,
           const ExchangeLimits& limits, std::string who, BridgeStats& stats, NodeLinkEvents& events);
  NodeLink(const NodeLink&) = delete;
  NodeLink& operator=(const NodeLink&) = delete;

  /// The directory came: `nodes` peers, none connected yet.
  void reset_peers(size_t nodes);
  Status connect(uint32_t node, const std::vector<char>& address);
  /// Posts the descriptor receives: from now on frames are taken in.
  Status open();
  bool connected() const { return connected_; }

  /// Retries queued sends, then handles up to 32 completions; how many there were.
  int progress();
  /// Sends waiting for room in the transport's queue.
  size_t backlog() const { return backlog_.size(); }
  /// Sends posted and not yet completed, by destination node (a peer that stopped
  /// receiving shows here first).
  const std::map<uint32_t, uint64_t>& sends_in_flight() const { return sends_in_flight_; }

  /// Sends a frame and its payload ([data, data + bytes), kept alive by `hold` until
  /// sent) to `node`; false (logged) when it cannot.
  bool send_frame(uint32_t node, ExchangeFrame f, const std::shared_ptr<void>& hold, const char* data, uint64_t bytes);

  /// Fault injection (tests): sends `peer` a bad frame of `kind` ("truncated",
  /// "malformed", "wrong_epoch", "size_mismatch", "unknown_sender", "raw"). `moe`: this
  /// node is a MoE node; `epoch`: the current one.
  Status inject(const std::string& kind, uint32_t peer, bool moe, uint32_t epoch);

 private:
  struct Op;
  struct Pending {
    uint32_t node;
    uint64_t tag;
    const void* data;
    size_t bytes;
    Op* op;
  };

  void post_send(uint32_t node, uint64_t tag, const void* data, size_t bytes, Op* op);
  void retry_backlog();
  void end_op(Op* op);
  void post_descriptor(Op* op);
  void on_completion(const transport::Completion& c);
  void on_descriptor(Op* op, const transport::Completion& c);
  void on_payload(Op* op, const transport::Completion& c);
  void discard(uint32_t from, const ExchangeFrame& f);
  void drop(FrameFault fault, uint32_t from, const std::string& why);
  std::string validate(const ExchangeFrame& f, uint32_t from, FrameFault* fault);
  void handle(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base, uint32_t from);
  Status send_raw_descriptor(uint32_t peer, const std::vector<char>& bytes);

  transport::Endpoint& ep_;
  transport::BufferPool& pool_;
  const BridgeTopology& topology_;
  const uint32_t me_;
  ExchangeLimits limits_;
  const std::string who_;
  BridgeStats& stats_;
  NodeLinkEvents& events_;

  bool connected_ = false;
  bool broken_ = false;               // the endpoint failed: logged once
  std::vector<transport::Peer> peer_;  // by node index
  uint64_t next_tag_ = 2;              // payload tags (descriptors travel under 1)
  std::map<uint32_t, uint64_t> sends_in_flight_;
  std::deque<Pending> backlog_;        // sends that met a full queue, in order
};

}  // namespace janus::actors
