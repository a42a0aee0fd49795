// UTF-8 decoding against Python's codec rules (RFC 3629), and the streaming prefix that
// never splits a character.
#include <doctest/doctest.h>

#include <random>

#include "runtime/text/utf8.h"

using namespace janus::text;

TEST_CASE("utf8 decodes every length and refuses overlongs, surrogates and values past U+10FFFF") {
  struct Case {
    std::string bytes;
    char32_t cp;
    size_t len;
    bool valid;
  };
  const Case cases[] = {
      {"A", U'A', 1, true},
      {"\xC3\xA9", 0xE9, 2, true},
      {"\xE4\xB8\xAD", 0x4E2D, 3, true},
      {"\xF0\x9F\x98\x80", 0x1F600, 4, true},
      {"\xF4\x8F\xBF\xBF", 0x10FFFF, 4, true},
      {"\xC0\xAF", 0xFFFD, 1, false},          // overlong '/'
      {"\xE0\x80\xAF", 0xFFFD, 1, false},      // overlong
      {"\xED\xA0\x80", 0xFFFD, 1, false},      // surrogate D800
      {"\xF4\x90\x80\x80", 0xFFFD, 1, false},  // 0x110000
      {"\x80", 0xFFFD, 1, false},              // stray continuation
      {"\xE4\xB8", 0xFFFD, 1, false},          // truncated
      {"\xF8\x88\x80\x80\x80", 0xFFFD, 1, false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.cp);
    const CodePoint d = decode_utf8(c.bytes);
    CHECK(d.value == c.cp);
    CHECK(d.bytes == c.len);
    CHECK(d.valid == c.valid);
  }
  CHECK(decode_utf8("").bytes == 0);
}

TEST_CASE("utf8 encode and decode are inverse on random code points") {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<uint32_t> any(0, 0x10FFFF);
  for (int i = 0; i < 20000; ++i) {
    char32_t cp = any(rng);
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string s;
    append_utf8(s, cp);
    const CodePoint d = decode_utf8(s);
    REQUIRE(d.valid);
    REQUIRE(d.value == cp);
    REQUIRE(d.bytes == s.size());
  }
  std::string s;
  append_utf8(s, 0xD800);
  CHECK(s == "\xEF\xBF\xBD");
}

TEST_CASE("the complete prefix holds back exactly the unfinished last character") {
  const std::string text = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80z";  // a é 中 😀 z
  REQUIRE(is_valid_utf8(text));
  // Cut anywhere: what is released is valid, and nothing valid is held back longer than
  // the bytes of one character.
  const size_t boundaries[] = {0, 1, 3, 6, 10, 11};
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    CAPTURE(cut);
    const size_t p = complete_utf8_prefix(std::string_view(text).substr(0, cut));
    size_t want = 0;
    for (size_t b : boundaries)
      if (b <= cut) want = b;
    CHECK(p == want);
  }
  // Bytes that can never complete are released, so a stream cannot stall on them.
  CHECK(complete_utf8_prefix("ab\xFF") == 3);
  CHECK(complete_utf8_prefix("ab\xED\xA0") == 4);      // would be a surrogate
  CHECK(complete_utf8_prefix("ab\xF4\x90") == 4);      // would pass U+10FFFF
  CHECK(complete_utf8_prefix("ab\xE0") == 2);          // E0 A0.. is still possible
  CHECK(complete_utf8_prefix("ab\x80") == 3);          // a lone continuation
  CHECK(!is_valid_utf8("\xC3"));
}
