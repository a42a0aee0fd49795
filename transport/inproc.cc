// The in-process transport: endpoints of one process hand each other pointers. A send
// puts (frame, pointer, length) into the receiver's inbox; the receiver's progress()
// matches it to a posted receive, checks the frame like any other transport, and hands
// out the sender's pointer itself as completion.data with a loan. The sender's send
// completes when the receiver releases the loan, so the bytes are never copied and never
// change under the receiver. Endpoints may live on different threads: the inbox and the
// list of returned loans are the only shared state, each under its endpoint's mutex.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/endpoint_base.h"
#include "transport/reg_cache.h"
#include "transport/transport.h"

namespace janus::transport {
namespace {

struct Mailbox;

/// A message on its way: the frame (copied, it is small) and the payload (not copied).
struct Incoming {
  alignas(8) unsigned char frame[kFrameHeaderBytes] = {};
  size_t frame_len = 0;
  const void* data = nullptr;
  size_t bytes = 0;
  uint64_t tag = 0;
  std::shared_ptr<Mailbox> from;                        // who sent it (the real source)
  uint64_t send_id = 0;                                 // the sender's operation; 0 = raw bytes
  std::shared_ptr<std::vector<unsigned char>> owned;    // raw bytes: our copy
};

/// The part of an endpoint that other endpoints touch.
struct Mailbox {
  std::mutex mu;
  std::deque<Incoming> inbox;
  std::vector<uint64_t> returned;  // sends whose loans ended
  bool closed = false;
  std::string address;
};

struct Registry {
  std::mutex mu;
  std::unordered_map<std::string, std::weak_ptr<Mailbox>> by_address;
  uint64_t next = 1;
};

Registry& registry() {
  static Registry r;
  return r;
}

struct PostedRecv {
  uint32_t peer = kAnyPeer;  // peer index or any
  uint64_t tag = 0;
  void* buf = nullptr;
  size_t capacity = 0;
  void* user_ctx = nullptr;
};

struct PendingSend {
  void* user_ctx = nullptr;
  const void* buf = nullptr;
  size_t len = 0;
  uint64_t tag = 0;
  uint32_t peer_id = 0;
  uint32_t epoch = 0;
};

struct Loan {
  std::shared_ptr<Mailbox> from;
  uint64_t send_id = 0;
  std::shared_ptr<std::vector<unsigned char>> owned;
};

struct InprocPeer {
  uint32_t id = 0;
  std::shared_ptr<Mailbox> box;
};

/// Hands a loan back: the sender's send completes on its next progress().
void give_back(const std::shared_ptr<Mailbox>& from, uint64_t send_id) {
  if (!from || send_id == 0) return;
  std::lock_guard<std::mutex> lk(from->mu);
  if (!from->closed) from->returned.push_back(send_id);
}

struct InprocEndpoint : EndpointBase {
  std::shared_ptr<Mailbox> box = std::make_shared<Mailbox>();
  std::vector<InprocPeer> peers;
  std::unordered_map<uint32_t, uint32_t> peer_by_id;
  std::deque<PostedRecv> posted;
  std::deque<Incoming> unexpected;
  std::unordered_map<uint64_t, PendingSend> sends;
  std::unordered_map<uint64_t, Loan> loans;
  uint64_t next_send = 1, next_loan = 1;
  RegistrationCache cache;  // nothing to pin in one process; kept for the same accounting

  uint32_t inflight() const { return static_cast<uint32_t>(posted.size() + sends.size()); }

  void count_registration(const void* p, size_t n, void* mr) {
    if (n == 0) return;
    if (mr != nullptr || cache.find(p, n) != nullptr) {
      ++counters.registration_hits;
      return;
    }
    MemoryRegion r;
    r.begin = reinterpret_cast<uintptr_t>(p);
    r.end = r.begin + n;
    cache.insert(r);
    ++counters.registrations;
  }

  bool source_matches(const PostedRecv& r, const Incoming& m) const {
    return r.peer == kAnyPeer || peers[r.peer].box == m.from;
  }

