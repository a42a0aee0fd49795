#include "transport/tcp_acceptor.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "transport/secret_handshake.h"

namespace janus {

TcpAcceptor::TcpAcceptor(int listen_fd, Handler handler, Admit admit)
    : listen_fd_(listen_fd), handler_(std::move(handler)), admit_(std::move(admit)) {
  acceptor_ = std::thread([this] { accept_loop(); });
}

TcpAcceptor::~TcpAcceptor() {
  stop.store(true);
  acceptor_.join();
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (Connection& c : connections_)
      if (!c.done.load()) ::shutdown(c.fd, SHUT_RDWR);
  }
  for (Connection& c : connections_) c.thread.join();
  ::close(listen_fd_);
}

void TcpAcceptor::accept_loop() {
  while (!stop.load()) {
    reap();
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors: back off instead of spinning on a listener that stays readable.
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    std::lock_guard<std::mutex> lk(mu_);
    if (std::string why = admit_ ? admit_(fd, static_cast<int>(connections_.size())) : ""; !why.empty()) {
      send_refusal(fd, why);
      ::close(fd);
      continue;
    }
    Connection& c = connections_.emplace_back();
    c.fd = fd;
    c.thread = std::thread([this, &c] {
      handler_(c.fd);
      ::close(c.fd);
      c.done.store(true);
    });
  }
}

void TcpAcceptor::reap() {
  std::lock_guard<std::mutex> lk(mu_);
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (it->done.load()) {
      it->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace janus
