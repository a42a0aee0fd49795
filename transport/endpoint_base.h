// What every transport endpoint keeps regardless of how it moves bytes: identity, epoch,
// counters, finished operations waiting for progress(), the last error, and the frame
// checks with their drop accounting. Internal to transport/ (the table is the interface).
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "transport/frame.h"
#include "transport/transport.h"

namespace janus::transport {

constexpr uint32_t kDefaultMaxInflight = 1024;  // janus_transport_config_v1_t::max_inflight 0

enum class DropReason { kTruncated, kMalformed, kSizeMismatch, kUnknownSender, kWrongEpoch };

const char* drop_reason_name(DropReason r);

/// The message of the last init/listen failure on this thread (last_error(NULL)).
std::string& thread_last_error();
int fail_thread(int code, std::string message);

struct EndpointBase {
  std::string who;  // "transport shm#3": names the endpoint in logs
  uint32_t self_id = 0;
  uint32_t epoch = 0;
  uint64_t seq = 0;
  uint32_t max_inflight = kDefaultMaxInflight;  // posted sends + receives
  janus_transport_counters_v1_t counters{};
  std::deque<Completion> done;
  std::string last_error;

  /// Takes the identity, epoch and limits of listen()'s config; `transport` names the table.
  void configure(const janus_transport_config_v1_t& cfg, const std::string& transport) {
    self_id = cfg.self_id;
    epoch = cfg.epoch;
    who = "transport " + transport + "#" + std::to_string(cfg.self_id);
    if (cfg.max_inflight != 0) max_inflight = cfg.max_inflight;
  }

  int fail(int code, std::string message) {
    last_error = std::move(message);
    return code;
  }

  /// The arguments of a post to `peer` under `tag`: a connected peer index below `peers`
  /// (or kAnyPeer where any_ok), a tag clear of the reserved bits. INVALID, said why, or OK.
  int check_target(size_t peers, Peer peer, bool any_ok, uint64_t tag) {
    if (!(peer < peers || (any_ok && peer == kAnyPeer)))
      return fail(JANUS_TRANSPORT_INVALID, "no peer index " + std::to_string(peer));
    if (tag >= kTagLimit) return fail(JANUS_TRANSPORT_INVALID, "tag uses the transport's reserved bits");
    return JANUS_TRANSPORT_OK;
  }

  /// check_target, and a buffer wherever there are bytes ("null <what>" otherwise).
  int check_post(size_t peers, Peer peer, bool any_ok, uint64_t tag, const void* buf, size_t len,
                 const char* what = "buffer") {
    if (int rc = check_target(peers, peer, any_ok, tag); rc != JANUS_TRANSPORT_OK) return rc;
    if (len != 0 && buf == nullptr) return fail(JANUS_TRANSPORT_INVALID, std::string("null ") + what);
    return JANUS_TRANSPORT_OK;
  }

  /// Writes the header frame of this endpoint's next message (its sender id, epoch and
  /// sequence number) to out, 8-byte aligned.
  void encode_next_frame(uint64_t tag, uint64_t bytes, uint16_t flags, void* out) {
    FrameHeader h;
    h.sender = self_id;
    h.epoch = epoch;
    h.tag = tag;
    h.bytes = bytes;
    h.seq = seq++;
    h.flags = flags;
    encode_frame(h, out);
  }

  /// progress()'s arguments: somewhere for the count, and for the completions when max > 0.
  int check_progress(const Completion* out, int max, const int* n) {
    if (n == nullptr || (max > 0 && out == nullptr)) return fail(JANUS_TRANSPORT_INVALID, "null output");
    return JANUS_TRANSPORT_OK;
  }

  /// Counts a dropped frame and logs it (the first ten of each reason, then one in a
  /// thousand, so a misbehaving peer cannot flood the log).
  void drop(DropReason reason, uint64_t tag, const std::string& why);

