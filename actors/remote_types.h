// The message types that cross process boundaries over CAF's middleman, registered by
// name on every actor system that talks to another (the coordinator's and each node's):
// a type registered on one side only makes remote_actor() fail with
// unexpected_actor_messaging_interface (docs/dependencies.md §1.1).
#pragma once

#include <caf/actor_system_config.hpp>
#include <string>

namespace janus::actors {

void add_janus_message_types(caf::actor_system_config& cfg);

/// The control-plane actor system configuration of a multi-node process: the middleman
/// (and OpenSSL when `tls`), the message types, heartbeats so that a peer that vanishes
/// without closing its connection is noticed, `threads` scheduler threads.
struct TlsFiles {
  std::string cert, key, ca;
};
void configure_control_plane(caf::actor_system_config& cfg, int threads, bool tls, const TlsFiles& files);

}  // namespace janus::actors
