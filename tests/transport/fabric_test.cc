// The libfabric transports between two real processes (fork), and the frame checks on
// them. Every libfabric call happens in a child process (transport_test_util.h).
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>
#include <deque>
#include <filesystem>

#include "scenarios.h"
#include "test_util.h"

using namespace janus;
using namespace janus::test;

namespace {

struct SizeClass {
  size_t bytes;
  int messages;  // per direction
  int window;    // in flight per direction
};

// 8 B to 64 MiB; enough messages in flight to keep every queue busy, few enough that the
// whole binary stays fast on two cores.
const SizeClass kSizes[] = {
    {8, 2000, 64}, {4096, 2000, 64}, {4032, 200, 32}, {1u << 20, 64, 16}, {16u << 20, 12, 4}, {64u << 20, 2, 1},
};

uint64_t seed_of(int sender_role, size_t size_index, int i) {
  return (static_cast<uint64_t>(sender_role) << 56) ^ (static_cast<uint64_t>(size_index) << 40) ^ static_cast<uint64_t>(i);
}

/// One side of the two-process exchange: both sides send and receive at once, a window of
/// messages in flight per direction, every payload checked byte for byte.
std::string exchange_side(const std::string& name, const PipePair& pipes, int role) {
  EndpointConfig cfg;
  cfg.self_id = 10 + static_cast<uint32_t>(role);
  auto ep_or = Endpoint::open(name, cfg);
  TEST_OK(ep_or.status());
  Endpoint& ep = **ep_or;
  auto addr = ep.address();
  TEST_OK(addr.status());
  TEST_EXPECT(send_blob(pipes.write_fd(role), *addr), "address exchange");
  std::vector<char> peer_addr;
  TEST_EXPECT(recv_blob(pipes.read_fd(role), &peer_addr), "address exchange");
  auto peer = ep.connect(peer_addr, 10 + static_cast<uint32_t>(1 - role));
  TEST_OK(peer.status());

  // One send arena and one receive arena, registered once, for every size class.
  size_t arena = 0;
  for (const SizeClass& s : kSizes) arena = std::max(arena, s.bytes * static_cast<size_t>(s.window));
  std::unique_ptr<char[]> sendbuf(new char[arena]), recvbuf(new char[arena]);
  auto smr = ep.register_memory(sendbuf.get(), arena);
  TEST_OK(smr.status());
  auto rmr = ep.register_memory(recvbuf.get(), arena);
  TEST_OK(rmr.status());
  uint64_t posts = 0;

  for (size_t si = 0; si < std::size(kSizes); ++si) {
    const SizeClass& s = kSizes[si];
    const uint64_t tag_base = static_cast<uint64_t>(si) << 32;
    int sent = 0, send_done = 0, recv_posted = 0, recv_done = 0;
    // Message i uses slot i % window of each arena; completions may come out of order, so a
    // slot is reused only once the message before it there has completed.
    std::vector<char> send_busy(static_cast<size_t>(s.window), 0), recv_busy(static_cast<size_t>(s.window), 0);
    auto slot_of = [&](int i) { return static_cast<size_t>(i % s.window); };
    auto post_recvs = [&]() -> Status {
      while (recv_posted < s.messages && !recv_busy[slot_of(recv_posted)]) {
        const int i = recv_posted++;
        recv_busy[slot_of(i)] = 1;
        ++posts;
        // Receives name the message they want by tag: tag_base + i.
        JANUS_TRY(ep.recv(*peer, tag_base + static_cast<uint64_t>(i), recvbuf.get() + slot_of(i) * s.bytes, s.bytes,
                          reinterpret_cast<void*>(static_cast<intptr_t>(i))));
      }
      return Status::Ok();
    };
    auto post_sends = [&]() -> Status {
      while (sent < s.messages && !send_busy[slot_of(sent)]) {
        const int i = sent++;
        send_busy[slot_of(i)] = 1;
        char* b = sendbuf.get() + slot_of(i) * s.bytes;
        fill_bytes(b, s.bytes, seed_of(role, si, i));
        ++posts;
        JANUS_TRY(ep.send(*peer, tag_base + static_cast<uint64_t>(i), b, s.bytes,
                          reinterpret_cast<void*>(static_cast<intptr_t>(i))));
      }
      return Status::Ok();
    };
    TEST_OK(post_recvs());
    // Both receive windows are posted before anyone sends: no message is unexpected at start.
    TEST_EXPECT(barrier(pipes, role), "barrier");
    TEST_OK(post_sends());
    Completion c[32];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    int spins = 0;
    while (send_done < s.messages || recv_done < s.messages) {
      auto n = ep.poll(c, 32);
      TEST_OK(n.status());
      for (int k = 0; k < *n; ++k) {
        const Completion& x = c[k];
        const int i = static_cast<int>(reinterpret_cast<intptr_t>(x.user_context));
        TEST_EXPECT(x.result == JANUS_TRANSPORT_OK, "operation failed: " + std::to_string(x.result));
        if (x.op == JANUS_TRANSPORT_OP_SEND) {
          ++send_done;
          send_busy[slot_of(i)] = 0;
        } else {
          TEST_EXPECT(x.bytes == s.bytes, "received " + std::to_string(x.bytes) + " bytes");
          TEST_EXPECT(x.tag == tag_base + static_cast<uint64_t>(i), "tag");
          TEST_EXPECT(x.peer_id == 10 + static_cast<uint32_t>(1 - role), "peer id");
          TEST_EXPECT(x.data == recvbuf.get() + slot_of(i) * s.bytes, "data pointer");
          TEST_EXPECT(check_bytes(x.data, s.bytes, seed_of(1 - role, si, i)),
                      "payload of message " + std::to_string(i) + " (" + std::to_string(s.bytes) + " B) differs");
          ++recv_done;
          recv_busy[slot_of(i)] = 0;
        }
      }
      TEST_OK(post_recvs());
      TEST_OK(post_sends());
      if (++spins % 1024 == 0 && std::chrono::steady_clock::now() > deadline)
        return name + ": size " + std::to_string(s.bytes) + " timed out: sent " + std::to_string(send_done) +
               " received " + std::to_string(recv_done) + " of " + std::to_string(s.messages) + " (eagain " +
               std::to_string(ep.counters().eagain) + ", backlogged " + std::to_string(ep.counters().backlogged) +
               ", recvs posted " + std::to_string(recv_posted) + ")";
    }
    // Both sides are done with this size class before the next one's receives go up.
    TEST_EXPECT(barrier(pipes, role), "barrier");
  }
  const auto k = ep.counters();
  // Pools registered once: every post found its buffer in the registration cache.
  TEST_EXPECT(k.registrations == 2, "registrations " + std::to_string(k.registrations));
  TEST_EXPECT(k.registration_hits == posts, "registration hits " + std::to_string(k.registration_hits) + " of " +
                                                std::to_string(posts) + " posts");
  if (name == "shm") {
    // 4096-byte payloads go split (frame + payload) to stay under shm's inject limit.
    TEST_EXPECT(k.split_messages == 2000, "split messages " + std::to_string(k.split_messages));
  }
  TEST_EXPECT(k.dropped_truncated + k.dropped_malformed + k.dropped_size_mismatch + k.dropped_unknown_sender +
                      k.dropped_wrong_epoch == 0,
              "frames dropped in a clean exchange");
  // Nobody closes while the other may still be reading from it.
  TEST_EXPECT(barrier(pipes, role), "final barrier");
  return "";
}

std::string two_process_exchange(const std::string& name) {
  PipePair pipes;
  Child a = spawn([&] { return exchange_side(name, pipes, 0); }, 60);
  Child b = spawn([&] { return exchange_side(name, pipes, 1); }, 60);
  const std::string ra = join(a), rb = join(b);
  if (!ra.empty() || !rb.empty()) return "side 0: " + ra + " | side 1: " + rb;
  return "";
}

/// A buffer that was never registered is registered on first use, and only then.
std::string auto_registration_scenario(const std::string& name) {
  LocalPair p;
  if (auto e = p.open(name); !e.empty()) return e;
  std::vector<char> sbuf(64 << 10), rbuf(64 << 10);
  std::vector<Completion> ca, cb;
  for (int i = 0; i < 50; ++i) {
    fill_bytes(sbuf.data(), sbuf.size(), static_cast<uint64_t>(i));
    TEST_OK(p.b->recv(kAnyPeer, 1, rbuf.data(), rbuf.size()));
    TEST_OK(p.a->send(p.a_to_b, 1, sbuf.data(), sbuf.size()));
    ca.clear();
    cb.clear();
    TEST_EXPECT(p.pump([&] { return !ca.empty() && !cb.empty(); }, &ca, &cb, 10), "exchange timed out");
    TEST_EXPECT(check_bytes(rbuf.data(), rbuf.size(), static_cast<uint64_t>(i)), "payload differs");
  }
  TEST_EXPECT(p.a->counters().registrations == 1, "sender registered " + std::to_string(p.a->counters().registrations));
  TEST_EXPECT(p.b->counters().registrations == 1, "receiver registered " + std::to_string(p.b->counters().registrations));
  TEST_EXPECT(p.a->counters().registration_hits == 49, "sender hits");
  return "";
}

/// Bound to any address, advertising loopback: the address handed out is dialable.
std::string bind_any_scenario() {
  EndpointConfig ca, cb;
  ca.bind_host = "0.0.0.0";
  ca.advertise_host = "127.0.0.1";
  LocalPair p;
  if (auto e = p.open("tcp", ca, cb); !e.empty()) return e;
  auto addr = p.a->address();
  TEST_OK(addr.status());
  TEST_EXPECT(addr->size() == sizeof(sockaddr_in), "address size");
  sockaddr_in sin;
  std::memcpy(&sin, addr->data(), sizeof sin);
  TEST_EXPECT(sin.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "advertised address is not 127.0.0.1");
  auto baddr = p.b->address();
  TEST_OK(baddr.status());
  std::memcpy(&sin, baddr->data(), sizeof sin);
  TEST_EXPECT(sin.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "default bind is not loopback");
  std::vector<char> sbuf(100000), rbuf(100000);
  fill_bytes(sbuf.data(), sbuf.size(), 9);
  TEST_OK(p.a->recv(kAnyPeer, 4, rbuf.data(), rbuf.size()));
  TEST_OK(p.b->send(p.b_to_a, 4, sbuf.data(), sbuf.size()));
  std::vector<Completion> x, y;
  TEST_EXPECT(p.pump([&] { return !x.empty() && !y.empty(); }, &x, &y, 10), "exchange timed out");
  TEST_EXPECT(check_bytes(rbuf.data(), rbuf.size(), 9), "payload differs");
  return "";
}

}  // namespace

