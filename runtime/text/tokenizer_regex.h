// The regular expressions of tokenizer.json (Split pre-tokenizers, Replace normalizers and
// decoders, the GPT-2 ByteLevel split) on PCRE2 with UTF, UCP and JIT. Hugging Face's crate
// runs them on Oniguruma; for the pattern syntax tokenizers use (\p{..}, \s, lookahead,
// (?i:..), {m,n}) the two agree, and the fixtures in tests/text/tokenizer_test.cc hold us to
// Oniguruma's matches. Internal to janus_text: the public header stays free of PCRE2.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/base/status.h"

namespace janus::text {

/// A compiled pattern. Immutable and shareable across threads (match state is per thread).
class Regex {
 public:
  /// Compiles `pattern`; the error names the pattern and PCRE2's message and offset.
  static Result<std::unique_ptr<Regex>> compile(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// Appends the [start, end) byte ranges of the non-overlapping matches in `subject`, left
  /// to right, as Oniguruma's find_iter reports them (an empty match moves the search one
  /// character on). `subject` must be valid UTF-8 (it is not checked again).
  Status find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8
  bool jit_ = false;
  std::string pattern_;
};

}  // namespace janus::text
