#include "runtime/console/console_remote.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "runtime/base/log.h"
#include "runtime/base/secret.h"
#include "runtime/console/console_wire.h"

namespace janus {

namespace wire = console_wire;
using Clock = std::chrono::steady_clock;

namespace {

// Writes all of `data`; false when the peer is gone.
bool write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// The next frame from `fd`, waiting until `deadline`; an error on a timeout, a closed
// peer or bytes that are not this protocol.
Result<wire::Frame> read_frame(int fd, wire::FrameReader& reader, Clock::time_point deadline, const std::atomic<bool>* stop) {
  for (;;) {
    if (auto f = reader.next()) return std::move(*f);
    if (stop && stop->load()) return unavailable("the console server is shutting down");
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return unavailable("timed out");
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 200)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return unavailable(std::string("poll: ") + std::strerror(errno));
    if (r == 0) continue;
    char buf[16384];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return unavailable("the peer closed the connection");
    JANUS_TRY(reader.feed(buf, static_cast<size_t>(n)));
  }
}

std::string peer_address(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (a.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, host, sizeof host);
  if (a.ss_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, host, sizeof host);
  return host;
}

bool is_loopback_host(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

}  // namespace

std::string random_secret() { return to_hex(random_bytes(16)); }

// -- the server ----------------------------------------------------------------------------

struct ConsoleServer::Impl {
  ConsoleEngine* engine = nullptr;
  std::string secret;
  ConsoleServerLimits limits;
  int listen_fd = -1;
  uint16_t port = 0;
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> refused{0};
  std::thread acceptor;

  struct Connection {
    int fd = -1;
    std::string address;
    bool authenticated = false;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  struct Address {
    int failures = 0;
    Clock::time_point blocked_until{};
    int unauthenticated = 0;
  };
  std::mutex mu;  // guards connections and addresses
  std::list<Connection> connections;
  std::map<std::string, Address> addresses;

  void accept_loop();
  void serve(Connection& c);
  bool authenticate(Connection& c, wire::FrameReader& reader);
  void reap_finished();
};

void ConsoleServer::Impl::reap_finished() {
  std::lock_guard<std::mutex> lk(mu);
  for (auto it = connections.begin(); it != connections.end();) {
    if (it->done.load()) {
      it->thread.join();
      it = connections.erase(it);
    } else {
      ++it;
    }
  }
}

void ConsoleServer::Impl::accept_loop() {
  while (!stopping.load()) {
    reap_finished();
    pollfd p{listen_fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    sockaddr_storage from{};
    socklen_t len = sizeof from;
    const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&from), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors: back off instead of spinning on a listener that stays readable.
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    const std::string address = peer_address(from);
    std::lock_guard<std::mutex> lk(mu);
    Address& a = addresses[address];
    std::string refuse;
    if (Clock::now() < a.blocked_until) {
      const double wait = std::chrono::duration<double>(a.blocked_until - Clock::now()).count();
      refuse = "too many failed attempts from " + address + ": try again in " + std::to_string(static_cast<int>(wait + 1)) + " s";
    } else if (a.unauthenticated >= limits.unauthenticated_per_address) {
      refuse = "too many connections from " + address + " still authenticating";
    } else if (static_cast<int>(connections.size()) >= limits.max_connections) {
      refuse = "too many console connections";
    }
    if (!refuse.empty()) {
      // A short REFUSED frame, then close: the descriptor is never held for an unknown peer.
      write_all(fd, wire::encode(wire::FrameType::kRefused, refuse));
      ::close(fd);
      continue;
    }
    ++a.unauthenticated;
    Connection& c = connections.emplace_back();
    c.fd = fd;
    c.address = address;
    c.thread = std::thread([this, &c] {
      serve(c);
      std::lock_guard<std::mutex> g(mu);
      if (!c.authenticated) --addresses[c.address].unauthenticated;
      ::close(c.fd);
      c.done.store(true);
    });
  }
}

bool ConsoleServer::Impl::authenticate(Connection& c, wire::FrameReader& reader) {
  const std::string nonce = random_bytes(32);
  if (!write_all(c.fd, wire::encode(wire::FrameType::kHello, wire::FieldWriter().str(wire::kProtocol).str(nonce).take()))) return false;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(limits.handshake_s));
  auto f = read_frame(c.fd, reader, deadline, &stopping);
  bool guessed = false, proven = false;
  if (f.ok() && f->type == wire::FrameType::kAuth) {
    wire::FieldReader in(f->payload);
    auto proof = in.str();
    guessed = proof.ok() && in.done().ok();
    proven = guessed && equal_constant_time(*proof, wire::auth_proof(secret, nonce));
  }
  std::lock_guard<std::mutex> lk(mu);
  Address& a = addresses[c.address];
  if (proven) {
    a.failures = 0;
    --a.unauthenticated;
    c.authenticated = true;
    return write_all(c.fd, wire::encode(wire::FrameType::kWelcome));
  }
  const uint64_t n = ++refused;
  if (!guessed) {
    // Garbage or silence guesses nothing: the connection is closed, and the per-address
    // cap and the handshake timeout bound what it holds. Counting it as a failure would
    // let anyone on a shared address (loopback) lock the real console out.
    if (n % 100 == 1) log_warn("console", "dropped " + c.address + ": " + (f.ok() ? "not a console handshake" : f.status().message()));
    return false;
  }
  // A wrong secret: from the second in a row each costs the address a doubling pause (a
  // mistyped secret is retried at once), so guessing runs at a few tries a minute instead
  // of thousands a second.
  ++a.failures;
  const double pause =
      a.failures < 2 ? 0 : std::min(limits.max_backoff_s, limits.first_backoff_s * static_cast<double>(1u << std::min(a.failures - 2, 20)));
  a.blocked_until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(pause));
  // One log line for the first wrong secret from an address and then every 100th refusal.
  if (a.failures == 1 || n % 100 == 0)
    log_warn("console", "refused " + c.address + " (wrong secret); " + std::to_string(n) + " refused so far");
  write_all(c.fd, wire::encode(wire::FrameType::kRefused, "authentication failed: wrong secret for this deployment"));
  return false;
}