TEST_CASE("shm: two processes exchange 8 B to 64 MiB, many in flight, contents checked") {
  CHECK(two_process_exchange("shm") == "");
}

TEST_CASE("tcp (ofi_rxm): two processes exchange 8 B to 64 MiB, many in flight, contents checked") {
  CHECK(two_process_exchange("tcp") == "");
}

TEST_CASE("shm: every malformed frame is dropped and counted, the endpoint keeps working") {
  CHECK(run_in_child([] { return malformed_frames_scenario("shm"); }) == "");
}

TEST_CASE("tcp (ofi_rxm): every malformed frame is dropped and counted, the endpoint keeps working") {
  CHECK(run_in_child([] { return malformed_frames_scenario("tcp"); }) == "");
}

TEST_CASE("shm and tcp: epoch fencing") {
  CHECK(run_in_child([] { return epoch_scenario("shm"); }) == "");
  CHECK(run_in_child([] { return epoch_scenario("tcp"); }) == "");
}

TEST_CASE("shm and tcp: unregistered buffers are registered once, on first use") {
  CHECK(run_in_child([] { return auto_registration_scenario("shm"); }) == "");
  CHECK(run_in_child([] { return auto_registration_scenario("tcp"); }) == "");
}

TEST_CASE("tcp: binds loopback by default, any address when told") { CHECK(run_in_child(bind_any_scenario) == ""); }

