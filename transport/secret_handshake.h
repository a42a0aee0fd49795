// The handshake every listening port of Janus runs before any other code reads a byte
// from the peer: the remote console (runtime/console/console_remote.h) and the
// coordinator's node port (transport/authenticated_relay.h, in front of CAF). CAF 0.17.6's
// middleman must never see an unauthenticated byte: 32 bytes crashed it, a header's claim
// made it allocate 4 GiB, and system messages (exit_msg) passed before any secret check.
//
//   server  HELLO{protocol, nonce}    client  AUTH{HMAC-SHA256(secret, protocol "\0" nonce)}
//   server  WELCOME{} or REFUSED{reason} (then closes)
//
// The secret never travels; the proof is compared in constant time and bound to the
// protocol, so a console proof cannot join a coordinator. Frames are those of
// transport/framed_socket.h; protocols built on this one number their frames after
// kHandshakeFrames. PeerAdmission is the per-address policy in front of it: a cap on
// connections still in the handshake, and a doubling pause after wrong secrets.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "runtime/base/status.h"
#include "transport/framed_socket.h"

namespace janus {

inline constexpr uint8_t kFrameHello = 1, kFrameAuth = 2, kFrameWelcome = 3, kFrameRefused = 4;
inline constexpr uint8_t kHandshakeFrames = 4;
inline constexpr uint32_t kHandshakeMaxPayload = 4096;

enum class HandshakeResult {
  kAdmitted,
  kWrongSecret,  // a well-formed proof that does not match: a guess
  kNotAPeer,     // garbage, another protocol, silence past the timeout, a closed socket
};

/// Server side on a connected socket. On kAdmitted, `reader` holds whatever the peer sent
/// after its proof. `why` says what went wrong otherwise (for the log). A wrong secret is
/// not answered here: the caller records it first (PeerAdmission::handshake does both), so
/// a peer that reads the refusal and retries at once already meets the pause.
HandshakeResult accept_handshake(int fd, FrameReader& reader, const std::string& protocol, const std::string& secret, double timeout_s,
                                 const std::atomic<bool>* stop, std::string* why);

/// Client side: Ok once WELCOME arrives; otherwise the server's refusal ("authentication
/// failed: wrong secret ...", "too many failed attempts ...") or what broke.
Status dial_handshake(int fd, FrameReader& reader, const std::string& protocol, const std::string& secret, double timeout_s);

/// Turns a peer away with a reason it can print; the caller closes the socket.
void send_refusal(int fd, const std::string& why);

/// The proof a client sends for `nonce`.
std::string handshake_proof(const std::string& secret, const std::string& protocol, const std::string& nonce);

struct AdmissionLimits {
  double handshake_s = 5;               // to send a valid proof after the greeting
  int unauthenticated_per_address = 8;  // connections from one address still in the handshake
  int max_connections = 64;
  double first_backoff_s = 0.25;        // after the second wrong secret in a row; doubles per failure
  double max_backoff_s = 60;
};

/// Who may start a handshake now. Thread-safe.
class PeerAdmission {
 public:
  explicit PeerAdmission(AdmissionLimits limits) : limits_(limits) {}
  /// "" when a connection from `address` may start its handshake (and counts it as
  /// pending), else why not, for a REFUSED frame.
  std::string admit(const std::string& address, int open_connections);
  /// The handshake of an admitted connection ended. Garbage and silence guess nothing and
  /// cost no pause (counting them would let anyone sharing an address, loopback, lock the
  /// real peer out); the pending cap and the timeout bound what they hold. A wrong secret
  /// costs a pause from the second in a row (a mistyped secret is retried at once), so
  /// guessing runs at a few tries a minute. Returns true when this event should be logged
  /// (the first refusal from an address, then every 100th).
  bool finished(const std::string& address, HandshakeResult result);
  /// The server's whole handshake on an admitted connection: accept_handshake, then
  /// finished(), then the refusal for a wrong secret, and a log line for `who` when due.
  HandshakeResult handshake(int fd, FrameReader& reader, const std::string& protocol, const std::string& secret,
                            const std::atomic<bool>* stop, const char* who);
  uint64_t refused() const { return refused_.load(); }
  const AdmissionLimits& limits() const { return limits_; }

 private:
  struct Address {
    int failures = 0;
    int pending = 0;
    std::chrono::steady_clock::time_point blocked_until{};
  };
  AdmissionLimits limits_;
  std::mutex mu_;
  std::map<std::string, Address> addresses_;
  std::atomic<uint64_t> refused_{0};
};

/// The numeric address of a connected socket's peer ("127.0.0.1", "::1").
std::string peer_address(int fd);

}  // namespace janus
