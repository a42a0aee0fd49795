#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/console/console_remote.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus console --connect [HOST:]PORT [--secret-file F | --secret S] [--json] [--eval CODE | SCRIPT]

Attaches the Lua console to a deployment started with `janus run CONFIG --listen PORT`.
The secret is the first line of --secret-file, else --secret, else $JANUS_SECRET. With --eval or a script file the code runs
non-interactively; otherwise the console is interactive (help() lists the commands).
)";

int cmd_console(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help", "json"}, {"connect", "secret", "secret-file", "eval"});
  if (!parsed.ok()) return fail("console", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (!a.has("connect")) return fail("console", std::string("--connect [HOST:]PORT is required\n") + kHelp, 2);
  const std::string target = a.get("connect");
  std::string host = "127.0.0.1", port_text = target;
  if (auto colon = target.rfind(':'); colon != std::string::npos) {
    host = target.substr(0, colon);
    port_text = target.substr(colon + 1);
  }
  char* end = nullptr;
  long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port <= 0 || port > 65535)
    return fail("console", "--connect: '" + target + "' is not [HOST:]PORT", 2);
  auto given = secret_option(a);
  if (!given.ok()) return fail("console", given.status().message(), 2);
  const std::string secret = *given;
  if (secret.empty()) return fail("console", "no secret: give --secret-file, --secret or set JANUS_SECRET", 2);
  auto client = ConsoleClient::connect(host, static_cast<uint16_t>(port), secret);
  if (!client.ok()) return fail("console", client.status().message());
  ConsoleHooks hooks = (*client)->hooks();
  if (a.has("eval")) return run_console_code(hooks, a.get("eval"), a.flag("json"));
  if (!a.positional().empty()) {
    std::ifstream in(a.positional()[0]);
    if (!in) return fail("console", a.positional()[0] + ": cannot read");
    std::string code((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return run_console_code(hooks, code, a.flag("json"));
  }
  return run_repl(hooks, "janus console on " + host + ":" + std::to_string(port) + " — help() lists the commands, Ctrl-D leaves");
}

}  // namespace janus::cli
