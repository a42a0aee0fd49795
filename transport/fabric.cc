// The libfabric transports: shm (same host), tcp;ofi_rxm (any host), verbs;ofi_rxm (RDMA
// NICs). One implementation, parameterised by a Profile; the recipe is docs/dependencies.md §3.2:
// reliable datagram endpoints, tagged messages, FI_CONTEXT, one CQ and one AV per endpoint,
// manual progress driven by reading the CQ.
//
// Wire protocol. A message is one tagged libfabric message whose bytes are the 64-byte
// header frame followed by the payload, posted as a two-entry scatter list on both sides
// ([frame slot | user buffer]), so the payload moves zero copy between the user buffers.
// The one exception is "split" (shm only): shm copies messages of up to inject_size (4 KiB)
// through its command queue but moves anything larger with CMA, which costs a few µs per
// message; a 4 KiB payload plus its frame would cross that line. So a payload that fits
// under the line while payload + frame does not goes as two messages: the frame alone under
// the tag, then the payload under tag | kSplitPayloadBit. The receiver, on a frame that says
// "split", posts a receive for the payload directed at that sender; FI_ORDER_SAS keeps one
// sender's payloads in order, so same-tag splits cannot cross.
//
// Oversized messages. Every receive's scatter list ends with a sink (FabricEndpoint::sink),
// so the provider never has to truncate: a message longer than the posted buffer arrives
// whole, is seen by its length and dropped. Truncation is where libfabric 1.17 is fragile
// (tcp;ofi_rxm drops the connection, shm spins forever in its CMA copy loop).
//
// Back-pressure. A post that meets -FI_EAGAIN reads the CQ (which progresses the provider)
// and retries a few times; if the provider still has no room the operation goes to a
// backlog (one per peer for sends, one for receives) that progress() issues in order.
// Posts never block and never surface -FI_EAGAIN.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <sys/mman.h>
#include <dirent.h>
#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/base/log.h"
#include "transport/endpoint_base.h"
#include "transport/reg_cache.h"
#include "transport/transport.h"

namespace janus::transport {
namespace {

// libfabric links the psm providers and, through them, libinfinipath, whose constructor
// (run when the library loads, before main) installs handlers for SIGINT, SIGTERM,
// SIGSEGV, SIGBUS, SIGILL and SIGABRT that write ./<exe>.80s-<pid>,<host>.btr and call
// exit() from inside the handler while the other threads run on. Static destructors then
// race those threads: a SIGSEGV in __cxa_finalize re-enters the handler, which waits
// forever; a SIGTERM ends the process with status 1 instead of by the signal. Its
// documented switch, IPATH_NO_BACKTRACE, is read by that constructor, before any code of
// ours runs; so as soon as ours does (this object's constructor: library constructors
// run before the static objects of the program that links them) we put back the default
// action of every signal whose handler lives in libinfinipath, and set the switch for
// the processes this one starts.
struct InfinipathSignalDisarm {
  InfinipathSignalDisarm() {
    setenv("IPATH_NO_BACKTRACE", "1", 0);
    for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGBUS, SIGILL, SIGABRT, SIGFPE}) {
      struct sigaction now {};
      if (sigaction(sig, nullptr, &now) != 0) continue;
      void* handler = (now.sa_flags & SA_SIGINFO) ? reinterpret_cast<void*>(now.sa_sigaction) : reinterpret_cast<void*>(now.sa_handler);
      if (handler == reinterpret_cast<void*>(SIG_DFL) || handler == reinterpret_cast<void*>(SIG_IGN)) continue;
      Dl_info where{};
      if (dladdr(handler, &where) == 0 || where.dli_fname == nullptr || std::strstr(where.dli_fname, "libinfinipath") == nullptr) continue;
      signal(sig, SIG_DFL);
    }
  }
};
const InfinipathSignalDisarm infinipath_signal_disarm;

/// How large the overflow sink behind every receive must be (FabricEndpoint::sink).
enum class Sink { kNone, kEagerLimit, kMaxMessage };

struct Profile {
  const char* name;      // the table's name
  const char* provider;  // libfabric provider string
  bool ip;               // binds to an IP address (tcp, verbs)
  bool split;            // split header and payload around the inject limit (shm)
  Sink sink;
};

constexpr Profile kShm{"shm", "shm", false, true, Sink::kMaxMessage};
constexpr Profile kTcp{"tcp", "tcp;ofi_rxm", true, false, Sink::kEagerLimit};
constexpr Profile kVerbs{"verbs", "verbs;ofi_rxm", true, false, Sink::kNone};

/// The largest message a fabric endpoint sends or accepts (a frame's payload plus frame).
constexpr size_t kMaxMessageBytes = size_t{1} << 30;

constexpr uint64_t kSplitPayloadBit = 1ull << 63;
constexpr int kOpsPerChunk = 256;
constexpr int kPostTries = 4;     // issue attempts (with CQ reads between) before backlogging
constexpr int kCqBatch = 16;
constexpr int kCqBatchesPerProgress = 8;

std::string fi_error(int64_t rc) {
  const int e = static_cast<int>(rc < 0 ? -rc : rc);
  return std::string(fi_strerror(e)) + " (" + std::to_string(-e) + ")";
}

int result_from_fi(int64_t rc) {
  switch (static_cast<int>(rc < 0 ? -rc : rc)) {
    case 0: return JANUS_TRANSPORT_OK;
    case FI_EAGAIN: return JANUS_TRANSPORT_AGAIN;
    case FI_EINVAL: return JANUS_TRANSPORT_INVALID;
    case FI_ENOENT: return JANUS_TRANSPORT_NOT_FOUND;
    case FI_ENOSYS:
    case FI_EOPNOTSUPP: return JANUS_TRANSPORT_UNSUPPORTED;
    case FI_ENODATA:
    case FI_ECONNREFUSED:
    case FI_ECONNRESET:
    case FI_ECONNABORTED:
    case FI_ENOTCONN:
    case FI_EHOSTUNREACH:
    case FI_ENETUNREACH:
    case FI_ETIMEDOUT:
    case FI_ESHUTDOWN:
    case FI_EADDRNOTAVAIL: return JANUS_TRANSPORT_UNAVAILABLE;
    default: return JANUS_TRANSPORT_IO;
  }
}

