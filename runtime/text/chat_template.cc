#include "runtime/text/chat_template.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace janus::text {
namespace {

using json = nlohmann::ordered_json;
using jinja::Dict;
using jinja::Value;

Value from_json(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return Value::none();
    case json::value_t::boolean: return Value::boolean(j.get<bool>());
    case json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::real(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case json::value_t::number_float: return Value::real(j.get<double>());
    case json::value_t::string: return Value::string(j.get<std::string>());
    case json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(from_json(x));
      return Value::make_list(std::move(items));
    }
    case json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.set(it.key(), from_json(it.value()));
      return Value::make_dict(std::move(d));
    }
    default: return Value::none();
  }
}

Result<json> parse_json(std::string_view text, const char* what) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument(std::string(what) + " is not valid JSON");
  return j;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string_view source) {
  JANUS_ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::parse(source));
  ChatTemplate ct;
  ct.template_ = std::move(t);
  return ct;
}

Result<std::string> ChatTemplate::apply(std::string_view messages_json, bool add_generation_prompt,
                                        const std::string& bos_token, const std::string& eos_token,
                                        std::string_view extra_json) const {
  JANUS_ASSIGN_OR_RETURN(json messages, parse_json(messages_json, "chat messages"));
  if (!messages.is_array()) return invalid_argument("chat messages must be a JSON array of message objects");
  for (size_t k = 0; k < messages.size(); ++k)
    if (!messages[k].is_object()) return invalid_argument("chat message " + std::to_string(k) + " is not a JSON object");
  // transformers (5.x) copies a message's reasoning under the names templates read it by:
  // {"thinking": r, **message, "reasoning_content": r}.
  for (auto& m : messages) {
    const json* reasoning = nullptr;
    for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
      auto it = m.find(key);
      if (it != m.end() && !it->is_null()) {
        reasoning = &*it;
        break;
      }
    }
    if (!reasoning) continue;
    const json r = *reasoning;
    json aliased = json::object();
    aliased["thinking"] = r;
    for (auto it = m.begin(); it != m.end(); ++it) aliased[it.key()] = it.value();
    aliased["reasoning_content"] = r;
    m = std::move(aliased);
  }
  Dict ctx;
  ctx.set("messages", from_json(messages));
  // apply_chat_template always passes these, as None when the caller has none.
  ctx.set("tools", Value::none());
  ctx.set("documents", Value::none());
  ctx.set("add_generation_prompt", Value::boolean(add_generation_prompt));
  ctx.set("bos_token", Value::string(bos_token));
  ctx.set("eos_token", Value::string(eos_token));
  if (!extra_json.empty()) {
    JANUS_ASSIGN_OR_RETURN(json extra, parse_json(extra_json, "chat template variables"));
    if (!extra.is_object() && !extra.is_null()) return invalid_argument("chat template variables must be a JSON object");
    if (extra.is_object())
      for (auto it = extra.begin(); it != extra.end(); ++it) ctx.set(it.key(), from_json(it.value()));
  }
  return template_.render(ctx, limits_);
}

Result<std::string> ChatTemplate::render(std::string_view context_json) const {
  Dict ctx;
  if (!context_json.empty()) {
    JANUS_ASSIGN_OR_RETURN(json j, parse_json(context_json, "chat template context"));
    if (!j.is_object()) return invalid_argument("chat template context must be a JSON object");
    for (auto it = j.begin(); it != j.end(); ++it) ctx.set(it.key(), from_json(it.value()));
  }
  return template_.render(ctx, limits_);
}

Result<std::string> load_chat_template(const std::string& model_dir) {
  namespace fs = std::filesystem;
  auto read = [](const fs::path& p) -> Result<std::string> {
    std::ifstream in(p, std::ios::binary);
    if (!in) return io_error("cannot read " + p.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  const fs::path jinja_file = fs::path(model_dir) / "chat_template.jinja";
  std::error_code ec;
  if (fs::is_regular_file(jinja_file, ec)) return read(jinja_file);
  const fs::path config = fs::path(model_dir) / "tokenizer_config.json";
  if (!fs::is_regular_file(config, ec))
    return not_found("no chat template in " + model_dir + ": neither chat_template.jinja nor tokenizer_config.json exists");
  JANUS_ASSIGN_OR_RETURN(std::string text, read(config));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return invalid_argument(config.string() + " is not a JSON object");
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null())
    return not_found("no chat template in " + model_dir + ": tokenizer_config.json has no \"chat_template\" and there is no chat_template.jinja");
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (!entry.is_object()) continue;
      auto name = entry.find("name");
      auto tmpl = entry.find("template");
      if (name != entry.end() && name->is_string() && *name == "default" && tmpl != entry.end() && tmpl->is_string())
        return tmpl->get<std::string>();
    }
    return not_found(config.string() + ": \"chat_template\" is a list without a template named \"default\"");
  }
  return invalid_argument(config.string() + ": \"chat_template\" must be a string or a list of {name, template}");
}

}  // namespace janus::text
