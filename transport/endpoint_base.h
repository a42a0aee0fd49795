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
  janus_transport_counters_v1_t counters{};
  std::deque<Completion> done;
  std::string last_error;

  int fail(int code, std::string message) {
    last_error = std::move(message);
    return code;
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
    Completion c{};
    c.user_context = ctx;
    c.data = const_cast<void*>(buf);
    c.tag = tag;
    c.bytes = bytes;
    c.peer_id = peer_id;
    c.epoch = ep_epoch;
    c.op = JANUS_TRANSPORT_OP_SEND;
    c.result = result;
    ++counters.sends_completed;
    if (result == JANUS_TRANSPORT_OK) counters.bytes_sent += bytes;
    done.push_back(c);
  }

  void complete_recv(void* ctx, void* data, uint64_t tag, uint64_t bytes, uint32_t peer_id, uint32_t frame_epoch,
                     uint64_t loan, int result) {
    Completion c{};
    c.user_context = ctx;
    c.data = data;
    c.tag = tag;
    c.bytes = bytes;
    c.loan = loan;
    c.peer_id = peer_id;
    c.epoch = frame_epoch;
    c.op = JANUS_TRANSPORT_OP_RECV;
    c.result = result;
    ++counters.recvs_completed;
    if (result == JANUS_TRANSPORT_OK) counters.bytes_received += bytes;
    done.push_back(c);
  }
};

}  // namespace janus::transport
