#include "transport/authenticated_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <list>
#include <mutex>
#include <sstream>
#include <thread>

#include "runtime/base/log.h"
#include "transport/tcp_acceptor.h"

namespace janus {

namespace {

// Copies bytes both ways until either side closes or `stop` is set.
void splice(int a, int b, const std::atomic<bool>& stop) {
  pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  char buf[65536];
  while (!stop.load()) {
    const int r = ::poll(p, 2, 200);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return;
    for (int i = 0; i < 2; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::recv(p[i].fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || !write_all(p[1 - i].fd, buf, static_cast<size_t>(n))) return;
    }
  }
}

// True when the peer of an accepted loopback connection is a socket of this very process:
// the dialer carries its own CAF's connection and nobody else's, so another local user
// cannot borrow it as an authenticated tunnel to the coordinator.
bool from_this_process(int fd) {
  sockaddr_in peer{}, self{};
  socklen_t len = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0 || peer.sin_family != AF_INET) return false;
  len = sizeof self;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len) != 0) return false;
  // The peer's socket is the /proc/net/tcp row whose local end is the peer's port and whose
  // remote end is our listening port; its inode must be one of our descriptors.
  std::ifstream tcp("/proc/net/tcp");
  std::string line, inode;
  std::getline(tcp, line);  // header
  char want_local[16], want_remote[16];
  std::snprintf(want_local, sizeof want_local, ":%04X", ntohs(peer.sin_port));
  std::snprintf(want_remote, sizeof want_remote, ":%04X", ntohs(self.sin_port));
  while (std::getline(tcp, line)) {
    std::istringstream in(line);
    std::string sl, local, remote, st, queues, timer, retr, uid, timeout;
    in >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode;
    if (local.size() > 5 && remote.size() > 5 && local.compare(local.size() - 5, 5, want_local) == 0 &&
        remote.compare(remote.size() - 5, 5, want_remote) == 0)
      break;
    inode.clear();
  }
  if (inode.empty() || inode == "0") return false;
  const std::string target = "socket:[" + inode + "]";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code rc;
    if (std::filesystem::read_symlink(e.path(), rc).string() == target) return true;
  }
  return false;
}

}  // namespace

// -- the server side ----------------------------------------------------------------------

struct AuthenticatedRelay::Impl {
  std::string upstream_host, protocol, secret;
  uint16_t upstream_port = 0, port = 0;
  PeerAdmission admission{AdmissionLimits{}};
  std::unique_ptr<TcpAcceptor> threads;

  explicit Impl(AdmissionLimits limits) : admission(limits) {}

  void serve(int fd) {
    FrameReader reader(kHandshakeFrames, kHandshakeMaxPayload);
    if (admission.handshake(fd, reader, protocol, secret, &threads->stop, "relay") != HandshakeResult::kAdmitted) return;
    auto up = connect_tcp(upstream_host, upstream_port);
    if (!up.ok()) {
      log_error("relay", up.status().message());
      return;
    }
    const std::string rest = reader.take_rest();
    if (rest.empty() || write_all(*up, rest)) splice(fd, *up, threads->stop);
    ::close(*up);
  }
};

AuthenticatedRelay::AuthenticatedRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AuthenticatedRelay::~AuthenticatedRelay() { impl_->threads.reset(); }
uint16_t AuthenticatedRelay::port() const { return impl_->port; }
uint64_t AuthenticatedRelay::refused() const { return impl_->admission.refused(); }

Result<std::unique_ptr<AuthenticatedRelay>> AuthenticatedRelay::start(const std::string& host, uint16_t port, const std::string& upstream_host,
                                                                       uint16_t upstream_port, const std::string& protocol,
                                                                       const std::string& secret, AdmissionLimits limits) {
  if (secret.empty()) return invalid_argument("an authenticated port needs a non-empty secret");
  auto impl = std::make_unique<Impl>(limits);
  impl->upstream_host = upstream_host;
  impl->upstream_port = upstream_port;
  impl->protocol = protocol;
  impl->secret = secret;
  JANUS_ASSIGN_OR_RETURN(int fd, listen_tcp(host, port, &impl->port));
  Impl* raw = impl.get();
  impl->threads = std::make_unique<TcpAcceptor>(
      fd, [raw](int c) { raw->serve(c); }, [raw](int c, int open) { return raw->admission.admit(peer_address(c), open); });
  return std::unique_ptr<AuthenticatedRelay>(new AuthenticatedRelay(std::move(impl)));
}

// -- the client side ----------------------------------------------------------------------

struct AuthenticatedDialer::Impl {
  std::string remote_host, protocol, secret;
  uint16_t remote_port = 0, port = 0;
  mutable std::mutex mu;
  std::string last_failure;
  std::unique_ptr<TcpAcceptor> threads;

  void carry(int local) {
    auto remote = connect_tcp(remote_host, remote_port);
    if (!remote.ok()) return fail(remote.status().message());
    FrameReader reader(kHandshakeFrames, kHandshakeMaxPayload);
    if (Status s = dial_handshake(*remote, reader, protocol, secret, 10); !s.ok()) {
      ::close(*remote);
      return fail(s.message());
    }
    const std::string rest = reader.take_rest();
    if (rest.empty() || write_all(local, rest)) splice(local, *remote, threads->stop);
    ::close(*remote);
  }
  void fail(const std::string& why) {
    std::lock_guard<std::mutex> lk(mu);
    last_failure = why;
  }
};

AuthenticatedDialer::AuthenticatedDialer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AuthenticatedDialer::~AuthenticatedDialer() { impl_->threads.reset(); }
uint16_t AuthenticatedDialer::port() const { return impl_->port; }
std::string AuthenticatedDialer::last_failure() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->last_failure;
}

Result<std::unique_ptr<AuthenticatedDialer>> AuthenticatedDialer::start(const std::string& remote_host, uint16_t remote_port,
                                                                         const std::string& protocol, const std::string& secret) {
  auto impl = std::make_unique<Impl>();
  impl->remote_host = remote_host;
  impl->remote_port = remote_port;
  impl->protocol = protocol;
  impl->secret = secret;
  JANUS_ASSIGN_OR_RETURN(int fd, listen_tcp("127.0.0.1", 0, &impl->port));
  Impl* raw = impl.get();
  impl->threads = std::make_unique<TcpAcceptor>(fd, [raw](int c) { raw->carry(c); }, [](int c, int) -> std::string {
    return from_this_process(c) ? "" : "this port carries its own process's connection only";
  });
  return std::unique_ptr<AuthenticatedDialer>(new AuthenticatedDialer(std::move(impl)));
}

}  // namespace janus
