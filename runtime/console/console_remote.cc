#include "runtime/console/console_remote.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <random>

#include "runtime/base/log.h"

namespace janus {
namespace {

// The console protocol: one request type, one reply type (CAF 0.17 inspectors, so the
// middleman can serialise them).
struct console_request {
  std::string secret;
  std::string op;  // "eval", "watch", "complete", "hello"
  std::string code;
  bool json = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, console_request& x) {
  return f(caf::meta::type_name("console_request"), x.secret, x.op, x.code, x.json);
}

struct console_reply {
  bool ok = true;
  std::string text;
  std::string error;
  bool watch = false;
  std::vector<std::string> completions;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, console_reply& x) {
  return f(caf::meta::type_name("console_reply"), x.ok, x.text, x.error, x.watch, x.completions);
}

struct console_config : caf::actor_system_config {
  console_config() {
    load<caf::io::middleman>();
    add_message_type<console_request>("console_request");
    add_message_type<console_reply>("console_reply");
    set("scheduler.max-threads", 2);
    set("middleman.heartbeat-interval", caf::timespan{std::chrono::seconds(1)});
  }
};

struct inspector_state {
  static const char* name;
};
const char* inspector_state::name = "inspector";

caf::behavior inspector(caf::stateful_actor<inspector_state>*, ConsoleEngine* engine, std::string secret,
                        std::shared_ptr<std::atomic<uint64_t>> refused) {
  return {[=](const console_request& r) -> console_reply {
    console_reply out;
    if (r.secret != secret) {
      ++*refused;
      log_warn("inspector", "refused a console request: wrong secret");
      out.ok = false;
      out.error = "authentication failed: wrong secret for this deployment";
      return out;
    }
    if (r.op == "hello") return out;
    if (r.op == "watch") {
      out.text = engine->watch_frame();
      return out;
    }
    if (r.op == "complete") {
      out.completions = engine->complete(r.code);
      return out;
    }
    ConsoleOutput o = engine->eval(r.code, r.json);
    out.ok = o.ok;
    out.text = o.text;
    out.error = o.error;
    out.watch = o.watch;
    return out;
  }};
}

}  // namespace

std::string random_secret() {
  std::random_device rd;
  std::string s;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) s += hex[rd() % 16];
  return s;
}

struct ConsoleServer::Impl {
  console_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor inspector;
  uint16_t port = 0;
  std::shared_ptr<std::atomic<uint64_t>> refused = std::make_shared<std::atomic<uint64_t>>(0);
};

ConsoleServer::ConsoleServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ConsoleServer::~ConsoleServer() {
  if (impl_->sys) {
    impl_->sys->middleman().unpublish(impl_->inspector, impl_->port);
    caf::anon_send_exit(impl_->inspector, caf::exit_reason::user_shutdown);
  }
}

uint16_t ConsoleServer::port() const { return impl_->port; }
uint64_t ConsoleServer::refused() const { return *impl_->refused; }

Result<std::unique_ptr<ConsoleServer>> ConsoleServer::start(ConsoleEngine& engine, const std::string& host, uint16_t port,
                                                             const std::string& secret) {
  if (secret.empty()) return invalid_argument("the console needs a non-empty secret");
  auto impl = std::make_unique<Impl>();
  impl->sys = std::make_unique<caf::actor_system>(impl->cfg);
  impl->inspector = impl->sys->spawn<caf::detached>(inspector, &engine, secret, impl->refused);
  auto p = impl->sys->middleman().publish(impl->inspector, port, host.c_str(), true);
  if (!p) {
    caf::anon_send_exit(impl->inspector, caf::exit_reason::user_shutdown);
    return unavailable("console: cannot listen on " + host + ":" + std::to_string(port) + ": " + impl->sys->render(p.error()));
  }
  impl->port = *p;
  return std::unique_ptr<ConsoleServer>(new ConsoleServer(std::move(impl)));
}

struct ConsoleClient::Impl {
  console_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor inspector;
  std::string secret;

  console_reply call(console_request r) {
    r.secret = secret;
    console_reply out;
    caf::scoped_actor self{*sys};
    self->request(inspector, std::chrono::seconds(180), std::move(r))
        .receive([&](console_reply& rep) { out = std::move(rep); },
                 [&](caf::error& e) {
                   out.ok = false;
                   out.error = "the deployment did not answer: " + sys->render(e);
                 });
    return out;
  }
};

ConsoleClient::ConsoleClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConsoleClient::~ConsoleClient() {
  if (impl_->sys) impl_->inspector = caf::actor{};
}

Result<std::unique_ptr<ConsoleClient>> ConsoleClient::connect(const std::string& host, uint16_t port, const std::string& secret) {
  auto impl = std::make_unique<Impl>();
  impl->secret = secret;
  impl->sys = std::make_unique<caf::actor_system>(impl->cfg);
  auto a = impl->sys->middleman().remote_actor(host, port);
  if (!a) return unavailable("console: cannot connect to " + host + ":" + std::to_string(port) + ": " + impl->sys->render(a.error()));
  impl->inspector = *a;
  console_request hello;
  hello.op = "hello";
  console_reply r = impl->call(hello);
  if (!r.ok) return unavailable("console: " + host + ":" + std::to_string(port) + " refused us: " + r.error);
  return std::unique_ptr<ConsoleClient>(new ConsoleClient(std::move(impl)));
}

ConsoleHooks ConsoleClient::hooks() {
  Impl* impl = impl_.get();
  ConsoleHooks h;
  h.eval = [impl](const std::string& code, bool json) {
    console_request r;
    r.op = "eval";
    r.code = code;
    r.json = json;
    console_reply rep = impl->call(r);
    ConsoleOutput o;
    o.ok = rep.ok;
    o.text = rep.text;
    o.error = rep.error;
    o.watch = rep.watch;
    return o;
  };
  h.watch_frame = [impl] {
    console_request r;
    r.op = "watch";
    console_reply rep = impl->call(r);
    return rep.ok ? rep.text : "error: " + rep.error + "\n";
  };
  h.complete = [impl](const std::string& prefix) {
    console_request r;
    r.op = "complete";
    r.code = prefix;
    return impl->call(r).completions;
  };
  return h;
}

}  // namespace janus
