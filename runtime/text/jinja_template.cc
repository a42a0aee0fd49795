// The lexer follows jinja2's own (lexer.py) for whitespace: `-` strips all whitespace on
// that side of a tag, trim_blocks drops the one newline after a block or comment tag, and
// lstrip_blocks drops spaces and tabs before a block or comment tag that starts a line.
// The parser follows jinja2's precedence (parser.py). The interpreter gives each loop
// iteration and each macro call a fresh scope, as jinja2's compiled code does, so a `set`
// inside a loop is gone after it (namespace() is how templates carry state out).
#include "runtime/text/jinja_template.h"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <unordered_map>
#include <unordered_set>

#include "runtime/text/utf8.h"

namespace janus::text::jinja {
namespace {

// ---------------------------------------------------------------- tokens ---------------

enum class Tok { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  Tok type;
  std::string text;  // kText content, name, decoded string literal, operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int col = 1;
};

std::string where(int line, int col) {
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

Status syntax_error(int line, int col, const std::string& msg) {
  return invalid_argument("chat template syntax error at " + where(line, col) + ": " + msg);
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {
    line_starts_.push_back(0);
    for (size_t k = 0; k < src_.size(); ++k)
      if (src_[k] == '\n') line_starts_.push_back(k + 1);
  }

  Result<std::vector<Token>> run() {
    size_t pos = 0;
    // What the previous tag asked of the text after it.
    bool strip_all_after = false;
    bool trim_newline_after = false;
    while (pos <= src_.size()) {
      size_t tag = std::string::npos;
      for (size_t k = src_.find('{', pos); k != std::string::npos; k = src_.find('{', k + 1)) {
        if (k + 1 < src_.size() && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) {
          tag = k;
          break;
        }
      }
      size_t text_begin = pos;
      const size_t text_end = tag == std::string::npos ? src_.size() : tag;
      if (strip_all_after) {
        while (text_begin < text_end && is_space(src_[text_begin])) ++text_begin;
      } else if (trim_newline_after && text_begin < text_end && src_[text_begin] == '\n') {
        ++text_begin;
      }
      std::string text = src_.substr(text_begin, text_end - text_begin);
      if (tag == std::string::npos) {
        if (!text.empty()) push(Tok::kText, text, text_begin);
        break;
      }
      const char kind = src_[tag + 1];
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        size_t n = text.size();
        while (n > 0 && is_space(text[n - 1])) --n;
        text.resize(n);
      } else if (sign != '+' && kind != '{') {
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        // `line_starting` covers text that begins a line because the tag before it ate
        // the newline (trim_blocks) or because it starts the template.
        const bool line_starting = text_begin == 0 || src_[text_begin - 1] == '\n';
        const bool at_line_start = l_pos > 0 || line_starting;
        if (at_line_start && l_pos < text.size()) {
          bool blank = true;
          for (size_t k = l_pos; k < text.size(); ++k)
            if (!is_space(text[k])) blank = false;
          if (blank) text.resize(l_pos);
        }
      }
      if (!text.empty()) push(Tok::kText, text, text_begin);
      size_t p = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      char end_sign = '\0';
      if (kind == '#') {
        const size_t close = src_.find("#}", p);
        if (close == std::string::npos) return error_at(tag, "unterminated comment (missing '#}')");
        end_sign = close > p && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : '\0';
        pos = close + 2;
      } else {
        const bool block = kind == '%';
        if (block && is_raw_tag(p)) return error_at(tag, "{% raw %} blocks are not supported");
        push(block ? Tok::kBlockBegin : Tok::kVarBegin, "", tag);
        JANUS_ASSIGN_OR_RETURN(p, lex_tag(p, block, end_sign));
        push(block ? Tok::kBlockEnd : Tok::kVarEnd, "", p);
        pos = p + 2 + 0;
        if (end_sign) pos = p + 3;
      }
      strip_all_after = end_sign == '-';
      trim_newline_after = kind != '{' && end_sign != '+' && end_sign != '-';
    }
    push(Tok::kEof, "", src_.size());
    return std::move(tokens_);
  }

 private:
  static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

  void position(size_t offset, int& line, int& col) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const size_t idx = static_cast<size_t>(it - line_starts_.begin()) - 1;
    line = static_cast<int>(idx) + 1;
    col = static_cast<int>(offset - line_starts_[idx]) + 1;
  }

  Status error_at(size_t offset, const std::string& msg) const {
    int line, col;
    position(offset, line, col);
    return syntax_error(line, col, msg);
  }

  Token& push(Tok t, std::string text, size_t offset) {
    Token tok{t, std::move(text)};
    position(offset, tok.line, tok.col);
    tokens_.push_back(std::move(tok));
    return tokens_.back();
  }

  bool is_raw_tag(size_t p) const {
    while (p < src_.size() && is_space(src_[p])) ++p;
    return src_.compare(p, 3, "raw") == 0 && (p + 3 >= src_.size() || !std::isalnum(static_cast<unsigned char>(src_[p + 3])));
  }

  // Lexes the inside of a tag from `p`; returns the offset of its closing `%}` / `}}` (or
  // of the sign before it, reported in `end_sign`).
  Result<size_t> lex_tag(size_t p, bool block, char& end_sign) {
    const char close = block ? '%' : '}';
    while (true) {
      while (p < src_.size() && is_space(src_[p])) ++p;
      if (p >= src_.size()) return error_at(p, block ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'");
      const char c = src_[p];
      if ((c == '-' || c == '+') && p + 2 < src_.size() + 0 && src_[p + 1] == close && src_[p + 2] == '}') {
        end_sign = c;
        return p;
      }
      if (c == close && p + 1 < src_.size() && src_[p + 1] == '}') {
        end_sign = '\0';
        return p;
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t q = p;
        while (q < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[q])) || src_[q] == '_')) ++q;
        push(Tok::kName, src_.substr(p, q - p), p);
        p = q;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t q = p;
        while (q < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[q])) || src_[q] == '_')) ++q;
        bool is_float = false;
        if (q + 1 < src_.size() && src_[q] == '.' && std::isdigit(static_cast<unsigned char>(src_[q + 1]))) {
          is_float = true;
          ++q;
          while (q < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[q])) || src_[q] == '_')) ++q;
        }
        if (q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
          size_t r = q + 1;
          if (r < src_.size() && (src_[r] == '+' || src_[r] == '-')) ++r;
          if (r < src_.size() && std::isdigit(static_cast<unsigned char>(src_[r]))) {
            is_float = true;
            q = r;
            while (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) ++q;
          }
        }
        std::string digits;
        for (size_t k = p; k < q; ++k)
          if (src_[k] != '_') digits += src_[k];
        Token& t = push(is_float ? Tok::kFloat : Tok::kInt, digits, p);
        if (is_float) {
          t.float_value = std::strtod(digits.c_str(), nullptr);
        } else {
          errno = 0;
          t.int_value = std::strtoll(digits.c_str(), nullptr, 10);
          if (errno == ERANGE) return error_at(p, "integer literal out of range");
        }
        p = q;
      } else if (c == '\'' || c == '"') {
        JANUS_ASSIGN_OR_RETURN(p, lex_string(p));
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                           ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", ";"};
        bool found = false;
        for (const char* op : kOps) {
          const size_t n = std::strlen(op);
          if (src_.compare(p, n, op) == 0) {
            push(Tok::kOp, op, p);
            p += n;
            found = true;
            break;
          }
        }
        if (!found) return error_at(p, std::string("unexpected character '") + c + "'");
      }
    }
  }

  Result<size_t> lex_string(size_t p) {
    const char quote = src_[p];
    std::string out;
    size_t q = p + 1;
    while (true) {
      if (q >= src_.size()) return error_at(p, "unterminated string literal");
      const char c = src_[q];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++q;
        continue;
      }
      if (q + 1 >= src_.size()) return error_at(p, "unterminated string literal");
      const char e = src_[q + 1];
      q += 2;
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '0': out += '\0'; break;
        case '\n': break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (q + n > src_.size()) return error_at(q - 2, "truncated \\" + std::string(1, e) + " escape");
          char32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            const char h = src_[q + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) return error_at(q - 2, "bad \\" + std::string(1, e) + " escape");
            cp = cp * 16 + static_cast<char32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          append_utf8(out, cp);
          q += n;
          break;
        }
        default:
          // Python keeps an unknown escape as written.
          out += '\\';
          out += e;
      }
    }
    push(Tok::kString, out, p);
    return q + 1;
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------- syntax tree ----------

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class EK { kLiteral, kName, kGetAttr, kGetItem, kSlice, kCall, kFilter, kTest, kUnary, kBinary, kAnd, kOr, kNot,
                kCompare, kCond, kList, kTuple, kDict };

struct Expr {
  EK kind;
  int line = 0;
  Value literal;
  std::string name;  // variable, attribute, filter, test, operator
  bool negated = false;
  ExprPtr a, b, c, d;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: one per operand after the first
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

enum class SK { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kCallBlock, kFilterBlock, kBreak, kContinue, kGeneration };

struct Stmt {
  SK kind;
  int line = 0;
  std::string text;                    // kText; kMacro: name
  ExprPtr expr;                        // output, set value, for iterable, call
  ExprPtr cond;                        // for ... if
  std::vector<std::string> targets;    // for / set names; set: "ns.attr" when attr is set
  std::string attr;                    // set ns.attr
  std::vector<std::pair<ExprPtr, Body>> branches;  // if / elif
  Body body, else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters with defaults
  std::vector<std::string> caller_params;
};

}  // namespace

struct Program {
  Body body;
};

namespace {

// ---------------------------------------------------------------- parser ---------------

const std::unordered_set<std::string>& known_filters();
const std::unordered_set<std::string>& known_tests();

constexpr int kMaxNesting = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  Result<Body> parse_template() {
    Body body;
    std::string end;
    JANUS_TRY(parse_body(body, {}, end));
    return body;
  }