  /// The checks common to every frame that arrived under `match_tag` for a receive that
  /// wants `want_sender` (or kAnyPeer): the frame itself, the tag, the sender (is_known),
  /// the epoch. On failure: counted, logged, false. Payload size is the caller's to check.
  template <class IsKnown>
  bool accept_frame(const void* frame, size_t frame_len, uint64_t match_tag, uint32_t want_sender,
                    IsKnown&& is_known, FrameHeader* h) {
    std::string why;
    switch (decode_frame(frame, frame_len, h, &why)) {
      case FrameCheck::kOk: break;
      case FrameCheck::kTruncated: drop(DropReason::kTruncated, match_tag, why); return false;
      case FrameCheck::kMalformed: drop(DropReason::kMalformed, match_tag, why); return false;
    }
    if (h->tag != match_tag) {
      drop(DropReason::kMalformed, match_tag, "frame says tag " + std::to_string(h->tag));
      return false;
    }
    if (!is_known(h->sender) || (want_sender != kAnyPeer && h->sender != want_sender)) {
      drop(DropReason::kUnknownSender, match_tag,
           "sender " + std::to_string(h->sender) +
               (want_sender != kAnyPeer ? " (receive posted for " + std::to_string(want_sender) + ")" : ""));
      return false;
    }
    if (h->epoch != epoch) {
      drop(DropReason::kWrongEpoch, match_tag,
           "epoch " + std::to_string(h->epoch) + ", endpoint is in " + std::to_string(epoch));
      return false;
    }
    return true;
  }

  /// Moves up to `max` finished operations to out.
  int drain(Completion* out, int max, int* n) {
    int k = 0;
    while (k < max && !done.empty()) {
      out[k++] = done.front();
      done.pop_front();
    }
    *n = k;
    return JANUS_TRANSPORT_OK;
  }

  void complete_send(void* ctx, const void* buf, uint64_t tag, uint64_t bytes, uint32_t peer_id, uint32_t ep_epoch,
                     int result) {
    ++counters.sends_completed;
    if (result == JANUS_TRANSPORT_OK) counters.bytes_sent += bytes;
    complete(JANUS_TRANSPORT_OP_SEND, ctx, const_cast<void*>(buf), tag, bytes, 0, peer_id, ep_epoch, result);
  }

  void complete_recv(void* ctx, void* data, uint64_t tag, uint64_t bytes, uint32_t peer_id, uint32_t frame_epoch,
                     uint64_t loan, int result) {
    ++counters.recvs_completed;
    if (result == JANUS_TRANSPORT_OK) counters.bytes_received += bytes;
    complete(JANUS_TRANSPORT_OP_RECV, ctx, data, tag, bytes, loan, peer_id, frame_epoch, result);
  }

 private:
  void complete(int32_t op, void* ctx, void* data, uint64_t tag, uint64_t bytes, uint64_t loan, uint32_t peer_id,
                uint32_t ep_epoch, int result) {
    Completion c{};
    c.user_context = ctx;
    c.data = data;
    c.tag = tag;
    c.bytes = bytes;
    c.loan = loan;
    c.peer_id = peer_id;
    c.epoch = ep_epoch;
    c.op = op;
    c.result = result;
    done.push_back(c);
  }
};

/// The table functions that touch only what EndpointBase keeps, for the endpoint type E
/// (derived from EndpointBase) whose pointers the transport's listen() hands out.
template <class E>
struct CommonEntries {
  static int set_epoch(void* ep, uint32_t epoch) {
    static_cast<E*>(ep)->epoch = epoch;
    return JANUS_TRANSPORT_OK;
  }

  static int get_counters(void* ep, janus_transport_counters_v1_t* out) {
    if (out == nullptr) return JANUS_TRANSPORT_INVALID;
    *out = static_cast<E*>(ep)->counters;
    return JANUS_TRANSPORT_OK;
  }

  static const char* last_error(void* ep) {
    return ep == nullptr ? thread_last_error().c_str() : static_cast<E*>(ep)->last_error.c_str();
  }

  static int close(void* ep) {
    delete static_cast<E*>(ep);
    return JANUS_TRANSPORT_OK;
  }
};

}  // namespace janus::transport
