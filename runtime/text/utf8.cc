#include "runtime/text/utf8.h"

namespace janus::text {
namespace {

// How many continuation bytes a lead byte announces, and the smallest code point a
// sequence of that length may carry (anything smaller is an overlong encoding).
struct Lead {
  int continuation;
  char32_t bits;
  char32_t min;
};

bool lead_of(unsigned char c, Lead& l) {
  if (c < 0x80) l = {0, c, 0};
  else if ((c & 0xE0) == 0xC0) l = {1, static_cast<char32_t>(c & 0x1F), 0x80};
  else if ((c & 0xF0) == 0xE0) l = {2, static_cast<char32_t>(c & 0x0F), 0x800};
  else if ((c & 0xF8) == 0xF0 && c <= 0xF4) l = {3, static_cast<char32_t>(c & 0x07), 0x10000};
  else return false;
  return true;
}

}  // namespace

CodePoint decode_utf8(std::string_view s) {
  if (s.empty()) return {};
  const CodePoint bad{0xFFFD, 1, false};
  Lead l;
  if (!lead_of(static_cast<unsigned char>(s[0]), l)) return bad;
  if (s.size() < static_cast<size_t>(l.continuation) + 1) return bad;
  char32_t cp = l.bits;
  for (int i = 1; i <= l.continuation; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) != 0x80) return bad;
    cp = (cp << 6) | (c & 0x3F);
  }
  if (cp < l.min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return bad;
  return {cp, static_cast<size_t>(l.continuation) + 1, true};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_valid_utf8(std::string_view s) {
  while (!s.empty()) {
    const CodePoint c = decode_utf8(s);
    if (!c.valid) return false;
    s.remove_prefix(c.bytes);
  }
  return true;
}

size_t complete_utf8_prefix(std::string_view s) {
  // Only the last three bytes can belong to an unfinished character: find the last lead
  // byte among them and ask whether what follows it could still grow into its sequence.
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking for its lead
    Lead l;
    if (!lead_of(c, l)) return n;                                  // never valid: emit
    if (back > static_cast<size_t>(l.continuation)) return n;     // finished
    // Unfinished: hold it back only if the bytes so far are a valid beginning.
    std::string probe(s.substr(n - back));
    // Pad with the smallest continuation that keeps a valid prefix valid, then decode.
    while (probe.size() < static_cast<size_t>(l.continuation) + 1) probe += static_cast<char>(0x80);
    const bool could_be = decode_utf8(probe).valid ||
                          // E0 80.. and F0 80.. pad to overlongs; try the largest padding too.
                          [&] {
                            std::string hi(s.substr(n - back));
                            while (hi.size() < static_cast<size_t>(l.continuation) + 1) hi += static_cast<char>(0xBF);
                            return decode_utf8(hi).valid;
                          }();
    return could_be ? n - back : n;
  }
  return n;
}

}  // namespace janus::text
