#include "actors/bridge.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <set>

#include "actors/wire_codec.h"
#include "gpu/backend/backend.h"
#include "transport/buffer_pool.h"
#include "transport/cost_model.h"

namespace janus::actors {

namespace {

using transport::PoolBlock;

constexpr uint64_t kDescriptorTag = 1;               // every descriptor travels under this tag
constexpr size_t kDescriptorCapacity = 64 << 10;     // the largest descriptor (inline payload included)
constexpr int kDescriptorReceives = 64;              // posted at once
constexpr size_t kInlineLimit = 8 << 10;             // payloads this small ride in the descriptor
constexpr size_t kMaxRecords = 4096;
constexpr int kBurst = 16;                           // probe burst for the per-message cost

using poll_atom = caf::atom_constant<caf::atom("brpoll")>;
using timer_atom = caf::atom_constant<caf::atom("brtimer")>;
using probe_timeout_atom = caf::atom_constant<caf::atom("brprobeto")>;

size_t align8(size_t x) { return (x + 7) & ~size_t{7}; }

/// A transport operation in flight; its address is the operation's user context.
struct Op {
  enum class Kind { kDescriptor, kPayload, kSend, kDiscard } kind = Kind::kSend;
  PoolBlock block;              // released when the operation ends (descriptors, payload receives)
  std::shared_ptr<void> hold;   // kept alive until a send completes (payloads sent from shared blocks)
  ExchangeFrame frame;          // kPayload: the descriptor the payload belongs to
  uint32_t node = 0;            // the peer node
};

/// One MoE node's partial sums for the shards of one attention node, or a frame that
/// carries them: the payload and where each shard's rows are in it.
struct Contribution {
  std::shared_ptr<void> hold;
  const char* base = nullptr;
  uint64_t bytes = 0;
  std::vector<ExchangePart> parts;
  std::string error;
  uint64_t moe_ns = 0;

  const ExchangePart* part(int32_t shard) const {
    for (const ExchangePart& p : parts)
      if (p.shard == shard) return &p;
    return nullptr;
  }
};

Tensor view(const std::shared_ptr<void>& hold, const char* base, const PayloadSection& s, DType dt, int64_t rows, int64_t cols) {
  Tensor t;
  t.dtype = dt;
  t.rows = rows;
  t.cols = cols;
  t.data = const_cast<char*>(base + s.offset);
  t.storage = hold;
  return t;
}

// dst += src over n elements, in the partial sums' own type (F64 on the CPU backends).
void add_into(char* dst, const char* src, size_t n, DType dt) {
  if (dt == DType::kF64) {
    auto* d = reinterpret_cast<double*>(dst);
    const auto* s = reinterpret_cast<const double*>(src);
    for (size_t i = 0; i < n; ++i) d[i] += s[i];
  } else {
    auto* d = reinterpret_cast<float*>(dst);
    const auto* s = reinterpret_cast<const float*>(src);
    for (size_t i = 0; i < n; ++i) d[i] += s[i];
  }
}

double seconds_since(double t0) { return now_seconds() - t0; }

}  // namespace

struct Bridge::Impl {
  Bridge* self;
  std::shared_ptr<const DeploymentContext> ctx;
  BridgeSetup setup;
  transport::Endpoint& ep;
  transport::BufferPool pool;
  std::string who;
  int64_t hidden = 0;
  int top_k = 0;
  bool egate = true;
  bool auto_mode = true;
  ExchangeMode pinned = ExchangeMode::kCase1;
  double spin_s = 1e-3;

  // -- the directory ----------------------------------------------------------------------
  bool connected = false;
  std::vector<NodeInfo> nodes;
  std::vector<transport::Peer> peer;  // by node index
  std::vector<int32_t> shard_node, instance_node;
  std::vector<std::vector<int32_t>> shards_of;  // by node index, ascending
  std::vector<int> instances_on;                // by node index
  std::vector<int> rank;                        // attention rank by node index, -1 for MoE nodes
  transport::ExchangeTopology topo;
  transport::CostModel cost;
  std::map<uint32_t, std::string> dead;  // nodes whose bridge went down, and why
  std::set<uint32_t> moving;             // lost MoE nodes whose instances the Scaler is moving

  // -- membership ----------------------------------------------------------------------------
  bool member = false;
  uint32_t epoch = 0;
  std::vector<caf::actor> shard_actor;  // by position; valid for this node's shards

  uint64_t next_tag = 2;
  struct Pending {
    uint32_t node;
    uint64_t tag;
    const void* data;
    size_t bytes;
    Op* op;
  };
  std::deque<Pending> backlog;  // sends that met a full queue, in order

  // -- attention side --------------------------------------------------------------------------
  std::map<LayerBatchKey, std::map<int32_t, ShardActivations>> gathers;
  struct SingleSlot {
    uint32_t total = 0;
    std::map<uint32_t, Tensor> parts;  // part index -> rows (empty tensor: nothing from it)
  };
  struct Await {
    ExchangeMode mode = ExchangeMode::kCase1;
    uint32_t designated = 0;
    double t0 = 0;
    int64_t rows = 0;
    uint64_t moe_ns = 0;
    double predicted[3] = {0, 0, 0};
    std::map<uint32_t, Contribution> from;                       // case 1 / 2: by MoE node
    std::map<std::pair<uint32_t, int32_t>, SingleSlot> single;   // single: by (MoE node, shard)
  };
  std::map<LayerBatchKey, Await> awaits;

  // -- MoE side --------------------------------------------------------------------------------
  struct Route {
    ExchangeMode mode = ExchangeMode::kCase1;
    uint32_t designated = 0;
  };
  struct Ingress {
    std::map<uint32_t, Route> routes;  // by origin
    std::map<int32_t, int> copies;     // single: copies of a shard's rows received
    double last_in = 0;
    size_t origins_done = 0;
  };
  std::map<LayerBatchKey, Ingress> ingress;
  struct Egress {
    std::map<int32_t, MoeResult> results;           // this node's scheduler, by shard
    std::map<uint32_t, Contribution> contributions;  // Case 2 designated: by MoE node (own included)
  };
  std::map<std::pair<LayerBatchKey, uint32_t>, Egress> egress;

  // -- counters, polling, probing --------------------------------------------------------------
  BridgeStats stats;
  std::deque<ExchangeRecord> records;
  /// This actor, for messages to itself (a handle made when needed: one kept would keep
  /// the actor alive forever).
  caf::actor me_handle() const { return caf::actor_cast<caf::actor>(self); }
  bool poll_now = false, poll_timer = false;
  double last_activity = 0, backoff_s = 20e-6;
  bool broken = false;  // the endpoint failed: logged once

  struct Probe {
    caf::response_promise rp;
    std::vector<uint32_t> peers;
    size_t peer_i = 0;
    std::vector<size_t> sizes{0, 16384, 262144, 1048576};
    std::vector<int> reps{24, 8, 4, 3};
    size_t size_i = 0;
    int rep = 0;
    std::vector<double> samples, medians, sizes_done;
    bool burst = false;
    int burst_left = 0;
    double t0 = 0;
    uint64_t seq = 0, gen = 0;
    std::vector<transport::LinkFit> fits;
    PoolBlock payload;
    std::shared_ptr<void> payload_hold;
  };
  std::unique_ptr<Probe> probe;