void ConsoleServer::Impl::serve(Connection& c) {
  wire::FrameReader reader;
  if (!authenticate(c, reader)) return;
  for (;;) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(limits.idle_s));
    auto f = read_frame(c.fd, reader, deadline, &stopping);
    if (!f.ok()) return;
    wire::FieldReader in(f->payload);
    wire::Reply out;
    if (f->type == wire::FrameType::kEval) {
      auto json = in.u8();
      auto code = in.str();
      if (!json.ok() || !code.ok() || !in.done().ok()) return;
      ConsoleOutput o = engine->eval(*code, *json != 0);
      out.ok = o.ok;
      out.text = o.text;
      out.error = o.error;
      out.watch = o.watch;
    } else if (f->type == wire::FrameType::kComplete) {
      auto prefix = in.str();
      if (!prefix.ok() || !in.done().ok()) return;
      out.completions = engine->complete(*prefix);
    } else if (f->type == wire::FrameType::kWatch) {
      if (!in.done().ok()) return;
      out.text = engine->watch_frame();
    } else {
      return;  // not a request: the peer is not our client
    }
    if (!write_all(c.fd, wire::encode(wire::FrameType::kReply, wire::encode_reply(out)))) return;
  }
}

ConsoleServer::ConsoleServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ConsoleServer::~ConsoleServer() {
  impl_->stopping.store(true);
  impl_->engine->interrupt();  // a command still running ends at its next Lua instruction
  if (impl_->acceptor.joinable()) impl_->acceptor.join();
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    for (Impl::Connection& c : impl_->connections)
      if (!c.done.load()) ::shutdown(c.fd, SHUT_RDWR);
  }
  for (Impl::Connection& c : impl_->connections) c.thread.join();
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
}

uint16_t ConsoleServer::port() const { return impl_->port; }
uint64_t ConsoleServer::refused() const { return impl_->refused.load(); }

Result<std::unique_ptr<ConsoleServer>> ConsoleServer::start(ConsoleEngine& engine, const std::string& host, uint16_t port,
                                                             const std::string& secret, ConsoleServerLimits limits) {
  if (secret.empty()) return invalid_argument("the console needs a non-empty secret");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0)
    return unavailable("console: cannot listen on " + host + ":" + std::to_string(port) + ": " + gai_strerror(rc));
  auto impl = std::make_unique<Impl>();
  impl->engine = &engine;
  impl->secret = secret;
  impl->limits = limits;
  std::string why = "no address";
  for (addrinfo* ai = res; ai != nullptr && impl->listen_fd < 0; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 64) == 0) {
      impl->listen_fd = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(res);
  if (impl->listen_fd < 0) return unavailable("console: cannot listen on " + host + ":" + std::to_string(port) + ": " + why);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(impl->listen_fd, reinterpret_cast<sockaddr*>(&bound), &len);
  impl->port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(bound).sin6_port
                                                 : reinterpret_cast<sockaddr_in&>(bound).sin_port);
  Impl* raw = impl.get();
  impl->acceptor = std::thread([raw] { raw->accept_loop(); });
  return std::unique_ptr<ConsoleServer>(new ConsoleServer(std::move(impl)));
}