TEST_CASE("verbs: without an RDMA device, opening says so") {
  CHECK(run_in_child([]() -> std::string {
          auto ep = Endpoint::open("verbs", {});
          if (ep.ok()) return "";  // a host with an RDMA NIC: nothing to check here
          TEST_EXPECT(ep.status().code() == ErrorCode::kUnavailable, ep.status().to_string());
          TEST_EXPECT(ep.status().message().find("verbs") != std::string::npos, ep.status().to_string());
          return "";
        }) == "");
}

TEST_CASE("shm: what a killed process left in /dev/shm neither blocks nor outlives a new endpoint") {
  // A pid that no longer exists: a child that has exited and been reaped.
  const pid_t gone = fork();
  if (gone == 0) _exit(0);
  REQUIRE(gone > 0);
  waitpid(gone, nullptr, 0);
  const std::string stale = "/dev/shm/janus-" + std::to_string(gone) + "-5eed:0:" + std::to_string(gone) + ":0";
  write_file(stale, "a region whose process was killed");
  REQUIRE(std::filesystem::exists(stale));
  auto regions_of = [](pid_t pid) {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm"))
      if (e.path().filename().string().rfind("janus-" + std::to_string(pid) + "-", 0) == 0) ++n;
    return n;
  };
  // The child opens and closes an endpoint and says its pid; its region is gone after.
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  CHECK(run_in_child([&] {
          const pid_t me = getpid();
          if (write(pipefd[1], &me, sizeof me) != sizeof me) return std::string("pipe");
          transport::EndpointConfig ec;
          ec.self_id = 1;
          auto ep = transport::Endpoint::open("shm", ec);
          if (!ep.ok()) return ep.status().to_string();
          if (regions_of(me) != 1) return "expected one region named after this process, found " + std::to_string(regions_of(me));
          ep->reset();
          return regions_of(me) == 0 ? std::string() : std::string("a closed endpoint left its region");
        }) == "");
  pid_t child = 0;
  REQUIRE(read(pipefd[0], &child, sizeof child) == sizeof child);
  close(pipefd[0]);
  close(pipefd[1]);
  CHECK(!std::filesystem::exists(stale));
  CHECK(regions_of(child) == 0);
}