  Impl(Bridge* s, std::shared_ptr<const DeploymentContext> c, BridgeSetup st)
      : self(s), ctx(std::move(c)), setup(std::move(st)), ep(*setup.endpoint), pool(ep) {
    who = "bridge@" + setup.node_name;
    const ModelConfig& mc = ctx->model->config();
    hidden = mc.hidden_size;
    top_k = mc.top_k;
    egate = ctx->spec.egate();
    auto_mode = ctx->spec.exchange.mode == "auto";
    if (!auto_mode) {
      auto m = transport::parse_exchange_mode(ctx->spec.exchange.mode);
      if (m.ok()) pinned = *m;
    }
    spin_s = ctx->spec.exchange.spin_us * 1e-6;
    stats.node = setup.node_name;
    stats.transport = setup.transport;
    cost.set_full_duplex(setup.transport == "verbs");  // an RDMA NIC; tcp and shm copy on the CPU
    if (auto a = ep.address(); a.ok()) stats.address = *a;
  }

  uint32_t me() const { return setup.node; }
  const std::string& name_of(uint32_t n) const {
    static const std::string unknown = "?";
    return n < nodes.size() ? nodes[n].name : unknown;
  }
  ExchangeLimits limits() const {
    ExchangeLimits l;
    l.nodes = static_cast<int>(nodes.size());
    l.shards = ctx->spec.attention.shards;
    l.instances = ctx->spec.experts.instances;
    l.hidden = hidden;
    l.top_k = top_k;
    return l;
  }

  // -- polling ----------------------------------------------------------------------------------

  /// Something happened: poll again at once, and keep spinning for a while.
  void kick() {
    last_activity = now_seconds();
    backoff_s = 20e-6;
    if (!poll_now) {
      poll_now = true;
      self->send(me_handle(), poll_atom::value);
    }
  }

  void on_poll(bool timer) {
    (timer ? poll_timer : poll_now) = false;
    const int n = progress();
    if (n > 0) {
      last_activity = now_seconds();
      backoff_s = 20e-6;
    }
    if (seconds_since(last_activity) < spin_s) {
      if (!poll_now) {
        poll_now = true;
        self->send(me_handle(), poll_atom::value);
      }
    } else if (!poll_timer && !poll_now) {
      // Idle: back off (20 us, doubling to 1 ms), so that idle nodes leave the cores to
      // the ones computing.
      poll_timer = true;
      self->delayed_send(me_handle(), std::chrono::microseconds(static_cast<int64_t>(backoff_s * 1e6)), timer_atom::value);
      backoff_s = std::min(backoff_s * 2, 1e-3);
    }
  }

  int progress() {
    retry_backlog();
    transport::Completion c[32];
    auto n = ep.poll(c, 32);
    if (!n.ok()) {
      if (!broken) log_error(who, "transport progress failed: " + n.status().to_string());
      broken = true;
      return 0;
    }
    for (int i = 0; i < *n; ++i) on_completion(c[i]);
    return *n;
  }

  // -- sending ----------------------------------------------------------------------------------

  void post_send(uint32_t node, uint64_t tag, const void* data, size_t bytes, Op* op) {
    if (!backlog.empty()) {
      backlog.push_back({node, tag, data, bytes, op});
      return;
    }
    Status s = ep.send(peer[node], tag, data, bytes, op);
    if (s.code() == ErrorCode::kResourceExhausted) {
      backlog.push_back({node, tag, data, bytes, op});
    } else if (!s.ok()) {
      log_error(who, "send to node '" + name_of(node) + "' failed: " + s.to_string());
      end_op(op);
    }
  }

  void retry_backlog() {
    while (!backlog.empty()) {
      Pending& p = backlog.front();
      Status s = ep.send(peer[p.node], p.tag, p.data, p.bytes, p.op);
      if (s.code() == ErrorCode::kResourceExhausted) return;
      if (!s.ok()) {
        log_error(who, "send to node '" + name_of(p.node) + "' failed: " + s.to_string());
        end_op(p.op);
      }
      backlog.pop_front();
    }
  }

  void end_op(Op* op) {
    if (op->block.data != nullptr) pool.release(op->block);
    delete op;
  }

