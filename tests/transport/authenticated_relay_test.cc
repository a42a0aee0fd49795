// The handshake in front of CAF: only peers that prove the secret are carried to the
// upstream port, and everything else is turned away without the upstream seeing a byte.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>

#include "transport/authenticated_relay.h"
#include "transport/framed_socket.h"
#include "transport/tcp_acceptor.h"

using namespace janus;

namespace {

// An upstream that echoes every byte and counts the connections it was handed.
struct EchoServer {
  std::atomic<int> accepted{0};
  uint16_t port = 0;
  std::unique_ptr<TcpAcceptor> acceptor;
  EchoServer() {
    auto fd = listen_tcp("127.0.0.1", 0, &port);
    REQUIRE(fd.ok());
    acceptor = std::make_unique<TcpAcceptor>(*fd, [this](int c) {
      ++accepted;
      char buf[65536];
      for (;;) {
        const ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n <= 0 || !write_all(c, buf, static_cast<size_t>(n))) return;
      }
    });
  }
};

std::string random_text(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Sends `bytes` through `fd` and reads as many back (the echo), or "" when it closes.
std::string round_trip(int fd, const std::string& bytes) {
  std::thread writer([&] { write_all(fd, bytes); });
  std::string back;
  char buf[65536];
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  while (back.size() < bytes.size()) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    back.append(buf, static_cast<size_t>(n));
  }
  writer.join();
  return back;
}

// Reads until the peer closes; returns what came (a REFUSED frame, or nothing).
std::string until_closed(int fd) {
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return got;
    got.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

TEST_CASE("a proven peer's bytes cross the relay unchanged, both ways") {
  EchoServer echo;
  auto relay = AuthenticatedRelay::start("127.0.0.1", 0, "127.0.0.1", echo.port, "janus-test-1", "s3cret");
  REQUIRE(relay.ok());
  auto dialer = AuthenticatedDialer::start("127.0.0.1", (*relay)->port(), "janus-test-1", "s3cret");
  REQUIRE(dialer.ok());
  for (uint64_t seed : {1u, 2u}) {
    auto fd = connect_tcp("127.0.0.1", (*dialer)->port());
    REQUIRE(fd.ok());
    const std::string bytes = random_text(3 << 20, seed);  // several MiB: many splice rounds
    CHECK(round_trip(*fd, bytes) == bytes);
    close(*fd);
  }
  CHECK(echo.accepted.load() == 2);
  CHECK((*dialer)->last_failure() == "");
}

TEST_CASE("a wrong secret, another protocol's proof, garbage and huge claims never reach the upstream") {
  EchoServer echo;
  AdmissionLimits limits;
  limits.handshake_s = 1;
  auto relay = AuthenticatedRelay::start("127.0.0.1", 0, "127.0.0.1", echo.port, "janus-test-1", "s3cret", limits);
  REQUIRE(relay.ok());
  // The wrong secret, and the right secret under another protocol's name.
  for (auto [protocol, secret] : {std::pair<const char*, const char*>{"janus-test-1", "wrong"}, {"janus-console-1", "s3cret"}}) {
    auto dialer = AuthenticatedDialer::start("127.0.0.1", (*relay)->port(), protocol, secret);
    REQUIRE(dialer.ok());
    auto fd = connect_tcp("127.0.0.1", (*dialer)->port());
    REQUIRE(fd.ok());
    CHECK(until_closed(*fd) == "");  // the dialer closes the local side
    close(*fd);
    const std::string why = (*dialer)->last_failure();
    if (std::string(protocol) == "janus-test-1") CHECK_MESSAGE(why.find("authentication failed: wrong secret") == 0, why);
    else CHECK_MESSAGE(why.find("does not speak janus-console-1") != std::string::npos, why);
  }
  // CAF's crash bytes, a 4 GiB claim, silence: each closed, none carried.
  for (const std::string& bytes : {std::string("\x01", 1) + std::string(31, '\0'), std::string("\xff\xff\xff\xff\x02", 5), std::string()}) {
    auto fd = connect_tcp("127.0.0.1", (*relay)->port());
    REQUIRE(fd.ok());
    if (!bytes.empty()) write_all(*fd, bytes);
    until_closed(*fd);
    close(*fd);
  }
  CHECK(echo.accepted.load() == 0);
  CHECK((*relay)->refused() >= 4);
  // And the right peer still gets through.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the one wrong secret costs no pause; be safe anyway
  auto good = AuthenticatedDialer::start("127.0.0.1", (*relay)->port(), "janus-test-1", "s3cret");
  REQUIRE(good.ok());
  auto fd = connect_tcp("127.0.0.1", (*good)->port());
  REQUIRE(fd.ok());
  CHECK(round_trip(*fd, "hello") == "hello");
  close(*fd);
  CHECK(echo.accepted.load() == 1);
}

TEST_CASE("the dialer carries its own process's connections only") {
  EchoServer echo;
  auto relay = AuthenticatedRelay::start("127.0.0.1", 0, "127.0.0.1", echo.port, "janus-test-1", "s3cret");
  REQUIRE(relay.ok());
  auto dialer = AuthenticatedDialer::start("127.0.0.1", (*relay)->port(), "janus-test-1", "s3cret");
  REQUIRE(dialer.ok());
  const uint16_t port = (*dialer)->port();
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Another local process borrowing the dialer as a tunnel: turned away.
    auto fd = connect_tcp("127.0.0.1", port);
    if (!fd.ok()) _exit(2);
    const std::string got = until_closed(*fd);
    _exit(got.find("this port carries its own process's connection only") != std::string::npos ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(echo.accepted.load() == 0);
  auto fd = connect_tcp("127.0.0.1", port);  // this process: carried
  REQUIRE(fd.ok());
  CHECK(round_trip(*fd, "ours") == "ours");
  close(*fd);
}
