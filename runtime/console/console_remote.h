// The console over the network: an Inspector actor, published with CAF's middleman on
// its own small actor system, answers evaluation, completion and watch requests against a
// ConsoleEngine; `janus console --connect HOST:PORT` is its client. Every request carries
// the deployment's shared secret; a wrong one is refused (and logged). The endpoint binds
// to loopback unless told otherwise.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/console/console_engine.h"
#include "runtime/console/repl.h"

namespace janus {

class ConsoleServer {
 public:
  /// Publishes an Inspector on host:port (port 0: any free port).
  static Result<std::unique_ptr<ConsoleServer>> start(ConsoleEngine& engine, const std::string& host, uint16_t port,
                                                      const std::string& secret);
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

}  // namespace janus
