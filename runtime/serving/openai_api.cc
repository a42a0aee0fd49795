#include "runtime/serving/openai_api.h"

#include <nlohmann/json.hpp>
#include <random>

namespace janus::serving {

using json = nlohmann::json;

std::string error_body(const ApiError& e) {
  json j = {{"error", {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", e.http_status}}}};
  return j.dump();
}

ApiError bad_request(std::string message) { return ApiError{400, std::move(message), "BadRequestError"}; }

namespace {

std::optional<ApiError> parse_object(const std::string& body, json* out) {
  try {
    *out = json::parse(body);
  } catch (const json::exception& e) {
    return bad_request(std::string("the body is not valid JSON: ") + e.what());
  }
  if (!out->is_object()) return bad_request("the body must be a JSON object");
  return std::nullopt;
}

std::optional<ApiError> check_model(const json& j, const ApiModel& m) {
  if (!j.contains("model") || j["model"].is_null()) return std::nullopt;
  if (!j["model"].is_string()) return bad_request("'model' must be a string");
  const std::string name = j["model"].get<std::string>();
  if (name != m.served_name) return ApiError{404, "The model `" + name + "` does not exist.", "NotFoundError"};
  return std::nullopt;
}

// An optional integer field; absent or null leaves *out.
std::optional<ApiError> get_int(const json& j, const char* key, int64_t* out, bool* present = nullptr) {
  if (present) *present = false;
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_number_integer()) return bad_request(std::string("'") + key + "' must be an integer");
  *out = j[key].get<int64_t>();
  if (present) *present = true;
  return std::nullopt;
}

std::optional<ApiError> get_number(const json& j, const char* key, double* out) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_number()) return bad_request(std::string("'") + key + "' must be a number");
  *out = j[key].get<double>();
  return std::nullopt;
}

std::optional<ApiError> get_bool(const json& j, const char* key, bool* out) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_boolean()) return bad_request(std::string("'") + key + "' must be a boolean");
  *out = j[key].get<bool>();
  return std::nullopt;
}

std::optional<ApiError> check_ids(const std::vector<int32_t>& ids, const ApiModel& m, const char* what) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= m.vocab_size)
      return bad_request(std::string(what) + ": token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                         " is outside the vocabulary (0.." + std::to_string(m.vocab_size - 1) + ")");
  return std::nullopt;
}

std::optional<ApiError> ids_of(const json& v, const ApiModel& m, const char* what, std::vector<int32_t>* out) {
  out->clear();
  for (const json& x : v) {
    if (!x.is_number_integer()) return bad_request(std::string(what) + " must be a string or a list of integer token ids");
    const int64_t id = x.get<int64_t>();
    if (id < 0 || id >= m.vocab_size)
      return bad_request(std::string(what) + ": token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                         std::to_string(m.vocab_size - 1) + ")");
    out->push_back(static_cast<int32_t>(id));
  }
  return check_ids(*out, m, what);
}

// Chat messages as the template sees them: content parts [{type: text, text}] joined.
std::optional<ApiError> normalize_messages(const json& in, json* out) {
  if (!in.is_array() || in.empty()) return bad_request("'messages' must be a non-empty list");
  *out = json::array();
  for (size_t i = 0; i < in.size(); ++i) {
    const json& m = in[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return bad_request(at + " must be an object");
    if (!m.contains("role") || !m["role"].is_string()) return bad_request(at + ".role must be a string");
    json n = m;
    if (m.contains("content") && m["content"].is_array()) {
      std::string text;
      for (const json& part : m["content"]) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          return bad_request(at + ".content: only parts of type 'text' are supported");
        text += part["text"].get<std::string>();
      }
      n["content"] = text;
    } else if (m.contains("content") && !m["content"].is_string() && !m["content"].is_null()) {
      return bad_request(at + ".content must be a string or a list of text parts");
    }
    out->push_back(std::move(n));
  }
  return std::nullopt;
}

