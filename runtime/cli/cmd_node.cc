#include <cstdio>
#include <cstdlib>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "actors/node.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus node --join HOST:PORT --name NAME [--secret-file F | --secret S] [--threads N]
                  [--tls [--cert FILE --key FILE] [--ca FILE]] [--connect-timeout SECONDS]

Joins a multi-node deployment as node NAME (one of the names its config's nodes{}
declares) and hosts the shards or expert instances the coordinator gives it, until the
coordinator shuts the deployment down (exit 0) or goes away (exit 1). HOST:PORT is where
the coordinator (janus run on that config) listens: coordinator{listen=...}; the node
keeps trying to reach it for --connect-timeout seconds (60).

The deployment's shared secret is --secret, else $JANUS_SECRET; a node with the wrong one
is refused (exit 1). --tls when the coordinator has coordinator{tls=true}.
)";

int cmd_node(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "tls"}, {"join", "name", "secret", "secret-file", "threads", "cert", "key", "ca", "connect-timeout"});
  if (!parsed.ok()) return fail("node", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (!a.has("join") || !a.has("name")) return fail("node", std::string("--join HOST:PORT and --name NAME are required\n") + kHelp, 2);
  NodeOptions o;
  const std::string join = a.get("join");
  const auto colon = join.rfind(':');
  char* end = nullptr;
  const long port = colon == std::string::npos ? -1 : std::strtol(join.c_str() + colon + 1, &end, 10);
  if (colon == std::string::npos || colon == 0 || port <= 0 || port > 65535 || *end != '\0')
    return fail("node", "--join: '" + join + "' is not HOST:PORT", 2);
  o.join_host = join.substr(0, colon);
  o.join_port = static_cast<uint16_t>(port);
  o.name = a.get("name");
  auto given = secret_option(a);
  if (!given.ok()) return fail("node", given.status().message(), 2);
  o.secret = *given;
  if (o.secret.empty()) return fail("node", "no secret: give --secret-file, --secret or set JANUS_SECRET", 2);
  auto threads = a.get_int("threads", 0);
  if (!threads.ok()) return fail("node", threads.status().message(), 2);
  o.threads = static_cast<int>(*threads);
  o.tls = a.flag("tls");
  o.tls_cert = a.get("cert");
  o.tls_key = a.get("key");
  o.tls_ca = a.get("ca");
  if (a.has("connect-timeout")) o.connect_timeout_s = std::strtod(a.get("connect-timeout").c_str(), nullptr);
  return run_node(o);
}

}  // namespace janus::cli
