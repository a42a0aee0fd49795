#include "actors/remote_types.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "actors/protocol/control.h"
#include "actors/protocol/membership.h"
#include "actors/protocol/node.h"
#include "actors/protocol/status.h"
#include "actors/protocol/step.h"
#include "runtime/base/secret.h"

namespace janus::actors {

void add_janus_message_types(caf::actor_system_config& cfg) {
  // The actors' own messages that cross nodes (actors/protocol/*.h) ...
  cfg.add_message_type<Status>("janus.Status");
  cfg.add_message_type<LayerBatchKey>("janus.LayerBatchKey");
  cfg.add_message_type<GenerateRequest>("janus.GenerateRequest");
  cfg.add_message_type<SamplingParams>("janus.SamplingParams");
  cfg.add_message_type<AdmittedRequest>("janus.AdmittedRequest");
  cfg.add_message_type<StepBegin>("janus.StepBegin");
  cfg.add_message_type<TokenOut>("janus.TokenOut");
  cfg.add_message_type<RequestFailure>("janus.RequestFailure");
  cfg.add_message_type<StepDone>("janus.StepDone");
  cfg.add_message_type<Membership>("janus.Membership");
  cfg.add_message_type<ActorStats>("janus.ActorStats");
  cfg.add_message_type<StatsQuery>("janus.StatsQuery");
  cfg.add_message_type<SlowDown>("janus.SlowDown");
  cfg.add_message_type<LayerAmaxStats>("janus.LayerAmaxStats");
  cfg.add_message_type<SchedulerStats>("janus.SchedulerStats");
  // ... and the node protocol (actors/protocol/node.h).
  cfg.add_message_type<NodeHello>("janus.NodeHello");
  cfg.add_message_type<NodeChallenge>("janus.NodeChallenge");
  cfg.add_message_type<NodeJoin>("janus.NodeJoin");
  cfg.add_message_type<NodeWelcome>("janus.NodeWelcome");
  cfg.add_message_type<NodePlan>("janus.NodePlan");
  cfg.add_message_type<HostedActor>("janus.HostedActor");
  cfg.add_message_type<NodeReady>("janus.NodeReady");
  cfg.add_message_type<NodeInfo>("janus.NodeInfo");
  cfg.add_message_type<NodeDirectory>("janus.NodeDirectory");
  cfg.add_message_type<ProbeLinks>("janus.ProbeLinks");
  cfg.add_message_type<transport::LinkFit>("janus.LinkFit");
  cfg.add_message_type<LinkTable>("janus.LinkTable");
  cfg.add_message_type<NodeShutdown>("janus.NodeShutdown");
  cfg.add_message_type<ExchangeRecord>("janus.ExchangeRecord");
  cfg.add_message_type<BridgeStats>("janus.BridgeStats");
  cfg.add_message_type<BridgeStatsQuery>("janus.BridgeStatsQuery");
  cfg.add_message_type<BridgeFault>("janus.BridgeFault");
  cfg.add_message_type<NodeLost>("janus.NodeLost");
  cfg.add_message_type<HostInstances>("janus.HostInstances");
  cfg.add_message_type<DirectoryUpdate>("janus.DirectoryUpdate");
  cfg.add_message_type<RelinkedAddress>("janus.RelinkedAddress");
  cfg.add_message_type<PeerAddresses>("janus.PeerAddresses");
  cfg.add_message_type<std::vector<HostedActor>>("janus.HostedActors");
}

void configure_control_plane(caf::actor_system_config& cfg, int threads, bool tls, const TlsFiles& files) {
  cfg.load<caf::io::middleman>();
  if (tls) {
    cfg.load<caf::openssl::manager>();
    cfg.openssl_certificate = files.cert;
    cfg.openssl_key = files.key;
    cfg.openssl_cafile = files.ca;
  }
  add_janus_message_types(cfg);
  cfg.set("scheduler.max-threads", threads);
  cfg.set("logger.console", caf::atom("none"));
  // A process that dies closes its connections and is noticed at once. Nodes talk over
  // CAF to the coordinator only (never to each other: node-to-node traffic is the data
  // plane's), so no automatic connections between nodes are needed, and a node learns
  // of another node's loss from the coordinator (NodeLost).
}

std::string join_proof(const std::string& secret, const std::string& name, const std::string& nonce) {
  std::string msg = "janus-join";
  msg.push_back('\0');
  msg += name;
  msg.push_back('\0');
  msg += nonce;
  return to_hex(hmac_sha256(secret, msg));
}

std::string random_nonce() { return to_hex(random_bytes(16)); }

}  // namespace janus::actors