std::optional<ApiError> render_chat(const json& messages, bool add_generation_prompt, const ApiModel& m, std::vector<int32_t>* ids) {
  if (m.chat_template == nullptr) return bad_request("this model has no chat template (chat_template.jinja or tokenizer_config.json's chat_template)");
  json normalized;
  if (auto e = normalize_messages(messages, &normalized)) return e;
  auto text = m.chat_template->apply(normalized.dump(), add_generation_prompt, m.bos_token, m.eos_token);
  if (!text.ok()) return bad_request("the chat template refused the messages: " + text.status().message());
  // The template writes the special tokens itself (bos included): no post-processor, as vLLM.
  auto enc = m.tokenizer->encode(*text, /*add_special_tokens=*/false);
  if (!enc.ok()) return bad_request("encoding the rendered chat: " + enc.status().message());
  *ids = std::move(*enc);
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> parse_generate_request(const std::string& body, bool chat, const ApiModel& m, ApiRequest* out) {
  json j;
  if (auto e = parse_object(body, &j)) return e;
  if (auto e = check_model(j, m)) return e;
  ApiRequest r;
  r.chat = chat;
  r.model = m.served_name;
  std::vector<int32_t>& ids = r.generate.prompt;
  if (chat) {
    if (!j.contains("messages")) return bad_request("'messages' is required");
    if (auto e = render_chat(j["messages"], true, m, &ids)) return e;
  } else {
    if (!j.contains("prompt") || j["prompt"].is_null()) return bad_request("'prompt' is required");
    const json& p = j["prompt"];
    json one = p;
    if (p.is_array() && !p.empty() && (p[0].is_string() || p[0].is_array())) {
      if (p.size() != 1) return bad_request("'prompt': a list of several prompts is not supported, send one prompt per request");
      one = p[0];
    }
    if (one.is_string()) {
      r.prompt_text = one.get<std::string>();
      auto enc = m.tokenizer->encode(r.prompt_text, true);
      if (!enc.ok()) return bad_request("'prompt': " + enc.status().message());
      ids = std::move(*enc);
    } else if (one.is_array()) {
      if (auto e = ids_of(one, m, "'prompt'", &ids)) return e;
      auto text = m.tokenizer->decode(ids);
      if (text.ok()) r.prompt_text = *text;
    } else {
      return bad_request("'prompt' must be a string or a list of integer token ids");
    }
  }
  if (ids.empty()) return bad_request("the prompt is empty (it encodes to no tokens)");
  const int64_t prompt_len = static_cast<int64_t>(ids.size());
  if (prompt_len >= m.max_model_len)
    return bad_request("This model's maximum context length is " + std::to_string(m.max_model_len) + " tokens. However, your prompt has " +
                       std::to_string(prompt_len) + " tokens, which leaves no room for a completion.");

  int64_t max_tokens = chat ? m.max_model_len - prompt_len : 16;
  bool given = false;
  if (auto e = get_int(j, "max_tokens", &max_tokens, &given)) return e;
  if (chat) {
    bool given2 = false;
    if (auto e = get_int(j, "max_completion_tokens", &max_tokens, &given2)) return e;
    given = given || given2;
  }
  if (max_tokens < 1) return bad_request("'max_tokens' must be at least 1, got " + std::to_string(max_tokens));
  if (prompt_len + max_tokens > m.max_model_len)
    return bad_request("This model's maximum context length is " + std::to_string(m.max_model_len) + " tokens. However, you requested " +
                       std::to_string(prompt_len + max_tokens) + " tokens (" + std::to_string(prompt_len) + " in the prompt, " +
                       std::to_string(max_tokens) + " in the completion). Please reduce the length of the prompt or completion.");
  r.generate.max_new_tokens = static_cast<int>(max_tokens);

  double temperature = 1.0, top_p = 1.0;
  int64_t top_k = 0, n = 1;
  if (auto e = get_number(j, "temperature", &temperature)) return e;
  if (auto e = get_number(j, "top_p", &top_p)) return e;
  if (auto e = get_int(j, "top_k", &top_k)) return e;
  if (auto e = get_int(j, "n", &n)) return e;
  if (temperature < 0 || temperature > 100) return bad_request("'temperature' must be between 0 and 100, got " + std::to_string(temperature));
  if (!(top_p > 0 && top_p <= 1)) return bad_request("'top_p' must be in (0, 1], got " + std::to_string(top_p));
  if (top_k < -1) return bad_request("'top_k' must be -1 (no limit), 0 (no limit) or positive, got " + std::to_string(top_k));
  if (top_k > m.vocab_size) top_k = 0;
  if (n != 1) return bad_request("'n' must be 1 (Janus makes one choice per request), got " + std::to_string(n));
  r.generate.sampling.temperature = static_cast<float>(temperature);
  r.generate.sampling.top_p = static_cast<float>(top_p);
  r.generate.sampling.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);
  int64_t seed = 0;
  bool seeded = false;
  if (auto e = get_int(j, "seed", &seed, &seeded)) return e;
  if (!seeded) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    seed = static_cast<int64_t>(rng() >> 1);
  }
  r.generate.sampling.seed = static_cast<uint64_t>(seed);

  bool ignore_eos = false;
  if (auto e = get_bool(j, "ignore_eos", &ignore_eos)) return e;
  r.generate.stop_at_eos = !ignore_eos;
  r.generate.eos_ids = m.eos_ids;
  if (auto e = get_bool(j, "stream", &r.stream)) return e;
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    if (!j["stream_options"].is_object()) return bad_request("'stream_options' must be an object");
    if (auto e = get_bool(j["stream_options"], "include_usage", &r.include_usage)) return e;
  }
  if (!chat)
    if (auto e = get_bool(j, "echo", &r.echo)) return e;
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const json& x : s) {
        if (!x.is_string()) return bad_request("'stop' must be a string or a list of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      return bad_request("'stop' must be a string or a list of strings");
    }
    for (const std::string& x : r.stop)
      if (x.empty()) return bad_request("'stop': an empty stop string would match everywhere");
  }
  // Log-probabilities, as vLLM takes them: completions ask with 'logprobs': N, chat with
  // 'logprobs': true and 'top_logprobs': N. N is how many alternatives come with each
  // token's own log-probability.
  const std::string lp_range = "0.." + std::to_string(kMaxLogprobs);
  bool top_given = false;
  int64_t top = 0;
  if (j.contains("top_logprobs") && !j["top_logprobs"].is_null() && !j["top_logprobs"].is_number_integer())
    return bad_request("'top_logprobs' must be an integer (" + lp_range + ")");
  if (auto e = get_int(j, "top_logprobs", &top, &top_given)) return e;
  if (chat) {
    bool want = false;
    if (auto e = get_bool(j, "logprobs", &want)) return e;
    if (top_given && (top < 0 || top > kMaxLogprobs))
      return bad_request("'top_logprobs' must be in " + lp_range + ", got " + std::to_string(top));
    if (top_given && !want) return bad_request("'top_logprobs' needs 'logprobs': true");
    if (want) r.generate.logprobs = static_cast<int>(top);
  } else {
    if (top_given) return bad_request("'top_logprobs' is a chat completions field: /v1/completions takes 'logprobs': N");
    if (j.contains("logprobs") && !j["logprobs"].is_null()) {
      const json& v = j["logprobs"];
      if (!v.is_number_integer()) return bad_request("'logprobs' must be an integer (" + lp_range + "), got " + v.dump());
      const int64_t n = v.get<int64_t>();
      if (n < 0 || n > kMaxLogprobs) return bad_request("'logprobs' must be in " + lp_range + ", got " + std::to_string(n));
      r.generate.logprobs = static_cast<int>(n);
    }
    // With echo, vLLM also gives the prompt's log-probabilities; a shard computes only the
    // logits of the position it samples, so they are refused rather than left out.
    if (r.echo && r.generate.logprobs >= 0)
      return bad_request("'echo' with 'logprobs' needs the prompt's log-probabilities, which janus serve does not compute");
  }
  if (j.contains("prompt_logprobs") && !j["prompt_logprobs"].is_null())
    return bad_request("'prompt_logprobs' is not supported: janus serve computes log-probabilities of generated tokens only");
  *out = std::move(r);
  return std::nullopt;
}