enum class OpKind : uint8_t { kFree, kSend, kRecv, kRecvPayload, kDiscard, kRaw };

struct Op;

/// What the provider gets as the operation context. FI_CONTEXT: the first member is the
/// provider's scratch space, and the pointer comes back in the CQ entry.
struct OpCtx {
  fi_context fc;
  Op* op;
  uint8_t part;  // split sends: 0 = frame, 1 = payload
};

struct Op {
  OpCtx ctx[2];
  OpKind kind = OpKind::kFree;
  bool user = false;             // counts against max_inflight
  bool split = false;
  uint8_t parts_left = 0;
  int result = JANUS_TRANSPORT_OK;
  uint32_t peer = kAnyPeer;      // peer index, or kAnyPeer
  fi_addr_t addr = FI_ADDR_UNSPEC;
  uint64_t tag = 0;
  void* buf = nullptr;
  size_t len = 0;                // send: payload bytes; receive: capacity; raw: bytes
  void* desc = nullptr;
  void* user_ctx = nullptr;
  uint32_t epoch = 0;            // send: the epoch it went out in
  FrameHeader frame;             // split receive: the accepted frame
  unsigned char* slot = nullptr; // this op's header frame (registered, 64 bytes)
  void* slot_desc = nullptr;
  std::unique_ptr<unsigned char[]> raw;  // inject_raw: our copy of the bytes
  fid_mr* raw_mr = nullptr;
  Op* next_free = nullptr;
};

struct PeerEntry {
  uint32_t id = 0;
  fi_addr_t addr = FI_ADDR_UNSPEC;
};

struct FabricEndpoint : EndpointBase {
  const Profile* profile = nullptr;
  fi_info* info = nullptr;
  fid_fabric* fabric = nullptr;
  fid_domain* domain = nullptr;
  fid_cq* cq = nullptr;
  fid_av* av = nullptr;
  fid_ep* ep = nullptr;
  size_t inject_size = 0;
  bool split_ok = false;
  std::string advertise_host;
  uint64_t next_key = 1;

  std::vector<PeerEntry> peers;
  std::unordered_map<uint32_t, uint32_t> peer_by_id;  // id -> index
  RegistrationCache cache;

  struct Chunk {
    std::unique_ptr<Op[]> ops;
    unsigned char* slots = nullptr;
    fid_mr* mr = nullptr;
  };
  std::vector<Chunk> chunks;
  Op* free_ops = nullptr;
  uint32_t user_inflight = 0;
  // Sends wait per peer: order matters only between one sender and one receiver, and a
  // peer that stops taking messages (a node killed with its queue full: every send to it
  // meets -FI_EAGAIN forever) must not hold back the sends to everyone else behind it.
  std::map<uint32_t, std::deque<OpCtx*>> send_backlog;
  std::deque<OpCtx*> recv_backlog;
  bool internal_posted = false;  // handling completions posted operations of our own

  unsigned char* discard = nullptr;  // where unwanted split payloads go
  size_t discard_len = 0;
  fid_mr* discard_mr = nullptr;
  void* discard_desc = nullptr;

  // Every receive's scatter list ends with this sink, so that no message is ever longer
  // than what we post: the provider hands us the whole message, we see its length and drop
  // it. Two libfabric 1.17 defects make this necessary (docs/dependencies.md §3.4):
  //  - tcp;ofi_rxm reads eager messages straight into the posted buffers ("dynamic receive
  //    buffers"); one longer than them fails the whole connection (tcpx_update_rx_iov:
  //    "dynamically provided rbuf is too small") and every later message from that peer is
  //    lost. Larger messages go by SAR or rendezvous, where rxm reports FI_ETRUNC and
  //    carries on; so the sink covers the eager limit.
  //  - shm moves messages over 4 KiB with CMA, and its copy loop spins forever inside
  //    fi_cq_read when the posted buffers are shorter than the message (process_vm_readv
  //    returns 0, the loop never ends). So the sink covers kMaxMessageBytes: address space
  //    only (MAP_NORESERVE), touched only by an oversized message and given back after it.
  // Legitimate messages never reach the sink.
  unsigned char* sink = nullptr;
  size_t sink_len = 0;
  fid_mr* sink_mr = nullptr;
  void* sink_desc = nullptr;

  /// Appends the sink to a receive's scatter list of n entries; returns the new count.
  size_t with_sink(iovec* iov, void** desc, size_t n) const {
    if (sink == nullptr) return n;
    iov[n] = {sink, sink_len};
    desc[n] = sink_desc;
    return n + 1;
  }

  /// An oversized message landed in the sink: give its pages back.
  void sink_touched(size_t bytes) {
    if (sink != nullptr && bytes > (1u << 20)) madvise(sink, std::min(bytes, sink_len), MADV_DONTNEED);
  }

  ~FabricEndpoint() { teardown(); }

  // -- resources ------------------------------------------------------------------------

  int reg(void* p, size_t n, fid_mr** mr) {
    return fi_mr_reg(domain, p, n, FI_SEND | FI_RECV, 0, next_key++, 0, mr, nullptr);
  }

  bool add_chunk() {
    Chunk c;
    c.ops = std::make_unique<Op[]>(kOpsPerChunk);
    c.slots = static_cast<unsigned char*>(std::aligned_alloc(64, kOpsPerChunk * kFrameHeaderBytes));
    if (c.slots == nullptr) return false;
    std::memset(c.slots, 0, kOpsPerChunk * kFrameHeaderBytes);
    if (int rc = reg(c.slots, kOpsPerChunk * kFrameHeaderBytes, &c.mr); rc != 0) {
      std::free(c.slots);
      last_error = "fi_mr_reg of frame slots: " + fi_error(rc);
      return false;
    }
    void* desc = fi_mr_desc(c.mr);
    for (int i = 0; i < kOpsPerChunk; ++i) {
      Op& op = c.ops[static_cast<size_t>(i)];
      op.ctx[0].op = op.ctx[1].op = &op;
      op.ctx[0].part = 0;
      op.ctx[1].part = 1;
      op.slot = c.slots + static_cast<size_t>(i) * kFrameHeaderBytes;
      op.slot_desc = desc;
      op.next_free = free_ops;
      free_ops = &op;
    }
    chunks.push_back(std::move(c));
    return true;
  }