 private:
  const Token& cur() const { return t_[p_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::kName && cur().text == n; }
  Status err(const std::string& msg) const { return syntax_error(cur().line, cur().col, msg); }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case Tok::kBlockEnd: return "end of statement block";
      case Tok::kVarEnd: return "end of print statement";
      case Tok::kEof: return "end of template";
      case Tok::kString: return "string";
      case Tok::kInt:
      case Tok::kFloat: return "number";
      default: return "'" + t.text + "'";
    }
  }
  Status expect_op(const char* op) {
    if (!is_op(op)) return err(std::string("expected '") + op + "', got " + describe(cur()));
    ++p_;
    return Status::Ok();
  }
  Status expect_block_end() {
    if (cur().type != Tok::kBlockEnd) return err("expected end of statement block, got " + describe(cur()));
    ++p_;
    return Status::Ok();
  }
  Result<std::string> expect_name() {
    if (cur().type != Tok::kName) return err("expected a name, got " + describe(cur()));
    return t_[p_++].text;
  }

  // Parses statements until a block tag whose name is in `ends` (consumed up to and
  // including that name; `end` says which).
  Status parse_body(Body& body, const std::vector<std::string>& ends, std::string& end) {
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::kEof) {
        if (ends.empty()) return Status::Ok();
        std::string closing = ends.back();
        for (const auto& e : ends)
          if (e.rfind("end", 0) == 0) closing = e;
        return syntax_error(t.line, t.col, "unexpected end of template, expected '" + closing + "'");
      }
      if (t.type == Tok::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = SK::kText;
        s->line = t.line;
        s->text = t.text;
        body.push_back(std::move(s));
        ++p_;
        continue;
      }
      if (t.type == Tok::kVarBegin) {
        ++p_;
        auto s = std::make_unique<Stmt>();
        s->kind = SK::kOutput;
        s->line = t.line;
        JANUS_ASSIGN_OR_RETURN(s->expr, parse_tuple(true));
        if (cur().type != Tok::kVarEnd) return err("expected end of print statement, got " + describe(cur()));
        ++p_;
        body.push_back(std::move(s));
        continue;
      }
      if (t.type != Tok::kBlockBegin) return err("unexpected " + describe(t));
      const Token& name = peek();
      if (name.type != Tok::kName) return syntax_error(name.line, name.col, "expected a statement name");
      if (std::find(ends.begin(), ends.end(), name.text) != ends.end()) {
        p_ += 2;
        end = name.text;
        return Status::Ok();
      }
      ++p_;
      JANUS_ASSIGN_OR_RETURN(auto stmt, parse_statement());
      body.push_back(std::move(stmt));
    }
  }

  Result<std::unique_ptr<Stmt>> parse_statement() {
    const Token tag = cur();
    ++p_;
    auto s = std::make_unique<Stmt>();
    s->line = tag.line;
    const std::string& n = tag.text;
    if (++depth_ > kMaxNesting) return syntax_error(tag.line, tag.col, "statements nested too deeply");
    struct DepthGuard {
      int& d;
      ~DepthGuard() { --d; }
    } guard{depth_};
    std::string end;
    if (n == "for") {
      s->kind = SK::kFor;
      JANUS_ASSIGN_OR_RETURN(std::string first, expect_name());
      s->targets.push_back(first);
      while (is_op(",")) {
        ++p_;
        JANUS_ASSIGN_OR_RETURN(std::string more, expect_name());
        s->targets.push_back(more);
      }
      if (!is_name("in")) return err("expected 'in', got " + describe(cur()));
      ++p_;
      JANUS_ASSIGN_OR_RETURN(s->expr, parse_tuple(false));
      if (is_name("if")) {
        ++p_;
        JANUS_ASSIGN_OR_RETURN(s->cond, parse_expression(true));
      }
      if (is_name("recursive")) return err("recursive for loops are not supported");
      JANUS_TRY(expect_block_end());
      JANUS_TRY(parse_body(s->body, {"endfor", "else"}, end));
      if (end == "else") {
        JANUS_TRY(expect_block_end());
        JANUS_TRY(parse_body(s->else_body, {"endfor"}, end));
      }
      JANUS_TRY(expect_block_end());
      return s;
    }
    if (n == "if") {
      s->kind = SK::kIf;
      while (true) {
        JANUS_ASSIGN_OR_RETURN(ExprPtr cond, parse_tuple(false));
        JANUS_TRY(expect_block_end());
        Body body;
        JANUS_TRY(parse_body(body, {"elif", "else", "endif"}, end));
        s->branches.emplace_back(std::move(cond), std::move(body));
        if (end == "elif") continue;
        if (end == "else") {
          JANUS_TRY(expect_block_end());
          JANUS_TRY(parse_body(s->else_body, {"endif"}, end));
        }
        JANUS_TRY(expect_block_end());
        return s;
      }
    }
    if (n == "set") {
      JANUS_ASSIGN_OR_RETURN(std::string first, expect_name());
      s->targets.push_back(first);
      if (is_op(".")) {
        ++p_;
        JANUS_ASSIGN_OR_RETURN(s->attr, expect_name());
      } else {
        while (is_op(",")) {
          ++p_;
          JANUS_ASSIGN_OR_RETURN(std::string more, expect_name());
          s->targets.push_back(more);
        }
      }
      if (is_op("=")) {
        ++p_;
        s->kind = SK::kSet;
        JANUS_ASSIGN_OR_RETURN(s->expr, parse_tuple(true));
        JANUS_TRY(expect_block_end());
        return s;
      }
      if (s->targets.size() != 1 || !s->attr.empty()) return err("expected '='");
      if (is_op("|")) return err("filters on a block set are not supported");
      s->kind = SK::kSetBlock;
      JANUS_TRY(expect_block_end());
      JANUS_TRY(parse_body(s->body, {"endset"}, end));
      JANUS_TRY(expect_block_end());
      return s;
    }
    if (n == "macro") {
      s->kind = SK::kMacro;
      JANUS_ASSIGN_OR_RETURN(s->text, expect_name());
      JANUS_TRY(parse_params(s->params));
      JANUS_TRY(expect_block_end());
      JANUS_TRY(parse_body(s->body, {"endmacro"}, end));
      if (cur().type == Tok::kName) ++p_;  // {% endmacro name %}
      JANUS_TRY(expect_block_end());
      return s;
    }
    if (n == "call") {
      s->kind = SK::kCallBlock;
      if (is_op("(")) {
        std::vector<std::pair<std::string, ExprPtr>> params;
        JANUS_TRY(parse_params(params));
        for (auto& pr : params) {
          if (pr.second) return err("defaults for caller parameters are not supported");
          s->caller_params.push_back(pr.first);
        }
      }
      JANUS_ASSIGN_OR_RETURN(s->expr, parse_expression(true));
      if (s->expr->kind != EK::kCall) return err("expected a macro call after 'call'");
      JANUS_TRY(expect_block_end());
      JANUS_TRY(parse_body(s->body, {"endcall"}, end));
      JANUS_TRY(expect_block_end());
      return s;
    }
    if (n == "filter") {
      s->kind = SK::kFilterBlock;
      // The filter is parsed as a filter applied to a placeholder literal.
      auto placeholder = std::make_unique<Expr>();
      placeholder->kind = EK::kLiteral;
      JANUS_ASSIGN_OR_RETURN(s->expr, parse_filter(std::move(placeholder), false));
      while (is_op("|")) {
        JANUS_ASSIGN_OR_RETURN(s->expr, parse_filter(std::move(s->expr)));
      }
      JANUS_TRY(expect_block_end());
      JANUS_TRY(parse_body(s->body, {"endfilter"}, end));
      JANUS_TRY(expect_block_end());
      return s;
    }
    if (n == "generation") {
      // transformers' AssistantTracker: the body renders as is; only its span is tracked.
      s->kind = SK::kGeneration;
      JANUS_TRY(expect_block_end());
      JANUS_TRY(parse_body(s->body, {"endgeneration"}, end));
      JANUS_TRY(expect_block_end());
      return s;
    }
    if (n == "break" || n == "continue") {
      s->kind = n == "break" ? SK::kBreak : SK::kContinue;
      JANUS_TRY(expect_block_end());
      return s;
    }
    static const std::unordered_set<std::string> kUnsupported = {
        "include", "import", "from", "extends", "block", "with", "autoescape", "trans", "do"};
    if (kUnsupported.count(n))
      return syntax_error(tag.line, tag.col, "'{% " + n + " %}' is not supported by this chat template renderer");
    return syntax_error(tag.line, tag.col, "unknown tag '" + n + "'");
  }

  Status parse_params(std::vector<std::pair<std::string, ExprPtr>>& params) {
    JANUS_TRY(expect_op("("));
    while (!is_op(")")) {
      if (!params.empty()) JANUS_TRY(expect_op(","));
      if (is_op(")")) break;
      JANUS_ASSIGN_OR_RETURN(std::string pname, expect_name());
      ExprPtr def;
      if (is_op("=")) {
        ++p_;
        JANUS_ASSIGN_OR_RETURN(def, parse_expression(true));
      }
      params.emplace_back(pname, std::move(def));
    }
    ++p_;
    return Status::Ok();
  }

  ExprPtr node(EK k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }

  // `a, b` without brackets is a tuple (in print statements, set and for).
  Result<ExprPtr> parse_tuple(bool with_condexpr) {
    const int line = cur().line;
    JANUS_ASSIGN_OR_RETURN(ExprPtr first, parse_expression(with_condexpr));
    if (!is_op(",")) return first;
    auto tup = node(EK::kTuple, line);
    tup->args.push_back(std::move(first));
    while (is_op(",")) {
      ++p_;
      if (cur().type == Tok::kBlockEnd || cur().type == Tok::kVarEnd || is_op(")")) break;
      JANUS_ASSIGN_OR_RETURN(ExprPtr more, parse_expression(with_condexpr));
      tup->args.push_back(std::move(more));
    }
    return tup;
  }

  Result<ExprPtr> parse_expression(bool with_condexpr) {
    if (++depth_ > kMaxNesting) return err("expression nested too deeply");
    struct DepthGuard {
      int& d;
      ~DepthGuard() { --d; }
    } guard{depth_};
    if (!with_condexpr) return parse_or();
    JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_or());
    while (is_name("if")) {
      const int line = cur().line;
      ++p_;
      JANUS_ASSIGN_OR_RETURN(ExprPtr cond, parse_or());
      auto ce = node(EK::kCond, line);
      ce->a = std::move(e);
      ce->b = std::move(cond);
      if (is_name("else")) {
        ++p_;
        JANUS_ASSIGN_OR_RETURN(ce->c, parse_expression(true));
      }
      e = std::move(ce);
    }
    return e;
  }

  Result<ExprPtr> parse_or() {
    JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_and());
    while (is_name("or")) {
      const int line = cur().line;
      ++p_;
      JANUS_ASSIGN_OR_RETURN(ExprPtr r, parse_and());
      auto n = node(EK::kOr, line);
      n->a = std::move(e);
      n->b = std::move(r);
      e = std::move(n);
    }
    return e;
  }

  Result<ExprPtr> parse_and() {
    JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_not());
    while (is_name("and")) {
      const int line = cur().line;
      ++p_;
      JANUS_ASSIGN_OR_RETURN(ExprPtr r, parse_not());
      auto n = node(EK::kAnd, line);
      n->a = std::move(e);
      n->b = std::move(r);
      e = std::move(n);
    }
    return e;
  }

  Result<ExprPtr> parse_not() {
    if (is_name("not")) {
      const int line = cur().line;
      ++p_;
      if (++depth_ > kMaxNesting) return err("expression nested too deeply");
      auto inner = parse_not();
      --depth_;
      if (!inner.ok()) return inner.status();
      auto n = node(EK::kNot, line);
      n->a = std::move(inner).value();
      return n;
    }
    return parse_compare();
  }

  Result<ExprPtr> parse_compare() {
    const int line = cur().line;
    JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_math1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::kOp &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" || cur().text == "<=" ||
           cur().text == ">=")) {
        op = cur().text;
        ++p_;
      } else if (is_name("in")) {
        op = "in";
        ++p_;
      } else if (is_name("not") && peek().type == Tok::kName && peek().text == "in") {
        op = "notin";
        p_ += 2;
      } else {
        break;
      }
      JANUS_ASSIGN_OR_RETURN(ExprPtr r, parse_math1());
      if (!cmp) {
        cmp = node(EK::kCompare, line);
        cmp->a = std::move(e);
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(std::move(r));
    }
    if (cmp) return cmp;
    return e;
  }

  Result<ExprPtr> binary(const std::string& op, ExprPtr l, ExprPtr r, int line) {
    auto n = node(EK::kBinary, line);
    n->name = op;
    n->a = std::move(l);
    n->b = std::move(r);
    return n;
  }

  Result<ExprPtr> parse_math1() {
    JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_concat());
    while (is_op("+") || is_op("-")) {
      const std::string op = cur().text;
      const int line = cur().line;
      ++p_;
      JANUS_ASSIGN_OR_RETURN(ExprPtr r, parse_concat());
      JANUS_ASSIGN_OR_RETURN(e, binary(op, std::move(e), std::move(r), line));
    }
    return e;
  }

  Result<ExprPtr> parse_concat() {
    JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_math2());
    while (is_op("~")) {
      const int line = cur().line;
      ++p_;
      JANUS_ASSIGN_OR_RETURN(ExprPtr r, parse_math2());
      JANUS_ASSIGN_OR_RETURN(e, binary("~", std::move(e), std::move(r), line));
    }
    return e;
  }

  Result<ExprPtr> parse_math2() {
    JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_pow());
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = cur().text;
      const int line = cur().line;
      ++p_;
      JANUS_ASSIGN_OR_RETURN(ExprPtr r, parse_pow());
      JANUS_ASSIGN_OR_RETURN(e, binary(op, std::move(e), std::move(r), line));
    }
    return e;
  }

  Result<ExprPtr> parse_pow() {
    JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_unary(true));
    while (is_op("**")) {
      const int line = cur().line;
      ++p_;
      JANUS_ASSIGN_OR_RETURN(ExprPtr r, parse_unary(true));
      JANUS_ASSIGN_OR_RETURN(e, binary("**", std::move(e), std::move(r), line));
    }
    return e;
  }

  Result<ExprPtr> parse_unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const std::string op = cur().text;
      const int line = cur().line;
      ++p_;
      if (++depth_ > kMaxNesting) return err("expression nested too deeply");
      auto inner = parse_unary(false);
      --depth_;
      if (!inner.ok()) return inner.status();
      e = node(EK::kUnary, line);
      e->name = op;
      e->a = std::move(inner).value();
    } else {
      JANUS_ASSIGN_OR_RETURN(e, parse_primary());
    }
    JANUS_ASSIGN_OR_RETURN(e, parse_postfix(std::move(e)));
    if (with_filter) {
      JANUS_ASSIGN_OR_RETURN(e, parse_filter_expr(std::move(e)));
    }
    return e;
  }

  Result<ExprPtr> parse_primary() {
    const Token& t = cur();
    if (t.type == Tok::kName) {
      const std::string& n = t.text;
      auto e = node(EK::kLiteral, t.line);
      if (n == "true" || n == "True") e->literal = Value::boolean(true);
      else if (n == "false" || n == "False") e->literal = Value::boolean(false);
      else if (n == "none" || n == "None") e->literal = Value::none();
      else {
        e->kind = EK::kName;
        e->name = n;
      }
      ++p_;
      return e;
    }
    if (t.type == Tok::kString) {
      std::string s;
      const int line = t.line;
      while (cur().type == Tok::kString) s += t_[p_++].text;  // adjacent literals join
      auto e = node(EK::kLiteral, line);
      e->literal = Value::string(std::move(s));
      return e;
    }
    if (t.type == Tok::kInt || t.type == Tok::kFloat) {
      auto e = node(EK::kLiteral, t.line);
      e->literal = t.type == Tok::kInt ? Value::integer(t.int_value) : Value::real(t.float_value);
      ++p_;
      return e;
    }
    if (is_op("(")) {
      const int line = t.line;
      ++p_;
      if (is_op(")")) {
        ++p_;
        return node(EK::kTuple, line);
      }
      JANUS_ASSIGN_OR_RETURN(ExprPtr e, parse_expression(true));
      if (is_op(",")) {
        auto tup = node(EK::kTuple, line);
        tup->args.push_back(std::move(e));
        while (is_op(",")) {
          ++p_;
          if (is_op(")")) break;
          JANUS_ASSIGN_OR_RETURN(ExprPtr more, parse_expression(true));
          tup->args.push_back(std::move(more));
        }
        e = std::move(tup);
      }
      JANUS_TRY(expect_op(")"));
      return e;
    }
    if (is_op("[")) {
      auto e = node(EK::kList, t.line);
      ++p_;
      while (!is_op("]")) {
        if (!e->args.empty()) JANUS_TRY(expect_op(","));
        if (is_op("]")) break;
        JANUS_ASSIGN_OR_RETURN(ExprPtr item, parse_expression(true));
        e->args.push_back(std::move(item));
      }
      ++p_;
      return e;
    }
    if (is_op("{")) {
      auto e = node(EK::kDict, t.line);
      ++p_;
      while (!is_op("}")) {
        if (!e->args.empty()) JANUS_TRY(expect_op(","));
        if (is_op("}")) break;
        JANUS_ASSIGN_OR_RETURN(ExprPtr k, parse_expression(true));
        JANUS_TRY(expect_op(":"));
        JANUS_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
        e->args.push_back(std::move(k));
        e->args.push_back(std::move(v));
      }
      ++p_;
      return e;
    }
    return err("unexpected " + describe(t));
  }

  Result<ExprPtr> parse_postfix(ExprPtr e) {
    while (true) {
      const int line = cur().line;
      if (is_op(".")) {
        ++p_;
        if (cur().type == Tok::kName) {
          auto n = node(EK::kGetAttr, line);
          n->a = std::move(e);
          n->name = t_[p_++].text;
          e = std::move(n);
        } else if (cur().type == Tok::kInt) {
          auto n = node(EK::kGetItem, line);
          n->a = std::move(e);
          n->b = node(EK::kLiteral, line);
          n->b->literal = Value::integer(t_[p_++].int_value);
          e = std::move(n);
        } else {
          return err("expected an attribute name after '.'");
        }
      } else if (is_op("[")) {
        ++p_;
        ExprPtr parts[3];
        int colons = 0;
        while (!is_op("]")) {
          if (is_op(":")) {
            if (++colons > 2) return err("too many ':' in a slice");
            ++p_;
            continue;
          }
          if (parts[colons]) return err("expected ']' or ':'");
          JANUS_ASSIGN_OR_RETURN(parts[colons], parse_expression(true));
          if (colons == 0 && is_op(",")) return err("tuple subscripts are not supported");
        }
        ++p_;
        if (colons == 0) {
          if (!parts[0]) return err("empty subscript");
          auto n = node(EK::kGetItem, line);
          n->a = std::move(e);
          n->b = std::move(parts[0]);
          e = std::move(n);
        } else {
          auto n = node(EK::kSlice, line);
          n->a = std::move(e);
          n->b = std::move(parts[0]);
          n->c = std::move(parts[1]);
          n->d = std::move(parts[2]);
          e = std::move(n);
        }
      } else if (is_op("(")) {
        JANUS_ASSIGN_OR_RETURN(e, parse_call(std::move(e)));
      } else {
        return e;
      }
    }
  }

  Status parse_args(Expr& call) {
    JANUS_TRY(expect_op("("));
    bool first = true;
    while (!is_op(")")) {
      if (!first) JANUS_TRY(expect_op(","));
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) return err("*args and **kwargs in calls are not supported");
      if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == "=") {
        std::string key = cur().text;
        p_ += 2;
        JANUS_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
        call.kwargs.emplace_back(std::move(key), std::move(v));
      } else {
        if (!call.kwargs.empty()) return err("positional argument after a keyword argument");
        JANUS_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
        call.args.push_back(std::move(v));
      }
    }
    ++p_;
    return Status::Ok();
  }

  Result<ExprPtr> parse_call(ExprPtr callee) {
    auto n = node(EK::kCall, cur().line);
    n->a = std::move(callee);
    JANUS_TRY(parse_args(*n));
    return n;
  }

  Result<ExprPtr> parse_filter(ExprPtr e, bool after_pipe = true) {
    if (after_pipe) JANUS_TRY(expect_op("|"));
    const Token t = cur();
    JANUS_ASSIGN_OR_RETURN(std::string name, expect_name());
    while (is_op(".")) {
      ++p_;
      JANUS_ASSIGN_OR_RETURN(std::string more, expect_name());
      name += "." + more;
    }
    if (!known_filters().count(name)) return syntax_error(t.line, t.col, "no filter named '" + name + "'");
    auto n = node(EK::kFilter, t.line);
    n->name = name;
    n->a = std::move(e);
    if (is_op("(")) JANUS_TRY(parse_args(*n));
    return n;
  }

  Result<ExprPtr> parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        JANUS_ASSIGN_OR_RETURN(e, parse_filter(std::move(e)));
      } else if (is_name("is")) {
        ++p_;
        const Token t = cur();
        bool negated = false;
        if (is_name("not")) {
          negated = true;
          ++p_;
        }
        const Token nt = cur();
        JANUS_ASSIGN_OR_RETURN(std::string name, expect_name());
        if (name == "none" || name == "None") name = "none";
        if (name == "True") name = "true";
        if (name == "False") name = "false";
        if (!known_tests().count(name)) return syntax_error(nt.line, nt.col, "no test named '" + name + "'");
        auto n = node(EK::kTest, t.line);
        n->name = name;
        n->negated = negated;
        n->a = std::move(e);
        if (is_op("(")) {
          JANUS_TRY(parse_args(*n));
        } else if ((cur().type == Tok::kName && cur().text != "else" && cur().text != "or" && cur().text != "and" &&
                    cur().text != "if" && cur().text != "is" && cur().text != "in" && cur().text != "not") ||
                   cur().type == Tok::kString || cur().type == Tok::kInt || cur().type == Tok::kFloat ||
                   is_op("[") || is_op("{") || (is_op("-") && false)) {
          JANUS_ASSIGN_OR_RETURN(ExprPtr arg, parse_primary());
          JANUS_ASSIGN_OR_RETURN(arg, parse_postfix(std::move(arg)));
          n->args.push_back(std::move(arg));
        }
        e = std::move(n);
      } else if (is_op("(")) {
        JANUS_ASSIGN_OR_RETURN(e, parse_call(std::move(e)));
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  int depth_ = 0;
};

