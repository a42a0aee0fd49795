// Scenarios that every transport must pass, written once and run on each: in the test
// process for inproc, in a forked child for the libfabric transports.
#pragma once

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "transport/frame.h"
#include "transport/transport.h"
#include "transport_test_util.h"

namespace janus::test {

using transport::Completion;
using transport::Endpoint;
using transport::EndpointConfig;
using transport::FrameHeader;
using transport::kAnyPeer;
using transport::kFrameHeaderBytes;

/// Two endpoints of one transport in this process, connected both ways.
struct LocalPair {
  std::unique_ptr<Endpoint> a, b;
  transport::Peer a_to_b = 0, b_to_a = 0;

  std::string open(const std::string& name, EndpointConfig ca = {}, EndpointConfig cb = {}) {
    ca.self_id = ca.self_id ? ca.self_id : 1;
    cb.self_id = cb.self_id ? cb.self_id : 2;
    auto ea = Endpoint::open(name, ca);
    TEST_OK(ea.status());
    auto eb = Endpoint::open(name, cb);
    TEST_OK(eb.status());
    a = std::move(*ea);
    b = std::move(*eb);
    auto addr_a = a->address();
    TEST_OK(addr_a.status());
    auto addr_b = b->address();
    TEST_OK(addr_b.status());
    auto p = a->connect(*addr_b, cb.self_id);
    TEST_OK(p.status());
    a_to_b = *p;
    p = b->connect(*addr_a, ca.self_id);
    TEST_OK(p.status());
    b_to_a = *p;
    return "";
  }

  /// Progresses both endpoints until `done()` or the timeout; completions are collected.
  template <class Done>
  bool pump(Done&& done, std::vector<Completion>* from_a, std::vector<Completion>* from_b, double timeout_s = 10) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    Completion c[16];
    for (int spin = 0;; ++spin) {
      if (done()) return true;
      auto na = a->poll(c, 16);
      if (na.ok()) from_a->insert(from_a->end(), c, c + *na);
      auto nb = b->poll(c, 16);
      if (nb.ok()) from_b->insert(from_b->end(), c, c + *nb);
      if (spin % 256 == 0 && std::chrono::steady_clock::now() > deadline) return done();
    }
  }
};

inline std::vector<char> frame_bytes(const FrameHeader& h, size_t payload, uint64_t seed) {
  std::vector<char> out(kFrameHeaderBytes + payload);
  alignas(8) unsigned char f[kFrameHeaderBytes];
  transport::encode_frame(h, f);
  std::memcpy(out.data(), f, kFrameHeaderBytes);
  fill_bytes(out.data() + kFrameHeaderBytes, payload, seed);
  return out;
}