  Op* alloc_op(bool user) {
    if (user && user_inflight >= max_inflight) return nullptr;
    if (free_ops == nullptr && !add_chunk()) return nullptr;
    Op* op = free_ops;
    free_ops = op->next_free;
    op->user = user;
    op->split = false;
    op->parts_left = 1;
    op->result = JANUS_TRANSPORT_OK;
    op->peer = kAnyPeer;
    op->addr = FI_ADDR_UNSPEC;
    op->buf = op->desc = op->user_ctx = nullptr;
    op->len = 0;
    if (user) ++user_inflight;
    return op;
  }

  void free_op(Op* op) {
    if (op->user) --user_inflight;
    if (op->raw_mr != nullptr) fi_close(&op->raw_mr->fid);
    op->raw_mr = nullptr;
    op->raw.reset();
    op->kind = OpKind::kFree;
    op->next_free = free_ops;
    free_ops = op;
  }

  /// The local descriptor for [p, p + n): from the caller's region, the cache, or a new
  /// registration (kept in the cache).
  int lookup_mr(const void* p, size_t n, void* mr, void** desc) {
    *desc = nullptr;
    if (n == 0) return JANUS_TRANSPORT_OK;
    if (mr != nullptr) {
      auto* r = static_cast<MemoryRegion*>(mr);
      if (!cache.contains(r)) return fail(JANUS_TRANSPORT_NOT_FOUND, "memory region handle not registered here");
      if (!r->covers(p, n)) return fail(JANUS_TRANSPORT_INVALID, "buffer outside the memory region given");
      ++counters.registration_hits;
      *desc = r->desc;
      return JANUS_TRANSPORT_OK;
    }
    if (MemoryRegion* r = cache.find(p, n)) {
      ++counters.registration_hits;
      *desc = r->desc;
      return JANUS_TRANSPORT_OK;
    }
    fid_mr* m = nullptr;
    if (int rc = reg(const_cast<void*>(p), n, &m); rc != 0)
      return fail(result_from_fi(rc), "fi_mr_reg of " + std::to_string(n) + " bytes: " + fi_error(rc));
    ++counters.registrations;
    MemoryRegion r;
    r.begin = reinterpret_cast<uintptr_t>(p);
    r.end = r.begin + n;
    r.handle = m;
    r.desc = fi_mr_desc(m);
    *desc = cache.insert(r)->desc;
    return JANUS_TRANSPORT_OK;
  }

  // -- issuing operations ------------------------------------------------------------------

  ssize_t issue(OpCtx* c) {
    Op* op = c->op;
    switch (op->kind) {
      case OpKind::kSend: {
        if (c->part == 1)
          return fi_tsend(ep, op->buf, op->len, op->desc, op->addr, op->tag | kSplitPayloadBit, &c->fc);
        iovec iov[2] = {{op->slot, kFrameHeaderBytes}, {op->buf, op->len}};
        void* desc[2] = {op->slot_desc, op->desc};
        return fi_tsendv(ep, iov, desc, (op->split || op->len == 0) ? 1 : 2, op->addr, op->tag, &c->fc);
      }
      case OpKind::kRecv: {
        iovec iov[3] = {{op->slot, kFrameHeaderBytes}, {op->buf, op->len}, {}};
        void* desc[3] = {op->slot_desc, op->desc, nullptr};
        const size_t n = with_sink(iov, desc, op->len == 0 ? 1 : 2);
        return fi_trecvv(ep, iov, desc, n, op->addr, op->tag, 0, &c->fc);
      }
      case OpKind::kRecvPayload: {
        iovec iov[2] = {{op->buf, op->len}, {}};
        void* desc[2] = {op->desc, nullptr};
        const size_t n = with_sink(iov, desc, 1);
        return fi_trecvv(ep, iov, desc, n, op->addr, op->tag | kSplitPayloadBit, 0, &c->fc);
      }
      case OpKind::kDiscard: {
        iovec iov[2] = {{discard, discard_len}, {}};
        void* desc[2] = {discard_desc, nullptr};
        const size_t n = with_sink(iov, desc, 1);
        return fi_trecvv(ep, iov, desc, n, op->addr, op->tag | kSplitPayloadBit, 0, &c->fc);
      }
      case OpKind::kRaw:
        return fi_tsend(ep, op->raw.get(), op->len, op->raw_mr ? fi_mr_desc(op->raw_mr) : nullptr, op->addr,
                        op->tag, &c->fc);
      case OpKind::kFree: break;
    }
    return -FI_EINVAL;
  }

  /// Sends and receives wait in separate queues: a receive must never wait behind a send
  /// that the peer cannot take until that very receive is posted (with shm, a peer whose
  /// inject buffers are full of our unexpected payloads frees them only when it posts the
  /// receives for them — it would deadlock on a shared queue).
  std::deque<OpCtx*>& backlog_of(const OpCtx* c) {
    const OpKind k = c->op->kind;
    return k == OpKind::kSend || k == OpKind::kRaw ? send_backlog[c->op->peer] : recv_backlog;
  }

  /// Issues `c` now, or queues it behind earlier back-pressured operations of its kind (the
  /// order of posts is kept). Returns 0 or a negative libfabric error; never -FI_EAGAIN.
  ssize_t submit(OpCtx* c, bool may_progress) {
    if (!may_progress) internal_posted = true;
    std::deque<OpCtx*>& q = backlog_of(c);
    if (q.empty()) {
      for (int attempt = 0;; ++attempt) {
        const ssize_t r = issue(c);
        if (r != -FI_EAGAIN) return r;
        ++counters.eagain;
        if (!may_progress || attempt + 1 >= kPostTries) break;
        poll_cq(1);  // progress; may queue internal posts, which then go first
        if (!q.empty()) break;
      }
    }
    q.push_back(c);
    ++counters.backlogged;
    return 0;
  }

  void retry(std::deque<OpCtx*>& q) {
    while (!q.empty()) {
      OpCtx* c = q.front();
      const ssize_t r = issue(c);
      if (r == -FI_EAGAIN) {
        ++counters.eagain;
        return;
      }
      q.pop_front();
      if (r != 0) op_failed(c->op, r, "post (retried)");
    }
  }

