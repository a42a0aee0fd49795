// A Jinja2 interpreter for Hugging Face chat templates: the subset of the language those
// templates use, with the environment transformers renders them in
// (ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
// extensions=[loopcontrols]) plus its tojson, raise_exception and strftime_now), so a
// template renders here byte for byte as it does in Python. Anything outside that subset
// (include, extends, import, unknown filters and tests, ...) is refused with the template
// line that uses it, never skipped.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/base/status.h"
#include "runtime/text/jinja_value.h"

namespace janus::text::jinja {

struct Program;

/// Bounds on one render, so a runaway template (a self-recursive macro, a nested loop over
/// huge ranges) ends with an error instead of hanging the server or exhausting its memory.
struct RenderLimits {
  size_t max_steps = 20'000'000;    // statements, loop iterations and calls executed
  int max_call_depth = 200;         // nested macro calls
  size_t max_output_bytes = 64u << 20;
};

/// A parsed template; cheap to copy (the program is shared and immutable), and safe to
/// render from several threads at once.
class Template {
 public:
  /// Parses `source`; a syntax error or an unsupported construct names the template line
  /// and column ("line 3, column 12: ...").
  static Result<Template> parse(std::string_view source);

  /// Renders with `context` as the template's variables. Errors name the template line;
  /// `raise_exception(msg)` in the template comes back as an invalid-argument error whose
  /// message ends with `msg`.
  Result<std::string> render(const Dict& context, const RenderLimits& limits = {}) const;

 private:
  std::shared_ptr<const Program> program_;
};

}  // namespace janus::text::jinja