  /// Sends a frame and its payload ([data, data + bytes), kept alive by `hold` until sent)
  /// to `node`. Small payloads ride inline in the descriptor.
  bool send_frame(uint32_t node, ExchangeFrame f, const std::shared_ptr<void>& hold, const char* data, uint64_t bytes) {
    if (node >= peer.size() || node == me() || peer[node] == transport::kAnyPeer) {
      log_error(who, "no transport link to node " + std::to_string(node));
      return false;
    }
    f.sender = me();
    f.payload_bytes = bytes;
    f.inline_data = nullptr;
    f.inline_bytes = 0;
    f.transfer_tag = 0;
    if (bytes > 0 && bytes <= kInlineLimit) {
      f.inline_data = data;
      f.inline_bytes = bytes;
    } else if (bytes > 0) {
      f.transfer_tag = next_tag++;
    }
    std::vector<char> d = encode_exchange_frame(f);
    if (d.size() > kDescriptorCapacity) {
      log_error(who, "a descriptor of " + std::to_string(d.size()) + " bytes is over the " + std::to_string(kDescriptorCapacity) +
                         " bytes receivers post");
      return false;
    }
    auto block = pool.acquire(d.size());
    if (!block.ok()) {
      log_error(who, block.status().to_string());
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
    ++stats.frames_sent;
    stats.payload_bytes_sent += bytes;
    kick();
    return true;
  }

  // -- receiving --------------------------------------------------------------------------------

  void post_descriptor(Op* op) {
    Status s = ep.recv(transport::kAnyPeer, kDescriptorTag, op->block.data, op->block.capacity, op, op->block.mr);
    if (!s.ok()) {
      log_error(who, "posting a descriptor receive failed: " + s.to_string());
      end_op(op);
    }
  }

  void on_completion(const transport::Completion& c) {
    auto* op = static_cast<Op*>(c.user_context);
    if (op == nullptr) return;
    switch (op->kind) {
      case Op::Kind::kDescriptor:
        if (c.result != JANUS_TRANSPORT_OK) {
          log_error(who, "a descriptor receive failed: " + transport::status_from_result(c.result, "receive").to_string());
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
        if (c.result != JANUS_TRANSPORT_OK) {
          log_error(who, "a send to node '" + name_of(op->node) +
                             "' failed: " + transport::status_from_result(c.result, "send").to_string());
          fail_all("the data plane could not reach node '" + name_of(op->node) + "'");
        }
        end_op(op);
        return;
      case Op::Kind::kDiscard:
        end_op(op);
        return;
    }
  }

  void drop(FrameFault fault, uint32_t from, const std::string& why) {
    uint64_t* n = nullptr;
    switch (fault) {
      case FrameFault::kTruncated: n = &stats.dropped_truncated; break;
      case FrameFault::kMalformed: n = &stats.dropped_malformed; break;
      case FrameFault::kWrongEpoch: n = &stats.dropped_wrong_epoch; break;
      case FrameFault::kSizeMismatch: n = &stats.dropped_size_mismatch; break;
      case FrameFault::kUnknownSender: n = &stats.dropped_unknown_sender; break;
    }
    ++*n;
    ++self->stats_.dropped;
    // The first ten of a kind, then one in a thousand: a bad peer cannot flood the log.
    if (*n <= 10 || *n % 1000 == 0)
      log_error(who, std::string("dropped a frame from node '") + name_of(from) + "' (" + frame_fault_name(fault) + "): " + why + " [" +
                         std::to_string(*n) + " so far]");
  }

  void on_descriptor(Op* op, const transport::Completion& c) {
    ++stats.frames_received;
    const uint32_t from = c.peer_id;
    FrameFault fault = FrameFault::kMalformed;
    auto f = decode_exchange_frame(op->block.data, c.bytes, limits(), &fault);
    if (!f.ok()) return drop(fault, from, f.status().message());
    std::string why = validate(*f, from, &fault);
    if (!why.empty()) {
      drop(fault, from, why);
      // Its payload is on its way: take it off the wire.
      if (f->transfer_tag != 0 && f->payload_bytes > 0 && from < peer.size() && peer[from] != transport::kAnyPeer) discard(from, *f);
      return;
    }
    kick();
    if (f->inline_bytes > 0) {
      auto block = pool.acquire(f->inline_bytes);
      if (!block.ok()) return log_error(who, block.status().to_string());
      std::memcpy(block->data, f->inline_data, f->inline_bytes);
      f->inline_data = nullptr;
      f->inline_bytes = 0;
      stats.payload_bytes_received += f->payload_bytes;
      handle(*f, pool.hold(*block), block->data, from);
    } else if (f->payload_bytes == 0) {
      handle(*f, nullptr, nullptr, from);
    } else {
      auto block = pool.acquire(f->payload_bytes);
      if (!block.ok()) return log_error(who, block.status().to_string());
      auto* p = new Op;
      p->kind = Op::Kind::kPayload;
      p->block = *block;
      p->frame = *f;
      p->node = from;
      Status s = ep.recv(peer[from], f->transfer_tag, block->data, f->payload_bytes, p, block->mr);
      if (!s.ok()) {
        log_error(who, "posting a payload receive failed: " + s.to_string());
        end_op(p);
      }
    }
  }

  void discard(uint32_t from, const ExchangeFrame& f) {
    auto block = pool.acquire(f.payload_bytes);
    if (!block.ok()) return;
    auto* p = new Op;
    p->kind = Op::Kind::kDiscard;
    p->block = *block;
    if (!ep.recv(peer[from], f.transfer_tag, block->data, f.payload_bytes, p, block->mr).ok()) end_op(p);
  }

  void on_payload(Op* op, const transport::Completion& c) {
    if (c.result != JANUS_TRANSPORT_OK) {
      log_error(who, "a payload receive from node '" + name_of(op->node) +
                         "' failed: " + transport::status_from_result(c.result, "receive").to_string());
      pool.release(op->block);
      return;
    }
    if (c.bytes != op->frame.payload_bytes) {
      pool.release(op->block);
      return drop(FrameFault::kSizeMismatch, op->node,
                  "the descriptor of " + op->frame.key.to_string() + " says " + std::to_string(op->frame.payload_bytes) +
                      " payload bytes, " + std::to_string(c.bytes) + " arrived");
    }
    stats.payload_bytes_received += c.bytes;
    kick();
    handle(op->frame, pool.hold(op->block), op->block.data, op->node);
  }

  /// What a frame that decoded cleanly must also be: from the node the transport says, of
  /// this epoch, and something that node may send this node. Empty when it is.
  std::string validate(const ExchangeFrame& f, uint32_t from, FrameFault* fault) {
    auto refuse = [&](FrameFault x, const std::string& m) {
      *fault = x;
      return m;
    };
    if (!connected) return refuse(FrameFault::kUnknownSender, "no directory yet");
    if (f.sender != from)
      return refuse(FrameFault::kUnknownSender,
                    "the frame says it is from node " + std::to_string(f.sender) + ", it came from node '" + name_of(from) + "'");
    if (f.kind == ExchangeKind::kProbe || f.kind == ExchangeKind::kProbeReply) return "";
    if (!member || f.key.epoch != epoch)
      return refuse(FrameFault::kWrongEpoch, f.key.to_string() + ": this node is in epoch " + std::to_string(epoch));
    if (rank[f.origin] < 0) return refuse(FrameFault::kMalformed, "origin node '" + name_of(f.origin) + "' is not an attention node");
    const std::vector<int32_t>& origin_shards = shards_of[f.origin];
    const uint32_t d = topo.designated(static_cast<size_t>(rank[f.origin]));
    auto same_shards = [&](const std::vector<int32_t>& want) {
      if (f.parts.size() != want.size()) return false;
      for (size_t i = 0; i < want.size(); ++i)
        if (f.parts[i].shard != want[i]) return false;
      return true;
    };
    if (f.kind == ExchangeKind::kDispatch) {
      if (!setup.moe) return refuse(FrameFault::kUnknownSender, "a dispatch for an attention node");
      const bool direct = f.sender == f.origin && (f.mode != ExchangeMode::kCase2 || d == me());
      const bool relayed = f.mode == ExchangeMode::kCase2 && f.sender == d && d != me();
      if (!direct && !relayed)
        return refuse(FrameFault::kUnknownSender, "node '" + name_of(from) + "' may not send " + exchange_mode_name(f.mode) +
                                                      " dispatches of node '" + name_of(f.origin) + "' here");
      if (f.mode == ExchangeMode::kSingle) {
        if (f.parts.size() != 1) return refuse(FrameFault::kMalformed, "a single-phase dispatch carries one shard");
        const ExchangePart& p = f.parts[0];
        if (std::find(origin_shards.begin(), origin_shards.end(), p.shard) == origin_shards.end())
          return refuse(FrameFault::kUnknownSender, "shard " + std::to_string(p.shard) + " is not on node '" + name_of(f.origin) + "'");
        if (p.instance < 0 || instance_node[static_cast<size_t>(p.instance)] != static_cast<int32_t>(me()))
          return refuse(FrameFault::kMalformed, "instance " + std::to_string(p.instance) + " is not on this node");
      } else if (!same_shards(origin_shards)) {
        return refuse(FrameFault::kUnknownSender, "the parts are not the shards of node '" + name_of(f.origin) + "'");
      }
      return "";
    }
    if (f.kind == ExchangeKind::kCombine) {
      if (!nodes[f.sender].moe) return refuse(FrameFault::kUnknownSender, "a combine from attention node '" + name_of(f.sender) + "'");
      if (!setup.moe) {
        if (f.origin != me()) return refuse(FrameFault::kMalformed, "a combine for node '" + name_of(f.origin) + "' came here");
        if (f.mode == ExchangeMode::kCase2 && f.sender != d)
          return refuse(FrameFault::kUnknownSender, "a Case 2 combine from '" + name_of(f.sender) + "', not the designated node");
        for (const ExchangePart& p : f.parts)
          if (std::find(origin_shards.begin(), origin_shards.end(), p.shard) == origin_shards.end())
            return refuse(FrameFault::kUnknownSender, "shard " + std::to_string(p.shard) + " is not on this node");
        return "";
      }
      if (f.mode != ExchangeMode::kCase2 || d != me() || f.sender == me())
        return refuse(FrameFault::kUnknownSender, "a MoE node's combine that this node does not gather");
      if (!f.error.empty()) return "";
      if (!same_shards(origin_shards)) return refuse(FrameFault::kUnknownSender, "the parts are not the shards of node '" + name_of(f.origin) + "'");
      return "";
    }
    return refuse(FrameFault::kMalformed, "unknown frame kind");
  }

  void handle(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base, uint32_t from) {
    switch (f.kind) {
      case ExchangeKind::kProbe: {
        ExchangeFrame r;
        r.kind = ExchangeKind::kProbeReply;
        r.origin = me();
        r.probe_seq = f.probe_seq;
        send_frame(from, r, hold, base, f.payload_bytes);
        return;
      }
      case ExchangeKind::kProbeReply: return on_probe_reply(f, from);
      case ExchangeKind::kDispatch: return on_dispatch(f, hold, base);
      case ExchangeKind::kCombine: return on_combine(f, hold, base);
    }
  }

  // -- attention side: phase 1 and dispatch --------------------------------------------------------

  void on_activations(ShardActivations& a) {
    if (!member || a.key.epoch != epoch) {
      ++stats.dropped_stale;
      return;
    }
    const std::vector<int32_t>& mine = shards_of[me()];
    if (std::find(mine.begin(), mine.end(), a.shard) == mine.end()) {
      log_error(who, "activations of shard " + std::to_string(a.shard) + ", which is not on this node");
      return;
    }
    const LayerBatchKey key = a.key;
    auto& g = gathers[key];
    g[a.shard] = std::move(a);
    if (g.size() < mine.size()) return;
    auto parts = std::move(g);
    gathers.erase(key);
    dispatch(key, parts);
  }

  /// Lays the shards' rows (and their routing under AGate) side by side in one block.
  Result<Contribution> pack(const std::vector<const ShardActivations*>& shards) {
    Contribution c;
    std::vector<Tensor> host(shards.size());
    uint64_t total = 0;
    for (size_t i = 0; i < shards.size(); ++i) {
      const ShardActivations& a = *shards[i];
      if (a.h.rows > 0) JANUS_TRY(copy_to_host(a.h, &host[i]));
      ExchangePart p;
      p.shard = a.shard;
      p.rows = static_cast<uint32_t>(a.h.rows);
      p.dtype = a.h.rows > 0 ? host[i].dtype : DType::kF32;
      p.has_h = a.h.rows > 0;
      if (p.has_h) {
        p.h = {total, host[i].bytes()};
        total += align8(p.h.bytes);
      }
      if (!a.topk_ids.empty()) {
        p.topk_ids = {total, a.topk_ids.size() * 4};
        total += align8(p.topk_ids.bytes);
        p.topk_weights = {total, a.topk_weights.size() * 4};
        total += align8(p.topk_weights.bytes);
      }
      c.parts.push_back(p);
    }
    c.bytes = total;
    if (total == 0) return c;
    JANUS_ASSIGN_OR_RETURN(PoolBlock b, pool.acquire(total));
    for (size_t i = 0; i < shards.size(); ++i) {
      const ExchangePart& p = c.parts[i];
      if (p.has_h) std::memcpy(b.data + p.h.offset, host[i].data, p.h.bytes);
      if (p.topk_ids.bytes) {
        std::memcpy(b.data + p.topk_ids.offset, shards[i]->topk_ids.data(), p.topk_ids.bytes);
        std::memcpy(b.data + p.topk_weights.offset, shards[i]->topk_weights.data(), p.topk_weights.bytes);
      }
    }
    c.hold = pool.hold(b);
    c.base = b.data;
    return c;
  }

  transport::ExchangeLoad load_of(int64_t rows_here) const {
    transport::ExchangeLoad l;
    const auto& mine = shards_of[me()];
    const int64_t per_shard = mine.empty() ? 0 : (rows_here + static_cast<int64_t>(mine.size()) - 1) / static_cast<int64_t>(mine.size());
    // Every attention node is assumed to carry what this one does: a node knows only
    // its own rows when it decides, and shards run in lockstep on similar batches.
    for (int shards : topo.shards) l.rows.push_back(std::vector<int64_t>(static_cast<size_t>(shards), per_shard));
    l.forward_bytes_per_row = static_cast<uint64_t>(hidden) * 4 + (egate ? 0 : static_cast<uint64_t>(top_k) * 8);
    l.reverse_bytes_per_row = static_cast<uint64_t>(hidden) * 8;
    return l;
  }

  void dispatch(const LayerBatchKey& key, std::map<int32_t, ShardActivations>& parts) {
    for (const auto& [n, why] : dead) {
      const bool needed = std::find(topo.moe_nodes.begin(), topo.moe_nodes.end(), n) != topo.moe_nodes.end() || rank[n] >= 0;
      if (!needed) continue;
      // A lost MoE node the Scaler is replacing: this step is about to be aborted and re-run.
      if (moving.count(n)) {
        ++stats.dropped_stale;
        return;
      }
      return fail_shards(key, "node '" + name_of(n) + "' went away (" + why + ")");
    }
    Await a;
    a.t0 = now_seconds();
    for (const auto& [s, x] : parts) a.rows += x.h.rows;
    const transport::ExchangeLoad load = load_of(a.rows);
    for (int m = 0; m < 3; ++m) a.predicted[m] = cost.predict(static_cast<ExchangeMode>(m), topo, load);
    a.mode = auto_mode ? cost.choose(topo, load) : pinned;
    a.designated = topo.designated(static_cast<size_t>(rank[me()]));
    ExchangeFrame f;
    f.key = key;
    f.kind = ExchangeKind::kDispatch;
    f.mode = a.mode;
    f.origin = me();
    if (a.mode == ExchangeMode::kSingle) {
      // The baseline: each shard's rows, unaggregated, to every instance.
      for (const auto& [s, x] : parts) {
        auto c = pack({&x});
        if (!c.ok()) return fail_shards(key, c.status().message());
        for (size_t i = 0; i < instance_node.size(); ++i) {
          ExchangeFrame g = f;
          g.parts = c->parts;
          g.parts[0].instance = static_cast<int32_t>(i);
          send_frame(static_cast<uint32_t>(instance_node[i]), g, c->hold, c->base, c->bytes);
        }
      }
    } else {
      std::vector<const ShardActivations*> all;
      for (const auto& [s, x] : parts) all.push_back(&x);
      auto c = pack(all);
      if (!c.ok()) return fail_shards(key, c.status().message());
      f.parts = c->parts;
      if (a.mode == ExchangeMode::kCase1) {
        for (uint32_t m : topo.moe_nodes) send_frame(m, f, c->hold, c->base, c->bytes);
      } else {
        f.designated = a.designated;
        send_frame(a.designated, f, c->hold, c->base, c->bytes);
      }
    }
    awaits[key] = std::move(a);
  }

  // -- attention side: the way back -------------------------------------------------------------

  void on_combine(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base) {
    if (setup.moe) return on_peer_sums(f, hold, base);
    auto it = awaits.find(f.key);
    if (it == awaits.end()) {
      ++stats.dropped_stale;
      log_warn(who, "a combine for " + f.key.to_string() + " from node '" + name_of(f.sender) + "' that nothing waits for");
      return;
    }
    Await& a = it->second;
    if (!f.error.empty()) return fail_await(f.key, "MoE node '" + name_of(f.sender) + "': " + f.error);
    if (f.mode != a.mode) return fail_await(f.key, "node '" + name_of(f.sender) + "' answered in " + exchange_mode_name(f.mode));
    a.moe_ns = std::max(a.moe_ns, f.moe_busy_ns);
    if (a.mode == ExchangeMode::kSingle) {
      for (const ExchangePart& p : f.parts) {
        SingleSlot& slot = a.single[{f.sender, p.shard}];
        slot.total = std::max<uint32_t>(1, p.parts_total);
        slot.parts[p.part] = p.has_h ? view(hold, base, p.h, p.dtype, p.rows, hidden) : Tensor{};
      }
    } else {
      Contribution c;
      c.hold = hold;
      c.base = base;
      c.parts = f.parts;
      a.from[f.sender] = std::move(c);
    }
    if (complete(a)) deliver(f.key);
  }

  bool complete(const Await& a) const {
    switch (a.mode) {
      case ExchangeMode::kCase1: return a.from.size() == topo.moe_nodes.size();
      case ExchangeMode::kCase2: return a.from.count(a.designated) != 0;
      case ExchangeMode::kSingle:
        for (uint32_t m : topo.moe_nodes)
          for (int32_t s : shards_of[me()]) {
            auto it = a.single.find({m, s});
            if (it == a.single.end() || it->second.parts.size() < it->second.total) return false;
          }
        return true;
    }
    return false;
  }

  void deliver(const LayerBatchKey& key) {
    Await& a = awaits.at(key);
    for (int32_t s : shards_of[me()]) {
      MoeResult r;
      r.key = key;
      r.shard = s;
      // MoE node order (then part order): the same sums in the same order every time.
      for (uint32_t m : topo.moe_nodes) {
        if (a.mode == ExchangeMode::kSingle) {
          for (auto& [i, t] : a.single.at({m, s}).parts)
            if (t.rows > 0) r.partials.push_back(t);
          continue;
        }
        auto it = a.from.find(m);
        if (it == a.from.end()) continue;
        const ExchangePart* p = it->second.part(s);
        if (p != nullptr && p->has_h) r.partials.push_back(view(it->second.hold, it->second.base, p->h, p->dtype, p->rows, hidden));
      }
      self->send(shard_actor[static_cast<size_t>(s)], std::move(r));
    }
    ExchangeRecord rec;
    rec.key = key;
    rec.mode = static_cast<int32_t>(a.mode);
    rec.rows = a.rows;
    rec.round_s = seconds_since(a.t0);
    rec.moe_s = static_cast<double>(a.moe_ns) * 1e-9;
    for (int m = 0; m < 3; ++m) rec.predicted_s[m] = a.predicted[m];
    records.push_back(rec);
    while (records.size() > kMaxRecords) records.pop_front();
    awaits.erase(key);
  }

  void fail_shards(const LayerBatchKey& key, const std::string& why) {
    ++stats.failed_batches;
    log_error(who, "layer batch " + key.to_string() + " failed: " + why);
    for (int32_t s : shards_of[me()]) {
      MoeResult r;
      r.key = key;
      r.shard = s;
      r.error = unavailable(why);
      if (static_cast<size_t>(s) < shard_actor.size() && shard_actor[static_cast<size_t>(s)])
        self->send(shard_actor[static_cast<size_t>(s)], std::move(r));
    }
  }

  void fail_await(const LayerBatchKey& key, const std::string& why) {
    awaits.erase(key);
    fail_shards(key, why);
  }

  /// Every layer batch waiting here fails (a node went away, the data plane broke).
  void fail_all(const std::string& why) {
    std::vector<LayerBatchKey> keys;
    for (const auto& [k, a] : awaits) keys.push_back(k);
    for (const auto& [k, g] : gathers) keys.push_back(k);
    awaits.clear();
    gathers.clear();
    for (const LayerBatchKey& k : keys) fail_shards(k, why);
  }

  // -- MoE side ------------------------------------------------------------------------------------

  void on_dispatch(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base) {
    Ingress& in = ingress[f.key];
    const uint32_t d = topo.designated(static_cast<size_t>(rank[f.origin]));
    if (f.mode == ExchangeMode::kCase2 && d == me() && f.sender == f.origin) {
      // Case 2: this node received for all; pass the payload on as it arrived.
      for (uint32_t m : topo.moe_nodes)
        if (m != me() && send_frame(m, f, hold, base, f.payload_bytes)) ++stats.relayed;
    }
    in.routes[f.origin] = {f.mode, d};
    if (f.mode == ExchangeMode::kSingle) {
      // Every local instance gets its own copy; the gate runs once all are here, as it
      // would on the last instance to receive.
      if (++in.copies[f.parts[0].shard] < instances_on[me()]) return;
    }
    for (const ExchangePart& p : f.parts) {
      ShardActivations a;
      a.key = f.key;
      a.shard = p.shard;
      if (p.has_h && p.rows > 0) {
        a.h = view(hold, base, p.h, p.dtype, p.rows, hidden);
      } else {
        a.h.dtype = p.dtype;
        a.h.rows = 0;
        a.h.cols = hidden;
      }
      if (p.topk_ids.bytes > 0) {
        a.topk_ids.resize(p.topk_ids.bytes / 4);
        a.topk_weights.resize(p.topk_weights.bytes / 4);
        std::memcpy(a.topk_ids.data(), base + p.topk_ids.offset, p.topk_ids.bytes);
        std::memcpy(a.topk_weights.data(), base + p.topk_weights.offset, p.topk_weights.bytes);
      }
      self->send(egate ? setup.router : setup.scheduler, std::move(a));
    }
    in.last_in = now_seconds();
  }

  void on_result(MoeResult& r) {
    if (!member || r.key.epoch != epoch) {
      ++stats.dropped_stale;
      return;
    }
    if (r.shard < 0 || static_cast<size_t>(r.shard) >= shard_node.size())
      return log_error(who, "a result for shard " + std::to_string(r.shard) + ", which does not exist");
    const uint32_t origin = static_cast<uint32_t>(shard_node[static_cast<size_t>(r.shard)]);
    Route route{auto_mode ? ExchangeMode::kCase1 : pinned, topo.designated(static_cast<size_t>(rank[origin]))};
    auto in = ingress.find(r.key);
    uint64_t moe_ns = 0;
    if (in != ingress.end()) {
      if (auto it = in->second.routes.find(origin); it != in->second.routes.end()) route = it->second;
      moe_ns = static_cast<uint64_t>(seconds_since(in->second.last_in) * 1e9);
    }
    kick();
    const LayerBatchKey key = r.key;
    if (route.mode == ExchangeMode::kSingle) {
      send_single(r, origin, moe_ns);
      return origin_part_done(key, origin, r.shard);
    }
    Egress& e = egress[{key, origin}];
    e.results[r.shard] = std::move(r);
    if (e.results.size() < shards_of[origin].size()) return;
    Contribution own = reduce(e.results, origin, moe_ns);
    e.results.clear();
    if (route.mode == ExchangeMode::kCase1 || route.designated != me()) {
      const uint32_t to = route.mode == ExchangeMode::kCase1 ? origin : route.designated;
      send_sums(to, key, route.mode, origin, own);
      egress.erase({key, origin});
    } else {
      e.contributions[me()] = std::move(own);
      finish_designated(key, origin);
    }
    origin_done(key);
  }

  void origin_part_done(const LayerBatchKey& key, uint32_t origin, int32_t shard) {
    // Single-phase: an origin is done when all its shards' results went out.
    Egress& e = egress[{key, origin}];
    e.results[shard];  // marks the shard
    if (e.results.size() < shards_of[origin].size()) return;
    egress.erase({key, origin});
    origin_done(key);
  }

  void origin_done(const LayerBatchKey& key) {
    auto in = ingress.find(key);
    if (in != ingress.end() && ++in->second.origins_done >= topo.attention_nodes.size()) ingress.erase(in);
  }

  /// This node's instances' partial sums for the origin's shards, added per row in
  /// instance order into one payload.
  Contribution reduce(std::map<int32_t, MoeResult>& results, uint32_t origin, uint64_t moe_ns) {
    Contribution c;
    c.moe_ns = moe_ns;
    for (auto& [s, r] : results)
      if (!r.error.ok()) {
        c.error = r.error.message();
        return c;
      }
    std::vector<std::vector<Tensor>> host;
    for (int32_t s : shards_of[origin]) {
      MoeResult& r = results.at(s);
      std::vector<Tensor> hs;
      ExchangePart p;
      p.shard = s;
      p.dtype = DType::kF64;
      for (const Tensor& t : r.partials) {
        if (t.rows == 0) continue;
        Tensor h;
        Status st = copy_to_host(t, &h);
        if (!st.ok()) {
          c.error = st.message();
          return c;
        }
        hs.push_back(h);
      }
      if (!hs.empty()) {
        p.has_h = true;
        p.rows = static_cast<uint32_t>(hs[0].rows);
        p.dtype = hs[0].dtype;
        p.h = {c.bytes, hs[0].bytes()};
        c.bytes += align8(p.h.bytes);
      }
      c.parts.push_back(p);
      host.push_back(std::move(hs));
    }
    if (c.bytes == 0) return c;
    auto b = pool.acquire(c.bytes);
    if (!b.ok()) {
      c.error = b.status().message();
      return c;
    }
    for (size_t i = 0; i < c.parts.size(); ++i) {
      const ExchangePart& p = c.parts[i];
      if (!p.has_h) continue;
      char* dst = b->data + p.h.offset;
      std::memcpy(dst, host[i][0].data, p.h.bytes);
      for (size_t j = 1; j < host[i].size(); ++j) add_into(dst, static_cast<const char*>(host[i][j].data), p.h.bytes / dtype_size(p.dtype), p.dtype);
    }
    c.hold = pool.hold(*b);
    c.base = b->data;
    return c;
  }

  void send_sums(uint32_t to, const LayerBatchKey& key, ExchangeMode mode, uint32_t origin, const Contribution& c) {
    ExchangeFrame f;
    f.key = key;
    f.kind = ExchangeKind::kCombine;
    f.mode = mode;
    f.origin = origin;
    f.designated = mode == ExchangeMode::kCase2 ? topo.designated(static_cast<size_t>(rank[origin])) : 0;
    f.parts = c.parts;
    f.error = c.error;
    f.moe_busy_ns = c.moe_ns;
    if (!c.error.empty()) {
      f.parts.clear();
      send_frame(to, f, nullptr, nullptr, 0);
      return;
    }
    send_frame(to, f, c.hold, c.base, c.bytes);
  }

  /// Single-phase: every instance's partial sums for the shard go to it on their own.
  void send_single(const MoeResult& r, uint32_t origin, uint64_t moe_ns) {
    ExchangeFrame f;
    f.key = r.key;
    f.kind = ExchangeKind::kCombine;
    f.mode = ExchangeMode::kSingle;
    f.origin = origin;
    f.moe_busy_ns = moe_ns;
    f.error = r.error.message();
    std::vector<const Tensor*> ps;
    for (const Tensor& t : r.partials)
      if (t.rows > 0) ps.push_back(&t);
    if (!r.error.ok() || ps.empty()) {
      ExchangePart p;
      p.shard = r.shard;
      p.dtype = DType::kF64;
      p.parts_total = 0;
      f.parts = {p};
      send_frame(origin, f, nullptr, nullptr, 0);
      return;
    }
    for (size_t j = 0; j < ps.size(); ++j) {
      Tensor h;
      if (Status s = copy_to_host(*ps[j], &h); !s.ok()) {
        log_error(who, s.to_string());
        continue;
      }
      auto b = pool.acquire(h.bytes());
      if (!b.ok()) {
        log_error(who, b.status().to_string());
        continue;
      }
      std::memcpy(b->data, h.data, h.bytes());
      ExchangePart p;
      p.shard = r.shard;
      p.rows = static_cast<uint32_t>(h.rows);
      p.dtype = h.dtype;
      p.has_h = true;
      p.h = {0, h.bytes()};
      p.part = static_cast<uint32_t>(j);
      p.parts_total = static_cast<uint32_t>(ps.size());
      f.parts = {p};
      send_frame(origin, f, pool.hold(*b), b->data, h.bytes());
    }
  }

  /// Case 2, the designated node: another MoE node's sums for an origin it relays for.
  void on_peer_sums(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base) {
    Egress& e = egress[{f.key, f.origin}];
    Contribution c;
    c.hold = hold;
    c.base = base;
    c.parts = f.parts;
    c.error = f.error;
    c.moe_ns = f.moe_busy_ns;
    e.contributions[f.sender] = std::move(c);
    finish_designated(f.key, f.origin);
  }

  void finish_designated(const LayerBatchKey& key, uint32_t origin) {
    auto it = egress.find({key, origin});
    if (it == egress.end() || it->second.contributions.size() < topo.moe_nodes.size()) return;
    std::map<uint32_t, Contribution>& cs = it->second.contributions;
    Contribution out;
    for (auto& [m, c] : cs) {
      out.moe_ns = std::max(out.moe_ns, c.moe_ns);
      if (!c.error.empty() && out.error.empty()) out.error = "node '" + name_of(m) + "': " + c.error;
    }
    if (out.error.empty()) {
      // The MoE nodes' sums, added in node order: what Case 1's shard would add.
      std::vector<std::vector<std::pair<const Contribution*, const ExchangePart*>>> terms;
      for (int32_t s : shards_of[origin]) {
        ExchangePart p;
        p.shard = s;
        p.dtype = DType::kF64;
        std::vector<std::pair<const Contribution*, const ExchangePart*>> t;
        for (uint32_t m : topo.moe_nodes) {
          const ExchangePart* q = cs.at(m).part(s);
          if (q != nullptr && q->has_h) t.push_back({&cs.at(m), q});
        }
        if (!t.empty()) {
          p.has_h = true;
          p.rows = t[0].second->rows;
          p.dtype = t[0].second->dtype;
          p.h = {out.bytes, t[0].second->h.bytes};
          out.bytes += align8(p.h.bytes);
        }
        out.parts.push_back(p);
        terms.push_back(std::move(t));
      }
      if (out.bytes > 0) {
        auto b = pool.acquire(out.bytes);
        if (!b.ok()) {
          out.error = b.status().message();
        } else {
          for (size_t i = 0; i < out.parts.size(); ++i) {
            const ExchangePart& p = out.parts[i];
            if (!p.has_h) continue;
            char* dst = b->data + p.h.offset;
            std::memcpy(dst, terms[i][0].first->base + terms[i][0].second->h.offset, p.h.bytes);
            for (size_t j = 1; j < terms[i].size(); ++j) {
              if (terms[i][j].second->dtype != p.dtype || terms[i][j].second->h.bytes != p.h.bytes) {
                out.error = "MoE nodes sent partial sums of different shapes for shard " + std::to_string(p.shard);
                break;
              }
              add_into(dst, terms[i][j].first->base + terms[i][j].second->h.offset, p.h.bytes / dtype_size(p.dtype), p.dtype);
            }
          }
          out.hold = pool.hold(*b);
          out.base = b->data;
        }
      }
    }
    egress.erase(it);
    send_sums(origin, key, ExchangeMode::kCase2, origin, out);
  }

  // -- membership, directory, failures ----------------------------------------------------------

  void on_membership(const Membership& m) {
    const bool changed = !member || m.epoch != epoch;
    member = true;
    epoch = m.epoch;
    if (Status s = ep.set_epoch(epoch); !s.ok()) log_error(who, s.to_string());
    shard_actor.assign(m.shards.size(), caf::actor{});
    for (size_t s = 0; s < m.shards.size(); ++s)
      if (m.shards[s] && m.shards[s].node() == self->node()) shard_actor[s] = m.shards[s];
    if (changed) {
      // Whatever was in flight belongs to the old epoch (its frames are refused now).
      gathers.clear();
      awaits.clear();
      ingress.clear();
      egress.clear();
    }
  }

  Status on_directory(const NodeDirectory& d) {
    if (connected) return Status::Ok();
    nodes = d.nodes;
    shard_node = d.shard_node;
    instance_node = d.instance_node;
    const size_t n = nodes.size();
    peer.assign(n, transport::kAnyPeer);
    JANUS_TRY(rebuild_topology());
    for (const NodeInfo& x : nodes) {
      if (x.index == me()) continue;
      auto p = ep.connect(x.address, x.index);
      if (!p.ok()) return p.status().with_context("connecting to node '" + x.name + "'");
      peer[x.index] = *p;
    }
    for (int i = 0; i < kDescriptorReceives; ++i) {
      auto b = pool.acquire(kDescriptorCapacity);
      if (!b.ok()) return b.status();
      auto* op = new Op;
      op->kind = Op::Kind::kDescriptor;
      op->block = *b;
      post_descriptor(op);
    }
    connected = true;
    kick();
    return Status::Ok();
  }

  /// Who exchanges with whom, from the directory less the nodes that went away.
  Status rebuild_topology() {
    instances_on.assign(nodes.size(), 0);
    rank.assign(nodes.size(), -1);
    for (int32_t x : instance_node)
      if (x >= 0 && static_cast<size_t>(x) < nodes.size()) ++instances_on[static_cast<size_t>(x)];
    topo = {};
    shards_of.assign(nodes.size(), {});
    for (size_t s = 0; s < shard_node.size(); ++s) shards_of.at(static_cast<size_t>(shard_node[s])).push_back(static_cast<int32_t>(s));
    for (const NodeInfo& x : nodes) {
      if (dead.count(x.index) && !moving.count(x.index)) continue;
      if (x.moe) {
        topo.moe_nodes.push_back(x.index);
        topo.instances.push_back(instances_on[x.index]);
      } else {
        rank[x.index] = static_cast<int>(topo.attention_nodes.size());
        topo.attention_nodes.push_back(x.index);
        topo.shards.push_back(static_cast<int>(shards_of[x.index].size()));
      }
    }
    if (topo.moe_nodes.empty() || topo.attention_nodes.empty()) return invalid_argument("the directory has no MoE node or no attention node");
    return Status::Ok();
  }

  /// A lost node's members are elsewhere now (the Scaler moved a MoE node's instances,
  /// or dropped an attention node's shards): exchange with the nodes that are left. Comes
  /// before the membership that names them.
  Status on_directory_update(const DirectoryUpdate& u) {
    if (!connected) return invalid_argument("no directory yet");
    if (u.instance_node.size() != instance_node.size() || u.lost >= nodes.size())
      return invalid_argument("a directory update for another deployment");
    for (int32_t n : u.shard_node)
      if (n < 0 || static_cast<size_t>(n) >= nodes.size() || nodes[static_cast<size_t>(n)].moe)
        return invalid_argument("a directory update puts a shard on node " + std::to_string(n));
    if (!dead.count(u.lost)) dead[u.lost] = "moved away by the scaler";
    moving.erase(u.lost);
    instance_node = u.instance_node;
    if (!u.shard_node.empty()) shard_node = u.shard_node;
    return rebuild_topology();
  }

  /// Whether the Scaler will recover from losing node `index`: another node of its kind is left.
  bool recoverable(uint32_t index) const {
    if (!ctx->spec.scaler.recover) return false;
    for (const NodeInfo& x : nodes)
      if (x.moe == nodes[index].moe && x.index != index && !dead.count(x.index)) return true;
    return false;
  }

  void on_node_lost(const NodeLost& l) {
    if (l.index >= nodes.size() || dead.count(l.index)) return;
    const std::string why = "node '" + nodes[l.index].name + "' went away (" + l.reason + ")";
    if (recoverable(l.index)) {
      // The Scaler moves its members elsewhere and the Frontend re-runs the step under
      // the next epoch: what is in flight here is dropped, not failed.
      dead[l.index] = l.reason;
      moving.insert(l.index);
      log_warn(who, why + ": dropping " + std::to_string(awaits.size() + gathers.size() + ingress.size() + egress.size()) +
                        " layer batch(es) in flight; the step re-runs once its members have moved");
      awaits.clear();
      gathers.clear();
      ingress.clear();
      egress.clear();
      return;
    }
    dead[l.index] = l.reason;
    if (awaits.empty() && gathers.empty()) log_info(who, why);
    else log_error(who, why);
    fail_all(why);
    if (probe) {
      probe->rp.deliver(caf::make_error(caf::sec::runtime_error, why + " while links were probed"));
      probe.reset();
    }
  }

  // -- link probing -----------------------------------------------------------------------------

  void start_probe(caf::response_promise rp, int reps) {
    if (!connected) {
      rp.deliver(caf::make_error(caf::sec::runtime_error, "probe: no directory yet"));
      return;
    }
    probe = std::make_unique<Probe>();
    probe->rp = rp;
    if (reps > 0)
      for (int& r : probe->reps) r = std::max(2, r * reps / 24);
    // Attention nodes measure their links to the MoE nodes; MoE nodes the links among
    // them (Case 2's relay), each pair once.
    for (uint32_t m : topo.moe_nodes)
      if (m != me() && (!setup.moe || m > me())) probe->peers.push_back(m);
    auto b = pool.acquire(probe->sizes.back());
    if (!b.ok()) {
      rp.deliver(caf::make_error(caf::sec::runtime_error, b.status().message()));
      probe.reset();
      return;
    }
    std::memset(b->data, 0x5a, b->capacity);
    probe->payload = *b;
    probe->payload_hold = pool.hold(*b);
    next_probe();
  }

  void send_probe() {
    Probe& p = *probe;
    ExchangeFrame f;
    f.kind = ExchangeKind::kProbe;
    f.origin = me();
    f.probe_seq = ++p.seq;
    const size_t bytes = p.burst ? 0 : p.sizes[p.size_i];
    send_frame(p.peers[p.peer_i], f, p.payload_hold, p.payload.data, bytes);
  }

  void next_probe() {
    Probe& p = *probe;
    if (p.peer_i >= p.peers.size()) {
      p.rp.deliver(p.fits);
      probe.reset();
      return;
    }
    ++p.gen;
    self->delayed_send(me_handle(), std::chrono::seconds(5), probe_timeout_atom::value, p.gen);
    if (p.burst) {
      p.burst_left = kBurst;
      p.t0 = now_seconds();
      for (int i = 0; i < kBurst; ++i) send_probe();
      return;
    }
    p.t0 = now_seconds();
    send_probe();
  }

  void on_probe_reply(const ExchangeFrame& f, uint32_t from) {
    if (!probe || probe->peer_i >= probe->peers.size() || from != probe->peers[probe->peer_i]) return;
    Probe& p = *probe;
    const double t = seconds_since(p.t0);
    if (p.burst) {
      if (--p.burst_left > 0) return;
      auto fit = transport::fit_link(me(), from, p.sizes_done, p.medians, kBurst, t);
      if (fit.ok()) p.fits.push_back(*fit);
      else log_warn(who, "link to '" + name_of(from) + "': " + fit.status().message());
      p.burst = false;
      p.size_i = 0;
      p.rep = 0;
      p.medians.clear();
      p.sizes_done.clear();
      ++p.peer_i;
      return next_probe();
    }
    if (f.probe_seq != p.seq) return;
    p.samples.push_back(t / 2);
    if (++p.rep >= p.reps[p.size_i]) {
      std::sort(p.samples.begin(), p.samples.end());
      p.medians.push_back(p.samples[p.samples.size() / 2]);
      p.sizes_done.push_back(static_cast<double>(p.sizes[p.size_i]));
      p.samples.clear();
      p.rep = 0;
      if (++p.size_i >= p.sizes.size()) p.burst = true;
    }
    next_probe();
  }

  void on_probe_timeout(uint64_t gen) {
    if (!probe || probe->gen != gen) return;
    const std::string peer_name = name_of(probe->peers[probe->peer_i]);
    probe->rp.deliver(caf::make_error(caf::sec::request_timeout, "node '" + peer_name + "' did not answer link probes in 5 s"));
    probe.reset();
  }

  // -- fault injection (tests) -------------------------------------------------------------------

  Status inject(const BridgeFault& x) {
    if (!connected || x.peer >= nodes.size() || x.peer == me()) return invalid_argument("inject: no peer node " + std::to_string(x.peer));
    if (nodes[x.peer].moe == setup.moe) return invalid_argument("inject: the peer must be on the other side");
    ExchangeFrame f;
    f.key = {uint64_t{1} << 40, 0, 0, epoch};
    f.sender = me();
    if (setup.moe) {  // a combine for the attention node's shards, carrying nothing
      f.kind = ExchangeKind::kCombine;
      f.mode = ExchangeMode::kCase1;
      f.origin = x.peer;
      for (int32_t s : shards_of[x.peer]) {
        ExchangePart p;
        p.shard = s;
        p.dtype = DType::kF64;
        f.parts.push_back(p);
      }
    } else {  // a dispatch of this node's shards, with no rows
      f.kind = ExchangeKind::kDispatch;
      f.mode = ExchangeMode::kCase1;
      f.origin = me();
      for (int32_t s : shards_of[me()]) {
        ExchangePart p;
        p.shard = s;
        f.parts.push_back(p);
      }
    }
    auto send_raw_descriptor = [&](const std::vector<char>& bytes) -> Status {
      JANUS_ASSIGN_OR_RETURN(PoolBlock b, pool.acquire(bytes.size()));
      std::memcpy(b.data, bytes.data(), bytes.size());
      auto* op = new Op;
      op->block = b;
      op->node = x.peer;
      post_send(x.peer, kDescriptorTag, b.data, bytes.size(), op);
      kick();
      return Status::Ok();
    };
    if (x.kind == "truncated") {
      std::vector<char> d = encode_exchange_frame(f);
      d.resize(std::max<size_t>(8, (d.size() / 2) & ~size_t{7}));
      return send_raw_descriptor(d);
    }
    if (x.kind == "malformed") {
      // A well-framed message (one segment of two words) whose root pointer points far
      // outside the segment.
      std::vector<char> d(24, 0);
      const uint32_t seg[2] = {0, 2};
      std::memcpy(d.data(), seg, 8);
      const uint64_t root = (uint64_t{1000} << 2) | (uint64_t{1} << 32);
      std::memcpy(d.data() + 8, &root, 8);
      return send_raw_descriptor(d);
    }
    if (x.kind == "wrong_epoch") {
      f.key.epoch = epoch + 1000;
      return send_raw_descriptor(encode_exchange_frame(f));
    }
    if (x.kind == "unknown_sender") {
      f.sender = x.peer == 0 ? 1 : 0;
      if (f.sender == me()) f.sender = static_cast<uint32_t>(nodes.size() - 1);
      return send_raw_descriptor(encode_exchange_frame(f));
    }
    if (x.kind == "size_mismatch") {
      // The descriptor promises 64 KiB; half of it follows.
      const size_t promised = 64 << 10;
      f.payload_bytes = promised;
      f.transfer_tag = next_tag++;
      JANUS_TRY(send_raw_descriptor(encode_exchange_frame(f)));
      JANUS_ASSIGN_OR_RETURN(PoolBlock b, pool.acquire(promised / 2));
      std::memset(b.data, 0, promised / 2);
      auto* op = new Op;
      op->block = b;
      op->node = x.peer;
      post_send(x.peer, f.transfer_tag, b.data, promised / 2, op);
      return Status::Ok();
    }
    if (x.kind == "raw") {
      const char junk[12] = {'n', 'o', 't', ' ', 'a', ' ', 'f', 'r', 'a', 'm', 'e', '!'};
      kick();
      return ep.inject_raw(peer[x.peer], kDescriptorTag, junk, sizeof junk);
    }
    return invalid_argument("inject: unknown fault '" + x.kind +
                            "' (truncated, malformed, wrong_epoch, size_mismatch, unknown_sender, raw)");
  }

  BridgeStats snapshot(bool with_records) {
    BridgeStats s = stats;
    const transport::Counters c = ep.counters();
    s.transport_dropped = c.dropped_truncated + c.dropped_malformed + c.dropped_size_mismatch + c.dropped_unknown_sender +
                          c.dropped_wrong_epoch;
    s.registrations = c.registrations;
    const transport::PoolStats p = pool.stats();
    s.pool_slabs = p.slabs;
    s.pool_acquired = p.acquired;
    s.pool_reused = p.reused;
    if (with_records) s.records.assign(records.begin(), records.end());
    return s;
  }
};

Bridge::Bridge(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, BridgeSetup setup)
    : JanusActor(cfg, ctx, "bridge@" + setup.node_name, "Bridge", setup.transport),
      impl_(std::make_unique<Impl>(this, ctx, std::move(setup))) {}

Bridge::~Bridge() = default;

void Bridge::on_exit() { impl_.reset(); }

caf::behavior Bridge::make_behavior() {
  impl_->kick();
  return with_stats({
      [=, this](poll_atom) { impl_->on_poll(false); },
      [=, this](timer_atom) { impl_->on_poll(true); },
      [=, this](probe_timeout_atom, uint64_t gen) { impl_->on_probe_timeout(gen); },
      [=, this](ShardActivations& a) {
        count();
        impl_->on_activations(a);
      },
      [=, this](MoeResult& r) {
        count();
        impl_->on_result(r);
      },
      [=, this](Membership& m) -> caf::result<void> {
        count();
        impl_->on_membership(m);
        epoch_ = m.epoch;
        return caf::unit;
      },
      [=, this](const NodeDirectory& d) -> caf::result<void> {
        count();
        Status s = impl_->on_directory(d);
        if (!s.ok()) return caf::make_error(caf::sec::runtime_error, impl_->who + ": " + s.message());
        return caf::unit;
      },
      [=, this](const ProbeLinks& p) -> caf::result<std::vector<transport::LinkFit>> {
        count();
        auto rp = make_response_promise<std::vector<transport::LinkFit>>();
        impl_->start_probe(rp, p.reps);
        return rp;
      },
      [=, this](const NodeLost& l) {
        count();
        impl_->on_node_lost(l);
      },
      [=, this](const DirectoryUpdate& u) -> caf::result<void> {
        count();
        Status s = impl_->on_directory_update(u);
        if (!s.ok()) return caf::make_error(caf::sec::runtime_error, impl_->who + ": " + s.message());
        return caf::unit;
      },
      [=, this](const LinkTable& t) {
        count();
        for (const transport::LinkFit& f : t.links) impl_->cost.add(f);
      },
      [=, this](const BridgeStatsQuery& q) -> BridgeStats { return impl_->snapshot(q.records); },
      [=, this](const BridgeFault& x) -> caf::result<void> {
        Status s = impl_->inject(x);
        if (!s.ok()) return caf::make_error(caf::sec::invalid_argument, s.message());
        return caf::unit;
      },
  });
}

}  // namespace janus::actors