// ---------------------------------------------------------------- text helpers ---------

std::vector<char32_t> decode_all(std::string_view s) {
  std::vector<char32_t> out;
  size_t k = 0;
  while (k < s.size()) {
    const CodePoint cp = decode_utf8(s.substr(k));
    out.push_back(cp.value);
    k += cp.bytes;
  }
  return out;
}

std::string encode_all(const std::vector<char32_t>& cps) {
  std::string out;
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

// Python's str.isspace.
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

char32_t upper_cp(char32_t c) { return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c))); }
char32_t lower_cp(char32_t c) { return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))); }
bool cased_cp(char32_t c) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}
bool word_cp(char32_t c) {
  if (c == '_') return true;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) || (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) ||
         cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_MC;
}

std::string str_upper(std::string_view s) {
  auto cps = decode_all(s);
  for (auto& c : cps) c = upper_cp(c);
  return encode_all(cps);
}
std::string str_lower(std::string_view s) {
  auto cps = decode_all(s);
  for (auto& c : cps) c = lower_cp(c);
  return encode_all(cps);
}
// Python's str.title: a cased character after an uncased one starts a word.
std::string str_title(std::string_view s) {
  auto cps = decode_all(s);
  bool prev_cased = false;
  for (auto& c : cps) {
    const bool cased = cased_cp(c);
    if (cased) c = prev_cased ? lower_cp(c) : upper_cp(c);
    prev_cased = cased;
  }
  return encode_all(cps);
}
std::string str_capitalize(std::string_view s) {
  auto cps = decode_all(s);
  for (size_t k = 0; k < cps.size(); ++k) cps[k] = k == 0 ? upper_cp(cps[k]) : lower_cp(cps[k]);
  return encode_all(cps);
}

// Python's str.strip family; `chars` empty-and-null means whitespace.
std::string str_strip(std::string_view s, const std::string* chars, bool left, bool right) {
  auto cps = decode_all(s);
  std::vector<char32_t> set;
  if (chars) set = decode_all(*chars);
  auto strip_it = [&](char32_t c) { return chars ? std::find(set.begin(), set.end(), c) != set.end() : py_space(c); };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return encode_all(std::vector<char32_t>(cps.begin() + static_cast<long>(b), cps.begin() + static_cast<long>(e)));
}

