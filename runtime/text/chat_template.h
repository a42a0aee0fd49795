// Chat templates: the Jinja2 programs Hugging Face models ship (tokenizer_config.json's
// "chat_template", or chat_template.jinja) that turn an OpenAI-style message list into the
// prompt text the model was trained on. `janus serve` renders them for
// /v1/chat/completions and /tokenize; the output is byte for byte what transformers'
// apply_chat_template(..., tokenize=False) writes, so prompts tokenize as they would in
// Python. JSON comes in as text so callers need no JSON library of ours.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "runtime/base/status.h"
#include "runtime/text/jinja_template.h"

namespace janus::text {

class ChatTemplate {
 public:
  /// Parses a template. Syntax errors and constructs this renderer does not support
  /// (include, extends, import, unknown filters or tests, ...) are errors that name the
  /// template line and column.
  static Result<ChatTemplate> parse(std::string_view source);

  /// Renders a conversation, as transformers' apply_chat_template does: `messages_json` is
  /// the OpenAI-style array of {role, content, tool_calls, name, ...}; `extra_json` is an
  /// object of further variables (tools, documents, enable_thinking, any template kwargs),
  /// or empty. Keys of `extra_json` win over messages/add_generation_prompt/bos/eos, as
  /// kwargs do in transformers. A template's raise_exception(msg) comes back as an
  /// invalid-argument error whose message ends with msg.
  Result<std::string> apply(std::string_view messages_json, bool add_generation_prompt, const std::string& bos_token,
                            const std::string& eos_token, std::string_view extra_json = {}) const;

  /// Renders with `context_json` (a JSON object) as the template's variables.
  Result<std::string> render(std::string_view context_json) const;

  /// Bounds for every render (steps, macro depth, output size); the defaults suit any
  /// published chat template with room to spare.
  void set_limits(const jinja::RenderLimits& limits) { limits_ = limits; }

 private:
  jinja::Template template_;
  jinja::RenderLimits limits_;
};

/// The chat template of a Hugging Face model directory: chat_template.jinja when present,
/// else tokenizer_config.json's "chat_template" (a string, or a list of {name, template}
/// from which "default" is taken). NotFound, naming the directory, when neither has one.
Result<std::string> load_chat_template(const std::string& model_dir);

}  // namespace janus::text
