#include "transport/secret_handshake.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>

#include "runtime/base/log.h"
#include "runtime/base/secret.h"

namespace janus {

std::string handshake_proof(const std::string& secret, const std::string& protocol, const std::string& nonce) {
  return hmac_sha256(secret, protocol + '\0' + nonce);
}

void send_refusal(int fd, const std::string& why) { write_all(fd, encode_frame(kFrameRefused, why)); }

HandshakeResult accept_handshake(int fd, FrameReader& reader, const std::string& protocol, const std::string& secret, double timeout_s,
                                 const std::atomic<bool>* stop, std::string* why) {
  const std::string nonce = random_bytes(32);
  if (!write_all(fd, encode_frame(kFrameHello, FieldWriter().str(protocol).str(nonce).take()))) {
    *why = "the peer closed the connection";
    return HandshakeResult::kNotAPeer;
  }
  auto f = read_frame(fd, reader, deadline_in(timeout_s), stop);
  if (!f.ok()) {
    *why = f.status().message();
    return HandshakeResult::kNotAPeer;
  }
  if (f->type != kFrameAuth) {
    *why = "not a " + protocol + " handshake";
    return HandshakeResult::kNotAPeer;
  }
  FieldReader in(f->payload);
  auto proof = in.str();
  if (!proof.ok() || !in.done().ok()) {
    *why = "a malformed proof";
    return HandshakeResult::kNotAPeer;
  }
  if (!equal_constant_time(*proof, handshake_proof(secret, protocol, nonce))) {
    *why = "wrong secret";
    return HandshakeResult::kWrongSecret;
  }
  if (!write_all(fd, encode_frame(kFrameWelcome))) {
    *why = "the peer closed the connection";
    return HandshakeResult::kNotAPeer;
  }
  return HandshakeResult::kAdmitted;
}

Status dial_handshake(int fd, FrameReader& reader, const std::string& protocol, const std::string& secret, double timeout_s) {
  const auto deadline = deadline_in(timeout_s);
  auto hello = read_frame(fd, reader, deadline);
  if (!hello.ok()) return unavailable("no greeting: " + hello.status().message());
  if (hello->type == kFrameRefused) return unavailable(hello->payload);
  FieldReader in(hello->payload);
  auto name = in.str();
  auto nonce = in.str();
  if (hello->type != kFrameHello || !name.ok() || !nonce.ok() || *name != protocol)
    return unavailable("the server does not speak " + protocol);
  if (!write_all(fd, encode_frame(kFrameAuth, FieldWriter().str(handshake_proof(secret, protocol, *nonce)).take())))
    return unavailable("the server closed the connection");
  auto answer = read_frame(fd, reader, deadline);
  if (!answer.ok()) return unavailable("no answer to our proof: " + answer.status().message());
  if (answer->type == kFrameRefused) return unavailable(answer->payload);
  if (answer->type != kFrameWelcome) return unavailable("an unexpected answer to our proof");
  return Status::Ok();
}

std::string PeerAdmission::admit(const std::string& address, int open_connections) {
  std::lock_guard<std::mutex> lk(mu_);
  Address& a = addresses_[address];
  const auto now = std::chrono::steady_clock::now();
  std::string refuse;
  if (now < a.blocked_until) {
    const double wait = std::chrono::duration<double>(a.blocked_until - now).count();
    refuse = "too many failed attempts from " + address + ": try again in " + std::to_string(static_cast<int>(wait + 1)) + " s";
  } else if (a.pending >= limits_.unauthenticated_per_address) {
    refuse = "too many connections from " + address + " still authenticating";
  } else if (open_connections >= limits_.max_connections) {
    refuse = "too many connections";
  }
  if (refuse.empty()) ++a.pending;
  else ++refused_;
  return refuse;
}

bool PeerAdmission::finished(const std::string& address, HandshakeResult result) {
  std::lock_guard<std::mutex> lk(mu_);
  Address& a = addresses_[address];
  --a.pending;
  if (result == HandshakeResult::kAdmitted) {
    a.failures = 0;
    return false;
  }
  const uint64_t n = ++refused_;
  if (result == HandshakeResult::kNotAPeer) return n % 100 == 1;
  ++a.failures;
  if (a.failures >= 2) {
    const double pause = std::min(limits_.max_backoff_s, limits_.first_backoff_s * static_cast<double>(1u << std::min(a.failures - 2, 20)));
    a.blocked_until = std::chrono::steady_clock::now() +
                      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(pause));
  }
  return a.failures == 1 || n % 100 == 0;
}

HandshakeResult PeerAdmission::handshake(int fd, FrameReader& reader, const std::string& protocol, const std::string& secret,
                                         const std::atomic<bool>* stop, const char* who) {
  const std::string address = peer_address(fd);
  std::string why;
  const HandshakeResult r = accept_handshake(fd, reader, protocol, secret, limits_.handshake_s, stop, &why);
  if (finished(address, r)) log_warn(who, "turned away " + address + " (" + why + "); " + std::to_string(refused()) + " so far");
  if (r == HandshakeResult::kWrongSecret) send_refusal(fd, "authentication failed: wrong secret for this deployment");
  return r;
}

std::string peer_address(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  char host[INET6_ADDRSTRLEN] = "?";
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    if (a.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, host, sizeof host);
    if (a.ss_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, host, sizeof host);
  }
  return host;
}

}  // namespace janus
