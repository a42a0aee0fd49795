// UTF-8 as text components see it: code points decoded with their byte length, validity,
// and the longest prefix of a byte stream that ends on a whole character, so a streaming
// detokenizer never hands a client half a character.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace janus::text {

/// One decoded code point and the bytes it took. `bytes == 0` means the input was empty;
/// an invalid or truncated sequence decodes as U+FFFD with `valid == false` and
/// `bytes == 1`, so a caller that skips `bytes` always makes progress.
struct CodePoint {
  char32_t value = 0;
  size_t bytes = 0;
  bool valid = false;
};

/// Decodes the code point at the start of `s` (RFC 3629: no overlongs, no surrogates,
/// nothing above U+10FFFF).
CodePoint decode_utf8(std::string_view s);

/// Appends the UTF-8 encoding of `cp` (U+FFFD for surrogates and values above U+10FFFF).
void append_utf8(std::string& out, char32_t cp);

/// True when all of `s` is well-formed UTF-8.
bool is_valid_utf8(std::string_view s);

/// The length of the longest prefix of `s` that does not end inside a character that the
/// next bytes could still complete. Bytes that can never become valid count as complete
/// (they are emitted, as U+FFFD by whoever renders them), so the stream cannot stall on them.
size_t complete_utf8_prefix(std::string_view s);

}  // namespace janus::text