std::optional<ApiError> handle_tokenize(const std::string& body, const ApiModel& m, std::string* response) {
  json j;
  if (auto e = parse_object(body, &j)) return e;
  if (auto e = check_model(j, m)) return e;
  std::vector<int32_t> ids;
  if (j.contains("messages")) {
    bool agp = true;
    if (auto e = get_bool(j, "add_generation_prompt", &agp)) return e;
    if (auto e = render_chat(j["messages"], agp, m, &ids)) return e;
  } else if (j.contains("prompt") && j["prompt"].is_string()) {
    bool special = true;
    if (auto e = get_bool(j, "add_special_tokens", &special)) return e;
    auto enc = m.tokenizer->encode(j["prompt"].get<std::string>(), special);
    if (!enc.ok()) return bad_request("'prompt': " + enc.status().message());
    ids = std::move(*enc);
  } else {
    return bad_request("give 'prompt' (a string) or 'messages'");
  }
  *response = json{{"count", ids.size()}, {"max_model_len", m.max_model_len}, {"tokens", ids}, {"token_strs", nullptr}}.dump();
  return std::nullopt;
}

std::optional<ApiError> handle_detokenize(const std::string& body, const ApiModel& m, std::string* response) {
  json j;
  if (auto e = parse_object(body, &j)) return e;
  if (auto e = check_model(j, m)) return e;
  if (!j.contains("tokens") || !j["tokens"].is_array()) return bad_request("'tokens' must be a list of integer token ids");
  std::vector<int32_t> ids;
  if (auto e = ids_of(j["tokens"], m, "'tokens'", &ids)) return e;
  for (int32_t id : ids)
    if (static_cast<size_t>(id) >= m.tokenizer->vocab_size())
      return bad_request("'tokens': token id " + std::to_string(id) + " has no text in the tokenizer's vocabulary");
  auto text = m.tokenizer->decode(ids);
  if (!text.ok()) return bad_request("'tokens': " + text.status().message());
  *response = json{{"prompt", *text}}.dump();
  return std::nullopt;
}

std::string StopMatcher::push(const std::string& text) {
  if (stopped_) return "";
  held_ += text;
  if (stops_.empty()) {
    std::string out;
    out.swap(held_);
    return out;
  }
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Hold the longest suffix that is a prefix of a stop string.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t k = std::min(s.size() - 1, held_.size()); k > hold; --k)
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return out;
}

std::string StopMatcher::finish() {
  std::string out;
  if (!stopped_) out.swap(held_);
  held_.clear();
  return out;
}

std::string openai_finish_reason(const std::string& r) { return r == "length" ? "length" : r == "cancelled" ? "abort" : "stop"; }

}  // namespace janus::serving
