#include "runtime/serving/http_server.h"

#include <dirent.h>
#include <httplib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <vector>

#include "runtime/serving/openai_api.h"

namespace janus::serving {

using json = nlohmann::json;

namespace {

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string prom_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

// A Prometheus histogram with fixed buckets (vLLM's), guarded by its own lock.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v) {
    std::lock_guard<std::mutex> lk(mu_);
    size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
  }
  void write(std::ostream& o, const std::string& name, const std::string& help, const std::string& labels) const {
    std::lock_guard<std::mutex> lk(mu_);
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
    uint64_t cum = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cum += counts_[i];
      o << name << "_bucket{" << labels << ",le=\"" << bounds_[i] << "\"} " << cum << "\n";
    }
    cum += counts_.back();
    o << name << "_bucket{" << labels << ",le=\"+Inf\"} " << cum << "\n";
    o << name << "_sum{" << labels << "} " << sum_ << "\n" << name << "_count{" << labels << "} " << count_ << "\n";
  }

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

// What one request's callbacks hand to its connection thread.
struct RequestStream {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<TokenEvent> events;
  std::optional<Result<GenerateResult>> done;
};

// What a request that asked for log-probabilities gets per token, as text: the token's
// piece and its alternatives'.
struct LogprobEntry {
  struct Alternative {
    int32_t id = 0;
    std::string text;
    float logprob = 0;
  };
  int32_t id = 0;
  std::string text;
  float logprob = 0;
  std::vector<Alternative> top;
};

// The text token `id` adds after `context` (the few ids before it), as the streaming
// detokenizer finds it: decoded in context, so a SentencePiece word keeps its leading
// space. Where the context's own text ends inside a character, the token alone.
std::string token_piece(const text::Tokenizer& t, std::vector<int32_t> context, int32_t id) {
  auto before = t.decode(context);
  context.push_back(id);
  auto after = t.decode(context);
  if (before.ok() && after.ok() && after->compare(0, before->size(), *before) == 0) return after->substr(before->size());
  auto alone = t.decode({id});
  return alone.ok() ? *alone : std::string();
}

// JSON has no -inf: vLLM writes the floor it clamps to.
double json_logprob(float lp) { return std::max(static_cast<double>(lp), -9999.0); }