namespace {

/// Three processes: `sender` floods `silent`, which never takes a message, until sends to
/// it queue up in the backlog; then one message to `receiver` must still go out and
/// arrive. The backlog was one queue for every peer, so a node that stopped receiving
/// (killed with its queue full) held back every later send of its peers' endpoints: the
/// multi-node deployment stalled after recovering from an attention node's loss.
std::string stalled_peer_scenario(const std::string& name) {
  PipePair to_silent, to_receiver;
  Child silent = spawn([&]() -> std::string {
    EndpointConfig cfg;
    cfg.self_id = 21;
    auto ep = Endpoint::open(name, cfg);
    TEST_OK(ep.status());
    auto addr = (*ep)->address();
    TEST_OK(addr.status());
    TEST_EXPECT(send_blob(to_silent.write_fd(1), *addr), "address");
    TEST_EXPECT(barrier(to_silent, 1), "barrier");  // held open, never polled, until the sender is done
    return "";
  });
  Child receiver = spawn([&]() -> std::string {
    EndpointConfig cfg;
    cfg.self_id = 22;
    auto ep_or = Endpoint::open(name, cfg);
    TEST_OK(ep_or.status());
    Endpoint& ep = **ep_or;
    auto addr = ep.address();
    TEST_OK(addr.status());
    TEST_EXPECT(send_blob(to_receiver.write_fd(1), *addr), "address");
    std::vector<char> sender_addr;
    TEST_EXPECT(recv_blob(to_receiver.read_fd(1), &sender_addr), "address");
    auto sender = ep.connect(sender_addr, 20);
    TEST_OK(sender.status());
    char buf[64] = {};
    TEST_OK(ep.recv(*sender, 7, buf, sizeof buf, nullptr));
    std::vector<Completion> done;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (done.empty() && std::chrono::steady_clock::now() < deadline) (void)ep.wait(done, 1, 0.1);
    TEST_EXPECT(!done.empty(), "the message sent after the flood never arrived");
    TEST_EXPECT(done[0].result == JANUS_TRANSPORT_OK && std::string(buf) == "after the flood", "wrong message");
    return "";
  });
  Child sender = spawn([&]() -> std::string {
    EndpointConfig cfg;
    cfg.self_id = 20;
    cfg.max_inflight = 1 << 16;
    auto ep_or = Endpoint::open(name, cfg);
    TEST_OK(ep_or.status());
    Endpoint& ep = **ep_or;
    std::vector<char> a, b;
    TEST_EXPECT(recv_blob(to_silent.read_fd(0), &a), "address");
    TEST_EXPECT(recv_blob(to_receiver.read_fd(0), &b), "address");
    auto mine = ep.address();
    TEST_OK(mine.status());
    TEST_EXPECT(send_blob(to_receiver.write_fd(0), *mine), "address");
    auto silent_peer = ep.connect(a, 21);
    TEST_OK(silent_peer.status());
    auto receiver_peer = ep.connect(b, 22);
    TEST_OK(receiver_peer.status());
    static char flood[256];
    int posted = 0;
    for (; posted < 50000 && ep.counters().backlogged == 0; ++posted) {
      TEST_OK(ep.send(*silent_peer, 1, flood, sizeof flood, nullptr));
      Completion c[64];
      TEST_OK(ep.poll(c, 64).status());
    }
    TEST_EXPECT(ep.counters().backlogged > 0, "the silent peer took " + std::to_string(posted) + " messages without back-pressure");
    static char msg[64] = "after the flood";
    int tag_of_marker = 0;
    TEST_OK(ep.send(*receiver_peer, 7, msg, sizeof msg, &tag_of_marker));
    bool sent = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!sent && std::chrono::steady_clock::now() < deadline) {
      Completion c[64];
      auto n = ep.poll(c, 64);
      TEST_OK(n.status());
      for (int i = 0; i < *n; ++i) sent |= c[i].user_context == &tag_of_marker;
    }
    TEST_EXPECT(sent, "the send to the live peer waited behind the silent peer's backlog");
    return "";
  });
  std::string r = join(sender);
  barrier(to_silent, 0);
  const std::string rr = join(receiver), rs = join(silent);
  return r + rr + rs;
}

}  // namespace

TEST_CASE("shm and tcp: a peer that stops receiving holds back no send to the others") {
  CHECK(run_in_child([] { return stalled_peer_scenario("shm"); }, 60) == "");
  CHECK(run_in_child([] { return stalled_peer_scenario("tcp"); }, 60) == "");
}
