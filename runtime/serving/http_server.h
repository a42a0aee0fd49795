// `janus serve`'s HTTP server: the OpenAI-compatible endpoints vLLM serves, in front of a
// Deployment, through the public embedding API only (actors/deployment.h) and runtime/text.
//
//   GET  /health                 200 while the deployment serves
//   GET  /v1/models              the served model
//   POST /v1/completions         text or ids in, text out; stream (SSE) or whole
//   POST /v1/chat/completions    messages through the model's chat template
//   POST /tokenize, /detokenize  the tokenizer
//   GET  /metrics                Prometheus text format, vLLM's names prefixed janus:
//
// Every request runs on a connection thread of the HTTP library (cpp-httplib, a pool of
// ServeOptions::threads): it submits to the Deployment with callbacks that only queue the
// token events (actors/request_events.h's contract), and does the detokenizing, the stop
// strings and the writing itself. A client that goes away cancels its request: the write
// of the next chunk fails and the server calls Deployment::cancel (KV freed, slot reused);
// before its first token (queued for a slot, or in its prefill) nothing is written, so the
// connection's socket is polled instead and a queued request leaves the queue at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "actors/deployment.h"
#include "runtime/base/status.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"

namespace janus::serving {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                  // 0: any free port (port() says which)
  std::string served_model_name;    // "" : the model folder's name
  std::string api_key;              // "" : no key needed
  int threads = 1024;               // connection threads: the most connections served at once
  size_t max_body_bytes = 4 << 20;  // larger request bodies get 413
  int read_timeout_s = 30;          // a client that sends nothing for this long is dropped
  int write_timeout_s = 30;         // one that reads nothing for this long too
};

class HttpServer {
 public:
  /// `chat_template` may be null (chat completions are then refused with a 400).
  static Result<std::unique_ptr<HttpServer>> create(Deployment& deployment, std::unique_ptr<text::Tokenizer> tokenizer,
                                                    std::unique_ptr<text::ChatTemplate> chat_template, const ServeOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds the address; after it, port() is the port bound.
  Status bind();
  int port() const;
  /// Serves until stop() (from another thread). Returns an error when the socket fails.
  Status serve();
  void stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace janus::serving