  bool backlogged() const {
    if (!recv_backlog.empty()) return true;
    for (const auto& [peer, q] : send_backlog)
      if (!q.empty()) return true;
    return false;
  }

  void retry_backlog() {
    retry(recv_backlog);
    for (auto& [peer, q] : send_backlog) retry(q);
  }

  // -- completions ---------------------------------------------------------------------------

  uint32_t peer_id(uint32_t index) const { return index < peers.size() ? peers[index].id : kAnyPeer; }

  void finish_send_part(Op* op) {
    if (--op->parts_left > 0) return;
    complete_send(op->user_ctx, op->buf, op->tag, op->len, peer_id(op->peer), op->epoch, op->result);
    free_op(op);
  }

  /// An operation could not be issued or failed in the provider.
  void op_failed(Op* op, int64_t rc, const char* what) {
    const int code = result_from_fi(rc) == JANUS_TRANSPORT_AGAIN ? JANUS_TRANSPORT_IO : result_from_fi(rc);
    last_error = std::string(what) + ": " + fi_error(rc);
    switch (op->kind) {
      case OpKind::kSend:
        op->result = code;
        finish_send_part(op);
        return;
      case OpKind::kRecv:
      case OpKind::kRecvPayload:
        complete_recv(op->user_ctx, op->buf, op->tag, 0, peer_id(op->peer), epoch, 0, code);
        free_op(op);
        return;
      default:
        log_warn(who, std::string("internal operation failed: ") + last_error);
        free_op(op);
        return;
    }
  }

  /// Posts the receive again after its frame was dropped.
  void repost(Op* op) {
    op->kind = OpKind::kRecv;
    op->addr = op->peer == kAnyPeer ? FI_ADDR_UNSPEC : peers[op->peer].addr;
    if (const ssize_t r = submit(&op->ctx[0], false); r != 0) op_failed(op, r, "fi_trecvv (repost)");
  }

  /// A split frame was refused: its payload message is coming anyway; take it off the wire.
  void discard_payload(const Op* frame_op, const FrameHeader& h) {
    Op* d = alloc_op(false);
    if (d == nullptr) return;
    d->kind = OpKind::kDiscard;
    d->tag = frame_op->tag;
    auto it = peer_by_id.find(h.sender);
    d->addr = it != peer_by_id.end() ? peers[it->second].addr
              : frame_op->peer != kAnyPeer ? peers[frame_op->peer].addr
                                           : FI_ADDR_UNSPEC;
    if (const ssize_t r = submit(&d->ctx[0], false); r != 0) op_failed(d, r, "fi_trecv (discard)");
  }

  void on_frame(Op* op, size_t len) {
    FrameHeader h;
    const uint32_t want = op->peer == kAnyPeer ? kAnyPeer : peers[op->peer].id;
    auto known = [this](uint32_t id) { return peer_by_id.count(id) != 0; };
    if (!accept_frame(op->slot, len, op->tag, want, known, &h)) {
      FrameHeader parsed;
      if (len == kFrameHeaderBytes && decode_frame(op->slot, len, &parsed, nullptr) == FrameCheck::kOk &&
          (parsed.flags & kFrameFlagSplit) != 0 && parsed.tag == op->tag)
        discard_payload(op, parsed);
      repost(op);
      return;
    }
    if ((h.flags & kFrameFlagSplit) != 0) {
      if (len != kFrameHeaderBytes) {
        drop(DropReason::kMalformed, op->tag, "split frame with " + std::to_string(len - kFrameHeaderBytes) +
                                                   " payload bytes attached");
        repost(op);
        return;
      }
      if (h.bytes > op->len) {
        drop(DropReason::kTruncated, op->tag,
             "payload of " + std::to_string(h.bytes) + " bytes for a receive of " + std::to_string(op->len));
        discard_payload(op, h);
        repost(op);
        return;
      }
      op->kind = OpKind::kRecvPayload;
      op->frame = h;
      op->addr = peers[peer_by_id[h.sender]].addr;
      if (const ssize_t r = submit(&op->ctx[0], false); r != 0) op_failed(op, r, "fi_trecv (split payload)");
      return;
    }
    const uint64_t payload = len - kFrameHeaderBytes;
    if (h.bytes > op->len || payload > op->len) {
      // Oversized: caught whole by the sink, or cut to the posted buffer without FI_ETRUNC
      // (providers without a sink).
      sink_touched(payload - std::min<uint64_t>(payload, op->len));
      drop(DropReason::kTruncated, op->tag,
           "frame says " + std::to_string(h.bytes) + " bytes, " + std::to_string(payload) +
               " arrived, the receive holds " + std::to_string(op->len));
      repost(op);
      return;
    }
    if (payload != h.bytes) {
      drop(DropReason::kSizeMismatch, op->tag,
           "frame says " + std::to_string(h.bytes) + " bytes, " + std::to_string(payload) + " arrived");
      repost(op);
      return;
    }
    complete_recv(op->user_ctx, op->buf, op->tag, payload, h.sender, h.epoch, 0, JANUS_TRANSPORT_OK);
    free_op(op);
  }

  void on_completion(OpCtx* c, size_t len) {
    Op* op = c->op;
    switch (op->kind) {
      case OpKind::kSend: finish_send_part(op); return;
      case OpKind::kRecv: on_frame(op, len); return;
      case OpKind::kRecvPayload:
        if (len != op->frame.bytes) {
          sink_touched(len - std::min(len, op->len));
          drop(DropReason::kSizeMismatch, op->tag,
               "split frame says " + std::to_string(op->frame.bytes) + " bytes, " + std::to_string(len) + " arrived");
          repost(op);
          return;
        }
        complete_recv(op->user_ctx, op->buf, op->tag, len, op->frame.sender, op->frame.epoch, 0, JANUS_TRANSPORT_OK);
        free_op(op);
        return;
      case OpKind::kDiscard:
        sink_touched(len - std::min(len, discard_len));
        free_op(op);
        return;
      case OpKind::kRaw: free_op(op); return;
      case OpKind::kFree: log_error(who, "completion for a free operation"); return;
    }
  }