json utf8_bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Chat: choices[].logprobs = {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
json chat_logprobs(const std::vector<LogprobEntry>& entries) {
  json content = json::array();
  for (const LogprobEntry& e : entries) {
    json top = json::array();
    for (const auto& a : e.top) top.push_back({{"token", a.text}, {"logprob", json_logprob(a.logprob)}, {"bytes", utf8_bytes(a.text)}});
    content.push_back({{"token", e.text}, {"logprob", json_logprob(e.logprob)}, {"bytes", utf8_bytes(e.text)}, {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

// Completions (the legacy shape): {tokens, token_logprobs, top_logprobs, text_offset}; each
// top_logprobs entry maps the N most likely tokens' text, and the chosen token's, to their
// log-probabilities, as vLLM writes it. `offset` is where the first entry's text starts in
// the choice's text (characters), and moves past the entries.
json completion_logprobs(const std::vector<LogprobEntry>& entries, size_t* offset) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const LogprobEntry& e : entries) {
    tokens.push_back(e.text);
    lps.push_back(json_logprob(e.logprob));
    json top = json::object();
    for (const auto& a : e.top) top[a.text] = json_logprob(a.logprob);
    top[e.text] = json_logprob(e.logprob);
    tops.push_back(top);
    offsets.push_back(*offset);
    *offset += utf8_length(e.text);
  }
  return json{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

// The socket a request came on: the one whose local and peer addresses are the request's.
// cpp-httplib 0.11 gives a handler neither its socket nor a way to ask whether the client
// is still there, and a request that waits for a slot writes nothing that could fail, so
// the server looks the socket up (once, for a request still waiting after a while) and
// polls it. -1 when not found.
int connection_socket(const httplib::Request& req) {
  auto name_of = [](const sockaddr_storage& a, socklen_t len, std::string* host, int* port) {
    char h[NI_MAXHOST], p[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) != 0) return false;
    *host = h;
    *port = std::atoi(p);
    return true;
  };
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* ent = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(ent->d_name, &end, 10);
    if (end == ent->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    struct stat st {};
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t llen = sizeof local, plen = sizeof peer;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &llen) != 0) continue;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &plen) != 0) continue;
    std::string lhost, phost;
    int lport = -1, pport = -1;
    if (!name_of(local, llen, &lhost, &lport) || !name_of(peer, plen, &phost, &pport)) continue;
    if (lport == req.local_port && pport == req.remote_port && phost == req.remote_addr) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// True when the client closed the connection: it has sent its whole request, so a socket
// that reads as ended (or failed) has nobody behind it. A client that sends more (a
// pipelined request) is still there.
bool client_closed(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return true;
  char c;
  return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

}  // namespace

struct HttpServer::Impl {
  Deployment& d;
  std::unique_ptr<text::Tokenizer> tokenizer;
  std::unique_ptr<text::ChatTemplate> chat_template;
  ServeOptions options;
  ApiModel model;
  httplib::Server http;
  int port = 0;
  int listen_fd = -1;  // the listening socket, as set_socket_options saw it
  std::atomic<uint64_t> next_id{1};
  int64_t created = unix_time();

  Histogram ttft{{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}};
  Histogram itl{{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}};
  Histogram e2e{{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}};
  std::atomic<uint64_t> prompt_tokens{0}, generation_tokens{0};
  std::mutex count_mu;
  std::map<std::string, uint64_t> success;  // by finish reason
  std::atomic<uint64_t> disconnects{0}, errors{0};

  Impl(Deployment& dep) : d(dep) {}

  std::string labels() const { return "model_name=\"" + prom_escape(model.served_name) + "\""; }

  void reply_error(httplib::Response& res, const ApiError& e) {
    ++errors;
    res.status = e.http_status;
    res.set_content(error_body(e), "application/json");
  }

  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (options.api_key.empty()) return true;
    if (req.get_header_value("Authorization") == "Bearer " + options.api_key) return true;
    reply_error(res, ApiError{401, "Unauthorized: a valid API key (Authorization: Bearer KEY) is required", "AuthenticationError"});
    return false;
  }

  void routes();
  void generate(const httplib::Request& req, httplib::Response& res, bool chat);
  std::string metrics_text();
};

void HttpServer::Impl::routes() {
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) { res.status = 200; });
  http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    json card = {{"id", model.served_name}, {"object", "model"}, {"created", created}, {"owned_by", "janus"},
                 {"root", d.spec().model_dir}, {"parent", nullptr}, {"max_model_len", model.max_model_len}};
    res.set_content(json{{"object", "list"}, {"data", json::array({card})}}.dump(), "application/json");
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    if (authorized(req, res)) generate(req, res, false);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    if (authorized(req, res)) generate(req, res, true);
  });
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    std::string out;
    if (auto e = handle_tokenize(req.body, model, &out)) return reply_error(res, *e);
    res.set_content(out, "application/json");
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    std::string out;
    if (auto e = handle_detokenize(req.body, model, &out)) return reply_error(res, *e);
    res.set_content(out, "application/json");
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
  });
  // Unknown paths and the library's own refusals (413 for a body over the limit...) get a
  // JSON error body too, unless a handler wrote one.
  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg = res.status == 404 ? "no route " + req.method + " " + req.path
                      : res.status == 413 ? "the request body is larger than " + std::to_string(options.max_body_bytes) + " bytes"
                                          : "HTTP " + std::to_string(res.status);
    std::string type = res.status == 404 ? "NotFoundError" : "BadRequestError";
    res.set_content(error_body(ApiError{res.status, msg, type}), "application/json");
  });
  http.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    reply_error(res, ApiError{500, "internal error: " + what, "InternalServerError"});
  });
}