std::string str_replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count) {
  std::string out;
  if (old.empty()) {
    const auto cps = split_code_points(s);
    int64_t done = 0;
    for (size_t k = 0; k <= cps.size(); ++k) {
      if (count < 0 || done < count) {
        out += rep;
        ++done;
      }
      if (k < cps.size()) out += cps[k];
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(old, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += rep;
    pos = hit + old.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

Result<Value> str_split(const std::string& s, const Value* sep, int64_t maxsplit) {
  std::vector<Value> parts;
  if (!sep || sep->is_none()) {
    const auto cps = decode_all(s);
    size_t k = 0;
    while (true) {
      while (k < cps.size() && py_space(cps[k])) ++k;
      if (k >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
        size_t e = cps.size();
        while (e > k && py_space(cps[e - 1])) --e;
        parts.push_back(Value::string(encode_all(std::vector<char32_t>(cps.begin() + static_cast<long>(k), cps.begin() + static_cast<long>(e)))));
        break;
      }
      size_t e = k;
      while (e < cps.size() && !py_space(cps[e])) ++e;
      parts.push_back(Value::string(encode_all(std::vector<char32_t>(cps.begin() + static_cast<long>(k), cps.begin() + static_cast<long>(e)))));
      k = e;
    }
    return Value::make_list(std::move(parts));
  }
  if (!sep->is_string()) return invalid_argument(std::string("must be str or None, not ") + type_name(*sep));
  if (sep->s.empty()) return invalid_argument("empty separator");
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    const size_t hit = s.find(sep->s, pos);
    if (hit == std::string::npos) break;
    parts.push_back(Value::string(s.substr(pos, hit - pos)));
    pos = hit + sep->s.size();
  }
  parts.push_back(Value::string(s.substr(pos)));
  return Value::make_list(std::move(parts));
}

// Python's slice.indices.
Result<std::vector<size_t>> slice_indices(size_t len, const Value& start, const Value& stop, const Value& step) {
  auto as_opt = [](const Value& v, int64_t& out) -> Result<bool> {
    if (v.is_none() || v.is_undefined()) return false;
    if (!v.is_integral()) return invalid_argument("slice indices must be integers or None");
    out = v.as_int();
    return true;
  };
  const int64_t n = static_cast<int64_t>(len);
  int64_t st = 1;
  JANUS_ASSIGN_OR_RETURN(bool has_step, as_opt(step, st));
  if (!has_step) st = 1;
  if (st == 0) return invalid_argument("slice step cannot be zero");
  int64_t b = 0, e = 0;
  JANUS_ASSIGN_OR_RETURN(bool has_b, as_opt(start, b));
  JANUS_ASSIGN_OR_RETURN(bool has_e, as_opt(stop, e));
  if (st > 0) {
    if (!has_b) b = 0;
    else if (b < 0) b = std::max<int64_t>(0, b + n);
    else b = std::min(b, n);
    if (!has_e) e = n;
    else if (e < 0) e = std::max<int64_t>(0, e + n);
    else e = std::min(e, n);
  } else {
    if (!has_b) b = n - 1;
    else if (b < 0) b = std::max<int64_t>(-1, b + n);
    else b = std::min(b, n - 1);
    if (!has_e) e = -1;
    else if (e < 0) e = std::max<int64_t>(-1, e + n);
    else e = std::min(e, n - 1);
  }
  std::vector<size_t> out;
  if (st > 0)
    for (int64_t k = b; k < e; k += st) out.push_back(static_cast<size_t>(k));
  else
    for (int64_t k = b; k > e; k += st) out.push_back(static_cast<size_t>(k));
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------- interpreter ----------

struct Scope {
  std::unordered_map<std::string, Value> vars;
  Scope* parent = nullptr;
  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

Status located(int line, const Status& s) {
  if (s.ok() || s.message().rfind("chat template", 0) == 0) return s;
  return Status(s.code(), "chat template line " + std::to_string(line) + ": " + s.message());
}

Status undefined_error(const Value& v) {
  return invalid_argument(v.s.empty() ? "value is undefined" : v.s);
}

const Value* arg(CallArgs& a, size_t pos, const char* name) {
  if (pos < a.positional.size()) return &a.positional[pos];
  for (auto& kv : a.keyword)
    if (kv.first == name) return &kv.second;
  return nullptr;
}

bool arg_bool(CallArgs& a, size_t pos, const char* name, bool def) {
  const Value* v = arg(a, pos, name);
  return v ? v->truthy() : def;
}

}  // namespace

class Interpreter {
 public:
  enum class Flow { kNormal, kBreak, kContinue };

  Interpreter(const RenderLimits& limits) : limits_(limits) {}

  Status step() {
    if (++steps_ > limits_.max_steps)
      return resource_exhausted("chat template ran past its limit of " + std::to_string(limits_.max_steps) +
                                " steps (a runaway loop?)");
    return Status::Ok();
  }

  // Iteration as Python's iter(): list items, dict keys, str characters.
  Result<std::vector<Value>> iterate(const Value& v) {
    switch (v.type) {
      case Value::Type::kUndefined: return std::vector<Value>{};
      case Value::Type::kList: return *v.list;
      case Value::Type::kDict: {
        std::vector<Value> keys;
        for (const auto& kv : v.dict->items) keys.push_back(Value::string(kv.first));
        return keys;
      }
      case Value::Type::kString: {
        std::vector<Value> chars;
        for (auto cp : split_code_points(v.s)) chars.push_back(Value::string(std::string(cp)));
        return chars;
      }
      default: return invalid_argument(std::string("'") + type_name(v) + "' object is not iterable");
    }
  }

  Result<Value> getattr(const Value& obj, const std::string& name);
  Result<Value> getitem(const Value& obj, const Value& key);
  Result<Value> call(const Value& fn, CallArgs& args, int line);
  Result<Value> apply_filter(const std::string& name, const Value& v, CallArgs& args);
  Result<bool> apply_test(const std::string& name, const Value& v, CallArgs& args);

  Status exec(const Body& body, Scope& scope, std::string& out);
  Result<Value> eval(const Expr& e, Scope& scope);

  Scope* root = nullptr;
  Flow flow = Flow::kNormal;
  int loop_depth = 0;
  int call_depth = 0;
  const RenderLimits& limits_;

 private:
  Status exec_stmt(const Stmt& s, Scope& scope, std::string& out);
  Result<Value> eval_binary(const Expr& e, const Value& a, const Value& b);
  Result<bool> compare(const std::string& op, const Value& a, const Value& b);
  Value make_macro(const Stmt& s);
  size_t steps_ = 0;
};

namespace {

Result<bool> contains(const Value& needle, const Value& hay) {
  switch (hay.type) {
    case Value::Type::kUndefined: return false;
    case Value::Type::kString:
      if (!needle.is_string())
        return invalid_argument(std::string("'in <string>' requires string as left operand, not ") + type_name(needle));
      return hay.s.find(needle.s) != std::string::npos;
    case Value::Type::kList:
      for (const auto& item : *hay.list)
        if (equals(item, needle)) return true;
      return false;
    case Value::Type::kDict: return needle.is_string() && hay.dict->find(needle.s) != nullptr;
    default: return invalid_argument(std::string("argument of type '") + type_name(hay) + "' is not iterable");
  }
}

// Python's < for the types templates sort and compare.
Result<int> order(const Value& a, const Value& b) {
  if (a.is_undefined()) return undefined_error(a);
  if (b.is_undefined()) return undefined_error(b);
  if (a.is_number() && b.is_number()) {
    const double x = a.as_double(), y = b.as_double();
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.s.compare(b.s);
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list()) {
    const size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      if (equals((*a.list)[k], (*b.list)[k])) continue;
      return order((*a.list)[k], (*b.list)[k]);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  return invalid_argument(std::string("'<' not supported between instances of '") + type_name(a) + "' and '" +
                          type_name(b) + "'");
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

Result<bool> Interpreter::compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return equals(a, b);
  if (op == "!=") return !equals(a, b);
  if (op == "in") return contains(a, b);
  if (op == "notin") {
    JANUS_ASSIGN_OR_RETURN(bool in, contains(a, b));
    return !in;
  }
  JANUS_ASSIGN_OR_RETURN(int c, order(a, b));
  if (op == "<") return c < 0;
  if (op == ">") return c > 0;
  if (op == "<=") return c <= 0;
  return c >= 0;
}

Result<Value> Interpreter::eval_binary(const Expr& e, const Value& a, const Value& b) {
  const std::string& op = e.name;
  if (op == "~") {
    std::string joined = to_str(a) + to_str(b);
    if (joined.size() > limits_.max_output_bytes) return resource_exhausted("string grew past the output limit");
    return Value::string(std::move(joined));
  }
  if (a.is_undefined()) return undefined_error(a);
  if (b.is_undefined()) return undefined_error(b);
  auto unsupported_operands = [&]() {
    return invalid_argument("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (a.s.size() + b.s.size() > limits_.max_output_bytes) return resource_exhausted("string grew past the output limit");
      return Value::string(a.s + b.s);
    }
    if (a.is_list() && b.is_list()) {
      std::vector<Value> items = *a.list;
      items.insert(items.end(), b.list->begin(), b.list->end());
      return Value::make_list(std::move(items), a.is_tuple);
    }
    if (a.is_string() || b.is_string())
      return invalid_argument(std::string("can only concatenate str (not \"") + type_name(a.is_string() ? b : a) + "\") to str");
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_list() ? &a : (b.is_string() || b.is_list()) ? &b : nullptr;
    const Value* times = seq == &a ? &b : &a;
    if (seq && times->is_integral()) {
      const int64_t n = std::max<int64_t>(0, times->as_int());
      const size_t unit = seq->is_string() ? seq->s.size() : seq->list->size() * 16;
      if (unit && static_cast<uint64_t>(n) > limits_.max_output_bytes / unit)
        return resource_exhausted("repetition grew past the output limit");
      if (seq->is_string()) {
        std::string out;
        for (int64_t k = 0; k < n; ++k) out += seq->s;
        return Value::string(std::move(out));
      }
      std::vector<Value> items;
      for (int64_t k = 0; k < n; ++k) items.insert(items.end(), seq->list->begin(), seq->list->end());
      return Value::make_list(std::move(items), seq->is_tuple);
    }
  }
  if (op == "%" && a.is_string()) return unsupported("printf-style '%' string formatting is not supported");
  if (!a.is_number() || !b.is_number()) return unsupported_operands();
  const bool ints = a.is_integral() && b.is_integral();
  if (op == "/") {
    if (b.as_double() == 0) return invalid_argument("division by zero");
    return Value::real(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (ints) {
      if (b.as_int() == 0) return invalid_argument("integer division or modulo by zero");
      const int64_t q = floor_div(a.as_int(), b.as_int());
      return Value::integer(op == "//" ? q : a.as_int() - q * b.as_int());
    }
    if (b.as_double() == 0) return invalid_argument("float division by zero");
    const double q = std::floor(a.as_double() / b.as_double());
    if (op == "//") return Value::real(q);
    double m = std::fmod(a.as_double(), b.as_double());
    if (m != 0 && ((m < 0) != (b.as_double() < 0))) m += b.as_double();
    return Value::real(m);
  }
  if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t r = 1, base = a.as_int();
      for (int64_t k = 0; k < b.as_int(); ++k) {
        if (__builtin_mul_overflow(r, base, &r)) return unsupported("integer power overflows 64 bits");
        if (r == 0 || r == 1) break;
      }
      return Value::integer(r);
    }
    return Value::real(std::pow(a.as_double(), b.as_double()));
  }
  if (ints) {
    int64_t r = 0;
    bool overflow = false;
    if (op == "+") overflow = __builtin_add_overflow(a.as_int(), b.as_int(), &r);
    else if (op == "-") overflow = __builtin_sub_overflow(a.as_int(), b.as_int(), &r);
    else if (op == "*") overflow = __builtin_mul_overflow(a.as_int(), b.as_int(), &r);
    if (overflow) return unsupported("integer arithmetic overflows 64 bits");
    return Value::integer(r);
  }
  if (op == "+") return Value::real(a.as_double() + b.as_double());
  if (op == "-") return Value::real(a.as_double() - b.as_double());
  if (op == "*") return Value::real(a.as_double() * b.as_double());
  return unsupported_operands();
}

Result<Value> Interpreter::eval(const Expr& e, Scope& scope) {
  switch (e.kind) {
    case EK::kLiteral: return e.literal;
    case EK::kName: {
      const Value* v = scope.find(e.name);
      if (v) return *v;
      return Value::undefined("'" + e.name + "' is undefined");
    }
    case EK::kGetAttr: {
      JANUS_ASSIGN_OR_RETURN(Value obj, eval(*e.a, scope));
      auto r = getattr(obj, e.name);
      if (!r.ok()) return located(e.line, r.status());
      return r;
    }
    case EK::kGetItem: {
      JANUS_ASSIGN_OR_RETURN(Value obj, eval(*e.a, scope));
      JANUS_ASSIGN_OR_RETURN(Value key, eval(*e.b, scope));
      auto r = getitem(obj, key);
      if (!r.ok()) return located(e.line, r.status());
      return r;
    }
    case EK::kSlice: {
      JANUS_ASSIGN_OR_RETURN(Value obj, eval(*e.a, scope));
      Value parts[3];
      const Expr* exprs[3] = {e.b.get(), e.c.get(), e.d.get()};
      for (int k = 0; k < 3; ++k)
        if (exprs[k]) {
          JANUS_ASSIGN_OR_RETURN(parts[k], eval(*exprs[k], scope));
        }
      if (obj.is_undefined()) return located(e.line, undefined_error(obj));
      if (obj.is_string()) {
        const auto cps = split_code_points(obj.s);
        auto idx = slice_indices(cps.size(), parts[0], parts[1], parts[2]);
        if (!idx.ok()) return located(e.line, idx.status());
        std::string out;
        for (size_t k : *idx) out += cps[k];
        return Value::string(std::move(out));
      }
      if (obj.is_list()) {
        auto idx = slice_indices(obj.list->size(), parts[0], parts[1], parts[2]);
        if (!idx.ok()) return located(e.line, idx.status());
        std::vector<Value> out;
        for (size_t k : *idx) out.push_back((*obj.list)[k]);
        return Value::make_list(std::move(out), obj.is_tuple);
      }
      return located(e.line, invalid_argument(std::string("'") + type_name(obj) + "' object is not subscriptable"));
    }
    case EK::kCall: {
      // Method calls resolve the attribute first (a bound method), as Python does.
      JANUS_ASSIGN_OR_RETURN(Value fn, eval(*e.a, scope));
      CallArgs args;
      for (const auto& a : e.args) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*a, scope));
        args.positional.push_back(std::move(v));
      }
      for (const auto& kv : e.kwargs) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*kv.second, scope));
        args.keyword.emplace_back(kv.first, std::move(v));
      }
      return call(fn, args, e.line);
    }
    case EK::kFilter: {
      Value input;
      if (e.a) {
        JANUS_ASSIGN_OR_RETURN(input, eval(*e.a, scope));
      }
      CallArgs args;
      for (const auto& a : e.args) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*a, scope));
        args.positional.push_back(std::move(v));
      }
      for (const auto& kv : e.kwargs) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*kv.second, scope));
        args.keyword.emplace_back(kv.first, std::move(v));
      }
      JANUS_TRY(step());
      auto r = apply_filter(e.name, input, args);
      if (!r.ok()) return located(e.line, r.status());
      return r;
    }
    case EK::kTest: {
      JANUS_ASSIGN_OR_RETURN(Value input, eval(*e.a, scope));
      CallArgs args;
      for (const auto& a : e.args) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*a, scope));
        args.positional.push_back(std::move(v));
      }
      for (const auto& kv : e.kwargs) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*kv.second, scope));
        args.keyword.emplace_back(kv.first, std::move(v));
      }
      auto r = apply_test(e.name, input, args);
      if (!r.ok()) return located(e.line, r.status());
      return Value::boolean(*r != e.negated);
    }
    case EK::kUnary: {
      JANUS_ASSIGN_OR_RETURN(Value v, eval(*e.a, scope));
      if (v.is_undefined()) return located(e.line, undefined_error(v));
      if (!v.is_number())
        return located(e.line, invalid_argument(std::string("bad operand type for unary ") + e.name + ": '" + type_name(v) + "'"));
      if (e.name == "+") return v.is_integral() ? Value::integer(v.as_int()) : v;
      if (v.is_integral()) return Value::integer(-v.as_int());
      return Value::real(-v.f);
    }
    case EK::kBinary: {
      JANUS_ASSIGN_OR_RETURN(Value a, eval(*e.a, scope));
      JANUS_ASSIGN_OR_RETURN(Value b, eval(*e.b, scope));
      auto r = eval_binary(e, a, b);
      if (!r.ok()) return located(e.line, r.status());
      return r;
    }
    case EK::kAnd: {
      JANUS_ASSIGN_OR_RETURN(Value a, eval(*e.a, scope));
      if (!a.truthy()) return a;
      return eval(*e.b, scope);
    }
    case EK::kOr: {
      JANUS_ASSIGN_OR_RETURN(Value a, eval(*e.a, scope));
      if (a.truthy()) return a;
      return eval(*e.b, scope);
    }
    case EK::kNot: {
      JANUS_ASSIGN_OR_RETURN(Value a, eval(*e.a, scope));
      return Value::boolean(!a.truthy());
    }
    case EK::kCompare: {
      JANUS_ASSIGN_OR_RETURN(Value left, eval(*e.a, scope));
      for (size_t k = 0; k < e.ops.size(); ++k) {
        JANUS_ASSIGN_OR_RETURN(Value right, eval(*e.args[k], scope));
        auto r = compare(e.ops[k], left, right);
        if (!r.ok()) return located(e.line, r.status());
        if (!*r) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case EK::kCond: {
      JANUS_ASSIGN_OR_RETURN(Value c, eval(*e.b, scope));
      if (c.truthy()) return eval(*e.a, scope);
      if (e.c) return eval(*e.c, scope);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.line) + " evaluated to false and no else section was defined.");
    }
    case EK::kList:
    case EK::kTuple: {
      std::vector<Value> items;
      for (const auto& a : e.args) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*a, scope));
        items.push_back(std::move(v));
      }
      return Value::make_list(std::move(items), e.kind == EK::kTuple);
    }
    case EK::kDict: {
      Dict d;
      for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
        JANUS_ASSIGN_OR_RETURN(Value key, eval(*e.args[k], scope));
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*e.args[k + 1], scope));
        if (!key.is_string()) return located(e.line, unsupported("dict literals with non-string keys are not supported"));
        d.set(key.s, std::move(v));
      }
      return Value::make_dict(std::move(d));
    }
  }
  return internal_error("unknown expression");
}