Status check_console_listen(const std::string& host, bool secret_given) {
  if (!is_loopback_host(host) && !secret_given)
    return invalid_argument("console: listening on " + host +
                            ", beyond this machine, needs a secret chosen by you (--secret-file FILE or $JANUS_SECRET)");
  return Status::Ok();
}

// -- the client ----------------------------------------------------------------------------

struct ConsoleClient::Impl {
  int fd = -1;
  wire::FrameReader reader;
  std::mutex mu;  // one request at a time on the connection

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }

  wire::Reply call(wire::FrameType type, const std::string& payload) {
    std::lock_guard<std::mutex> lk(mu);
    wire::Reply out;
    out.ok = false;
    if (!write_all(fd, wire::encode(type, payload))) {
      out.error = "the deployment closed the console connection";
      return out;
    }
    // Commands such as generate or step(n) take as long as the deployment needs.
    auto f = read_frame(fd, reader, Clock::now() + std::chrono::minutes(10), nullptr);
    if (!f.ok()) {
      out.error = "the deployment did not answer: " + f.status().message();
      return out;
    }
    auto r = f->type == wire::FrameType::kReply ? wire::decode_reply(f->payload) : Result<wire::Reply>(invalid_argument("not a reply"));
    if (!r.ok()) {
      out.error = "the deployment answered something else: " + r.status().message();
      return out;
    }
    return *r;
  }
};

ConsoleClient::ConsoleClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConsoleClient::~ConsoleClient() = default;

Result<std::unique_ptr<ConsoleClient>> ConsoleClient::connect(const std::string& host, uint16_t port, const std::string& secret) {
  const std::string where = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0)
    return unavailable("console: cannot connect to " + where + ": " + gai_strerror(rc));
  auto impl = std::make_unique<Impl>();
  std::string why = "no address";
  for (addrinfo* ai = res; ai != nullptr && impl->fd < 0; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      impl->fd = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(res);
  if (impl->fd < 0) return unavailable("console: cannot connect to " + where + ": " + why);
  const int one = 1;
  ::setsockopt(impl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  const auto deadline = Clock::now() + std::chrono::seconds(10);
  auto hello = read_frame(impl->fd, impl->reader, deadline, nullptr);
  if (!hello.ok()) return unavailable("console: " + where + " did not greet us: " + hello.status().message());
  if (hello->type == wire::FrameType::kRefused) return unavailable("console: " + where + " refused us: " + hello->payload);
  wire::FieldReader in(hello->payload);
  auto protocol = in.str();
  auto nonce = in.str();
  if (hello->type != wire::FrameType::kHello || !protocol.ok() || !nonce.ok() || *protocol != wire::kProtocol)
    return unavailable("console: " + where + " does not speak " + wire::kProtocol);
  if (!write_all(impl->fd, wire::encode(wire::FrameType::kAuth, wire::FieldWriter().str(wire::auth_proof(secret, *nonce)).take())))
    return unavailable("console: " + where + " closed the connection");
  auto answer = read_frame(impl->fd, impl->reader, deadline, nullptr);
  if (!answer.ok()) return unavailable("console: " + where + " did not answer our proof: " + answer.status().message());
  if (answer->type == wire::FrameType::kRefused) return unavailable("console: " + where + " refused us: " + answer->payload);
  if (answer->type != wire::FrameType::kWelcome) return unavailable("console: " + where + " answered with an unexpected frame");
  return std::unique_ptr<ConsoleClient>(new ConsoleClient(std::move(impl)));
}

ConsoleHooks ConsoleClient::hooks() {
  Impl* impl = impl_.get();
  ConsoleHooks h;
  h.eval = [impl](const std::string& code, bool json) {
    wire::Reply rep = impl->call(wire::FrameType::kEval, wire::FieldWriter().u8(json ? 1 : 0).str(code).take());
    ConsoleOutput o;
    o.ok = rep.ok;
    o.text = rep.text;
    o.error = rep.error;
    o.watch = rep.watch;
    return o;
  };
  h.watch_frame = [impl] {
    wire::Reply rep = impl->call(wire::FrameType::kWatch, "");
    return rep.ok ? rep.text : "error: " + rep.error + "\n";
  };
  h.complete = [impl](const std::string& prefix) { return impl->call(wire::FrameType::kComplete, wire::FieldWriter().str(prefix).take()).completions; };
  return h;
}

}  // namespace janus
