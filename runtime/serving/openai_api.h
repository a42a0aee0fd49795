// The OpenAI-compatible request and response bodies `janus serve` speaks, as vLLM spells
// them: parsing a completions / chat-completions body into a GenerateRequest plus what
// the server does around it (stop strings, streaming, usage), and the JSON errors.
//
// Pure functions of bytes: no sockets and no deployment here (runtime/serving/http_server.h
// is the server), so the refusals are testable one by one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/model/reference_engine.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"

namespace janus::serving {

/// An error as the client gets it: HTTP status and vLLM's {"error": {message, type, code}}.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "BadRequestError";  // BadRequestError, NotFoundError, AuthenticationError, InternalServerError
};

std::string error_body(const ApiError& e);
ApiError bad_request(std::string message);

/// What a model needs to turn a body into a request.
struct ApiModel {
  std::string served_name;
  const text::Tokenizer* tokenizer = nullptr;
  const text::ChatTemplate* chat_template = nullptr;  // null: the model has none (chat is refused)
  std::string bos_token, eos_token;                  // for the chat template
  int vocab_size = 0;                                // the model's (ids must be below it)
  int max_model_len = 0;                             // prompt + new tokens
  std::vector<int32_t> eos_ids;                      // the tokenizer's (empty: the model config's)
};

/// A parsed completions or chat-completions body.
struct ApiRequest {
  bool chat = false;
  std::string model;
  GenerateRequest generate;         // prompt ids, max_new_tokens, sampling, eos
  std::vector<std::string> stop;    // stop strings (not included in the output)
  bool stream = false;
  bool include_usage = false;       // stream_options.include_usage
  bool echo = false;                // completions: put the prompt in front of the text
  std::string prompt_text;          // for echo
};

/// Parses a POST /v1/completions (chat = false) or /v1/chat/completions body. Every refusal
/// is a 400 with a message naming the field, except an unknown model (404).
std::optional<ApiError> parse_generate_request(const std::string& body, bool chat, const ApiModel& model, ApiRequest* out);

/// POST /tokenize: {"prompt": ...} or {"messages": [...], "add_generation_prompt": bool}.
std::optional<ApiError> handle_tokenize(const std::string& body, const ApiModel& model, std::string* response);
/// POST /detokenize: {"tokens": [ids]}.
std::optional<ApiError> handle_detokenize(const std::string& body, const ApiModel& model, std::string* response);

/// Holds back the end of a text stream that may still become a stop string, so the client
/// never sees the start of a stop string that then matches (the stop string itself is not
/// part of the output, as in vLLM).
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  /// Adds text; returns what may be sent now. After a match, stopped() is true and the
  /// returned text ends just before the stop string.
  std::string push(const std::string& text);
  /// What was held back, at the end of the stream (no stop string matched).
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

/// "stop" for an eos or a stop string, "length" for max_tokens.
std::string openai_finish_reason(const std::string& janus_reason);

}  // namespace janus::serving