/// Every kind of bad frame is dropped, counted under its reason and logged; the receive it
/// landed in stays posted and then gets the good message that follows.
inline std::string malformed_frames_scenario(const std::string& name) {
  LocalPair p;
  if (auto e = p.open(name); !e.empty()) return e;
  const uint64_t tag = 77;
  const size_t cap = 1000;
  std::vector<char> rbuf(cap + 64);
  int rctx = 0;
  TEST_OK(p.b->recv(kAnyPeer, tag, rbuf.data(), cap, &rctx));

  FrameHeader good;
  good.sender = 1;
  good.epoch = 0;
  good.tag = tag;
  good.bytes = 100;

  struct Case {
    const char* what;
    std::vector<char> bytes;
    uint64_t transport::Counters::*counter;
  };
  std::vector<Case> cases;
  {
    std::vector<char> shorter(10);
    fill_bytes(shorter.data(), shorter.size(), 1);
    cases.push_back({"shorter than a frame", shorter, &transport::Counters::dropped_truncated});
  }
  {
    std::vector<char> garbage(kFrameHeaderBytes + 16);
    fill_bytes(garbage.data(), garbage.size(), 2);
    cases.push_back({"random bytes", garbage, &transport::Counters::dropped_malformed});
  }
  {
    std::vector<char> zeros(kFrameHeaderBytes + 100, 0);  // a valid empty Cap'n Proto message, not ours
    cases.push_back({"all zero frame", zeros, &transport::Counters::dropped_malformed});
  }
  {
    auto f = frame_bytes(good, 100, 3);
    const uint32_t bad_magic = 0x12345678;
    std::memcpy(f.data() + 16, &bad_magic, 4);  // segment table, root pointer, then magic
    cases.push_back({"bad magic", f, &transport::Counters::dropped_malformed});
  }
  {
    std::vector<char> f = frame_bytes(good, 100, 4);
    uint32_t huge_segment[2] = {0, 1000};  // segment table claims more words than the frame has
    std::memcpy(f.data(), huge_segment, 8);
    cases.push_back({"segment table past the frame", f, &transport::Counters::dropped_malformed});
  }
  {
    FrameHeader h = good;
    h.tag = tag + 1;
    cases.push_back({"frame tag differs from message tag", frame_bytes(h, 100, 5), &transport::Counters::dropped_malformed});
  }
  {
    FrameHeader h = good;
    h.flags = 0x80;
    cases.push_back({"unknown flags", frame_bytes(h, 100, 6), &transport::Counters::dropped_malformed});
  }
  {
    FrameHeader h = good;
    h.bytes = 100;
    cases.push_back({"payload shorter than the frame says", frame_bytes(h, 50, 7),
                     &transport::Counters::dropped_size_mismatch});
    cases.push_back({"payload longer than the frame says", frame_bytes(h, 150, 8),
                     &transport::Counters::dropped_size_mismatch});
  }
  {
    FrameHeader h = good;
    h.sender = 999;
    cases.push_back({"unknown sender", frame_bytes(h, 100, 9), &transport::Counters::dropped_unknown_sender});
  }
  {
    FrameHeader h = good;
    h.epoch = 5;
    cases.push_back({"wrong epoch", frame_bytes(h, 100, 10), &transport::Counters::dropped_wrong_epoch});
  }
  {
    FrameHeader h = good;
    h.bytes = 1500;
    cases.push_back({"longer than the posted buffer", frame_bytes(h, 1500, 11), &transport::Counters::dropped_truncated});
    // Past every provider's copy-through limit (shm: CMA; tcp: SAR, rendezvous).
    h.bytes = 64 << 10;
    cases.push_back({"64 KiB for a 1000-byte buffer", frame_bytes(h, h.bytes, 12), &transport::Counters::dropped_truncated});
    h.bytes = 3 << 20;
    cases.push_back({"3 MiB for a 1000-byte buffer", frame_bytes(h, h.bytes, 13), &transport::Counters::dropped_truncated});
  }

  std::vector<Completion> ca, cb;
  for (const Case& c : cases) {
    const uint64_t before = p.b->counters().*c.counter;
    TEST_OK(p.a->inject_raw(p.a_to_b, tag, c.bytes.data(), c.bytes.size()));
    const bool counted = p.pump([&] { return p.b->counters().*c.counter == before + 1; }, &ca, &cb, 5);
    TEST_EXPECT(counted, std::string(c.what) + ": not counted as dropped");
    TEST_EXPECT(cb.empty(), std::string(c.what) + ": the bad frame completed a receive");
  }
  // The endpoint still works: the receive posted before the bad frames gets a good message.
  std::vector<char> payload(800);
  fill_bytes(payload.data(), payload.size(), 42);
  int sctx = 0;
  TEST_OK(p.a->send(p.a_to_b, tag, payload.data(), payload.size(), &sctx));
  const bool ok = p.pump([&] { return !cb.empty(); }, &ca, &cb, 10);
  TEST_EXPECT(ok, "the good message after the bad frames did not complete");
  TEST_EXPECT(cb.size() == 1 && cb[0].result == JANUS_TRANSPORT_OK, "receive failed");
  TEST_EXPECT(cb[0].user_context == &rctx && cb[0].bytes == payload.size() && cb[0].peer_id == 1, "wrong completion");
  TEST_EXPECT(check_bytes(cb[0].data, payload.size(), 42), "wrong payload bytes");
  TEST_OK(p.b->release(cb[0].loan));
  p.pump([&] { return !ca.empty(); }, &ca, &cb, 5);  // inproc: the send completes on release
  TEST_EXPECT(ca.size() == 1 && ca[0].user_context == &sctx && ca[0].result == JANUS_TRANSPORT_OK, "send did not complete");
  const auto k = p.b->counters();
  const uint64_t dropped = k.dropped_truncated + k.dropped_malformed + k.dropped_size_mismatch + k.dropped_unknown_sender +
                           k.dropped_wrong_epoch;
  TEST_EXPECT(dropped == cases.size(), "dropped " + std::to_string(dropped) + " of " + std::to_string(cases.size()));
  TEST_EXPECT(k.recvs_completed == 1, "recvs_completed " + std::to_string(k.recvs_completed));
  return "";
}

/// Epoch fencing: after set_epoch, frames of the old epoch are dropped and new ones pass.
inline std::string epoch_scenario(const std::string& name) {
  LocalPair p;
  if (auto e = p.open(name); !e.empty()) return e;
  std::vector<char> rbuf(4096), sbuf(4096);
  fill_bytes(sbuf.data(), sbuf.size(), 5);
  TEST_OK(p.b->set_epoch(3));
  TEST_OK(p.b->recv(kAnyPeer, 9, rbuf.data(), rbuf.size()));
  TEST_OK(p.a->send(p.a_to_b, 9, sbuf.data(), sbuf.size()));  // a is still in epoch 0
  std::vector<Completion> ca, cb;
  TEST_EXPECT(p.pump([&] { return p.b->counters().dropped_wrong_epoch == 1; }, &ca, &cb, 5), "old epoch not dropped");
  TEST_OK(p.a->set_epoch(3));
  TEST_OK(p.a->send(p.a_to_b, 9, sbuf.data(), sbuf.size()));
  TEST_EXPECT(p.pump([&] { return !cb.empty(); }, &ca, &cb, 5), "new epoch not delivered");
  TEST_EXPECT(cb[0].epoch == 3 && cb[0].bytes == sbuf.size() && check_bytes(cb[0].data, sbuf.size(), 5), "bad delivery");
  TEST_OK(p.b->release(cb[0].loan));
  return "";
}

}  // namespace janus::test