  void on_error(const fi_cq_err_entry& e) {
    auto* c = static_cast<OpCtx*>(e.op_context);
    if (c == nullptr) {
      log_warn(who, "provider error without an operation: " + fi_error(e.err));
      return;
    }
    Op* op = c->op;
    // shm 1.17 reports some errors negated (smr_write_err_comp(..., -FI_ETRUNC)).
    const int err = e.err < 0 ? -e.err : e.err;
    if (err == FI_ETRUNC && (op->kind == OpKind::kRecv || op->kind == OpKind::kRecvPayload)) {
      // The message was longer than the posted buffer: it was cut and consumed.
      const size_t posted = op->kind == OpKind::kRecv ? op->len + kFrameHeaderBytes : op->len;
      drop(op->kind == OpKind::kRecv ? DropReason::kTruncated : DropReason::kSizeMismatch, op->tag,
           "message of " + std::to_string(e.len + e.olen) + " bytes for a receive of " + std::to_string(posted));
      repost(op);
      return;
    }
    if (err == FI_ECANCELED) {
      free_op(op);
      return;
    }
    char buf[256] = {};
    const char* detail = fi_cq_strerror(cq, e.prov_errno, e.err_data, buf, sizeof buf);
    op_failed(op, -err, detail ? detail : "provider error");
  }

  /// Reads the CQ (which drives the provider) for at most `batches` batches or until empty.
  void poll_cq(int batches) {
    fi_cq_tagged_entry entries[kCqBatch];
    for (int b = 0; b < batches; ++b) {
      const ssize_t n = fi_cq_read(cq, entries, kCqBatch);
      if (n > 0) {
        internal_posted = false;
        for (ssize_t i = 0; i < n; ++i) on_completion(static_cast<OpCtx*>(entries[i].op_context), entries[i].len);
        // A short batch means the CQ is drained, unless handling it posted receives (split
        // payloads, reposts) whose completions may already be waiting: read once more.
        if (n < kCqBatch && !internal_posted) return;
        continue;
      }
      if (n == -FI_EAVAIL) {
        fi_cq_err_entry err{};
        if (fi_cq_readerr(cq, &err, 0) == 1) on_error(err);
        continue;
      }
      if (n != -FI_EAGAIN) log_error(who, "fi_cq_read: " + fi_error(n));
      return;
    }
  }

  void teardown() {
    if (ep != nullptr) fi_close(&ep->fid);  // cancels everything outstanding
    ep = nullptr;
    for (auto& c : chunks) {
      for (int i = 0; i < kOpsPerChunk; ++i)
        if (c.ops[static_cast<size_t>(i)].raw_mr != nullptr) fi_close(&c.ops[static_cast<size_t>(i)].raw_mr->fid);
      if (c.mr != nullptr) fi_close(&c.mr->fid);
      std::free(c.slots);
    }
    chunks.clear();
    cache.for_each([](MemoryRegion& r) {
      if (r.handle != nullptr) fi_close(&static_cast<fid_mr*>(r.handle)->fid);
    });
    if (discard_mr != nullptr) fi_close(&discard_mr->fid);
    discard_mr = nullptr;
    std::free(discard);
    discard = nullptr;
    if (sink_mr != nullptr) fi_close(&sink_mr->fid);
    sink_mr = nullptr;
    if (sink != nullptr) munmap(sink, sink_len);
    sink = nullptr;
    if (av != nullptr) fi_close(&av->fid);
    if (cq != nullptr) fi_close(&cq->fid);
    if (domain != nullptr) fi_close(&domain->fid);
    if (fabric != nullptr) fi_close(&fabric->fid);
    if (info != nullptr) fi_freeinfo(info);
    av = nullptr;
    cq = nullptr;
    domain = nullptr;
    fabric = nullptr;
    info = nullptr;
  }
};

FabricEndpoint* as_ep(void* p) { return static_cast<FabricEndpoint*>(p); }

// -- discovery ---------------------------------------------------------------------------

fi_info* make_hints(const Profile& p, bool ordered) {
  fi_info* hints = fi_allocinfo();
  hints->ep_attr->type = FI_EP_RDM;
  hints->caps = FI_TAGGED | FI_DIRECTED_RECV;
  hints->mode = FI_CONTEXT;
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  if (ordered) {
    hints->tx_attr->msg_order = FI_ORDER_SAS;
    hints->rx_attr->msg_order = FI_ORDER_SAS;
  }
  hints->fabric_attr->prov_name = strdup(p.provider);
  return hints;
}

/// fi_getinfo for profile p; *ordered says whether send-after-send order was granted.
int get_info(const Profile& p, const char* node, const char* service, fi_info** out, bool* ordered) {
  uint64_t flags = node != nullptr ? FI_SOURCE : 0;
  for (bool want_order : {true, false}) {
    fi_info* hints = make_hints(p, want_order);
    const int rc = fi_getinfo(FI_VERSION(1, 17), node, service, flags, hints, out);
    fi_freeinfo(hints);
    if (rc == 0) {
      *ordered = want_order;
      return 0;
    }
    if (rc != -FI_ENODATA) return rc;
  }
  return -FI_ENODATA;
}

struct InitState {
  std::once_flag once;
  int result = JANUS_TRANSPORT_OK;
  std::string message;
};

int fabric_init(const Profile& p, InitState& s) {
  std::call_once(s.once, [&] {
    fi_info* info = nullptr;
    bool ordered = false;
    const int rc = get_info(p, p.ip ? "127.0.0.1" : nullptr, p.ip ? "0" : nullptr, &info, &ordered);
    if (rc != 0) {
      s.result = JANUS_TRANSPORT_UNAVAILABLE;
      s.message = std::string("libfabric provider '") + p.provider + "' is not usable here: " + fi_error(rc);
    }
    if (info != nullptr) fi_freeinfo(info);
  });
  if (s.result != JANUS_TRANSPORT_OK) return fail_thread(s.result, s.message);
  return JANUS_TRANSPORT_OK;
}

