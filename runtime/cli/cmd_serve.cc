// janus serve: a deployment behind the OpenAI-compatible HTTP API (runtime/serving/http_server.h).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "actors/deployment.h"
#include "runtime/cli/args.h"
#include "runtime/cli/commands.h"
#include "runtime/config/lua_config.h"
#include "runtime/serving/http_server.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"

namespace janus::cli {

static const char* kHelp = R"(usage: janus serve --model DIR [--config GRAPH.lua] [--tokenizer DIR] [--host 127.0.0.1]
                   [--port 8000] [--served-model-name NAME] [--api-key KEY] [--threads N]
                   [--http-threads N] [--max-body-bytes N]

Runs the graph of --config (default: one process, the default graph's shape) on the model
in DIR behind an OpenAI-compatible HTTP server, as vLLM names its endpoints:

  GET  /health   GET /v1/models   POST /v1/completions   POST /v1/chat/completions
  POST /tokenize   POST /detokenize   GET /metrics (Prometheus, names prefixed janus:)

The tokenizer (tokenizer.json, tokenizer_config.json, generation_config.json, the chat
template) is read from DIR, or from --tokenizer DIR. --port 0 takes any free port. The
server says "janus serve: listening on http://HOST:PORT" on stderr once it accepts
connections, and stops on SIGINT or SIGTERM. With --api-key, every endpoint but /health
and /metrics needs "Authorization: Bearer KEY". --http-threads (1024) bounds the
connections served at once; --threads sets the runtime's worker threads.
)";

int cmd_serve(const Argv& argv) {
  auto parsed = Args::parse(argv, {"help"},
                            {"model", "config", "tokenizer", "host", "port", "served-model-name", "api-key", "threads", "http-threads",
                             "max-body-bytes"});
  if (!parsed.ok()) return fail("serve", parsed.status().message() + "\n" + kHelp, 2);
  const Args& a = *parsed;
  if (a.flag("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (!a.positional().empty()) return fail("serve", std::string("unexpected argument '") + a.positional()[0] + "'\n" + kHelp, 2);
  if (!a.has("model")) return fail("serve", std::string("--model DIR is required\n") + kHelp, 2);
  auto port = a.get_int("port", 8000);
  auto threads = a.get_int("threads", 0);
  auto http_threads = a.get_int("http-threads", 1024);
  auto max_body = a.get_int("max-body-bytes", 4 << 20);
  for (auto* r : {&port, &threads, &http_threads, &max_body})
    if (!r->ok()) return fail("serve", r->status().message(), 2);
  if (*port < 0 || *port > 65535) return fail("serve", "--port must be 0..65535, got " + a.get("port"), 2);
  if (*http_threads < 1 || *http_threads > 65536) return fail("serve", "--http-threads must be 1..65536", 2);
  if (*max_body < 1024) return fail("serve", "--max-body-bytes must be at least 1024", 2);

  const std::string model_dir = a.get("model");
  GraphSpec spec = default_graph_spec();
  if (a.has("config")) {
    auto s = load_lua_config(a.get("config"));
    if (!s.ok()) return fail("serve", s.status().to_string());
    spec = std::move(*s);
  }
  spec.model.path = model_dir;
  spec.workload.prompts.clear();  // requests come from HTTP

  const std::string tok_dir = a.get("tokenizer", model_dir);
  auto tok = text::Tokenizer::load(tok_dir);
  if (!tok.ok()) return fail("serve", "the tokenizer: " + tok.status().to_string());
  std::unique_ptr<text::ChatTemplate> chat;
  if (auto src = text::load_chat_template(tok_dir); src.ok()) {
    auto t = text::ChatTemplate::parse(*src);
    if (!t.ok()) return fail("serve", "the chat template of " + tok_dir + ": " + t.status().to_string());
    chat = std::make_unique<text::ChatTemplate>(std::move(*t));
  } else if (src.status().code() != ErrorCode::kNotFound) {
    return fail("serve", src.status().to_string());
  } else {
    std::fprintf(stderr, "janus serve: %s has no chat template; /v1/chat/completions will refuse requests\n", tok_dir.c_str());
  }

  // Signals go to the main thread (sigwait below), never to runtime or connection threads;
  // a write to a closed connection must be an error, not SIGPIPE.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  DeploymentOptions o;
  o.threads = static_cast<int>(*threads);
  auto d = Deployment::create(spec, o);
  if (!d.ok()) return fail("serve", d.status().to_string());

  serving::ServeOptions so;
  so.host = a.get("host", "127.0.0.1");
  so.port = static_cast<int>(*port);
  so.served_model_name = a.get("served-model-name");
  so.api_key = a.get("api-key");
  so.threads = static_cast<int>(*http_threads);
  so.max_body_bytes = static_cast<size_t>(*max_body);
  auto server = serving::HttpServer::create(**d, std::move(*tok), std::move(chat), so);
  if (!server.ok()) return fail("serve", server.status().to_string());
  if (Status b = (*server)->bind(); !b.ok()) return fail("serve", b.to_string());

  std::atomic<bool> failed{false};
  std::thread http([&] {
    Status s = (*server)->serve();
    if (!s.ok()) {
      std::fprintf(stderr, "janus serve: %s\n", s.to_string().c_str());
      failed = true;
      kill(getpid(), SIGTERM);
    }
  });
  std::fprintf(stderr, "janus serve: listening on http://%s:%d (model %s)\n", so.host.c_str(), (*server)->port(), model_dir.c_str());
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "janus serve: %s, stopping\n", strsignal(sig));
  // Stop accepting, end every request (their connection threads then finish), then wait
  // for the connection threads.
  (*server)->stop();
  (*d)->shutdown();
  http.join();
  return failed ? 1 : 0;
}

}  // namespace janus::cli
