// The console over the network: a ConsoleServer answers evaluation, completion and watch
// requests against a ConsoleEngine; `janus console --connect HOST:PORT` is its client.
// They speak our own framed protocol (runtime/console/console_wire.h), never CAF, so no
// byte from an unauthenticated peer reaches an actor framework. A client proves it holds
// the deployment's secret with an HMAC of the server's nonce (the secret never travels);
// a wrong proof, garbage or silence closes the connection, and from the second in a row
// makes that address wait, doubling the pause each time. Sizes are bounded, handshakes time out, connections still
// authenticating are capped per address. The endpoint binds to loopback unless told
// otherwise, and a non-loopback address needs a secret the user chose.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/console/console_engine.h"
#include "runtime/console/repl.h"
#include "transport/secret_handshake.h"

namespace janus {

struct ConsoleServerLimits {
  AdmissionLimits admission;  // handshake timeout, per-address caps, back-off after wrong secrets
  double idle_s = 3600;       // between requests of an authenticated console
};

class ConsoleServer {
 public:
  /// Listens on host:port (port 0: any free port).
  static Result<std::unique_ptr<ConsoleServer>> start(ConsoleEngine& engine, const std::string& host, uint16_t port,
                                                      const std::string& secret, ConsoleServerLimits limits = {});
  /// Stops accepting, interrupts a running command, closes every connection.
  ~ConsoleServer();
  uint16_t port() const;
  /// Requests refused for a wrong secret so far.
  uint64_t refused() const;

 private:
  struct Impl;
  explicit ConsoleServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ConsoleClient {
 public:
  /// Connects to an Inspector; fails with a clear message when nothing listens there or
  /// the secret is wrong (checked with a first request).
  static Result<std::unique_ptr<ConsoleClient>> connect(const std::string& host, uint16_t port, const std::string& secret);
  ~ConsoleClient();
  ConsoleHooks hooks();

 private:
  struct Impl;
  explicit ConsoleClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// A fresh random secret (hex), for deployments started without one.
std::string random_secret();

/// Refuses a listening address beyond loopback unless the user gave a secret (a random
/// one printed to stderr is fine for this machine only).
Status check_console_listen(const std::string& host, bool secret_given);

}  // namespace janus