  /// Offers `m` to posted receive `r`. True when `m` is finished with (delivered, or
  /// dropped); the receive is consumed only on delivery (*delivered).
  bool offer(const PostedRecv& r, Incoming& m, bool* delivered) {
    *delivered = false;
    FrameHeader h;
    const uint32_t want = r.peer == kAnyPeer ? kAnyPeer : peers[r.peer].id;
    auto known = [this](uint32_t id) { return peer_by_id.count(id) != 0; };
    bool ok = accept_frame(m.frame, m.frame_len, m.tag, want, known, &h);
    if (ok && (h.flags & kFrameFlagSplit) != 0) {
      drop(DropReason::kMalformed, m.tag, "split frame on the in-process transport");
      ok = false;
    }
    if (ok && h.bytes != m.bytes) {
      drop(DropReason::kSizeMismatch, m.tag,
           "frame says " + std::to_string(h.bytes) + " bytes, " + std::to_string(m.bytes) + " arrived");
      ok = false;
    }
    if (ok && m.bytes > r.capacity) {
      drop(DropReason::kTruncated, m.tag,
           "payload of " + std::to_string(m.bytes) + " bytes for a receive of " + std::to_string(r.capacity));
      ok = false;
    }
    if (!ok) {
      give_back(m.from, m.send_id);  // dropped: the sender's send is done with
      return true;
    }
    const uint64_t loan = next_loan++;
    loans.emplace(loan, Loan{m.from, m.send_id, std::move(m.owned)});
    complete_recv(r.user_ctx, const_cast<void*>(m.data), m.tag, m.bytes, h.sender, h.epoch, loan, JANUS_TRANSPORT_OK);
    *delivered = true;
    return true;
  }

  /// Matches an arrived message against the posted receives, in posting order.
  void arrive(Incoming m) {
    for (auto it = posted.begin(); it != posted.end(); ++it) {
      if (it->tag != m.tag || !source_matches(*it, m)) continue;
      bool delivered = false;
      offer(*it, m, &delivered);
      if (delivered) posted.erase(it);
      return;  // delivered or dropped; a dropped frame does not consume the receive
    }
    unexpected.push_back(std::move(m));
  }

  /// A new receive looks at messages that arrived before it, in arrival order.
  void match_unexpected() {
    PostedRecv& r = posted.back();
    for (auto it = unexpected.begin(); it != unexpected.end();) {
      if (it->tag != r.tag || !source_matches(r, *it)) {
        ++it;
        continue;
      }
      bool delivered = false;
      offer(r, *it, &delivered);
      it = unexpected.erase(it);
      if (delivered) {
        posted.pop_back();
        return;
      }
    }
  }

  void pump() {
    std::deque<Incoming> in;
    std::vector<uint64_t> back;
    {
      std::lock_guard<std::mutex> lk(box->mu);
      in.swap(box->inbox);
      back.swap(box->returned);
    }
    for (uint64_t id : back) {
      auto it = sends.find(id);
      if (it == sends.end()) continue;
      const PendingSend& s = it->second;
      complete_send(s.user_ctx, s.buf, s.tag, s.len, s.peer_id, s.epoch, JANUS_TRANSPORT_OK);
      sends.erase(it);
    }
    for (auto& m : in) arrive(std::move(m));
  }