/// ofi_rxm's eager limit: FI_OFI_RXM_EAGER_LIMIT, else FI_OFI_RXM_BUFFER_SIZE, else 16 KiB
/// (the 1.17 defaults), with room for rxm's own header.
size_t eager_limit() {
  size_t limit = 16384;
  for (const char* var : {"FI_OFI_RXM_BUFFER_SIZE", "FI_OFI_RXM_EAGER_LIMIT"})
    if (const char* v = std::getenv(var)) {
      const unsigned long long x = std::strtoull(v, nullptr, 10);
      if (x > 0) limit = std::max<size_t>(limit, static_cast<size_t>(x));
    }
  return limit + 4096;
}

/// The shm provider names an endpoint's region in /dev/shm after the process id. A process
/// that is killed leaves its region behind, and a later process that gets the same pid
/// then fails fi_enable with EBUSY. So each endpoint gets a name of its own,
/// "janus-PID-NONCE", and opening one first removes the regions of janus processes that
/// no longer exist (what a killed node left; a clean close removes its own).
void name_shm_endpoint(fi_info* info) {
  static std::atomic<uint64_t> seq{0};
  static std::once_flag swept;
  std::call_once(swept, [] {
    DIR* dir = opendir("/dev/shm");
    if (dir == nullptr) return;
    while (dirent* d = readdir(dir)) {
      int pid = 0;
      if (std::sscanf(d->d_name, "janus-%d-", &pid) != 1 || pid <= 0) continue;
      if (kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge
      const std::string path = std::string("/dev/shm/") + d->d_name;
      (void)unlink(path.c_str());
    }
    closedir(dir);
  });
  const auto now = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  char name[96];
  std::snprintf(name, sizeof name, "fi_shm://janus-%d-%llx", static_cast<int>(getpid()),
                static_cast<unsigned long long>((now ^ (seq.fetch_add(1) << 48)) & 0xffffffffffffull));
  std::free(info->src_addr);
  info->src_addr = strdup(name);
  info->src_addrlen = std::strlen(name) + 1;
}

int fabric_listen(const Profile& p, const janus_transport_config_v1_t* cfg, void** out) {
  if (cfg == nullptr || out == nullptr) return fail_thread(JANUS_TRANSPORT_INVALID, "null config or handle");
  auto e = std::make_unique<FabricEndpoint>();
  e->profile = &p;
  e->configure(*cfg, p.name);
  if (cfg->advertise_host != nullptr) {
    in_addr a{};
    if (inet_pton(AF_INET, cfg->advertise_host, &a) != 1)
      return fail_thread(JANUS_TRANSPORT_INVALID,
                         std::string("advertise_host '") + cfg->advertise_host + "' is not an IPv4 address");
    e->advertise_host = cfg->advertise_host;
  }
  const char* node = nullptr;
  const char* service = nullptr;
  if (p.ip) {
    node = cfg->bind_host != nullptr ? cfg->bind_host : "127.0.0.1";
    service = cfg->bind_port != nullptr ? cfg->bind_port : "0";
  }
  bool ordered = false;
  int rc = get_info(p, node, service, &e->info, &ordered);
  if (rc != 0)
    return fail_thread(result_from_fi(rc) == JANUS_TRANSPORT_IO ? JANUS_TRANSPORT_UNAVAILABLE : result_from_fi(rc),
                       std::string("fi_getinfo(") + p.provider + (node ? std::string(", ") + node : "") +
                           "): " + fi_error(rc));
  e->inject_size = e->info->tx_attr->inject_size;
  e->split_ok = p.split && ordered && e->inject_size > kFrameHeaderBytes;
  // Each step: 0, or the result code with the thread's last error set.
  auto step = [&](int r, const char* what) -> int {
    if (r == 0) return JANUS_TRANSPORT_OK;
    return fail_thread(result_from_fi(r), std::string(what) + " (" + p.provider + "): " + fi_error(r));
  };
  if (!p.ip) name_shm_endpoint(e->info);
  if (int rc2 = step(fi_fabric(e->info->fabric_attr, &e->fabric, nullptr), "fi_fabric")) return rc2;
  if (int rc2 = step(fi_domain(e->fabric, e->info, &e->domain, nullptr), "fi_domain")) return rc2;
  fi_cq_attr cq_attr{};
  cq_attr.format = FI_CQ_FORMAT_TAGGED;
  cq_attr.wait_obj = FI_WAIT_NONE;  // we poll: progress() is called by the owner's loop
  cq_attr.size = std::max<size_t>(4096, 4 * static_cast<size_t>(e->max_inflight));
  if (int rc2 = step(fi_cq_open(e->domain, &cq_attr, &e->cq, nullptr), "fi_cq_open")) return rc2;
  fi_av_attr av_attr{};
  av_attr.type = FI_AV_TABLE;
  if (int rc2 = step(fi_av_open(e->domain, &av_attr, &e->av, nullptr), "fi_av_open")) return rc2;
  if (int rc2 = step(fi_endpoint(e->domain, e->info, &e->ep, nullptr), "fi_endpoint")) return rc2;
  if (int rc2 = step(fi_ep_bind(e->ep, &e->cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq)")) return rc2;
  if (int rc2 = step(fi_ep_bind(e->ep, &e->av->fid, 0), "fi_ep_bind(av)")) return rc2;
  if (int rc2 = step(fi_enable(e->ep), "fi_enable")) return rc2;
  if (!e->add_chunk()) return fail_thread(JANUS_TRANSPORT_IO, e->last_error);
  if (e->split_ok) {
    e->discard_len = e->inject_size;
    e->discard = static_cast<unsigned char*>(std::aligned_alloc(64, (e->discard_len + 63) / 64 * 64));
    if (e->discard == nullptr) return fail_thread(JANUS_TRANSPORT_IO, "out of memory");
    if (int rc2 = step(e->reg(e->discard, e->discard_len, &e->discard_mr), "fi_mr_reg(discard)")) return rc2;
    e->discard_desc = fi_mr_desc(e->discard_mr);
  }
  if (p.sink != Sink::kNone) {
    if (e->info->rx_attr->iov_limit < 3)
      return fail_thread(JANUS_TRANSPORT_UNSUPPORTED, std::string(p.provider) + " takes fewer than 3 receive iovs");
    e->sink_len = p.sink == Sink::kMaxMessage ? kMaxMessageBytes : eager_limit();
    void* m = mmap(nullptr, e->sink_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return fail_thread(JANUS_TRANSPORT_IO, "mmap of the receive sink failed");
    e->sink = static_cast<unsigned char*>(m);
    if (int rc2 = step(e->reg(e->sink, e->sink_len, &e->sink_mr), "fi_mr_reg(sink)")) return rc2;
    e->sink_desc = fi_mr_desc(e->sink_mr);
  }
  if (log_enabled(LogLevel::kDebug))
    log_message(LogLevel::kDebug, e->who,
                std::string("provider ") + e->info->fabric_attr->prov_name + " mr_mode " +
                    std::to_string(e->info->domain_attr->mr_mode) + " inject " + std::to_string(e->inject_size) +
                    (ordered ? " ordered" : " unordered") + (e->split_ok ? " split" : ""));
  *out = e.release();
  return JANUS_TRANSPORT_OK;
}

// -- the table functions -------------------------------------------------------------------

int fabric_address(void* p, void* buf, size_t* len) {
  FabricEndpoint* e = as_ep(p);
  if (len == nullptr) return e->fail(JANUS_TRANSPORT_INVALID, "null length");
  const size_t cap = *len;
  const int rc = fi_getname(&e->ep->fid, buf, len);
  if (rc == -FI_ETOOSMALL || (rc == 0 && *len > cap))
    return e->fail(JANUS_TRANSPORT_INVALID, "address needs " + std::to_string(*len) + " bytes");
  if (rc != 0) return e->fail(result_from_fi(rc), "fi_getname: " + fi_error(rc));
  // Bound to any address: peers must be told one they can dial.
  if (!e->advertise_host.empty() && e->info->addr_format == FI_SOCKADDR_IN && *len == sizeof(sockaddr_in)) {
    auto* sin = static_cast<sockaddr_in*>(buf);
    if (sin->sin_addr.s_addr == htonl(INADDR_ANY)) inet_pton(AF_INET, e->advertise_host.c_str(), &sin->sin_addr);
  }
  return JANUS_TRANSPORT_OK;
}

int fabric_connect(void* p, const void* address, size_t len, uint32_t peer_id, janus_peer_t* peer) {
  FabricEndpoint* e = as_ep(p);
  if (address == nullptr || peer == nullptr) return e->fail(JANUS_TRANSPORT_INVALID, "null address or peer");
  if (e->peer_by_id.count(peer_id) != 0)
    return e->fail(JANUS_TRANSPORT_INVALID, "peer id " + std::to_string(peer_id) + " is already connected");
  if (peer_id == kAnyPeer) return e->fail(JANUS_TRANSPORT_INVALID, "peer id 0xFFFFFFFF is reserved");
  // Addresses are provider names: a sockaddr for IP providers, a NUL-terminated string for
  // shm. Check the shape before libfabric parses it.
  if (e->info->addr_format == FI_SOCKADDR_IN && len != sizeof(sockaddr_in))
    return e->fail(JANUS_TRANSPORT_INVALID, "address of " + std::to_string(len) + " bytes is not a sockaddr_in");
  if (e->info->addr_format == FI_SOCKADDR_IN6 && len != sizeof(sockaddr_in6))
    return e->fail(JANUS_TRANSPORT_INVALID, "address of " + std::to_string(len) + " bytes is not a sockaddr_in6");
  if (e->info->addr_format == FI_ADDR_STR && (len == 0 || std::memchr(address, 0, len) == nullptr))
    return e->fail(JANUS_TRANSPORT_INVALID, "address is not a NUL-terminated provider string");
  std::vector<char> copy(static_cast<const char*>(address), static_cast<const char*>(address) + len);
  fi_addr_t fa = FI_ADDR_UNSPEC;
  const int n = fi_av_insert(e->av, copy.data(), 1, &fa, 0, nullptr);
  if (n != 1 || fa == FI_ADDR_NOTAVAIL)
    return e->fail(JANUS_TRANSPORT_INVALID, std::string("fi_av_insert refused the address (") + e->profile->provider +
                                                ")" + (n < 0 ? ": " + fi_error(n) : ""));
  *peer = static_cast<janus_peer_t>(e->peers.size());
  e->peers.push_back({peer_id, fa});
  e->peer_by_id[peer_id] = *peer;
  return JANUS_TRANSPORT_OK;
}

int fabric_reg_mr(void* p, void* buf, size_t len, void** mr) {
  FabricEndpoint* e = as_ep(p);
  if (buf == nullptr || len == 0 || mr == nullptr) return e->fail(JANUS_TRANSPORT_INVALID, "empty region");
  fid_mr* m = nullptr;
  if (int rc = e->reg(buf, len, &m); rc != 0)
    return e->fail(result_from_fi(rc), "fi_mr_reg of " + std::to_string(len) + " bytes: " + fi_error(rc));
  ++e->counters.registrations;
  MemoryRegion r;
  r.begin = reinterpret_cast<uintptr_t>(buf);
  r.end = r.begin + len;
  r.handle = m;
  r.desc = fi_mr_desc(m);
  r.explicit_ = true;
  *mr = e->cache.insert(r);
  return JANUS_TRANSPORT_OK;
}

int fabric_dereg_mr(void* p, void* mr) {
  FabricEndpoint* e = as_ep(p);
  auto* r = static_cast<MemoryRegion*>(mr);
  if (r == nullptr || !e->cache.contains(r)) return e->fail(JANUS_TRANSPORT_NOT_FOUND, "no such memory region");
  if (r->handle != nullptr) fi_close(&static_cast<fid_mr*>(r->handle)->fid);
  e->cache.erase(r);
  return JANUS_TRANSPORT_OK;
}

int fabric_isend(void* p, janus_peer_t peer, uint64_t tag, const void* buf, size_t len, void* mr, void* user_context) {
  FabricEndpoint* e = as_ep(p);
  if (int rc = e->check_post(e->peers.size(), peer, false, tag, buf, len); rc != 0) return rc;
  if (len > kMaxMessageBytes - kFrameHeaderBytes)
    return e->fail(JANUS_TRANSPORT_INVALID, "payload of " + std::to_string(len) + " bytes is over the 1 GiB message limit");
  void* desc = nullptr;
  if (int rc = e->lookup_mr(buf, len, mr, &desc); rc != 0) return rc;
  Op* op = e->alloc_op(true);
  if (op == nullptr) return e->fail(JANUS_TRANSPORT_AGAIN, "max_inflight operations posted");
  op->kind = OpKind::kSend;
  op->peer = peer;
  op->addr = e->peers[peer].addr;
  op->tag = tag;
  op->buf = const_cast<void*>(buf);
  op->len = len;
  op->desc = desc;
  op->user_ctx = user_context;
  op->epoch = e->epoch;
  op->split = e->split_ok && len <= e->inject_size && len + kFrameHeaderBytes > e->inject_size;
  op->parts_left = op->split ? 2 : 1;
  e->encode_next_frame(tag, len, op->split ? kFrameFlagSplit : 0, op->slot);
  ++e->counters.sends_posted;
  if (op->split) ++e->counters.split_messages;
  if (const ssize_t r = e->submit(&op->ctx[0], true); r != 0) {
    e->free_op(op);
    --e->counters.sends_posted;
    return e->fail(result_from_fi(r), "fi_tsendv: " + fi_error(r));
  }
  if (op->split) {
    if (const ssize_t r = e->submit(&op->ctx[1], true); r != 0) e->op_failed(op, r, "fi_tsend (split payload)");
  }
  return JANUS_TRANSPORT_OK;
}

int fabric_irecv(void* p, janus_peer_t peer, uint64_t tag, void* buf, size_t capacity, void* mr, void* user_context) {
  FabricEndpoint* e = as_ep(p);
  if (int rc = e->check_post(e->peers.size(), peer, true, tag, buf, capacity); rc != 0) return rc;
  void* desc = nullptr;
  if (int rc = e->lookup_mr(buf, capacity, mr, &desc); rc != 0) return rc;
  Op* op = e->alloc_op(true);
  if (op == nullptr) return e->fail(JANUS_TRANSPORT_AGAIN, "max_inflight operations posted");
  op->kind = OpKind::kRecv;
  op->peer = peer;
  op->addr = peer == kAnyPeer ? FI_ADDR_UNSPEC : e->peers[peer].addr;
  op->tag = tag;
  op->buf = buf;
  op->len = capacity;
  op->desc = desc;
  op->user_ctx = user_context;
  ++e->counters.recvs_posted;
  if (const ssize_t r = e->submit(&op->ctx[0], true); r != 0) {
    e->free_op(op);
    --e->counters.recvs_posted;
    return e->fail(result_from_fi(r), "fi_trecvv: " + fi_error(r));
  }
  return JANUS_TRANSPORT_OK;
}

int fabric_progress(void* p, janus_transport_completion_v1_t* out, int max, int* n) {
  FabricEndpoint* e = as_ep(p);
  if (int rc = e->check_progress(out, max, n); rc != JANUS_TRANSPORT_OK) return rc;
  if (e->backlogged()) e->retry_backlog();
  if (e->done.size() < static_cast<size_t>(max) || max == 0) e->poll_cq(kCqBatchesPerProgress);
  if (e->backlogged()) e->retry_backlog();
  return e->drain(out, max, n);
}

int fabric_release(void* p, uint64_t loan) {
  // libfabric receives land in the receiver's own buffer: there are no loans.
  if (loan == 0) return JANUS_TRANSPORT_OK;
  return as_ep(p)->fail(JANUS_TRANSPORT_NOT_FOUND, "no loan " + std::to_string(loan));
}

int fabric_inject_raw(void* p, janus_peer_t peer, uint64_t tag, const void* bytes, size_t len) {
  FabricEndpoint* e = as_ep(p);
  if (int rc = e->check_post(e->peers.size(), peer, false, tag, bytes, len, "bytes"); rc != 0) return rc;
  if (len > kMaxMessageBytes) return e->fail(JANUS_TRANSPORT_INVALID, "raw message over the 1 GiB message limit");
  Op* op = e->alloc_op(false);
  if (op == nullptr) return e->fail(JANUS_TRANSPORT_IO, e->last_error);
  op->kind = OpKind::kRaw;
  op->peer = peer;
  op->addr = e->peers[peer].addr;
  op->tag = tag;
  op->len = len;
  if (len != 0) {
    op->raw = std::make_unique<unsigned char[]>(len);
    std::memcpy(op->raw.get(), bytes, len);
    if (int rc = e->reg(op->raw.get(), len, &op->raw_mr); rc != 0) {
      e->free_op(op);
      return e->fail(result_from_fi(rc), "fi_mr_reg (raw): " + fi_error(rc));
    }
  }
  if (const ssize_t r = e->submit(&op->ctx[0], true); r != 0) {
    e->free_op(op);
    return e->fail(result_from_fi(r), "fi_tsend (raw): " + fi_error(r));
  }
  return JANUS_TRANSPORT_OK;
}

template <const Profile& P>
struct Table {
  static InitState& state() {
    static InitState s;
    return s;
  }
  static int init() { return fabric_init(P, state()); }
  static int listen(const janus_transport_config_v1_t* cfg, void** ep) {
    if (int rc = init(); rc != JANUS_TRANSPORT_OK) return rc;
    return fabric_listen(P, cfg, ep);
  }
  static constexpr janus_transport_v1_t make() {
    using Common = CommonEntries<FabricEndpoint>;
    return janus_transport_v1_t{P.name,           init,           listen,       fabric_address,       fabric_connect,
                                fabric_reg_mr,    fabric_dereg_mr, fabric_isend, fabric_irecv,         fabric_progress,
                                fabric_release,   Common::set_epoch, Common::get_counters, fabric_inject_raw,
                                Common::last_error, Common::close};
  }
};

}  // namespace
}  // namespace janus::transport

extern "C" {
const janus_transport_v1_t janus_transport_shm_v1 = janus::transport::Table<janus::transport::kShm>::make();
const janus_transport_v1_t janus_transport_tcp_v1 = janus::transport::Table<janus::transport::kTcp>::make();
const janus_transport_v1_t janus_transport_verbs_v1 = janus::transport::Table<janus::transport::kVerbs>::make();
}
