// An accept loop with one thread per connection, for Janus's own TCP ports (the remote
// console, the authenticated relay in front of CAF). A connection's thread owns its socket
// and closes it when the handler returns; finished threads are joined as new connections
// come; destruction stops accepting, wakes every handler (shutdown of its socket) and
// joins them, so a server always ends, whatever its peers do.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>

namespace janus {

class TcpAcceptor {
 public:
  using Handler = std::function<void(int fd)>;
  /// Called under the acceptor's lock for each new connection with the number already
  /// open: "" admits it; a reason sends a REFUSED frame (transport/secret_handshake.h)
  /// and closes it at once, so no descriptor is held for a peer turned away.
  using Admit = std::function<std::string(int fd, int open)>;

  /// Takes ownership of a listening socket.
  TcpAcceptor(int listen_fd, Handler handler, Admit admit = nullptr);
  ~TcpAcceptor();
  TcpAcceptor(const TcpAcceptor&) = delete;
  TcpAcceptor& operator=(const TcpAcceptor&) = delete;

  /// Set on destruction; handlers poll it (read_frame's `stop`) to leave early.
  std::atomic<bool> stop{false};

 private:
  struct Connection {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void accept_loop();
  void reap();

  int listen_fd_;
  Handler handler_;
  Admit admit_;
  std::mutex mu_;
  std::list<Connection> connections_;
  std::thread acceptor_;
};

}  // namespace janus
