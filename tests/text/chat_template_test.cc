// The chat-template renderer against its oracle: every model template and conversation in
// tests/fixtures/chat_templates/cases.json, and every per-construct snippet in
// snippets.json, renders byte for byte as transformers/jinja2 rendered it (or fails with
// the error jinja2 raised). Fixtures: tests/fixtures/make_chat_template_fixtures.py.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/text/chat_template.h"

using janus::text::ChatTemplate;
using janus::text::load_chat_template;
using json = nlohmann::ordered_json;

namespace {

const std::string kFixtures = std::string(JANUS_SOURCE_DIR) + "/tests/fixtures/chat_templates/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture " << path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const std::string& name) { return json::parse(read_file(kFixtures + name)); }

std::string render_str(const std::string& source, const std::string& context = "{}") {
  auto t = ChatTemplate::parse(source);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  auto r = t->render(context);
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  return *r;
}

janus::Status render_error(const std::string& source, const std::string& context = "{}") {
  auto t = ChatTemplate::parse(source);
  if (!t.ok()) return t.status();
  auto r = t->render(context);
  REQUIRE_MESSAGE(!r.ok(), "expected an error, rendered: " << *r);
  return r.status();
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("chat templates of published models render as transformers renders them") {
  const json cases = read_json("cases.json");
  REQUIRE(cases.size() >= 100);
  int rendered = 0, raised = 0;
  std::map<std::string, int> per_model;
  for (const auto& c : cases) {
    const std::string label = c["model"].get<std::string>() + "/" + c["name"].get<std::string>() +
                              (c["add_generation_prompt"].get<bool>() ? " +gen" : "");
    CAPTURE(label);
    const std::string source = read_file(kFixtures + "templates/" + c["template"].get<std::string>());
    auto t = ChatTemplate::parse(source);
    REQUIRE_MESSAGE(t.ok(), t.status().to_string());
    const std::string extra = c["extra"].empty() ? std::string() : c["extra"].dump();
    auto r = t->apply(c["messages"].dump(), c["add_generation_prompt"].get<bool>(), c["bos_token"].get<std::string>(),
                      c["eos_token"].get<std::string>(), extra);
    if (c.contains("expected")) {
      REQUIRE_MESSAGE(r.ok(), r.status().to_string());
      CHECK(*r == c["expected"].get<std::string>());
      ++rendered;
      ++per_model[c["model"].get<std::string>()];
    } else {
      REQUIRE_MESSAGE(!r.ok(), "expected the template to raise, got: " << *r);
      CHECK(r.status().code() == janus::ErrorCode::kInvalidArgument);
      CHECK_MESSAGE(contains(r.status().message(), c["error"].get<std::string>()), r.status().message());
      ++raised;
    }
  }
  CHECK(raised >= 6);
  CHECK(rendered >= 150);
  CHECK(per_model.size() == 8);
  for (const auto& entry : per_model) CHECK_MESSAGE(entry.second >= 10, entry.first);
}

TEST_CASE("every construct renders as jinja2 renders it in transformers' environment") {
  const json snippets = read_json("snippets.json");
  REQUIRE(snippets.size() >= 90);
  for (const auto& s : snippets) {
    const std::string name = s["name"].get<std::string>();
    CAPTURE(name);
    auto t = ChatTemplate::parse(s["template"].get<std::string>());
    REQUIRE_MESSAGE(t.ok(), t.status().to_string());
    auto r = t->render(s["context"].dump());
    if (s.contains("expected")) {
      REQUIRE_MESSAGE(r.ok(), r.status().to_string());
      CHECK(*r == s["expected"].get<std::string>());
    } else {
      REQUIRE_MESSAGE(!r.ok(), "expected an error, got: " << *r);
      CHECK_MESSAGE(contains(r.status().message(), s["error"].get<std::string>()), r.status().message());
      CHECK(contains(r.status().message(), "line 1"));
    }
  }
}

TEST_CASE("raise_exception comes back as an error carrying the template's message and line") {
  const auto st = render_error("{% if true %}\n{{ raise_exception('no system role allowed') }}\n{% endif %}");
  CHECK(st.code() == janus::ErrorCode::kInvalidArgument);
  CHECK(contains(st.message(), "no system role allowed"));
  CHECK(contains(st.message(), "line 2"));
}

TEST_CASE("syntax errors name the template line and column") {
  struct Case {
    const char* source;
    const char* line_col;
    const char* what;
  };
  const Case cases[] = {
      {"ok\n{% if x %}\nno end", "line 3", "expected 'endif'"},
      {"{{ 1 +\n}}", "line 2, column 1", "unexpected"},
      {"a\nb {{ x | nosuchfilter }}", "line 2, column 10", "no filter named 'nosuchfilter'"},
      {"{% for x in y %}\n\n{{ x is wibble }}{% endfor %}", "line 3, column 9", "no test named 'wibble'"},
      {"{{ 'unterminated }}", "line 1, column 4", "unterminated string"},
      {"x\n  {% frobnicate %}", "line 2, column 6", "unknown tag 'frobnicate'"},
      {"{# never closed", "line 1, column 1", "unterminated comment"},
      {"{{ a[1:2:3:4] }}", "line 1", "too many ':'"},
      {"{% endfor %}", "line 1", "unknown tag 'endfor'"},
      {"{{ x ? y }}", "line 1, column 6", "unexpected character '?'"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.source);
    auto t = ChatTemplate::parse(c.source);
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().code() == janus::ErrorCode::kInvalidArgument);
    CHECK_MESSAGE(contains(t.status().message(), c.line_col), t.status().message());
    CHECK_MESSAGE(contains(t.status().message(), c.what), t.status().message());
  }
}