void HttpServer::Impl::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  ApiRequest ar;
  if (auto e = parse_generate_request(req.body, chat, model, &ar)) return reply_error(res, *e);
  auto st = std::make_shared<RequestStream>();
  RequestCallbacks cb;
  cb.on_token = [st](const TokenEvent& e) {  // the Frontend's thread: queue and return
    std::lock_guard<std::mutex> lk(st->mu);
    st->events.push_back(e);
    st->cv.notify_one();
  };
  cb.on_done = [st](const Result<GenerateResult>& r) {
    std::lock_guard<std::mutex> lk(st->mu);
    st->done = r;
    st->cv.notify_one();
  };
  const int prompt_len = static_cast<int>(ar.generate.prompt.size());
  RequestHandle handle = d.submit(ar.generate, cb);
  // Wait for the first token or the end, so a request the deployment refuses gets its
  // error as an HTTP status rather than inside a stream.
  // While it waits (queued for a slot, or in its prefill) nothing is written, so the
  // socket is polled: a client that went away cancels its request at once, which takes it
  // out of the queue (Deployment::cancel) instead of it running later for nobody.
  {
    std::unique_lock<std::mutex> lk(st->mu);
    const auto waiting_since = std::chrono::steady_clock::now();
    int fd = -2;  // not looked up yet
    while (!st->cv.wait_for(lk, std::chrono::milliseconds(50), [&] { return !st->events.empty() || st->done.has_value(); })) {
      if (std::chrono::steady_clock::now() - waiting_since < std::chrono::milliseconds(100)) continue;
      lk.unlock();
      if (fd == -2) fd = connection_socket(req);
      const bool gone = fd >= 0 && client_closed(fd);
      lk.lock();
      if (gone) {
        lk.unlock();
        ++disconnects;
        (void)d.cancel(handle);
        res.status = 499;  // nobody reads it: nginx's "client closed request"
        return;
      }
    }
    if (st->events.empty() && st->done && !st->done->ok()) {
      const Status& s = st->done->status();
      const int code = s.code() == ErrorCode::kInvalidArgument || s.code() == ErrorCode::kResourceExhausted ? 400 : 503;
      lk.unlock();
      return reply_error(res, ApiError{code, s.message(), code == 400 ? "BadRequestError" : "ServiceUnavailableError"});
    }
  }
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id.fetch_add(1));
  const int64_t created_at = unix_time();
  const std::string name = model.served_name;

  // One pass over the request's events, whichever way the text leaves: `emit(text)` gets
  // each piece (false: the client is gone). Returns the finish reason, or "" on a
  // disconnect (the request is then cancelled).
  struct Outcome {
    std::string finish_reason;
    int completion_tokens = 0;
    std::string error;  // the request failed after it started
  };
  // `heartbeat` (optional) is called every 250 ms while the request runs; false means the
  // client is gone (the first write after a close usually still succeeds, the next fails).
  // `emit(text, logprobs)` gets each piece of text and, when the request asked for them,
  // each token's log-probabilities (then once per token, with the text it completed,
  // possibly empty).
  using Emit = std::function<bool(const std::string&, const LogprobEntry*)>;
  auto run = [this, st, handle, ar](const Emit& emit, const std::function<bool()>& heartbeat = {}) -> Outcome {
    Outcome out;
    text::StreamingDetokenizer detok(*tokenizer);
    // The last few generated ids, the context a token's piece is decoded in (token_piece):
    // the text is decoded from the generated ids alone, so the pieces add up to it.
    std::vector<int32_t> context;
    StopMatcher stop(ar.stop);
    bool first = true;
    auto last_beat = std::chrono::steady_clock::now();
    auto beat = [&] {
      if (!heartbeat || std::chrono::steady_clock::now() - last_beat < std::chrono::milliseconds(250)) return true;
      last_beat = std::chrono::steady_clock::now();
      return heartbeat();
    };
    for (;;) {
      std::unique_lock<std::mutex> lk(st->mu);
      while (!st->cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return !st->events.empty() || st->done.has_value(); })) {
        lk.unlock();
        if (!beat()) {
          ++disconnects;
          (void)d.cancel(handle);
          return out;
        }
        lk.lock();
      }
      if (st->events.empty()) {  // ended without a last token: cancelled or failed
        Result<GenerateResult> r = *st->done;
        lk.unlock();
        if (!r.ok()) out.error = r.status().message();
        else out.finish_reason = r->finish_reason;
        std::string tail = stop.push(detok.finish());
        tail += stop.finish();
        if (!tail.empty()) emit(tail, nullptr);
        return out;
      }
      TokenEvent e = st->events.front();
      st->events.pop_front();
      lk.unlock();
      ++out.completion_tokens;
      ++generation_tokens;
      if (first) ttft.observe(e.since_submit_s);
      else itl.observe(e.since_previous_s);
      first = false;
      auto piece = detok.push(e.token);
      std::string text = piece.ok() ? stop.push(*piece) : std::string();
      if (e.last && !stop.stopped()) {
        text += stop.push(detok.finish());
        text += stop.finish();
      }
      std::optional<LogprobEntry> lp;
      if (e.logprobs) {
        lp.emplace();
        lp->id = e.token;
        lp->text = token_piece(*tokenizer, context, e.token);
        lp->logprob = e.logprobs->logprob;
        for (const TopLogprob& t : e.logprobs->top) lp->top.push_back({t.token, token_piece(*tokenizer, context, t.token), t.logprob});
      }
      context.push_back(e.token);
      if (context.size() > 4) context.erase(context.begin());
      if (((!text.empty() || lp) && !emit(text, lp ? &*lp : nullptr)) || !beat()) {
        ++disconnects;
        (void)d.cancel(handle);
        return out;
      }
      if (stop.stopped()) {
        (void)d.cancel(handle);  // the stop string ended it; an already-finished request is no error
        out.finish_reason = "stop";
        return out;
      }
      if (e.last) {
        out.finish_reason = e.finish_reason;
        return out;
      }
    }
  };
  auto usage = [prompt_len](int completion) {
    return json{{"prompt_tokens", prompt_len}, {"completion_tokens", completion}, {"total_tokens", prompt_len + completion}};
  };
  auto count_end = [this, prompt_len, handle](const Outcome& o) {
    prompt_tokens += static_cast<uint64_t>(prompt_len);
    std::lock_guard<std::mutex> lk(count_mu);
    if (!o.finish_reason.empty()) ++success[openai_finish_reason(o.finish_reason)];
    (void)handle;
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds_since = [t0] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  if (!ar.stream) {
    // A whole answer is still sent chunked: while the request runs, a space (JSON allows
    // leading whitespace) goes out every 250 ms, so a client that went away is noticed and
    // its request cancelled instead of running on for nobody.
    res.set_chunked_content_provider(
        "application/json",
        [=, this](size_t, httplib::DataSink& sink) mutable {
          std::string text = ar.echo ? ar.prompt_text : "";
          std::vector<LogprobEntry> lps;
          bool gone = false;
          Outcome o = run(
              [&](const std::string& t, const LogprobEntry* lp) {
                text += t;
                if (lp) lps.push_back(*lp);
                return true;
              },
              [&] {
                gone = !sink.write(" ", 1);
                return !gone;
              });
          e2e.observe(seconds_since());
          count_end(o);
          if (gone) return false;
          std::string body;
          if (!o.error.empty()) {
            body = error_body(ApiError{503, o.error, "ServiceUnavailableError"});
          } else {
            json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", openai_finish_reason(o.finish_reason)}};
            size_t offset = 0;
            if (ar.generate.logprobs >= 0) choice["logprobs"] = chat ? chat_logprobs(lps) : completion_logprobs(lps, &offset);
            if (chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
            else choice["text"] = text;
            body = json{{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created_at}, {"model", name},
                        {"choices", json::array({choice})}, {"usage", usage(o.completion_tokens)}}
                       .dump();
          }
          if (!sink.write(body.data(), body.size())) return false;
          sink.done();
          return true;
        },
        [this, handle, st](bool success) {
          if (!success) (void)d.cancel(handle);
        });
    return;
  }

  auto chunk = [id, created_at, name, chat](const json& choice) {
    json c = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created_at}, {"model", name},
              {"choices", json::array({choice})}};
    return "data: " + c.dump() + "\n\n";
  };
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, this](size_t, httplib::DataSink& sink) mutable {
        auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        if (chat) {
          if (!write(chunk({{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}))) {
            ++disconnects;
            (void)d.cancel(handle);
            return false;
          }
        } else if (ar.echo && !ar.prompt_text.empty()) {
          write(chunk({{"index", 0}, {"text", ar.prompt_text}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
        }
        bool gone = false;
        size_t offset = 0;  // where the next token's text starts, for text_offset
        Outcome o = run([&](const std::string& t, const LogprobEntry* lp) {
          json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
          if (lp) choice["logprobs"] = chat ? chat_logprobs({*lp}) : completion_logprobs({*lp}, &offset);
          if (chat) choice["delta"] = {{"content", t}};
          else choice["text"] = t;
          if (!write(chunk(choice))) gone = true;
          return !gone;
        });
        e2e.observe(seconds_since());
        count_end(o);
        if (gone) return false;
        if (!o.error.empty()) {
          write("data: " + error_body(ApiError{503, o.error, "ServiceUnavailableError"}) + "\n\n");
        } else {
          json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", openai_finish_reason(o.finish_reason)}};
          if (chat) choice["delta"] = json::object();
          else choice["text"] = "";
          write(chunk(choice));
          if (ar.include_usage) {
            json c = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created_at},
                      {"model", name}, {"choices", json::array()}, {"usage", usage(o.completion_tokens)}};
            write("data: " + c.dump() + "\n\n");
          }
        }
        write(std::string("data: [DONE]\n\n"));
        sink.done();
        return true;
      },
      [this, handle, st](bool success) {
        // The library is done with the stream; if it ended early (the client went away
        // before the provider ran), the request must not run on for nobody.
        if (!success) (void)d.cancel(handle);
      });
}

