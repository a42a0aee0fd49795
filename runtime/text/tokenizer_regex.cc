#include "runtime/text/tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

namespace janus::text {
namespace {

// Match state is per thread so one compiled pattern serves every thread. The JIT stack is
// larger than PCRE2's 32 KiB default because lookahead over long whitespace runs recurses.
struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

size_t utf8_char_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

// Oniguruma writes a code point as \uHHHH, PCRE2 as \x{HHHH}.
std::string to_pcre2_syntax(std::string_view p) {
  std::string out;
  out.reserve(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\' && i + 1 < p.size()) {
      if (p[i + 1] == 'u' && i + 5 < p.size() + 0 && i + 6 <= p.size()) {
        bool hex = true;
        for (size_t k = i + 2; k < i + 6; ++k) hex &= std::isxdigit(static_cast<unsigned char>(p[k])) != 0;
        if (hex) {
          out += "\\x{";
          out.append(p.substr(i + 2, 4));
          out += '}';
          i += 5;
          continue;
        }
      }
      out += p[i];
      out += p[i + 1];
      ++i;
      continue;
    }
    out += p[i];
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<Regex>> Regex::compile(std::string_view pattern) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  const std::string translated = to_pcre2_syntax(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!code) {
    return invalid_argument("regex \"" + std::string(pattern) + "\" does not compile at offset " +
                            std::to_string(err_offset) + ": " + pcre2_message(err));
  }
  std::unique_ptr<Regex> re(new Regex());
  re->code_ = code;
  re->pattern_ = std::string(pattern);
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

Status Regex::find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const {
  MatchState& st = match_state();
  if (!st.data) return resource_exhausted("regex: cannot allocate match data");
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const size_t n = subject.size();
  size_t start = 0;
  while (start <= n) {
    int rc = jit_ ? pcre2_jit_match(code, subj, n, start, 0, st.data, st.context)
                  : pcre2_match(code, subj, n, start, PCRE2_NO_UTF_CHECK, st.data, st.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return resource_exhausted("regex \"" + pattern_ + "\" failed while matching: " + pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    const size_t s = ov[0], e = ov[1];
    out.emplace_back(s, e);
    if (e > s) {
      start = e;
    } else {
      if (e >= n) break;
      start = e + utf8_char_len(static_cast<unsigned char>(subject[e]));
    }
  }
  return Status::Ok();
}

}  // namespace janus::text