Result<Value> Interpreter::call(const Value& fn, CallArgs& args, int line) {
  if (fn.is_undefined()) return located(line, undefined_error(fn));
  if (fn.type != Value::Type::kCallable)
    return located(line, invalid_argument(std::string("'") + type_name(fn) + "' object is not callable"));
  JANUS_TRY(step());
  auto r = (*fn.fn)(*this, args);
  if (!r.ok()) return located(line, r.status());
  return r;
}

namespace {

Result<std::string> want_str(const Value* v, const char* what) {
  if (!v || !v->is_string()) return invalid_argument(std::string(what) + " must be a str");
  return v->s;
}

Result<Value> str_method(const std::string& name, const Value& self, Interpreter& in, CallArgs& a) {
  (void)in;
  const std::string& s = self.s;
  if (name == "startswith" || name == "endswith") {
    const Value* p = arg(a, 0, "prefix");
    if (!p) return invalid_argument(name + "() takes at least 1 argument (0 given)");
    std::vector<std::string> options;
    if (p->is_string()) options.push_back(p->s);
    else if (p->is_list())
      for (const auto& v : *p->list) {
        if (!v.is_string()) return invalid_argument("tuple for " + name + " must only contain str");
        options.push_back(v.s);
      }
    else return invalid_argument(name + " first arg must be str or a tuple of str, not " + type_name(*p));
    for (const auto& o : options) {
      if (name == "startswith" && s.compare(0, o.size(), o) == 0 && s.size() >= o.size()) return Value::boolean(true);
      if (name == "endswith" && s.size() >= o.size() && s.compare(s.size() - o.size(), o.size(), o) == 0)
        return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const Value* c = arg(a, 0, "chars");
    const std::string* chars = c && c->is_string() ? &c->s : nullptr;
    if (c && !c->is_string() && !c->is_none()) return invalid_argument(name + " arg must be None or str");
    return Value::string(str_strip(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split") {
    const Value* mx = arg(a, 1, "maxsplit");
    return str_split(s, arg(a, 0, "sep"), mx && mx->is_integral() ? mx->as_int() : -1);
  }
  if (name == "replace") {
    JANUS_ASSIGN_OR_RETURN(std::string old, want_str(arg(a, 0, "old"), "replace() argument 1"));
    JANUS_ASSIGN_OR_RETURN(std::string rep, want_str(arg(a, 1, "new"), "replace() argument 2"));
    const Value* cnt = arg(a, 2, "count");
    return Value::string(str_replace(s, old, rep, cnt && cnt->is_integral() ? cnt->as_int() : -1));
  }
  if (name == "upper") return Value::string(str_upper(s));
  if (name == "lower") return Value::string(str_lower(s));
  if (name == "title") return Value::string(str_title(s));
  if (name == "capitalize") return Value::string(str_capitalize(s));
  if (name == "find" || name == "count" || name == "index" || name == "rfind") {
    JANUS_ASSIGN_OR_RETURN(std::string sub, want_str(arg(a, 0, "sub"), name.c_str()));
    if (name == "count") {
      if (sub.empty()) return Value::integer(static_cast<int64_t>(code_point_count(s)) + 1);
      int64_t n = 0;
      for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size())) ++n;
      return Value::integer(n);
    }
    const size_t hit = name == "rfind" ? s.rfind(sub) : s.find(sub);
    if (hit == std::string::npos) {
      if (name == "index") return invalid_argument("substring not found");
      return Value::integer(-1);
    }
    return Value::integer(static_cast<int64_t>(code_point_count(std::string_view(s).substr(0, hit))));
  }
  if (name == "join") {
    const Value* items = arg(a, 0, "iterable");
    if (!items) return invalid_argument("join() takes exactly one argument (0 given)");
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> list, in.iterate(*items));
    std::string out;
    for (size_t k = 0; k < list.size(); ++k) {
      if (!list[k].is_string())
        return invalid_argument("sequence item " + std::to_string(k) + ": expected str instance, " + type_name(list[k]) + " found");
      if (k) out += s;
      out += list[k].s;
    }
    return Value::string(std::move(out));
  }
  if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isupper" || name == "islower") {
    const auto cps = decode_all(s);
    if (cps.empty()) return Value::boolean(false);
    bool any_cased = false;
    for (char32_t c : cps) {
      const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
      if (name == "isdigit" && cat != UTF8PROC_CATEGORY_ND) return Value::boolean(false);
      if (name == "isspace" && !py_space(c)) return Value::boolean(false);
      if (name == "isalpha" && !(cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO)) return Value::boolean(false);
      if (name == "isupper" && cat == UTF8PROC_CATEGORY_LL) return Value::boolean(false);
      if (name == "islower" && cat == UTF8PROC_CATEGORY_LU) return Value::boolean(false);
      if (cased_cp(c)) any_cased = true;
    }
    if (name == "isupper" || name == "islower") return Value::boolean(any_cased);
    return Value::boolean(true);
  }
  if (name == "format") {
    // str.format with plain {} / {0} / {name} fields (no format specs).
    std::string out;
    size_t auto_index = 0;
    for (size_t k = 0; k < s.size(); ++k) {
      const char c = s[k];
      if (c == '{' && k + 1 < s.size() && s[k + 1] == '{') {
        out += '{';
        ++k;
      } else if (c == '}' && k + 1 < s.size() && s[k + 1] == '}') {
        out += '}';
        ++k;
      } else if (c == '{') {
        const size_t close = s.find('}', k);
        if (close == std::string::npos) return invalid_argument("Single '{' encountered in format string");
        const std::string field = s.substr(k + 1, close - k - 1);
        if (field.find_first_of(":!.[") != std::string::npos) return unsupported("format specs in str.format are not supported");
        const Value* v = nullptr;
        if (field.empty()) v = auto_index < a.positional.size() ? &a.positional[auto_index++] : nullptr;
        else if (std::isdigit(static_cast<unsigned char>(field[0]))) {
          const size_t idx = std::stoul(field);
          v = idx < a.positional.size() ? &a.positional[idx] : nullptr;
        } else {
          for (auto& kv : a.keyword)
            if (kv.first == field) v = &kv.second;
        }
        if (!v) return invalid_argument("str.format: no argument for field '{" + field + "}'");
        out += to_str(*v);
        k = close;
      } else if (c == '}') {
        return invalid_argument("Single '}' encountered in format string");
      } else {
        out += c;
      }
    }
    return Value::string(std::move(out));
  }
  return internal_error("unknown str method " + name);
}

const std::unordered_set<std::string> kStrMethods = {"startswith", "endswith", "strip", "lstrip", "rstrip", "split",
                                                     "replace", "upper", "lower", "title", "capitalize", "find",
                                                     "rfind", "index", "count", "join", "format", "isdigit",
                                                     "isspace", "isalpha", "isupper", "islower"};

Value items_of(const Dict& d) {
  std::vector<Value> out;
  for (const auto& kv : d.items) out.push_back(Value::make_list({Value::string(kv.first), kv.second}, true));
  return Value::make_list(std::move(out));
}

}  // namespace

Result<Value> Interpreter::getattr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) return undefined_error(obj);
  if (!name.empty() && name[0] == '_')
    return invalid_argument("access to attribute '" + name + "' of '" + type_name(obj) + "' object is unsafe.");
  switch (obj.type) {
    case Value::Type::kDict: {
      // jinja2 looks the attribute up before the key: `d.items` is the method.
      if (name == "items" || name == "keys" || name == "values" || name == "get") {
        return Value::callable([obj, name](Interpreter&, CallArgs& a) -> Result<Value> {
          if (name == "items") return items_of(*obj.dict);
          if (name == "get") {
            const Value* key = arg(a, 0, "key");
            if (!key) return invalid_argument("get expected at least 1 argument, got 0");
            const Value* found = key->is_string() ? obj.dict->find(key->s) : nullptr;
            if (found) return *found;
            const Value* def = arg(a, 1, "default");
            return def ? *def : Value::none();
          }
          std::vector<Value> out;
          for (const auto& kv : obj.dict->items) out.push_back(name == "keys" ? Value::string(kv.first) : kv.second);
          return Value::make_list(std::move(out));
        });
      }
      static const std::unordered_set<std::string> kMutating = {"pop", "popitem", "setdefault", "update", "clear"};
      if (kMutating.count(name))
        return invalid_argument("access to attribute '" + name + "' of 'dict' object is unsafe.");
      const Value* v = obj.dict->find(name);
      if (v) return *v;
      return Value::undefined("'dict object' has no attribute '" + name + "'");
    }
    case Value::Type::kNamespace: {
      const Value* v = obj.dict->find(name);
      if (v) return *v;
      return Value::undefined("'jinja2.utils.Namespace object' has no attribute '" + name + "'");
    }
    case Value::Type::kString:
      if (kStrMethods.count(name)) {
        return Value::callable([obj, name](Interpreter& in, CallArgs& a) { return str_method(name, obj, in, a); });
      }
      return Value::undefined("'str object' has no attribute '" + name + "'");
    case Value::Type::kList: {
      static const std::unordered_set<std::string> kMutating = {"append", "extend", "insert", "pop", "remove",
                                                                "clear", "sort", "reverse"};
      if (kMutating.count(name))
        return invalid_argument("access to attribute '" + name + "' of '" + type_name(obj) + "' object is unsafe.");
      return Value::undefined(std::string("'") + type_name(obj) + " object' has no attribute '" + name + "'");
    }
    default: return Value::undefined(std::string("'") + type_name(obj) + " object' has no attribute '" + name + "'");
  }
}