std::string HttpServer::Impl::metrics_text() {
  MetricsSnapshot m = d.metrics();
  std::ostringstream o;
  const std::string L = labels();
  auto gauge = [&](const std::string& name, const std::string& help, double v) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n" << name << "{" << L << "} " << v << "\n";
  };
  auto counter = [&](const std::string& name, const std::string& help, double v) {
    // The text format names a counter's HELP and TYPE with its _total sample name.
    o << "# HELP " << name << "_total " << help << "\n# TYPE " << name << "_total counter\n" << name << "_total{" << L << "} " << v << "\n";
  };
  gauge("janus:num_requests_running", "Number of requests in model execution batches.", static_cast<double>(m.running));
  gauge("janus:num_requests_waiting", "Number of requests waiting to be processed.", static_cast<double>(m.queued));
  gauge("janus:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
        m.kv_blocks_total > 0 ? static_cast<double>(m.kv_blocks_used) / static_cast<double>(m.kv_blocks_total) : 0.0);
  counter("janus:prompt_tokens", "Number of prefill tokens processed.", static_cast<double>(prompt_tokens.load()));
  counter("janus:generation_tokens", "Number of generation tokens processed.", static_cast<double>(generation_tokens.load()));
  {
    std::lock_guard<std::mutex> lk(count_mu);
    o << "# HELP janus:request_success_total Count of successfully processed requests.\n# TYPE janus:request_success_total counter\n";
    for (const char* r : {"stop", "length", "abort"})
      o << "janus:request_success_total{" << L << ",finished_reason=\"" << r << "\"} " << (success.count(r) ? success[r] : 0) << "\n";
  }
  ttft.write(o, "janus:time_to_first_token_seconds", "Histogram of time to first token in seconds.", L);
  itl.write(o, "janus:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", L);
  e2e.write(o, "janus:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", L);
  // What only Janus has. Labels are bounded: one series per MoE layer.
  o << "# HELP janus:amax_mean Mean over layer batches of the most distinct experts any instance ran (a_max), per MoE layer.\n"
       "# TYPE janus:amax_mean gauge\n";
  for (const LayerAmax& a : m.amax) o << "janus:amax_mean{" << L << ",layer=\"" << a.layer << "\"} " << a.mean << "\n";
  o << "# HELP janus:amax_max The largest a_max of any layer batch so far, per MoE layer.\n# TYPE janus:amax_max gauge\n";
  for (const LayerAmax& a : m.amax) o << "janus:amax_max{" << L << ",layer=\"" << a.layer << "\"} " << a.max << "\n";
  gauge("janus:membership_epoch", "The deployment's membership epoch (it grows at every rescale or recovery).", m.epoch);
  counter("janus:rescales", "Rescales installed.", static_cast<double>(m.rescales));
  counter("janus:requests_cancelled", "Requests cancelled (client disconnects, stop strings).", static_cast<double>(m.cancelled));
  counter("janus:client_disconnects", "Streams whose client went away before the end.", static_cast<double>(disconnects.load()));
  counter("janus:http_errors", "Requests answered with an error status.", static_cast<double>(errors.load()));
  return o.str();
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::create(Deployment& deployment, std::unique_ptr<text::Tokenizer> tokenizer,
                                                        std::unique_ptr<text::ChatTemplate> chat_template, const ServeOptions& options) {
  if (!tokenizer) return invalid_argument("janus serve needs a tokenizer");
  auto impl = std::make_unique<Impl>(deployment);
  impl->options = options;
  impl->tokenizer = std::move(tokenizer);
  impl->chat_template = std::move(chat_template);
  ApiModel& m = impl->model;
  m.served_name = options.served_model_name;
  if (m.served_name.empty()) m.served_name = std::filesystem::path(deployment.spec().model_dir).filename().string();
  m.tokenizer = impl->tokenizer.get();
  m.chat_template = impl->chat_template.get();
  if (auto b = m.tokenizer->bos_id()) m.bos_token = m.tokenizer->id_to_token(*b);
  m.eos_ids = m.tokenizer->eos_ids();
  if (!m.eos_ids.empty()) m.eos_token = m.tokenizer->id_to_token(m.eos_ids.front());
  m.vocab_size = deployment.model().config().vocab_size;
  m.max_model_len = deployment.spec().attention.max_seq_len;
  if (m.tokenizer->vocab_size() > static_cast<size_t>(m.vocab_size))
    return invalid_argument("the tokenizer has " + std::to_string(m.tokenizer->vocab_size()) + " ids, more than the model's vocabulary (" +
                            std::to_string(m.vocab_size) + "): they do not belong together");
  for (int32_t id : m.eos_ids)
    if (id >= m.vocab_size) return invalid_argument("the tokenizer's eos id " + std::to_string(id) + " is outside the model's vocabulary");
  Impl* raw = impl.get();
  const int threads = std::max(8, options.threads);
  raw->http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  raw->http.set_payload_max_length(options.max_body_bytes);
  raw->http.set_read_timeout(options.read_timeout_s, 0);
  raw->http.set_write_timeout(options.write_timeout_s, 0);
  raw->http.set_keep_alive_timeout(30);
  // Each SSE chunk is one small write: without TCP_NODELAY, Nagle's algorithm holds it
  // until the client's delayed ACK (tens of ms per token). Accepted sockets inherit it.
  raw->http.set_tcp_nodelay(true);
  raw->http.set_socket_options([raw](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    raw->listen_fd = sock;
  });
  raw->routes();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

Status HttpServer::bind() {
  if (impl_->options.port == 0) {
    impl_->port = impl_->http.bind_to_any_port(impl_->options.host);
    if (impl_->port <= 0) return io_error("cannot bind " + impl_->options.host + " to any port");
  } else {
    if (!impl_->http.bind_to_port(impl_->options.host, impl_->options.port))
      return io_error("cannot listen on " + impl_->options.host + ":" + std::to_string(impl_->options.port) + " (in use, or not an address here)");
    impl_->port = impl_->options.port;
  }
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of hundreds of connections would
  // see resets. listen() again on the bound socket raises it (Linux keeps the socket).
  if (impl_->listen_fd >= 0 && ::listen(impl_->listen_fd, SOMAXCONN) != 0)
    return io_error("cannot raise the listen backlog: " + std::string(std::strerror(errno)));
  return Status::Ok();
}

int HttpServer::port() const { return impl_->port; }

Status HttpServer::serve() {
  if (!impl_->http.listen_after_bind() && impl_->http.is_running()) return io_error("the HTTP server's socket failed");
  return Status::Ok();
}

void HttpServer::stop() {
  if (impl_) impl_->http.stop();
}

}  // namespace janus::serving
