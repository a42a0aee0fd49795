#include "runtime/console/console_remote.h"

#include <unistd.h>

#include <memory>
#include <mutex>
#include <thread>

#include "runtime/base/secret.h"
#include "runtime/console/console_wire.h"
#include "transport/tcp_acceptor.h"

namespace janus {

namespace wire = console_wire;

namespace {

bool is_loopback_host(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

}  // namespace

std::string random_secret() { return to_hex(random_bytes(16)); }

// -- the server ----------------------------------------------------------------------------

struct ConsoleServer::Impl {
  explicit Impl(ConsoleServerLimits l) : limits(l), admission(l.admission) {}
  ConsoleEngine* engine = nullptr;
  std::string secret;
  ConsoleServerLimits limits;
  PeerAdmission admission;
  uint16_t port = 0;
  std::unique_ptr<TcpAcceptor> acceptor;

  void serve(int fd);
};

void ConsoleServer::Impl::serve(int fd) {
  FrameReader reader = wire::frame_reader();
  if (admission.handshake(fd, reader, wire::kProtocol, secret, &acceptor->stop, "console") != HandshakeResult::kAdmitted) return;
  for (;;) {
    auto f = read_frame(fd, reader, deadline_in(limits.idle_s), &acceptor->stop);
    if (!f.ok()) return;
    FieldReader in(f->payload);
    wire::Reply out;
    if (f->type == wire::kEval) {
      auto json = in.u8();
      auto code = in.str();
      if (!json.ok() || !code.ok() || !in.done().ok()) return;
      ConsoleOutput o = engine->eval(*code, *json != 0);
      out.ok = o.ok;
      out.text = o.text;
      out.error = o.error;
      out.watch = o.watch;
    } else if (f->type == wire::kComplete) {
      auto prefix = in.str();
      if (!prefix.ok() || !in.done().ok()) return;
      out.completions = engine->complete(*prefix);
    } else if (f->type == wire::kWatch) {
      if (!in.done().ok()) return;
      out.text = engine->watch_frame();
    } else {
      return;  // not a request: the peer is not our client
    }
    if (!write_all(fd, encode_frame(wire::kReply, wire::encode_reply(out)))) return;
  }
}

ConsoleServer::ConsoleServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ConsoleServer::~ConsoleServer() {
  impl_->engine->interrupt();  // a command still running ends at its next Lua instruction
  impl_->acceptor.reset();     // stops accepting, wakes and joins every connection
}

uint16_t ConsoleServer::port() const { return impl_->port; }
uint64_t ConsoleServer::refused() const { return impl_->admission.refused(); }

Result<std::unique_ptr<ConsoleServer>> ConsoleServer::start(ConsoleEngine& engine, const std::string& host, uint16_t port,
                                                             const std::string& secret, ConsoleServerLimits limits) {
  if (secret.empty()) return invalid_argument("the console needs a non-empty secret");
  auto impl = std::make_unique<Impl>(limits);
  impl->engine = &engine;
  impl->secret = secret;
  auto fd = listen_tcp(host, port, &impl->port);
  if (!fd.ok()) return unavailable("console: " + fd.status().message());
  Impl* raw = impl.get();
  impl->acceptor = std::make_unique<TcpAcceptor>(
      *fd, [raw](int c) { raw->serve(c); }, [raw](int c, int open) { return raw->admission.admit(peer_address(c), open); });
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
  FrameReader reader = wire::frame_reader();
  std::mutex mu;  // one request at a time on the connection

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }

  wire::Reply call(uint8_t type, const std::string& payload) {
    std::lock_guard<std::mutex> lk(mu);
    wire::Reply out;
    out.ok = false;
    if (!write_all(fd, encode_frame(type, payload))) {
      out.error = "the deployment closed the console connection";
      return out;
    }
    // Commands such as generate or step(n) take as long as the deployment needs.
    auto f = read_frame(fd, reader, deadline_in(600));
    if (!f.ok()) {
      out.error = "the deployment did not answer: " + f.status().message();
      return out;
    }
    auto r = f->type == wire::kReply ? wire::decode_reply(f->payload) : Result<wire::Reply>(invalid_argument("not a reply"));
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
  // "Too many connections" is the server's cap on handshakes in flight, which a burst of
  // honest clients can hit: it passes in milliseconds, so try again for a while.
  const auto give_up = deadline_in(15);
  for (int attempt = 0;; ++attempt) {
    auto fd = connect_tcp(host, port);
    if (!fd.ok()) return unavailable("console: " + fd.status().message());
    auto impl = std::make_unique<Impl>();
    impl->fd = *fd;
    Status s = dial_handshake(impl->fd, impl->reader, wire::kProtocol, secret, 10);
    if (s.ok()) return std::unique_ptr<ConsoleClient>(new ConsoleClient(std::move(impl)));
    if (s.message().rfind("too many connections", 0) != 0 || std::chrono::steady_clock::now() > give_up)
      return unavailable("console: " + where + " refused us: " + s.message());
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + 50 * std::min(attempt, 10)));
  }
}

ConsoleHooks ConsoleClient::hooks() {
  Impl* impl = impl_.get();
  ConsoleHooks h;
  h.eval = [impl](const std::string& code, bool json) {
    wire::Reply rep = impl->call(wire::kEval, FieldWriter().u8(json ? 1 : 0).str(code).take());
    ConsoleOutput o;
    o.ok = rep.ok;
    o.text = rep.text;
    o.error = rep.error;
    o.watch = rep.watch;
    return o;
  };
  h.watch_frame = [impl] {
    wire::Reply rep = impl->call(wire::kWatch, "");
    return rep.ok ? rep.text : "error: " + rep.error + "\n";
  };
  h.complete = [impl](const std::string& prefix) { return impl->call(wire::kComplete, FieldWriter().str(prefix).take()).completions; };
  return h;
}

}  // namespace janus
