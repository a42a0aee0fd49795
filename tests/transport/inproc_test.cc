// The in-process transport: zero copy (the sender's pointer arrives), loans, order,
// threads, and the frame checks every transport shares.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include "scenarios.h"

using namespace janus;
using namespace janus::test;

TEST_CASE("inproc: the receiver gets the sender's pointer, and the send completes on release") {
  LocalPair p;
  REQUIRE(p.open("inproc") == "");
  std::vector<char> payload(1 << 20);
  fill_bytes(payload.data(), payload.size(), 1);
  int sctx = 0, rctx = 0;
  REQUIRE(p.b->recv(kAnyPeer, 5, nullptr, payload.size(), &rctx).ok());
  REQUIRE(p.a->send(p.a_to_b, 5, payload.data(), payload.size(), &sctx).ok());
  std::vector<Completion> ca, cb;
  REQUIRE(p.pump([&] { return !cb.empty(); }, &ca, &cb, 5));
  CHECK(cb[0].data == payload.data());  // zero copy: the same bytes, not a copy of them
  CHECK(cb[0].loan != 0);
  CHECK(cb[0].bytes == payload.size());
  CHECK(cb[0].peer_id == 1);
  CHECK(cb[0].user_context == &rctx);
  CHECK(check_bytes(cb[0].data, cb[0].bytes, 1));
  // The loan holds the sender's buffer: no send completion yet.
  p.pump([] { return false; }, &ca, &cb, 0.01);
  CHECK(ca.empty());
  REQUIRE(p.b->release(cb[0].loan).ok());
  REQUIRE(p.pump([&] { return !ca.empty(); }, &ca, &cb, 5));
  CHECK(ca[0].user_context == &sctx);
  CHECK(ca[0].data == payload.data());
  CHECK(ca[0].result == JANUS_TRANSPORT_OK);
  CHECK(!p.b->release(cb[0].loan).ok());  // a loan ends once
}

TEST_CASE("inproc: same-tag messages match receives in order, early sends wait as unexpected") {
  LocalPair p;
  REQUIRE(p.open("inproc") == "");
  std::vector<std::vector<char>> bufs(8, std::vector<char>(100));
  for (int i = 0; i < 8; ++i) {
    fill_bytes(bufs[i].data(), 100, 100 + i);
    REQUIRE(p.a->send(p.a_to_b, 3, bufs[i].data(), 100).ok());
  }
  std::vector<Completion> ca, cb;
  p.pump([] { return false; }, &ca, &cb, 0.01);  // all arrive before any receive
  for (int i = 0; i < 8; ++i) REQUIRE(p.b->recv(p.b_to_a, 3, nullptr, 100).ok());
  REQUIRE(p.pump([&] { return cb.size() == 8; }, &ca, &cb, 5));
  for (int i = 0; i < 8; ++i) {
    CHECK(cb[i].data == bufs[i].data());
    REQUIRE(p.b->release(cb[i].loan).ok());
  }
  REQUIRE(p.pump([&] { return ca.size() == 8; }, &ca, &cb, 5));
}

TEST_CASE("inproc: endpoints on two threads") {
  LocalPair p;
  REQUIRE(p.open("inproc") == "");
  const int n = 2000;
  std::vector<std::vector<char>> bufs(64, std::vector<char>(256));
  std::atomic<bool> ok{true};
  std::thread receiver([&] {
    int got = 0;
    Completion c[16];
    for (int i = 0; i < 64; ++i) (void)p.b->recv(kAnyPeer, 1, nullptr, 256);
    while (got < n) {
      auto k = p.b->poll(c, 16);
      if (!k.ok()) {
        ok = false;
        return;
      }
      for (int j = 0; j < *k; ++j) {
        if (!check_bytes(c[j].data, 256, static_cast<uint64_t>(got))) ok = false;
        (void)p.b->release(c[j].loan);
        if (++got + 63 < n) (void)p.b->recv(kAnyPeer, 1, nullptr, 256);
      }
    }
  });
  int sent = 0, done = 0;
  std::vector<int> free_slots;
  for (int i = 0; i < 64; ++i) free_slots.push_back(i);
  Completion c[16];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (done < n && std::chrono::steady_clock::now() < deadline) {
    while (sent < n && !free_slots.empty()) {
      const int s = free_slots.back();
      free_slots.pop_back();
      fill_bytes(bufs[s].data(), 256, static_cast<uint64_t>(sent));
      REQUIRE(p.a->send(p.a_to_b, 1, bufs[s].data(), 256, reinterpret_cast<void*>(static_cast<intptr_t>(s))).ok());
      ++sent;
    }
    auto k = p.a->poll(c, 16);
    if (!k.ok()) break;
    for (int j = 0; j < *k; ++j) {
      free_slots.push_back(static_cast<int>(reinterpret_cast<intptr_t>(c[j].user_context)));
      ++done;
    }
  }
  receiver.join();
  CHECK(done == n);
  CHECK(sent == n);
  CHECK(ok.load());
}

TEST_CASE("inproc: every malformed frame is dropped and counted, the endpoint keeps working") {
  CHECK(malformed_frames_scenario("inproc") == "");
}

TEST_CASE("inproc: epoch fencing") { CHECK(epoch_scenario("inproc") == ""); }

TEST_CASE("inproc: argument errors are values") {
  LocalPair p;
  REQUIRE(p.open("inproc") == "");
  char b[8];
  CHECK(p.a->send(99, 1, b, 8).code() == ErrorCode::kInvalidArgument);               // no such peer
  CHECK(p.a->send(p.a_to_b, transport::kTagLimit, b, 8).code() == ErrorCode::kInvalidArgument);  // reserved bits
  CHECK(p.a->connect(std::vector<char>{'x', 0}, 7).status().code() == ErrorCode::kNotFound);
  auto addr = p.b->address();
  REQUIRE(addr.ok());
  CHECK(p.a->connect(*addr, 2).status().code() == ErrorCode::kInvalidArgument);  // id 2 already connected
  CHECK(!transport::Endpoint::open("nonesuch", {}).ok());
}

TEST_CASE("inproc: max_inflight bounds posted operations") {
  EndpointConfig c;
  c.max_inflight = 4;
  LocalPair p;
  REQUIRE(p.open("inproc", c, {}) == "");
  char b[8];
  for (int i = 0; i < 4; ++i) REQUIRE(p.a->recv(kAnyPeer, 1, b, 8).ok());
  CHECK(p.a->recv(kAnyPeer, 1, b, 8).code() == ErrorCode::kResourceExhausted);
}