Result<Value> Interpreter::getitem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return undefined_error(obj);
  if (key.is_undefined() && !obj.is_dict()) return undefined_error(key);
  switch (obj.type) {
    case Value::Type::kList:
    case Value::Type::kString: {
      if (!key.is_integral()) {
        if (key.is_string()) return getattr(obj, key.s);
        return Value::undefined(std::string("'") + type_name(obj) + " object' has no attribute '" + to_str(key) + "'");
      }
      const auto cps = obj.is_string() ? split_code_points(obj.s) : std::vector<std::string_view>{};
      const int64_t n = static_cast<int64_t>(obj.is_string() ? cps.size() : obj.list->size());
      int64_t k = key.as_int();
      if (k < 0) k += n;
      if (k < 0 || k >= n) return Value::undefined(std::string("'") + type_name(obj) + " object' has no element " + to_str(key));
      if (obj.is_string()) return Value::string(std::string(cps[static_cast<size_t>(k)]));
      return (*obj.list)[static_cast<size_t>(k)];
    }
    case Value::Type::kDict:
    case Value::Type::kNamespace: {
      if (key.is_string()) {
        const Value* v = obj.dict->find(key.s);
        if (v) return *v;
        if (obj.is_dict()) {
          auto attr = getattr(obj, key.s);
          if (attr.ok() && attr->type == Value::Type::kCallable) return attr;
        }
      }
      return Value::undefined("'dict object' has no attribute '" + to_str(key) + "'");
    }
    default: return Value::undefined(std::string("'") + type_name(obj) + " object' has no attribute '" + to_str(key) + "'");
  }
}

namespace {

// jinja2's make_attrgetter: "a.b" looks up a, then b, by subscript (digits as indexes).
Result<Value> attr_path(Interpreter& in, const Value& item, const std::string& path) {
  Value cur = item;
  size_t pos = 0;
  while (true) {
    const size_t dot = path.find('.', pos);
    const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    Value key = Value::string(part);
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
      key = Value::integer(std::stoll(part));
    JANUS_ASSIGN_OR_RETURN(cur, in.getitem(cur, key));
    if (dot == std::string::npos) return cur;
    pos = dot + 1;
  }
}

Result<Value> soft_int(const Value& v, const Value& def, int base) {
  switch (v.type) {
    case Value::Type::kBool:
    case Value::Type::kInt: return Value::integer(v.as_int());
    case Value::Type::kFloat:
      if (!std::isfinite(v.f)) return def;
      return Value::integer(static_cast<int64_t>(v.f));
    case Value::Type::kString: {
      std::string t = str_strip(v.s, nullptr, true, true);
      std::string digits;
      for (char c : t)
        if (c != '_') digits += c;
      if (!digits.empty()) {
        char* end = nullptr;
        errno = 0;
        const long long x = std::strtoll(digits.c_str(), &end, base);
        if (end && *end == '\0' && errno == 0) return Value::integer(x);
        if (base == 10) {
          const double d = std::strtod(digits.c_str(), &end);
          if (end && *end == '\0' && std::isfinite(d)) return Value::integer(static_cast<int64_t>(d));
        }
      }
      return def;
    }
    default: return def;
  }
}

Result<Value> soft_float(const Value& v, const Value& def) {
  if (v.is_number()) return Value::real(v.as_double());
  if (v.is_string()) {
    const std::string t = str_strip(v.s, nullptr, true, true);
    char* end = nullptr;
    const double d = std::strtod(t.c_str(), &end);
    if (!t.empty() && end && *end == '\0') return Value::real(d);
  }
  return def;
}

Result<std::string> str_arg(const Value* v, const char* what) {
  if (!v) return invalid_argument(std::string("missing argument ") + what);
  return to_str(*v);
}

}  // namespace

Result<Value> Interpreter::apply_filter(const std::string& name, const Value& v, CallArgs& a) {
  if (name == "safe" || name == "string") {
    if (name == "string") return Value::string(to_str(v));
    return v;
  }
  if (name == "default" || name == "d") {
    const Value* def = arg(a, 0, "default_value");
    const bool boolean = arg_bool(a, 1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.truthy())) return def ? *def : Value::string("");
    return v;
  }
  if (name == "tojson") {
    JsonStyle st;
    st.ensure_ascii = arg_bool(a, 100, "ensure_ascii", false);
    const Value* indent = arg(a, 0, "indent");
    if (indent && !indent->is_none()) {
      if (!indent->is_integral()) return unsupported("tojson indent must be an integer");
      st.indent = static_cast<int>(std::max<int64_t>(0, indent->as_int()));
    }
    const Value* seps = arg(a, 100, "separators");
    if (seps && !seps->is_none()) {
      if (!seps->is_list() || seps->list->size() != 2 || !(*seps->list)[0].is_string() || !(*seps->list)[1].is_string())
        return invalid_argument("tojson separators must be a pair of strings");
      st.explicit_separators = true;
      st.item_separator = (*seps->list)[0].s;
      st.key_separator = (*seps->list)[1].s;
    }
    st.sort_keys = arg_bool(a, 100, "sort_keys", false);
    if (v.is_undefined()) return invalid_argument("Object of type Undefined is not JSON serializable");
    JANUS_ASSIGN_OR_RETURN(std::string text, to_json(v, st));
    return Value::string(std::move(text));
  }
  if (name == "length" || name == "count") {
    switch (v.type) {
      case Value::Type::kUndefined: return Value::integer(0);
      case Value::Type::kString: return Value::integer(static_cast<int64_t>(code_point_count(v.s)));
      case Value::Type::kList: return Value::integer(static_cast<int64_t>(v.list->size()));
      case Value::Type::kDict:
      case Value::Type::kNamespace: return Value::integer(static_cast<int64_t>(v.dict->items.size()));
      default: return invalid_argument(std::string("object of type '") + type_name(v) + "' has no len()");
    }
  }
  if (name == "trim") {
    const Value* c = arg(a, 0, "chars");
    return Value::string(str_strip(to_str(v), c && c->is_string() ? &c->s : nullptr, true, true));
  }
  if (name == "upper") return Value::string(str_upper(to_str(v)));
  if (name == "lower") return Value::string(str_lower(to_str(v)));
  if (name == "capitalize") return Value::string(str_capitalize(to_str(v)));
  if (name == "title") {
    // jinja2's do_title: words begin after '-', whitespace or an opening bracket.
    const auto cps = decode_all(to_str(v));
    std::vector<char32_t> out;
    bool word_start = true;
    for (char32_t c : cps) {
      const bool sep = c == '-' || py_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
      if (sep) {
        out.push_back(c);
        word_start = true;
      } else {
        out.push_back(word_start ? upper_cp(c) : lower_cp(c));
        word_start = false;
      }
    }
    return Value::string(encode_all(out));
  }
  if (name == "replace") {
    JANUS_ASSIGN_OR_RETURN(std::string old, str_arg(arg(a, 0, "old"), "old"));
    JANUS_ASSIGN_OR_RETURN(std::string rep, str_arg(arg(a, 1, "new"), "new"));
    const Value* cnt = arg(a, 2, "count");
    return Value::string(str_replace(to_str(v), old, rep, cnt && cnt->is_integral() ? cnt->as_int() : -1));
  }
  if (name == "e" || name == "escape") return Value::string(html_escape(to_str(v)));
  if (name == "int") {
    const Value* def = arg(a, 0, "default");
    const Value* base = arg(a, 1, "base");
    return soft_int(v, def ? *def : Value::integer(0), base && base->is_integral() ? static_cast<int>(base->as_int()) : 10);
  }
  if (name == "float") {
    const Value* def = arg(a, 0, "default");
    return soft_float(v, def ? *def : Value::real(0.0));
  }
  if (name == "abs") {
    if (v.is_integral()) return Value::integer(v.as_int() < 0 ? -v.as_int() : v.as_int());
    if (v.type == Value::Type::kFloat) return Value::real(std::fabs(v.f));
    return invalid_argument(std::string("bad operand type for abs(): '") + type_name(v) + "'");
  }
  if (name == "wordcount") {
    const auto cps = decode_all(to_str(v));
    int64_t n = 0;
    bool in_word = false;
    for (char32_t c : cps) {
      const bool w = word_cp(c);
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::integer(n);
  }
  if (name == "indent") {
    const Value* width = arg(a, 0, "width");
    std::string ind = "    ";
    if (width && width->is_string()) ind = width->s;
    else if (width && width->is_integral()) ind = std::string(static_cast<size_t>(std::max<int64_t>(0, width->as_int())), ' ');
    const bool first = arg_bool(a, 1, "first", false);
    const bool blank = arg_bool(a, 2, "blank", false);
    std::string s = to_str(v) + "\n";
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos < s.size()) {
      size_t nl = s.find_first_of("\r\n", pos);
      if (nl == std::string::npos) {
        lines.push_back(s.substr(pos));
        break;
      }
      lines.push_back(s.substr(pos, nl - pos));
      pos = nl + ((s[nl] == '\r' && nl + 1 < s.size() && s[nl + 1] == '\n') ? 2 : 1);
    }
    std::string rv;
    if (blank) {
      for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
    } else {
      rv = lines.empty() ? "" : lines[0];
      for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? "" : ind) + lines[k];
    }
    if (first) rv = ind + rv;
    return Value::string(std::move(rv));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::make_list({});
    if (!v.is_dict()) return invalid_argument(std::string("Can only get item pairs from a mapping, not ") + type_name(v));
    return items_of(*v.dict);
  }
  // The rest work on sequences.
  if (name == "list") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    return Value::make_list(std::move(items));
  }
  if (name == "first" || name == "last") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    if (items.empty()) return Value::undefined("No " + name + " item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      auto cps = decode_all(v.s);
      std::reverse(cps.begin(), cps.end());
      return Value::string(encode_all(cps));
    }
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "join") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const Value* sep = arg(a, 0, "d");
    const Value* attribute = arg(a, 1, "attribute");
    std::string out;
    for (size_t k = 0; k < items.size(); ++k) {
      if (k) out += sep ? to_str(*sep) : "";
      if (attribute && !attribute->is_none()) {
        JANUS_ASSIGN_OR_RETURN(Value x, attr_path(*this, items[k], to_str(*attribute)));
        out += to_str(x);
      } else {
        out += to_str(items[k]);
      }
      if (out.size() > limits_.max_output_bytes) return resource_exhausted("join grew past the output limit");
    }
    return Value::string(std::move(out));
  }
  if (name == "unique") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const bool case_sensitive = arg_bool(a, 0, "case_sensitive", false);
    const Value* attribute = arg(a, 1, "attribute");
    std::vector<Value> out, keys;
    for (const auto& item : items) {
      Value key = item;
      if (attribute && !attribute->is_none()) {
        JANUS_ASSIGN_OR_RETURN(key, attr_path(*this, item, to_str(*attribute)));
      }
      if (!case_sensitive && key.is_string()) key = Value::string(str_lower(key.s));
      bool seen = false;
      for (const auto& k : keys)
        if (equals(k, key)) seen = true;
      if (!seen) {
        keys.push_back(key);
        out.push_back(item);
      }
    }
    return Value::make_list(std::move(out));
  }
  if (name == "sort") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const bool reverse = arg_bool(a, 0, "reverse", false);
    const bool case_sensitive = arg_bool(a, 1, "case_sensitive", false);
    const Value* attribute = arg(a, 2, "attribute");
    std::vector<std::pair<Value, Value>> keyed;
    for (const auto& item : items) {
      Value key = item;
      if (attribute && !attribute->is_none()) {
        JANUS_ASSIGN_OR_RETURN(key, attr_path(*this, item, to_str(*attribute)));
      }
      if (!case_sensitive && key.is_string()) key = Value::string(str_lower(key.s));
      keyed.emplace_back(std::move(key), item);
    }
    Status failed;
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
      auto r = reverse ? order(y.first, x.first) : order(x.first, y.first);
      if (!r.ok()) {
        if (failed.ok()) failed = r.status();
        return false;
      }
      return *r < 0;
    });
    JANUS_TRY(failed);
    std::vector<Value> out;
    for (auto& kv : keyed) out.push_back(std::move(kv.second));
    return Value::make_list(std::move(out));
  }
  if (name == "batch") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const Value* count = arg(a, 0, "linecount");
    if (!count || !count->is_integral() || count->as_int() <= 0) return invalid_argument("batch needs a positive line count");
    const Value* fill = arg(a, 1, "fill_with");
    const size_t n = static_cast<size_t>(count->as_int());
    std::vector<Value> out, row;
    for (auto& item : items) {
      row.push_back(item);
      if (row.size() == n) {
        out.push_back(Value::make_list(std::move(row)));
        row.clear();
      }
    }
    if (!row.empty()) {
      if (fill && !fill->is_none())
        while (row.size() < n) row.push_back(*fill);
      out.push_back(Value::make_list(std::move(row)));
    }
    return Value::make_list(std::move(out));
  }
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_true = name == "selectattr" || name == "select";
    size_t k = 0;
    std::string attribute;
    if (by_attr) {
      if (a.positional.empty()) return invalid_argument(name + " needs an attribute name");
      attribute = to_str(a.positional[k++]);
    }
    std::string test;
    if (k < a.positional.size()) test = to_str(a.positional[k++]);
    if (!test.empty() && !known_tests().count(test)) return invalid_argument("no test named '" + test + "'");
    CallArgs test_args;
    test_args.positional.assign(a.positional.begin() + static_cast<long>(k), a.positional.end());
    std::vector<Value> out;
    for (const auto& item : items) {
      Value x = item;
      if (by_attr) {
        JANUS_ASSIGN_OR_RETURN(x, attr_path(*this, item, attribute));
      }
      bool r = x.truthy();
      if (!test.empty()) {
        CallArgs ta = test_args;
        JANUS_ASSIGN_OR_RETURN(r, apply_test(test, x, ta));
      }
      if (r == keep_true) out.push_back(item);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "map") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    std::vector<Value> out;
    const Value* attribute = nullptr;
    for (auto& kv : a.keyword)
      if (kv.first == "attribute") attribute = &kv.second;
    if (attribute) {
      const Value* def = nullptr;
      for (auto& kv : a.keyword)
        if (kv.first == "default") def = &kv.second;
      for (const auto& item : items) {
        JANUS_ASSIGN_OR_RETURN(Value x, attr_path(*this, item, to_str(*attribute)));
        if (x.is_undefined() && def) x = *def;
        out.push_back(std::move(x));
      }
      return Value::make_list(std::move(out));
    }
    if (a.positional.empty()) return invalid_argument("map needs a filter name or attribute=");
    const std::string filter = to_str(a.positional[0]);
    if (!known_filters().count(filter)) return invalid_argument("no filter named '" + filter + "'");
    CallArgs rest;
    rest.positional.assign(a.positional.begin() + 1, a.positional.end());
    rest.keyword = a.keyword;
    for (const auto& item : items) {
      CallArgs fa = rest;
      JANUS_ASSIGN_OR_RETURN(Value x, apply_filter(filter, item, fa));
      out.push_back(std::move(x));
    }
    return Value::make_list(std::move(out));
  }
  if (name == "sum" || name == "min" || name == "max") {
    JANUS_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const Value* attribute = arg(a, name == "sum" ? 0 : 1, "attribute");
    std::vector<Value> keys;
    for (const auto& item : items) {
      Value x = item;
      if (attribute && !attribute->is_none()) {
        JANUS_ASSIGN_OR_RETURN(x, attr_path(*this, item, to_str(*attribute)));
      }
      keys.push_back(std::move(x));
    }
    if (name == "sum") {
      const Value* start = arg(a, 1, "start");
      Value acc = start ? *start : Value::integer(0);
      Expr plus;
      plus.kind = EK::kBinary;
      plus.name = "+";
      for (const auto& x : keys) {
        JANUS_ASSIGN_OR_RETURN(acc, eval_binary(plus, acc, x));
      }
      return acc;
    }
    if (keys.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    const bool case_sensitive = arg_bool(a, 0, "case_sensitive", false);
    size_t best = 0;
    for (size_t k = 1; k < keys.size(); ++k) {
      Value x = keys[k], y = keys[best];
      if (!case_sensitive && x.is_string()) x = Value::string(str_lower(x.s));
      if (!case_sensitive && y.is_string()) y = Value::string(str_lower(y.s));
      JANUS_ASSIGN_OR_RETURN(int c, order(x, y));
      if (name == "min" ? c < 0 : c > 0) best = k;
    }
    return items[best];
  }
  if (name == "dictsort") {
    if (!v.is_dict()) return invalid_argument("dictsort needs a mapping");
    const bool case_sensitive = arg_bool(a, 0, "case_sensitive", false);
    const Value* by = arg(a, 1, "by");
    const bool by_value = by && to_str(*by) == "value";
    const bool reverse = arg_bool(a, 2, "reverse", false);
    Value pairs = items_of(*v.dict);
    std::vector<Value> items = *pairs.list;
    Status failed;
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      Value kx = (*x.list)[by_value ? 1 : 0], ky = (*y.list)[by_value ? 1 : 0];
      if (!case_sensitive && kx.is_string()) kx = Value::string(str_lower(kx.s));
      if (!case_sensitive && ky.is_string()) ky = Value::string(str_lower(ky.s));
      auto r = reverse ? order(ky, kx) : order(kx, ky);
      if (!r.ok()) {
        if (failed.ok()) failed = r.status();
        return false;
      }
      return *r < 0;
    });
    JANUS_TRY(failed);
    return Value::make_list(std::move(items));
  }
  if (name == "round") {
    const Value* prec = arg(a, 0, "precision");
    const Value* method = arg(a, 1, "method");
    const std::string m = method ? to_str(*method) : "common";
    const double p = std::pow(10.0, prec && prec->is_integral() ? static_cast<double>(prec->as_int()) : 0.0);
    if (!v.is_number()) return invalid_argument("round needs a number");
    const double x = v.as_double() * p;
    double r = m == "ceil" ? std::ceil(x) : m == "floor" ? std::floor(x) : std::nearbyint(x);  // Python rounds half to even
    return Value::real(r / p);
  }
  if (name == "center") {
    const Value* width = arg(a, 0, "width");
    const int64_t w = width && width->is_integral() ? width->as_int() : 80;
    const std::string s = to_str(v);
    const int64_t n = static_cast<int64_t>(code_point_count(s));
    if (n >= w) return Value::string(s);
    const int64_t total = w - n;
    const int64_t left = total / 2 + (total & w & 1);
    return Value::string(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(total - left), ' '));
  }
  return internal_error("filter '" + name + "' is listed but not implemented");
}