  ~InprocEndpoint() {
    {
      std::lock_guard<std::mutex> lk(registry().mu);
      registry().by_address.erase(box->address);
    }
    std::deque<Incoming> in;
    {
      std::lock_guard<std::mutex> lk(box->mu);
      box->closed = true;
      in.swap(box->inbox);
    }
    // Everything we were lent goes back, so no sender waits forever on us.
    for (auto& m : in) give_back(m.from, m.send_id);
    for (auto& m : unexpected) give_back(m.from, m.send_id);
    for (auto& [id, l] : loans) give_back(l.from, l.send_id);
  }
};

InprocEndpoint* as_ep(void* p) { return static_cast<InprocEndpoint*>(p); }
using Common = CommonEntries<InprocEndpoint>;

int inproc_init() { return JANUS_TRANSPORT_OK; }

int inproc_listen(const janus_transport_config_v1_t* cfg, void** out) {
  if (cfg == nullptr || out == nullptr) return fail_thread(JANUS_TRANSPORT_INVALID, "null config or handle");
  auto e = std::make_unique<InprocEndpoint>();
  e->configure(*cfg, "inproc");
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lk(r.mu);
    e->box->address = "inproc://" + std::to_string(r.next++);
    r.by_address[e->box->address] = e->box;
  }
  *out = e.release();
  return JANUS_TRANSPORT_OK;
}

int inproc_address(void* p, void* buf, size_t* len) {
  InprocEndpoint* e = as_ep(p);
  const std::string& a = e->box->address;
  if (len == nullptr) return e->fail(JANUS_TRANSPORT_INVALID, "null length");
  const size_t need = a.size() + 1;
  if (*len < need || buf == nullptr) {
    *len = need;
    return e->fail(JANUS_TRANSPORT_INVALID, "address needs " + std::to_string(need) + " bytes");
  }
  std::memcpy(buf, a.c_str(), need);
  *len = need;
  return JANUS_TRANSPORT_OK;
}

int inproc_connect(void* p, const void* address, size_t len, uint32_t peer_id, janus_peer_t* peer) {
  InprocEndpoint* e = as_ep(p);
  if (address == nullptr || peer == nullptr || len == 0) return e->fail(JANUS_TRANSPORT_INVALID, "null address");
  if (peer_id == kAnyPeer) return e->fail(JANUS_TRANSPORT_INVALID, "peer id 0xFFFFFFFF is reserved");
  if (e->peer_by_id.count(peer_id) != 0)
    return e->fail(JANUS_TRANSPORT_INVALID, "peer id " + std::to_string(peer_id) + " is already connected");
  const char* s = static_cast<const char*>(address);
  const std::string a(s, strnlen(s, len));
  std::shared_ptr<Mailbox> box;
  {
    std::lock_guard<std::mutex> lk(registry().mu);
    auto it = registry().by_address.find(a);
    if (it != registry().by_address.end()) box = it->second.lock();
  }
  if (!box) return e->fail(JANUS_TRANSPORT_NOT_FOUND, "no in-process endpoint at '" + a + "'");
  *peer = static_cast<janus_peer_t>(e->peers.size());
  e->peers.push_back({peer_id, std::move(box)});
  e->peer_by_id[peer_id] = *peer;
  return JANUS_TRANSPORT_OK;
}

int inproc_reg_mr(void* p, void* buf, size_t len, void** mr) {
  InprocEndpoint* e = as_ep(p);
  if (buf == nullptr || len == 0 || mr == nullptr) return e->fail(JANUS_TRANSPORT_INVALID, "empty region");
  MemoryRegion r;
  r.begin = reinterpret_cast<uintptr_t>(buf);
  r.end = r.begin + len;
  r.explicit_ = true;
  *mr = e->cache.insert(r);
  ++e->counters.registrations;
  return JANUS_TRANSPORT_OK;
}

int inproc_dereg_mr(void* p, void* mr) {
  InprocEndpoint* e = as_ep(p);
  auto* r = static_cast<MemoryRegion*>(mr);
  if (r == nullptr || !e->cache.contains(r)) return e->fail(JANUS_TRANSPORT_NOT_FOUND, "no such memory region");
  e->cache.erase(r);
  return JANUS_TRANSPORT_OK;
}

/// Puts a message in the peer's inbox; false when the peer is closed.
bool deliver(const InprocPeer& to, Incoming m) {
  std::lock_guard<std::mutex> lk(to.box->mu);
  if (to.box->closed) return false;
  to.box->inbox.push_back(std::move(m));
  return true;
}

int inproc_isend(void* p, janus_peer_t peer, uint64_t tag, const void* buf, size_t len, void* mr, void* user_context) {
  InprocEndpoint* e = as_ep(p);
  if (int rc = e->check_post(e->peers.size(), peer, false, tag, buf, len); rc != JANUS_TRANSPORT_OK) return rc;
  if (e->inflight() >= e->max_inflight) return e->fail(JANUS_TRANSPORT_AGAIN, "max_inflight operations posted");
  e->count_registration(buf, len, mr);
  const uint64_t id = e->next_send++;
  Incoming m;
  e->encode_next_frame(tag, len, 0, m.frame);
  m.frame_len = kFrameHeaderBytes;
  m.data = buf;
  m.bytes = len;
  m.tag = tag;
  m.from = e->box;
  m.send_id = id;
  const InprocPeer& to = e->peers[peer];
  e->sends.emplace(id, PendingSend{user_context, buf, len, tag, to.id, e->epoch});
  ++e->counters.sends_posted;
  if (!deliver(to, std::move(m))) {
    e->sends.erase(id);
    e->complete_send(user_context, buf, tag, len, to.id, e->epoch, JANUS_TRANSPORT_UNAVAILABLE);
  }
  return JANUS_TRANSPORT_OK;
}

int inproc_irecv(void* p, janus_peer_t peer, uint64_t tag, void* buf, size_t capacity, void* mr, void* user_context) {
  InprocEndpoint* e = as_ep(p);
  if (int rc = e->check_target(e->peers.size(), peer, true, tag); rc != JANUS_TRANSPORT_OK) return rc;
  if (e->inflight() >= e->max_inflight) return e->fail(JANUS_TRANSPORT_AGAIN, "max_inflight operations posted");
  if (buf != nullptr) e->count_registration(buf, capacity, mr);
  e->posted.push_back({peer, tag, buf, capacity, user_context});
  ++e->counters.recvs_posted;
  e->match_unexpected();
  return JANUS_TRANSPORT_OK;
}

int inproc_progress(void* p, janus_transport_completion_v1_t* out, int max, int* n) {
  InprocEndpoint* e = as_ep(p);
  if (int rc = e->check_progress(out, max, n); rc != JANUS_TRANSPORT_OK) return rc;
  e->pump();
  return e->drain(out, max, n);
}

int inproc_release(void* p, uint64_t loan) {
  InprocEndpoint* e = as_ep(p);
  if (loan == 0) return JANUS_TRANSPORT_OK;
  auto it = e->loans.find(loan);
  if (it == e->loans.end()) return e->fail(JANUS_TRANSPORT_NOT_FOUND, "no loan " + std::to_string(loan));
  give_back(it->second.from, it->second.send_id);
  e->loans.erase(it);
  return JANUS_TRANSPORT_OK;
}

int inproc_inject_raw(void* p, janus_peer_t peer, uint64_t tag, const void* bytes, size_t len) {
  InprocEndpoint* e = as_ep(p);
  if (int rc = e->check_post(e->peers.size(), peer, false, tag, bytes, len, "bytes"); rc != JANUS_TRANSPORT_OK) return rc;
  // The same cut as on the wire: a frame's worth of bytes, then the payload.
  Incoming m;
  m.frame_len = std::min(len, kFrameHeaderBytes);
  if (m.frame_len != 0) std::memcpy(m.frame, bytes, m.frame_len);
  m.owned = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(bytes) + m.frame_len,
                                                          static_cast<const unsigned char*>(bytes) + len);
  m.data = m.owned->data();
  m.bytes = m.owned->size();
  m.tag = tag;
  m.from = e->box;
  if (!deliver(e->peers[peer], std::move(m)))
    return e->fail(JANUS_TRANSPORT_UNAVAILABLE, "peer endpoint is closed");
  return JANUS_TRANSPORT_OK;
}

}  // namespace
}  // namespace janus::transport

extern "C" {
const janus_transport_v1_t janus_transport_inproc_v1 = {
    "inproc",
    janus::transport::inproc_init,
    janus::transport::inproc_listen,
    janus::transport::inproc_address,
    janus::transport::inproc_connect,
    janus::transport::inproc_reg_mr,
    janus::transport::inproc_dereg_mr,
    janus::transport::inproc_isend,
    janus::transport::inproc_irecv,
    janus::transport::inproc_progress,
    janus::transport::inproc_release,
    janus::transport::Common::set_epoch,
    janus::transport::Common::get_counters,
    janus::transport::inproc_inject_raw,
    janus::transport::Common::last_error,
    janus::transport::Common::close,
};
}
