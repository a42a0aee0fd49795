// Puts the secret handshake (transport/secret_handshake.h) in front of a port that speaks
// someone else's protocol: the coordinator's CAF middleman, which must not see a byte from
// a peer that has not proven the deployment's secret.
//
//   janus node: CAF --> AuthenticatedDialer (127.0.0.1, ephemeral) ==handshake==>
//   coordinator: AuthenticatedRelay (the configured host:port) --> CAF (127.0.0.1, ephemeral)
//
// Once a connection is admitted its bytes are spliced through unchanged both ways (TLS,
// where configured, runs end to end inside), so CAF works as before while only proven
// peers reach it. Refusals carry a reason the dialer keeps for its caller.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/base/status.h"
#include "transport/secret_handshake.h"

namespace janus {

class AuthenticatedRelay {
 public:
  /// Listens on host:port (0: any); every connection that proves `secret` under
  /// `protocol` is carried to upstream_host:upstream_port.
  static Result<std::unique_ptr<AuthenticatedRelay>> start(const std::string& host, uint16_t port, const std::string& upstream_host,
                                                           uint16_t upstream_port, const std::string& protocol, const std::string& secret,
                                                           AdmissionLimits limits = {});
  ~AuthenticatedRelay();  // stops accepting and closes every connection
  uint16_t port() const;
  /// Connections turned away so far (admission, wrong secret, not a peer).
  uint64_t refused() const;

  struct Impl;

 private:
  explicit AuthenticatedRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class AuthenticatedDialer {
 public:
  /// Listens on 127.0.0.1 (any free port); every local connection is carried to
  /// remote_host:remote_port after the handshake proves `secret` there.
  static Result<std::unique_ptr<AuthenticatedDialer>> start(const std::string& remote_host, uint16_t remote_port,
                                                            const std::string& protocol, const std::string& secret);
  ~AuthenticatedDialer();
  uint16_t port() const;
  /// Why the last connection could not be carried ("" when none failed): the remote's
  /// refusal ("authentication failed: wrong secret ...") or the network's error.
  std::string last_failure() const;

  struct Impl;

 private:
  explicit AuthenticatedDialer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace janus
