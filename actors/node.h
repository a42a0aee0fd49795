// `janus node`: one process of a multi-node deployment. It joins the coordinator (the
// process running `janus run` or Deployment::create on a config with nodes{}) over CAF's
// middleman, proves it holds the deployment's shared secret, builds the shards or expert
// instances the coordinator's plan gives it, and serves until the coordinator shuts the
// deployment down or goes away (actors/node_agent.h). No actor-framework headers here.
#pragma once

#include <cstdint>
#include <string>

namespace janus {

struct NodeOptions {
  std::string join_host = "127.0.0.1";
  uint16_t join_port = 0;
  std::string name;              // one of the names the config's nodes{} declares
  std::string secret;            // the deployment's shared secret
  bool tls = false;              // the coordinator listens with coordinator{tls=true}
  std::string tls_cert, tls_key, tls_ca;
  int threads = 0;               // scheduler threads; 0 = the number of cores
  double connect_timeout_s = 60; // keep trying to reach the coordinator this long
};

/// Joins and serves. Returns the process exit code: 0 when the coordinator shut the
/// deployment down, 1 when the join was refused or failed, or the coordinator went away.
int run_node(const NodeOptions& options);

}  // namespace janus