namespace {

const std::unordered_set<std::string>& known_filters() {
  static const std::unordered_set<std::string> k = {
      "safe", "string", "default", "d", "tojson", "length", "count", "trim", "upper", "lower", "capitalize", "title",
      "replace", "e", "escape", "int", "float", "abs", "wordcount", "indent", "items", "list", "first", "last",
      "reverse", "join", "unique", "sort", "batch", "selectattr", "rejectattr", "select", "reject", "map", "sum",
      "min", "max", "dictsort", "round", "center"};
  return k;
}

const std::unordered_set<std::string>& known_tests() {
  static const std::unordered_set<std::string> k = {
      "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false", "mapping",
      "iterable", "sequence", "equalto", "eq", "==", "ne", "!=", "lt", "<", "le", "<=", "gt", ">", "ge", ">=",
      "lessthan", "greaterthan", "odd", "even", "divisibleby", "in", "callable", "lower", "upper", "sameas", "escaped"};
  return k;
}

}  // namespace

Result<bool> Interpreter::apply_test(const std::string& name, const Value& v, CallArgs& a) {
  using T = Value::Type;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.type == T::kInt;
  if (name == "float") return v.type == T::kFloat;
  if (name == "boolean") return v.type == T::kBool;
  if (name == "true") return v.type == T::kBool && v.b;
  if (name == "false") return v.type == T::kBool && !v.b;
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "callable") return v.type == T::kCallable;
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    CallArgs none;
    JANUS_ASSIGN_OR_RETURN(Value r, str_method(name == "lower" ? "islower" : "isupper", v, *this, none));
    return r.b;
  }
  if (name == "odd" || name == "even") {
    if (v.is_undefined()) return undefined_error(v);
    if (!v.is_integral()) return invalid_argument(std::string("odd/even test needs an integer, not ") + type_name(v));
    const bool odd = (v.as_int() % 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  const Value* other = arg(a, 0, "value");
  if (!other) return invalid_argument("test '" + name + "' needs an argument");
  if (name == "equalto" || name == "eq" || name == "==") return equals(v, *other);
  if (name == "ne" || name == "!=") return !equals(v, *other);
  if (name == "sameas") {
    if (v.type != other->type) return false;
    if (v.is_none() || v.type == T::kBool) return equals(v, *other);
    if (v.is_list()) return v.list == other->list;
    if (v.is_dict() || v.type == T::kNamespace) return v.dict == other->dict;
    return equals(v, *other);
  }
  if (name == "in") return contains(v, *other);
  if (name == "divisibleby") {
    if (!v.is_integral() || !other->is_integral() || other->as_int() == 0) return invalid_argument("divisibleby needs integers");
    return v.as_int() % other->as_int() == 0;
  }
  JANUS_ASSIGN_OR_RETURN(int c, order(v, *other));
  if (name == "lt" || name == "<" || name == "lessthan") return c < 0;
  if (name == "le" || name == "<=") return c <= 0;
  if (name == "gt" || name == ">" || name == "greaterthan") return c > 0;
  if (name == "ge" || name == ">=") return c >= 0;
  return internal_error("test '" + name + "' is listed but not implemented");
}

Value Interpreter::make_macro(const Stmt& s) {
  const Stmt* def = &s;
  return Value::callable([def](Interpreter& in, CallArgs& a) -> Result<Value> {
    if (a.positional.size() > def->params.size())
      return invalid_argument("macro '" + def->text + "' takes not more than " + std::to_string(def->params.size()) +
                              " argument(s)");
    if (++in.call_depth > in.limits_.max_call_depth) {
      --in.call_depth;
      return resource_exhausted("chat template macros nested deeper than " + std::to_string(in.limits_.max_call_depth) +
                                " calls (runaway recursion?)");
    }
    struct Depth {
      int& d;
      ~Depth() { --d; }
    } depth{in.call_depth};
    Scope scope;
    scope.parent = in.root;
    std::vector<bool> bound(def->params.size(), false);
    for (size_t k = 0; k < a.positional.size(); ++k) {
      scope.vars[def->params[k].first] = a.positional[k];
      bound[k] = true;
    }
    for (auto& kv : a.keyword) {
      if (kv.first == "caller") {
        scope.vars["caller"] = kv.second;
        continue;
      }
      bool found = false;
      for (size_t k = 0; k < def->params.size(); ++k)
        if (def->params[k].first == kv.first) {
          if (bound[k]) return invalid_argument("macro '" + def->text + "' got multiple values for argument '" + kv.first + "'");
          scope.vars[kv.first] = kv.second;
          bound[k] = true;
          found = true;
        }
      if (!found) return invalid_argument("macro '" + def->text + "' takes no keyword argument '" + kv.first + "'");
    }
    for (size_t k = 0; k < def->params.size(); ++k) {
      if (bound[k]) continue;
      if (def->params[k].second) {
        JANUS_ASSIGN_OR_RETURN(Value dv, in.eval(*def->params[k].second, scope));
        scope.vars[def->params[k].first] = std::move(dv);
      } else {
        scope.vars[def->params[k].first] =
            Value::undefined("parameter '" + def->params[k].first + "' was not provided");
      }
    }
    std::string out;
    const Flow saved_flow = in.flow;
    const int saved_loops = in.loop_depth;
    in.loop_depth = 0;
    Status st = in.exec(def->body, scope, out);
    in.loop_depth = saved_loops;
    in.flow = saved_flow;
    JANUS_TRY(st);
    return Value::string(std::move(out));
  });
}

Status Interpreter::exec(const Body& body, Scope& scope, std::string& out) {
  for (const auto& s : body) {
    JANUS_TRY(exec_stmt(*s, scope, out));
    if (flow != Flow::kNormal) return Status::Ok();
    if (out.size() > limits_.max_output_bytes)
      return resource_exhausted("chat template output grew past " + std::to_string(limits_.max_output_bytes) + " bytes");
  }
  return Status::Ok();
}

namespace {

Status assign_targets(Scope& scope, const std::vector<std::string>& targets, const Value& v, int line) {
  if (targets.size() == 1) {
    scope.vars[targets[0]] = v;
    return Status::Ok();
  }
  if (!v.is_list())
    return located(line, invalid_argument(std::string("cannot unpack non-iterable ") + type_name(v) + " object"));
  if (v.list->size() != targets.size())
    return located(line, invalid_argument("expected " + std::to_string(targets.size()) + " values to unpack, got " +
                                          std::to_string(v.list->size())));
  for (size_t k = 0; k < targets.size(); ++k) scope.vars[targets[k]] = (*v.list)[k];
  return Status::Ok();
}

}  // namespace

Status Interpreter::exec_stmt(const Stmt& s, Scope& scope, std::string& out) {
  JANUS_TRY(step());
  switch (s.kind) {
    case SK::kText: out += s.text; return Status::Ok();
    case SK::kOutput: {
      JANUS_ASSIGN_OR_RETURN(Value v, eval(*s.expr, scope));
      out += to_str(v);
      return Status::Ok();
    }
    case SK::kIf:
      for (const auto& br : s.branches) {
        JANUS_ASSIGN_OR_RETURN(Value c, eval(*br.first, scope));
        if (c.truthy()) return exec(br.second, scope, out);
      }
      return exec(s.else_body, scope, out);
    case SK::kFor: {
      JANUS_ASSIGN_OR_RETURN(Value seq, eval(*s.expr, scope));
      auto items_r = iterate(seq);
      if (!items_r.ok()) return located(s.line, items_r.status());
      std::vector<Value> items = std::move(items_r).value();
      if (s.cond) {
        // `for x in xs if cond`: the filter runs first, so loop.length counts what is kept.
        std::vector<Value> kept;
        for (auto& item : items) {
          JANUS_TRY(step());
          Scope probe;
          probe.parent = &scope;
          JANUS_TRY(assign_targets(probe, s.targets, item, s.line));
          JANUS_ASSIGN_OR_RETURN(Value c, eval(*s.cond, probe));
          if (c.truthy()) kept.push_back(std::move(item));
        }
        items = std::move(kept);
      }
      if (items.empty()) return exec(s.else_body, scope, out);
      const int64_t n = static_cast<int64_t>(items.size());
      ++loop_depth;
      Status st;
      for (int64_t k = 0; k < n; ++k) {
        JANUS_TRY(step());
        Scope iter;
        iter.parent = &scope;
        Status a = assign_targets(iter, s.targets, items[static_cast<size_t>(k)], s.line);
        if (!a.ok()) {
          st = a;
          break;
        }
        Dict loop;
        loop.set("index", Value::integer(k + 1));
        loop.set("index0", Value::integer(k));
        loop.set("revindex", Value::integer(n - k));
        loop.set("revindex0", Value::integer(n - k - 1));
        loop.set("first", Value::boolean(k == 0));
        loop.set("last", Value::boolean(k == n - 1));
        loop.set("length", Value::integer(n));
        loop.set("depth", Value::integer(1));
        loop.set("depth0", Value::integer(0));
        if (k > 0) loop.set("previtem", items[static_cast<size_t>(k - 1)]);
        if (k + 1 < n) loop.set("nextitem", items[static_cast<size_t>(k + 1)]);
        loop.set("cycle", Value::callable([k](Interpreter&, CallArgs& a) -> Result<Value> {
          if (a.positional.empty()) return invalid_argument("no items for cycling given");
          return a.positional[static_cast<size_t>(k) % a.positional.size()];
        }));
        iter.vars["loop"] = Value::make_dict(std::move(loop));
        st = exec(s.body, iter, out);
        if (!st.ok()) break;
        if (flow == Flow::kBreak) {
          flow = Flow::kNormal;
          break;
        }
        flow = Flow::kNormal;
      }
      --loop_depth;
      return st;
    }
    case SK::kSet: {
      JANUS_ASSIGN_OR_RETURN(Value v, eval(*s.expr, scope));
      if (!s.attr.empty()) {
        const Value* ns = scope.find(s.targets[0]);
        if (!ns || ns->type != Value::Type::kNamespace)
          return located(s.line, invalid_argument("cannot assign attribute on non-namespace object"));
        if (s.attr[0] == '_')
          return located(s.line, invalid_argument("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + s.attr + "'. Please rename the attribute."));
        ns->dict->set(s.attr, std::move(v));
        return Status::Ok();
      }
      return assign_targets(scope, s.targets, v, s.line);
    }
    case SK::kSetBlock: {
      std::string captured;
      JANUS_TRY(exec(s.body, scope, captured));
      scope.vars[s.targets[0]] = Value::string(std::move(captured));
      return Status::Ok();
    }
    case SK::kMacro: scope.vars[s.text] = make_macro(s); return Status::Ok();
    case SK::kCallBlock: {
      // The body becomes `caller`, a macro without a name, passed to the called macro.
      const Stmt* def = &s;
      Scope* defining = &scope;
      Value caller = Value::callable([def, defining](Interpreter& in, CallArgs& a) -> Result<Value> {
        Scope cs;
        cs.parent = defining;
        for (size_t k = 0; k < def->caller_params.size(); ++k)
          cs.vars[def->caller_params[k]] = k < a.positional.size() ? a.positional[k] : Value::undefined("caller argument missing");
        std::string text;
        JANUS_TRY(in.exec(def->body, cs, text));
        return Value::string(std::move(text));
      });
      const Expr& c = *s.expr;
      JANUS_ASSIGN_OR_RETURN(Value fn, eval(*c.a, scope));
      CallArgs args;
      for (const auto& x : c.args) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*x, scope));
        args.positional.push_back(std::move(v));
      }
      for (const auto& kv : c.kwargs) {
        JANUS_ASSIGN_OR_RETURN(Value v, eval(*kv.second, scope));
        args.keyword.emplace_back(kv.first, std::move(v));
      }
      args.keyword.emplace_back("caller", std::move(caller));
      JANUS_ASSIGN_OR_RETURN(Value r, call(fn, args, s.line));
      out += to_str(r);
      return Status::Ok();
    }
    case SK::kFilterBlock: {
      std::string captured;
      JANUS_TRY(exec(s.body, scope, captured));
      // Walk the filter chain innermost first, starting from the captured text.
      std::vector<const Expr*> chain;
      for (const Expr* e = s.expr.get(); e && e->kind == EK::kFilter; e = e->a.get()) chain.push_back(e);
      Value v = Value::string(std::move(captured));
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        CallArgs args;
        for (const auto& x : (*it)->args) {
          JANUS_ASSIGN_OR_RETURN(Value av, eval(*x, scope));
          args.positional.push_back(std::move(av));
        }
        for (const auto& kv : (*it)->kwargs) {
          JANUS_ASSIGN_OR_RETURN(Value av, eval(*kv.second, scope));
          args.keyword.emplace_back(kv.first, std::move(av));
        }
        auto r = apply_filter((*it)->name, v, args);
        if (!r.ok()) return located(s.line, r.status());
        v = std::move(r).value();
      }
      out += to_str(v);
      return Status::Ok();
    }
    case SK::kBreak:
    case SK::kContinue:
      if (loop_depth == 0) return located(s.line, invalid_argument("'break' or 'continue' outside of a loop"));
      flow = s.kind == SK::kBreak ? Flow::kBreak : Flow::kContinue;
      return Status::Ok();
    case SK::kGeneration: return exec(s.body, scope, out);
  }
  return internal_error("unknown statement");
}

namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox MAX_RANGE

void install_globals(Scope& g) {
  g.vars["range"] = Value::callable([](Interpreter&, CallArgs& a) -> Result<Value> {
    int64_t start = 0, stop = 0, stepv = 1;
    for (const auto& v : a.positional)
      if (!v.is_integral()) return invalid_argument(std::string("'") + type_name(v) + "' object cannot be interpreted as an integer");
    if (a.positional.size() == 1) stop = a.positional[0].as_int();
    else if (a.positional.size() >= 2) {
      start = a.positional[0].as_int();
      stop = a.positional[1].as_int();
      if (a.positional.size() >= 3) stepv = a.positional[2].as_int();
    } else {
      return invalid_argument("range expected at least 1 argument, got 0");
    }
    if (stepv == 0) return invalid_argument("range() arg 3 must not be zero");
    std::vector<Value> out;
    for (int64_t k = start; stepv > 0 ? k < stop : k > stop; k += stepv) {
      if (static_cast<int64_t>(out.size()) >= kMaxRange)
        return resource_exhausted("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
      out.push_back(Value::integer(k));
    }
    return Value::make_list(std::move(out));
  });
  g.vars["namespace"] = Value::callable([](Interpreter&, CallArgs& a) -> Result<Value> {
    Dict d;
    for (const auto& v : a.positional) {
      if (!v.is_dict()) return invalid_argument("namespace() positional arguments must be mappings");
      for (const auto& kv : v.dict->items) d.set(kv.first, kv.second);
    }
    for (const auto& kv : a.keyword) {
      if (!kv.first.empty() && kv.first[0] == '_')
        return invalid_argument("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + kv.first + "'. Please rename the attribute.");
      d.set(kv.first, kv.second);
    }
    return Value::make_namespace(std::move(d));
  });
  g.vars["dict"] = Value::callable([](Interpreter&, CallArgs& a) -> Result<Value> {
    Dict d;
    for (const auto& v : a.positional) {
      if (!v.is_dict()) return unsupported("dict() from anything but a mapping is not supported");
      for (const auto& kv : v.dict->items) d.set(kv.first, kv.second);
    }
    for (const auto& kv : a.keyword) d.set(kv.first, kv.second);
    return Value::make_dict(std::move(d));
  });
  g.vars["raise_exception"] = Value::callable([](Interpreter&, CallArgs& a) -> Result<Value> {
    const std::string msg = a.positional.empty() ? std::string() : to_str(a.positional[0]);
    return invalid_argument("raise_exception: " + msg);
  });
  g.vars["strftime_now"] = Value::callable([](Interpreter&, CallArgs& a) -> Result<Value> {
    if (a.positional.empty() || !a.positional[0].is_string()) return invalid_argument("strftime_now needs a format string");
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[512];
    const size_t n = std::strftime(buf, sizeof buf, a.positional[0].s.c_str(), &local);
    if (n == 0 && !a.positional[0].s.empty()) return invalid_argument("strftime_now: format too long or empty result");
    return Value::string(std::string(buf, n));
  });
}

}  // namespace

Result<Template> Template::parse(std::string_view source) {
  // jinja2 reads the source with universal newlines and drops one trailing newline
  // (keep_trailing_newline=False).
  std::string src;
  src.reserve(source.size());
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      src += '\n';
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      src += source[k];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  Lexer lexer(std::move(src));
  JANUS_ASSIGN_OR_RETURN(std::vector<Token> tokens, lexer.run());
  Parser parser(std::move(tokens));
  JANUS_ASSIGN_OR_RETURN(Body body, parser.parse_template());
  auto program = std::make_shared<Program>();
  program->body = std::move(body);
  Template t;
  t.program_ = std::move(program);
  return t;
}

Result<std::string> Template::render(const Dict& context, const RenderLimits& limits) const {
  if (!program_) return invalid_argument("render of a template that was never parsed");
  Interpreter in(limits);
  Scope globals;
  install_globals(globals);
  Scope top;
  top.parent = &globals;
  for (const auto& kv : context.items) top.vars[kv.first] = kv.second;
  in.root = &top;
  std::string out;
  JANUS_TRY(in.exec(program_->body, top, out));
  return out;
}

}  // namespace janus::text::jinja