TEST_CASE("constructs outside the supported subset are refused with their line, not skipped") {
  const char* cases[] = {
      "a\n{% include 'other.jinja' %}", "a\n{% extends 'base' %}", "a\n{% import 'm' as m %}",
      "a\n{% raw %}{{ x }}{% endraw %}", "a\n{% for x in xs recursive %}{% endfor %}", "a\n{% do xs.append(1) %}",
      "a\n{% with x = 1 %}{% endwith %}", "a\n{% block b %}{% endblock %}",
  };
  for (const char* source : cases) {
    CAPTURE(source);
    auto t = ChatTemplate::parse(source);
    REQUIRE_FALSE(t.ok());
    CHECK_MESSAGE(contains(t.status().message(), "line 2"), t.status().message());
  }
  // Printf-style formatting parses (jinja2 has it) but is an error that names the line.
  const auto st = render_error("\n\n{{ '%s' % 1 }}");
  CHECK(st.code() == janus::ErrorCode::kUnsupported);
  CHECK(contains(st.message(), "line 3"));
}

TEST_CASE("runaway templates stop at a limit with a clear error") {
  SUBCASE("self-recursive macro") {
    const auto st = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}");
    CHECK(st.code() == janus::ErrorCode::kResourceExhausted);
    CHECK(contains(st.message(), "macros nested deeper than"));
  }
  SUBCASE("nested huge loops") {
    const auto st = render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
    CHECK(st.code() == janus::ErrorCode::kResourceExhausted);
    CHECK(contains(st.message(), "steps"));
  }
  SUBCASE("range past the sandbox's MAX_RANGE") {
    const auto st = render_error("{% for i in range(1000000) %}{% endfor %}");
    CHECK(contains(st.message(), "MAX_RANGE"));
  }
  SUBCASE("output that doubles itself") {
    auto t = ChatTemplate::parse(
        "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}");
    REQUIRE(t.ok());
    janus::text::jinja::RenderLimits limits;
    limits.max_output_bytes = 1 << 20;
    t->set_limits(limits);
    auto r = t->render("{}");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == janus::ErrorCode::kResourceExhausted);
  }
  SUBCASE("deeply nested expression at parse time") {
    auto t = ChatTemplate::parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}");
    REQUIRE_FALSE(t.ok());
    CHECK(contains(t.status().message(), "nested too deeply"));
  }
}

TEST_CASE("apply validates its JSON and passes extra variables through") {
  auto t = ChatTemplate::parse("{{ messages | length }}|{{ flag }}|{{ tools is none }}|{{ add_generation_prompt }}");
  REQUIRE(t.ok());
  auto r = t->apply(R"([{"role":"user","content":"x"}])", true, "<s>", "</s>", R"({"flag": 7})");
  REQUIRE(r.ok());
  CHECK(*r == "1|7|True|True");
  CHECK_FALSE(t->apply("not json", false, "", "").ok());
  CHECK_FALSE(t->apply(R"({"role":"user"})", false, "", "").ok());
  CHECK_FALSE(t->apply(R"([1, 2])", false, "", "").ok());
  CHECK_FALSE(t->apply("[]", false, "", "", "[1]").ok());
  CHECK_FALSE(t->render("[]").ok());
  // strftime_now is there (its output depends on the clock, so only its shape is checked).
  const std::string year = render_str("{{ strftime_now('%Y') }}");
  CHECK(year.size() == 4);
}

TEST_CASE("load_chat_template reads chat_template.jinja or tokenizer_config.json") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(JANUS_BINARY_DIR) / "chat_template_test_dirs";
  fs::remove_all(dir);
  auto write = [](const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
  };
  write(dir / "jinja" / "chat_template.jinja", "{{ 'from file' }}");
  write(dir / "jinja" / "tokenizer_config.json", R"({"chat_template": "from config"})");
  write(dir / "string" / "tokenizer_config.json", R"({"chat_template": "{{ bos_token }}"})");
  write(dir / "list" / "tokenizer_config.json",
        R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  write(dir / "list_no_default" / "tokenizer_config.json", R"({"chat_template": [{"name": "rag", "template": "R"}]})");
  write(dir / "none" / "tokenizer_config.json", R"({"model_max_length": 10})");
  fs::create_directories(dir / "empty");

  auto a = load_chat_template((dir / "jinja").string());
  REQUIRE(a.ok());
  CHECK(*a == "{{ 'from file' }}");
  auto b = load_chat_template((dir / "string").string());
  REQUIRE(b.ok());
  CHECK(*b == "{{ bos_token }}");
  auto c = load_chat_template((dir / "list").string());
  REQUIRE(c.ok());
  CHECK(*c == "D");
  auto d = load_chat_template((dir / "list_no_default").string());
  CHECK(d.status().code() == janus::ErrorCode::kNotFound);
  auto e = load_chat_template((dir / "none").string());
  CHECK(e.status().code() == janus::ErrorCode::kNotFound);
  CHECK(contains(e.status().message(), "no chat template"));
  auto f = load_chat_template((dir / "empty").string());
  CHECK(f.status().code() == janus::ErrorCode::kNotFound);
  fs::remove_all(dir);
}
