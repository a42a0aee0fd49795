#include "actors/node_link.h"

#include <algorithm>
#include <cstring>

#include "runtime/base/log.h"

namespace janus::actors {

namespace {

using transport::PoolBlock;

constexpr uint64_t kDescriptorTag = 1;            // every descriptor travels under this tag
constexpr size_t kDescriptorCapacity = 64 << 10;  // the largest descriptor (inline payload included)
constexpr int kDescriptorReceives = 64;           // posted at once
constexpr size_t kInlineLimit = 8 << 10;          // payloads this small ride in the descriptor

}  // namespace

/// A transport operation in flight; its address is the operation's user context.
struct NodeLink::Op {
  enum class Kind { kDescriptor, kPayload, kSend, kDiscard } kind = Kind::kSend;
  PoolBlock block;             // released when the operation ends (descriptors, payload receives)
  std::shared_ptr<void> hold;  // kept alive until a send completes (payloads sent from shared blocks)
  ExchangeFrame frame;         // kPayload: the descriptor the payload belongs to
  uint32_t node = 0;           // the peer node
};

NodeLink::NodeLink(transport::Endpoint& endpoint, transport::BufferPool& pool, const BridgeTopology& topology, uint32_t me,
                   const ExchangeLimits& limits, std::string who, BridgeStats& stats, NodeLinkEvents& events)
    : ep_(endpoint),
      pool_(pool),
      topology_(topology),
      me_(me),
      limits_(limits),
      who_(std::move(who)),
      stats_(stats),
      events_(events) {}

void NodeLink::reset_peers(size_t nodes) { peer_.assign(nodes, transport::kAnyPeer); }

Status NodeLink::connect(uint32_t node, const std::vector<char>& address) {
  JANUS_ASSIGN_OR_RETURN(transport::Peer p, ep_.connect(address, node));
  peer_[node] = p;
  return Status::Ok();
}

Status NodeLink::open() {
  for (int i = 0; i < kDescriptorReceives; ++i) {
    JANUS_ASSIGN_OR_RETURN(PoolBlock b, pool_.acquire(kDescriptorCapacity));
    auto* op = new Op;
    op->kind = Op::Kind::kDescriptor;
    op->block = b;
    post_descriptor(op);
  }
  connected_ = true;
  return Status::Ok();
}

int NodeLink::progress() {
  retry_backlog();
  transport::Completion c[32];
  auto n = ep_.poll(c, 32);
  if (!n.ok()) {
    if (!broken_) log_error(who_, "transport progress failed: " + n.status().to_string());
    broken_ = true;
    return 0;
  }
  for (int i = 0; i < *n; ++i) on_completion(c[i]);
  return *n;
}

// -- sending ----------------------------------------------------------------------------------

void NodeLink::post_send(uint32_t node, uint64_t tag, const void* data, size_t bytes, Op* op) {
  ++sends_in_flight_[node];
  if (!backlog_.empty()) {
    backlog_.push_back({node, tag, data, bytes, op});
    return;
  }
  Status s = ep_.send(peer_[node], tag, data, bytes, op);
  if (s.code() == ErrorCode::kResourceExhausted) {
    backlog_.push_back({node, tag, data, bytes, op});
  } else if (!s.ok()) {
    log_error(who_, "send to node '" + topology_.name_of(node) + "' failed: " + s.to_string());
    --sends_in_flight_[node];
    end_op(op);
  }
}

void NodeLink::retry_backlog() {
  while (!backlog_.empty()) {
    Pending& p = backlog_.front();
    Status s = ep_.send(peer_[p.node], p.tag, p.data, p.bytes, p.op);
    if (s.code() == ErrorCode::kResourceExhausted) return;
    if (!s.ok()) {
      log_error(who_, "send to node '" + topology_.name_of(p.node) + "' failed: " + s.to_string());
      --sends_in_flight_[p.node];
      end_op(p.op);
    }
    backlog_.pop_front();
  }
}

void NodeLink::end_op(Op* op) {
  if (op->block.data != nullptr) pool_.release(op->block);
  delete op;
}

bool NodeLink::send_frame(uint32_t node, ExchangeFrame f, const std::shared_ptr<void>& hold, const char* data, uint64_t bytes) {
  if (node >= peer_.size() || node == me_ || peer_[node] == transport::kAnyPeer) {
    log_error(who_, "no transport link to node " + std::to_string(node));
    return false;
  }
  f.sender = me_;
  f.payload_bytes = bytes;
  f.inline_data = nullptr;
  f.inline_bytes = 0;
  f.transfer_tag = 0;
  if (bytes > 0 && bytes <= kInlineLimit) {
    f.inline_data = data;
    f.inline_bytes = bytes;
  } else if (bytes > 0) {
    f.transfer_tag = next_tag_++;
  }
  std::vector<char> d = encode_exchange_frame(f);
  if (d.size() > kDescriptorCapacity) {
    log_error(who_, "a descriptor of " + std::to_string(d.size()) + " bytes is over the " + std::to_string(kDescriptorCapacity) +
                        " bytes receivers post");
    return false;
  }
  auto block = pool_.acquire(d.size());
  if (!block.ok()) {
    log_error(who_, block.status().to_string());
    return false;
  }
  std::memcpy(block->data, d.data(), d.size());
  auto* op = new Op;
  op->block = *block;
  op->node = node;
  post_send(node, kDescriptorTag, block->data, d.size(), op);
  if (f.transfer_tag != 0) {
    auto* pop = new Op;
    pop->hold = hold;
    pop->node = node;
    post_send(node, f.transfer_tag, data, bytes, pop);
  }
  ++stats_.frames_sent;
  stats_.payload_bytes_sent += bytes;
  events_.on_activity();
  return true;
}

// -- receiving --------------------------------------------------------------------------------

void NodeLink::post_descriptor(Op* op) {
  Status s = ep_.recv(transport::kAnyPeer, kDescriptorTag, op->block.data, op->block.capacity, op, op->block.mr);
  if (!s.ok()) {
    log_error(who_, "posting a descriptor receive failed: " + s.to_string());
    end_op(op);
  }
}

void NodeLink::on_completion(const transport::Completion& c) {
  auto* op = static_cast<Op*>(c.user_context);
  if (op == nullptr) return;
  switch (op->kind) {
    case Op::Kind::kDescriptor:
      if (c.result != JANUS_TRANSPORT_OK) {
        log_error(who_, "a descriptor receive failed: " + transport::status_from_result(c.result, "receive").to_string());
        post_descriptor(op);
        return;
      }
      on_descriptor(op, c);
      post_descriptor(op);
      return;
    case Op::Kind::kPayload:
      on_payload(op, c);
      delete op;
      return;
    case Op::Kind::kSend:
      if (auto it = sends_in_flight_.find(op->node); it != sends_in_flight_.end() && it->second > 0) --it->second;
      if (c.result != JANUS_TRANSPORT_OK) {
        log_error(who_, "a send to node '" + topology_.name_of(op->node) +
                            "' failed: " + transport::status_from_result(c.result, "send").to_string());
        events_.on_link_failed("the data plane could not reach node '" + topology_.name_of(op->node) + "'");
      }
      end_op(op);
      return;
    case Op::Kind::kDiscard:
      end_op(op);
      return;
  }
}

void NodeLink::drop(FrameFault fault, uint32_t from, const std::string& why) {
  uint64_t* n = nullptr;
  switch (fault) {
    case FrameFault::kTruncated: n = &stats_.dropped_truncated; break;
    case FrameFault::kMalformed: n = &stats_.dropped_malformed; break;
    case FrameFault::kWrongEpoch: n = &stats_.dropped_wrong_epoch; break;
    case FrameFault::kSizeMismatch: n = &stats_.dropped_size_mismatch; break;
    case FrameFault::kUnknownSender: n = &stats_.dropped_unknown_sender; break;
  }
  ++*n;
  events_.on_dropped();
  // The first ten of a kind, then one in a thousand: a bad peer cannot flood the log.
  if (*n <= 10 || *n % 1000 == 0)
    log_error(who_, std::string("dropped a frame from node '") + topology_.name_of(from) + "' (" + frame_fault_name(fault) +
                        "): " + why + " [" + std::to_string(*n) + " so far]");
}

void NodeLink::on_descriptor(Op* op, const transport::Completion& c) {
  ++stats_.frames_received;
  const uint32_t from = c.peer_id;
  FrameFault fault = FrameFault::kMalformed;
  ExchangeLimits limits = limits_;
  limits.nodes = static_cast<int>(topology_.size());
  auto f = decode_exchange_frame(op->block.data, c.bytes, limits, &fault);
  if (!f.ok()) return drop(fault, from, f.status().message());
  std::string why = validate(*f, from, &fault);
  if (!why.empty()) {
    drop(fault, from, why);
    // Its payload is on its way: take it off the wire.
    if (f->transfer_tag != 0 && f->payload_bytes > 0 && from < peer_.size() && peer_[from] != transport::kAnyPeer) discard(from, *f);
    return;
  }
  events_.on_activity();
  if (f->inline_bytes > 0) {
    auto block = pool_.acquire(f->inline_bytes);
    if (!block.ok()) return log_error(who_, block.status().to_string());
    std::memcpy(block->data, f->inline_data, f->inline_bytes);
    f->inline_data = nullptr;
    f->inline_bytes = 0;
    stats_.payload_bytes_received += f->payload_bytes;
    handle(*f, pool_.hold(*block), block->data, from);
  } else if (f->payload_bytes == 0) {
    handle(*f, nullptr, nullptr, from);
  } else {
    auto block = pool_.acquire(f->payload_bytes);
    if (!block.ok()) return log_error(who_, block.status().to_string());
    auto* p = new Op;
    p->kind = Op::Kind::kPayload;
    p->block = *block;
    p->frame = *f;
    p->node = from;
    Status s = ep_.recv(peer_[from], f->transfer_tag, block->data, f->payload_bytes, p, block->mr);
    if (!s.ok()) {
      log_error(who_, "posting a payload receive failed: " + s.to_string());
      end_op(p);
    }
  }
}

void NodeLink::discard(uint32_t from, const ExchangeFrame& f) {
  auto block = pool_.acquire(f.payload_bytes);
  if (!block.ok()) return;
  auto* p = new Op;
  p->kind = Op::Kind::kDiscard;
  p->block = *block;
  if (!ep_.recv(peer_[from], f.transfer_tag, block->data, f.payload_bytes, p, block->mr).ok()) end_op(p);
}

void NodeLink::on_payload(Op* op, const transport::Completion& c) {
  if (c.result != JANUS_TRANSPORT_OK) {
    log_error(who_, "a payload receive from node '" + topology_.name_of(op->node) +
                        "' failed: " + transport::status_from_result(c.result, "receive").to_string());
    pool_.release(op->block);
    return;
  }
  if (c.bytes != op->frame.payload_bytes) {
    pool_.release(op->block);
    return drop(FrameFault::kSizeMismatch, op->node,
                "the descriptor of " + op->frame.key.to_string() + " says " + std::to_string(op->frame.payload_bytes) +
                    " payload bytes, " + std::to_string(c.bytes) + " arrived");
  }
  stats_.payload_bytes_received += c.bytes;
  events_.on_activity();
  handle(op->frame, pool_.hold(op->block), op->block.data, op->node);
}

/// What a frame that decoded cleanly must also be: from the node the transport says, and
/// (unless a probe) admitted by the owner. Empty when it is.
std::string NodeLink::validate(const ExchangeFrame& f, uint32_t from, FrameFault* fault) {
  auto refuse = [&](FrameFault x, const std::string& m) {
    *fault = x;
    return m;
  };
  if (!connected_) return refuse(FrameFault::kUnknownSender, "no directory yet");
  if (f.sender != from)
    return refuse(FrameFault::kUnknownSender, "the frame says it is from node " + std::to_string(f.sender) + ", it came from node '" +
                                                  topology_.name_of(from) + "'");
  if (f.kind == ExchangeKind::kProbe || f.kind == ExchangeKind::kProbeReply) return "";
  return events_.admit(f, from, fault);
}

void NodeLink::handle(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base, uint32_t from) {
  if (f.kind == ExchangeKind::kProbe) {
    // Echo it, payload and all: the prober times the round trip.
    ExchangeFrame r;
    r.kind = ExchangeKind::kProbeReply;
    r.origin = me_;
    r.probe_seq = f.probe_seq;
    send_frame(from, r, hold, base, f.payload_bytes);
    return;
  }
  events_.on_frame(f, hold, base, from);
}

// -- fault injection (tests) -------------------------------------------------------------------

Status NodeLink::send_raw_descriptor(uint32_t peer, const std::vector<char>& bytes) {
  JANUS_ASSIGN_OR_RETURN(PoolBlock b, pool_.acquire(bytes.size()));
  std::memcpy(b.data, bytes.data(), bytes.size());
  auto* op = new Op;
  op->block = b;
  op->node = peer;
  post_send(peer, kDescriptorTag, b.data, bytes.size(), op);
  events_.on_activity();
  return Status::Ok();
}

Status NodeLink::inject(const std::string& kind, uint32_t peer, bool moe, uint32_t epoch) {
  if (!connected_ || peer >= topology_.size() || peer == me_) return invalid_argument("inject: no peer node " + std::to_string(peer));
  if (topology_.is_moe(peer) == moe) return invalid_argument("inject: the peer must be on the other side");
  ExchangeFrame f;
  f.key = {uint64_t{1} << 40, 0, 0, epoch};
  f.sender = me_;
  if (moe) {  // a combine for the attention node's shards, carrying nothing
    f.kind = ExchangeKind::kCombine;
    f.mode = ExchangeMode::kCase1;
    f.origin = peer;
    for (int32_t s : topology_.shards_of(peer)) {
      ExchangePart p;
      p.shard = s;
      p.dtype = DType::kF64;
      f.parts.push_back(p);
    }
  } else {  // a dispatch of this node's shards, with no rows
    f.kind = ExchangeKind::kDispatch;
    f.mode = ExchangeMode::kCase1;
    f.origin = me_;
    for (int32_t s : topology_.shards_of(me_)) {
      ExchangePart p;
      p.shard = s;
      f.parts.push_back(p);
    }
  }
  if (kind == "truncated") {
    std::vector<char> d = encode_exchange_frame(f);
    d.resize(std::max<size_t>(8, (d.size() / 2) & ~size_t{7}));
    return send_raw_descriptor(peer, d);
  }
  if (kind == "malformed") {
    // A well-framed message (one segment of two words) whose root pointer points far
    // outside the segment.
    std::vector<char> d(24, 0);
    const uint32_t seg[2] = {0, 2};
    std::memcpy(d.data(), seg, 8);
    const uint64_t root = (uint64_t{1000} << 2) | (uint64_t{1} << 32);
    std::memcpy(d.data() + 8, &root, 8);
    return send_raw_descriptor(peer, d);
  }
  if (kind == "wrong_epoch") {
    f.key.epoch = epoch + 1000;
    return send_raw_descriptor(peer, encode_exchange_frame(f));
  }
  if (kind == "unknown_sender") {
    f.sender = peer == 0 ? 1 : 0;
    if (f.sender == me_) f.sender = static_cast<uint32_t>(topology_.size() - 1);
    return send_raw_descriptor(peer, encode_exchange_frame(f));
  }
  if (kind == "size_mismatch") {
    // The descriptor promises 64 KiB; half of it follows.
    const size_t promised = 64 << 10;
    f.payload_bytes = promised;
    f.transfer_tag = next_tag_++;
    JANUS_TRY(send_raw_descriptor(peer, encode_exchange_frame(f)));
    JANUS_ASSIGN_OR_RETURN(PoolBlock b, pool_.acquire(promised / 2));
    std::memset(b.data, 0, promised / 2);
    auto* op = new Op;
    op->block = b;
    op->node = peer;
    post_send(peer, f.transfer_tag, b.data, promised / 2, op);
    return Status::Ok();
  }
  if (kind == "raw") {
    const char junk[12] = {'n', 'o', 't', ' ', 'a', ' ', 'f', 'r', 'a', 'm', 'e', '!'};
    events_.on_activity();
    return ep_.inject_raw(peer_[peer], kDescriptorTag, junk, sizeof junk);
  }
  return invalid_argument("inject: unknown fault '" + kind +
                          "' (truncated, malformed, wrong_epoch, size_mismatch, unknown_sender, raw)");
}

}  // namespace janus::actors
