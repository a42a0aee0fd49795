// The tokenizer.json pipeline, component by component, in the order and with the edge
// cases of the Rust `tokenizers` crate (tokenizers/src/{normalizers,pre_tokenizers,models/
// bpe,decoders,processors}, added_vocabulary.rs). Where the crate's behaviour is odd (the
// Metaspace decoder drops every replacement of the first token, byte_fallback tokens may
// overtake a pending unk) we copy it: ids equal to the crate's are the contract.
//
// Text travels as one arena string per stage and spans over it, so splitting allocates
// nothing per piece; the ByteLevel byte-to-char mapping is left to the model, which starts
// a word from a 256-entry byte table instead of re-encoding every byte as a character.
#include "runtime/text/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "runtime/text/tokenizer_regex.h"
#include "runtime/text/utf8.h"

namespace janus::text {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------
// Character classes as Rust's char methods define them (the crate uses them directly).

bool is_rust_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool is_rust_numeric(char32_t c) {
  if (c >= '0' && c <= '9') return true;
  if (c < 0x80) return false;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

bool is_word_char(char32_t c) {
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) || c == '_';
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

// Decodes the code point before byte `end` of valid UTF-8.
CodePoint last_char(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  return decode_utf8(s.substr(i));
}

// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes one U+FFFD.
void append_lossy(std::string& out, std::string_view s) {
  static const char kFffd[] = "\xEF\xBF\xBD";
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      size_t j = i + 1;
      while (j < n && static_cast<unsigned char>(s[j]) < 0x80) ++j;
      out.append(s.data() + i, j - i);
      i = j;
      continue;
    }
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else { out.append(kFffd, 3); ++i; continue; }
    size_t j = i + 1;
    int k = 0;
    for (; k < need && j < n; ++k, ++j) {
      const unsigned char d = static_cast<unsigned char>(s[j]);
      if (d < (k == 0 ? lo : 0x80) || d > (k == 0 ? hi : 0xBF)) break;
    }
    if (k == need) out.append(s.data() + i, j - i);
    else out.append(kFffd, 3);
    i = j;
  }
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest for 256 + n.
struct ByteLevelTable {
  std::array<char32_t, 256> byte_to_char{};
  std::array<int16_t, 324> char_to_byte{};
  std::array<std::string, 256> byte_to_utf8;
  ByteLevelTable() {
    char_to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      byte_to_char[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      char_to_byte[byte_to_char[b]] = static_cast<int16_t>(b);
      append_utf8(byte_to_utf8[b], byte_to_char[b]);
    }
  }
};

const ByteLevelTable& byte_level() {
  static const ByteLevelTable t;
  return t;
}

void append_byte_level(std::string& out, std::string_view raw) {
  const auto& t = byte_level();
  for (unsigned char c : raw) out += t.byte_to_utf8[c];
}

std::string hex_byte_token(unsigned b) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string s = "<0x";
  s += kHex[b >> 4];
  s += kHex[b & 15];
  s += '>';
  return s;
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// ---------------------------------------------------------------------------------------
// JSON access with errors that say where.

struct Ctx {
  std::string where;  // "tokenizer.json: pre_tokenizer.pretokenizers[1]"
  Ctx at(const std::string& key) const { return {where + "." + key}; }
  Ctx index(size_t i) const { return {where + "[" + std::to_string(i) + "]"}; }
  Status missing(const std::string& key) const {
    return invalid_argument(where + ": missing field \"" + key + "\"");
  }
  Status wrong(const std::string& key, const char* want) const {
    return invalid_argument(where + "." + key + ": expected " + want);
  }
};

Result<std::string> get_string(const json& j, const Ctx& c, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end()) return c.missing(key);
  if (!it->is_string()) return c.wrong(key, "a string");
  return it->get<std::string>();
}

Result<bool> get_bool(const json& j, const Ctx& c, const std::string& key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return c.wrong(key, "true or false");
  return it->get<bool>();
}

Result<int64_t> get_int(const json& j, const Ctx& c, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end()) return c.missing(key);
  if (!it->is_number_integer()) return c.wrong(key, "an integer");
  return it->get<int64_t>();
}

Result<std::string> type_of(const json& j, const Ctx& c) {
  if (!j.is_object()) return invalid_argument(c.where + ": expected an object");
  return get_string(j, c, "type");
}

Status refuse(const Ctx& c, const std::string& what, const std::string& type) {
  return unsupported(c.where + ": " + what + " type \"" + type + "\" is not supported");
}

// A `pattern` field: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;

  // Appends [start, end) of the non-overlapping matches in s.
  Status find(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    if (regex) return regex->find_all(s, out);
    if (literal.empty()) return Status::Ok();
    size_t pos = 0;
    while ((pos = s.find(literal, pos)) != std::string_view::npos) {
      out.emplace_back(pos, pos + literal.size());
      pos += literal.size();
    }
    return Status::Ok();
  }
};

Result<Pattern> parse_pattern(const json& j, const Ctx& c) {
  auto it = j.find("pattern");
  if (it == j.end()) return c.missing("pattern");
  if (!it->is_object()) return c.wrong("pattern", "{\"String\": ...} or {\"Regex\": ...}");
  Pattern p;
  if (auto s = it->find("String"); s != it->end() && s->is_string()) {
    p.literal = s->get<std::string>();
  } else if (auto r = it->find("Regex"); r != it->end() && r->is_string()) {
    auto re = Regex::compile(r->get<std::string>());
    if (!re.ok()) return re.status().with_context(c.where + ".pattern");
    p.regex = std::move(re).value();
  } else {
    return c.wrong("pattern", "{\"String\": ...} or {\"Regex\": ...}");
  }
  return p;
}

// Replaces every match of `p` in `s` with `content` (the crate's Replace).
Status replace_all(const Pattern& p, const std::string& content, std::string_view s, std::string& out,
                   std::vector<std::pair<size_t, size_t>>& matches) {
  matches.clear();
  JANUS_TRY(p.find(s, matches));
  size_t prev = 0;
  for (auto [a, b] : matches) {
    out.append(s.data() + prev, a - prev);
    out += content;
    prev = b;
  }
  out.append(s.data() + prev, s.size() - prev);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Normalizers: whole strings in, whole strings out.

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual Status apply(std::string& s) const = 0;
};

class UnicodeNormalizer final : public Normalizer {
 public:
  UnicodeNormalizer(int options, std::string name) : options_(options), name_(std::move(name)) {}
  Status apply(std::string& s) const override {
    bool ascii = true;
    for (unsigned char c : s) ascii &= c < 0x80;
    if (ascii) return Status::Ok();
    utf8proc_uint8_t* out = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                static_cast<utf8proc_ssize_t>(s.size()), &out,
                                static_cast<utf8proc_option_t>(UTF8PROC_STABLE | options_));
    if (n < 0) {
      return invalid_argument(name_ + " normalizer: " + utf8proc_errmsg(n));
    }
    s.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
    return Status::Ok();
  }

 private:
  int options_;
  std::string name_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  Status apply(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    std::string_view v = s;
    while (!v.empty()) {
      const CodePoint c = decode_utf8(v);
      v.remove_prefix(c.bytes);
      if (c.value < 0x80) {
        out += static_cast<char>(c.value >= 'A' && c.value <= 'Z' ? c.value + 32 : c.value);
      } else if (c.value == 0x130) {  // the one unconditional multi-character lowercase
        out += "i\xCC\x87";
      } else {
        append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c.value))));
      }
    }
    s = std::move(out);
    return Status::Ok();
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  Status apply(std::string& s) const override {
    std::string_view v = s;
    if (left_) {
      while (!v.empty()) {
        const CodePoint c = decode_utf8(v);
        if (!is_rust_whitespace(c.value)) break;
        v.remove_prefix(c.bytes);
      }
    }
    if (right_) {
      while (!v.empty()) {
        const CodePoint c = last_char(v);
        if (!is_rust_whitespace(c.value)) break;
        v.remove_suffix(c.bytes);
      }
    }
    s = std::string(v);
    return Status::Ok();
  }

 private:
  bool left_, right_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  Status apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend_);
    return Status::Ok();
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  Status apply(std::string& s) const override {
    std::string out;
    std::vector<std::pair<size_t, size_t>> matches;
    JANUS_TRY(replace_all(pattern_, content_, s, out, matches));
    s = std::move(out);
    return Status::Ok();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  Status apply(std::string& s) const override {
    for (const auto& p : parts_) JANUS_TRY(p->apply(s));
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

Result<std::unique_ptr<Normalizer>> parse_normalizer(const json& j, const Ctx& c) {
  JANUS_ASSIGN_OR_RETURN(std::string type, type_of(j, c));
  if (type == "NFC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UTF8PROC_COMPOSE, type));
  if (type == "NFD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UTF8PROC_DECOMPOSE, type));
  if (type == "NFKC")
    return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UTF8PROC_COMPOSE | UTF8PROC_COMPAT, type));
  if (type == "NFKD")
    return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, type));
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new LowercaseNormalizer());
  if (type == "Strip") {
    JANUS_ASSIGN_OR_RETURN(bool left, get_bool(j, c, "strip_left", true));
    JANUS_ASSIGN_OR_RETURN(bool right, get_bool(j, c, "strip_right", true));
    return std::unique_ptr<Normalizer>(new StripNormalizer(left, right));
  }
  if (type == "Prepend") {
    JANUS_ASSIGN_OR_RETURN(std::string p, get_string(j, c, "prepend"));
    return std::unique_ptr<Normalizer>(new PrependNormalizer(std::move(p)));
  }
  if (type == "Replace") {
    JANUS_ASSIGN_OR_RETURN(Pattern p, parse_pattern(j, c));
    JANUS_ASSIGN_OR_RETURN(std::string content, get_string(j, c, "content"));
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(p), std::move(content)));
  }
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end()) return c.missing("normalizers");
    if (!it->is_array()) return c.wrong("normalizers", "an array");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      JANUS_ASSIGN_OR_RETURN(auto p, parse_normalizer((*it)[i], c.at("normalizers").index(i)));
      parts.push_back(std::move(p));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(parts)));
  }
  return refuse(c, "normalizer", type);
}

// ---------------------------------------------------------------------------------------
// Pre-tokenization: spans over an arena string.

struct Span {
  uint32_t off = 0;
  uint32_t len = 0;
  int32_t id = -1;     // >= 0: an added token, already an id
  bool first = false;  // starts at offset 0 of the original text (Metaspace's "first")
};

struct Buf {
  std::string text;
  std::vector<Span> spans;
  bool bytes_pending = false;  // ByteLevel's byte-to-char mapping is left to the model
  void clear() {
    text.clear();
    spans.clear();
    bytes_pending = false;
  }
};

struct PieceMatch {
  size_t start, end;
  bool is_match;
};

// Per-thread working memory of one encode call, reused so a call allocates only its output.
struct Scratch {
  Buf a, b;
  std::vector<std::pair<size_t, size_t>> ranges;
  std::vector<PieceMatch> pieces, merged;
  std::string segment, mapped;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// The crate's NormalizedString::split: `pieces` cover the string, is_match marks matches.
void apply_behavior(Behavior b, const std::vector<PieceMatch>& in, std::vector<PieceMatch>& out) {
  out.clear();
  switch (b) {
    case Behavior::kIsolated:
      for (const auto& p : in) out.push_back({p.start, p.end, false});
      break;
    case Behavior::kRemoved:
      for (const auto& p : in)
        if (!p.is_match) out.push_back({p.start, p.end, false});
      break;
    case Behavior::kMergedWithPrevious: {
      bool prev = false;
      for (const auto& p : in) {
        if (p.is_match && !prev && !out.empty()) out.back().end = p.end;
        else out.push_back({p.start, p.end, false});
        prev = p.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev = false;
      for (size_t i = in.size(); i-- > 0;) {
        const auto& p = in[i];
        if (p.is_match && !prev && !out.empty()) out.back().start = p.start;
        else out.push_back({p.start, p.end, false});
        prev = p.is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Behavior::kContiguous: {
      bool prev = false;
      for (const auto& p : in) {
        if (p.is_match == prev && !out.empty()) out.back().end = p.end;
        else out.push_back({p.start, p.end, false});
        prev = p.is_match;
      }
      break;
    }
  }
}

// Matches as ranges -> pieces covering [0, n).
void ranges_to_pieces(const std::vector<std::pair<size_t, size_t>>& ranges, size_t n, bool invert,
                      std::vector<PieceMatch>& out) {
  out.clear();
  size_t prev = 0;
  for (auto [s, e] : ranges) {
    if (prev != s) out.push_back({prev, s, invert});
    out.push_back({s, e, !invert});
    prev = e;
  }
  if (prev != n) out.push_back({prev, n, invert});
}

// Splits every text span of `b` by `find` (which fills s.ranges for one span's text).
template <class Find>
Status split_spans(Buf& b, Scratch& s, Behavior behavior, bool invert, Find&& find) {
  std::vector<Span>& out = s.b.spans;
  out.clear();
  for (const Span& sp : b.spans) {
    if (sp.id >= 0) {
      out.push_back(sp);
      continue;
    }
    const std::string_view text(b.text.data() + sp.off, sp.len);
    s.ranges.clear();
    JANUS_TRY(find(text, s.ranges));
    if (s.ranges.empty() && !invert) {  // the common case: nothing to split
      out.push_back(sp);
      continue;
    }
    ranges_to_pieces(s.ranges, text.size(), invert, s.pieces);
    apply_behavior(behavior, s.pieces, s.merged);
    for (const auto& p : s.merged) {
      if (p.end == p.start) continue;
      out.push_back({static_cast<uint32_t>(sp.off + p.start), static_cast<uint32_t>(p.end - p.start), -1,
                     sp.first && p.start == 0});
    }
  }
  std::swap(b.spans, out);
  return Status::Ok();
}

// Char-predicate patterns: each matching char is its own match.
template <class Pred>
void find_chars(std::string_view text, std::vector<std::pair<size_t, size_t>>& out, Pred&& pred) {
  size_t i = 0;
  while (i < text.size()) {
    const CodePoint c = decode_utf8(text.substr(i));
    if (pred(c.value)) out.emplace_back(i, i + c.bytes);
    i += c.bytes;
  }
}

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual Status apply(Buf& b, Scratch& s) const = 0;
  // ByteLevel as the last step leaves its mapping to the model.
  virtual bool maps_bytes_last() const { return false; }
};

// Applies the byte-to-char mapping now (ByteLevel not in last place).
void materialize_bytes(Buf& b, Scratch& s) {
  if (!b.bytes_pending) return;
  Buf& t = s.b;
  t.text.clear();
  t.spans.clear();
  for (const Span& sp : b.spans) {
    Span n = sp;
    n.off = static_cast<uint32_t>(t.text.size());
    if (sp.id < 0) append_byte_level(t.text, std::string_view(b.text.data() + sp.off, sp.len));
    n.len = static_cast<uint32_t>(t.text.size() - n.off);
    t.spans.push_back(n);
  }
  std::swap(b.text, t.text);
  std::swap(b.spans, t.spans);
  b.bytes_pending = false;
}

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> re, bool last)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)), last_(last) {}
  Status apply(Buf& b, Scratch& s) const override {
    materialize_bytes(b, s);
    if (add_prefix_space_) {
      Buf& t = s.b;
      t.text.clear();
      t.spans.clear();
      for (const Span& sp : b.spans) {
        Span n = sp;
        n.off = static_cast<uint32_t>(t.text.size());
        if (sp.id < 0 && b.text[sp.off] != ' ') t.text += ' ';
        t.text.append(b.text, sp.off, sp.len);
        n.len = static_cast<uint32_t>(t.text.size() - n.off);
        t.spans.push_back(n);
      }
      std::swap(b.text, t.text);
      std::swap(b.spans, t.spans);
    }
    if (re_) {
      JANUS_TRY(split_spans(b, s, Behavior::kIsolated, false,
                            [&](std::string_view t, auto& out) { return re_->find_all(t, out); }));
    }
    b.bytes_pending = true;
    if (!last_) materialize_bytes(b, s);
    return Status::Ok();
  }
  bool maps_bytes_last() const override { return last_; }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;
  bool last_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern p, Behavior b, bool invert) : pattern_(std::move(p)), behavior_(b), invert_(invert) {}
  Status apply(Buf& b, Scratch& s) const override {
    materialize_bytes(b, s);
    return split_spans(b, s, behavior_, invert_,
                       [&](std::string_view t, auto& out) { return pattern_.find(t, out); });
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

enum class PrependScheme { kFirst, kAlways, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t rep, PrependScheme scheme, bool split) : rep_(rep), scheme_(scheme), split_(split) {
    append_utf8(rep_str_, rep);
  }
  Status apply(Buf& b, Scratch& s) const override {
    materialize_bytes(b, s);
    Buf& t = s.b;
    t.text.clear();
    t.spans.clear();
    for (const Span& sp : b.spans) {
      Span n = sp;
      n.off = static_cast<uint32_t>(t.text.size());
      if (sp.id < 0) {
        const std::string_view text(b.text.data() + sp.off, sp.len);
        const bool starts = text.substr(0, rep_str_.size()) == rep_str_ && !text.empty();
        // The check is on the text before spaces are replaced: a leading space becomes the
        // replacement and then counts as already there.
        const bool lead_space = !text.empty() && text[0] == ' ';
        const bool prepend = !starts && !lead_space &&
                             (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && sp.first));
        if (prepend) t.text += rep_str_;
        for (char ch : text) {
          if (ch == ' ') t.text += rep_str_;
          else t.text += ch;
        }
      }
      n.len = static_cast<uint32_t>(t.text.size() - n.off);
      t.spans.push_back(n);
    }
    std::swap(b.text, t.text);
    std::swap(b.spans, t.spans);
    if (split_) {
      return split_spans(b, s, Behavior::kMergedWithNext, false, [&](std::string_view text, auto& out) {
        size_t pos = 0;
        while ((pos = text.find(rep_str_, pos)) != std::string_view::npos) {
          out.emplace_back(pos, pos + rep_str_.size());
          pos += rep_str_.size();
        }
        return Status::Ok();
      });
    }
    return Status::Ok();
  }

 private:
  char32_t rep_;
  std::string rep_str_;
  PrependScheme scheme_;
  bool split_;
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  Status apply(Buf& b, Scratch& s) const override {
    materialize_bytes(b, s);
    return split_spans(b, s, individual_ ? Behavior::kIsolated : Behavior::kContiguous, false,
                       [](std::string_view t, auto& out) {
                         find_chars(t, out, is_rust_numeric);
                         return Status::Ok();
                       });
  }

 private:
  bool individual_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  Status apply(Buf& b, Scratch& s) const override {
    for (const auto& p : parts_) JANUS_TRY(p->apply(b, s));
    return Status::Ok();
  }
  bool maps_bytes_last() const override { return !parts_.empty() && parts_.back()->maps_bytes_last(); }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

Result<char32_t> single_char(const json& j, const Ctx& c, const std::string& key) {
  JANUS_ASSIGN_OR_RETURN(std::string s, get_string(j, c, key));
  const CodePoint cp = decode_utf8(s);
  if (!cp.valid || cp.bytes != s.size()) return c.wrong(key, "a single character");
  return cp.value;
}

Result<PrependScheme> parse_prepend_scheme(const json& j, const Ctx& c) {
  if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return c.wrong("prepend_scheme", "\"first\", \"always\" or \"never\"");
    const std::string v = it->get<std::string>();
    if (v == "first") return PrependScheme::kFirst;
    if (v == "always") return PrependScheme::kAlways;
    if (v == "never") return PrependScheme::kNever;
    return c.wrong("prepend_scheme", "\"first\", \"always\" or \"never\"");
  }
  // Files written before prepend_scheme existed say add_prefix_space.
  JANUS_ASSIGN_OR_RETURN(bool add, get_bool(j, c, "add_prefix_space", true));
  return add ? PrependScheme::kAlways : PrependScheme::kNever;
}

Result<std::unique_ptr<PreTokenizer>> parse_pre_tokenizer(const json& j, const Ctx& c, bool last) {
  JANUS_ASSIGN_OR_RETURN(std::string type, type_of(j, c));
  if (type == "ByteLevel") {
    JANUS_ASSIGN_OR_RETURN(bool prefix, get_bool(j, c, "add_prefix_space", true));
    JANUS_ASSIGN_OR_RETURN(bool use_regex, get_bool(j, c, "use_regex", true));
    std::unique_ptr<Regex> re;
    if (use_regex) {
      auto r = Regex::compile(kGpt2Pattern);
      if (!r.ok()) return r.status();
      re = std::move(r).value();
    }
    return std::unique_ptr<PreTokenizer>(new ByteLevelPreTokenizer(prefix, std::move(re), last));
  }
  if (type == "Split") {
    JANUS_ASSIGN_OR_RETURN(Pattern p, parse_pattern(j, c));
    JANUS_ASSIGN_OR_RETURN(std::string beh, get_string(j, c, "behavior"));
    Behavior b;
    if (beh == "Removed") b = Behavior::kRemoved;
    else if (beh == "Isolated") b = Behavior::kIsolated;
    else if (beh == "MergedWithPrevious") b = Behavior::kMergedWithPrevious;
    else if (beh == "MergedWithNext") b = Behavior::kMergedWithNext;
    else if (beh == "Contiguous") b = Behavior::kContiguous;
    else return unsupported(c.where + ": split behavior \"" + beh + "\" is not supported");
    JANUS_ASSIGN_OR_RETURN(bool invert, get_bool(j, c, "invert", false));
    return std::unique_ptr<PreTokenizer>(new SplitPreTokenizer(std::move(p), b, invert));
  }
  if (type == "Metaspace") {
    JANUS_ASSIGN_OR_RETURN(char32_t rep, single_char(j, c, "replacement"));
    JANUS_ASSIGN_OR_RETURN(PrependScheme scheme, parse_prepend_scheme(j, c));
    JANUS_ASSIGN_OR_RETURN(bool split, get_bool(j, c, "split", true));
    return std::unique_ptr<PreTokenizer>(new MetaspacePreTokenizer(rep, scheme, split));
  }
  if (type == "Digits") {
    JANUS_ASSIGN_OR_RETURN(bool individual, get_bool(j, c, "individual_digits", false));
    return std::unique_ptr<PreTokenizer>(new DigitsPreTokenizer(individual));
  }
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end()) return c.missing("pretokenizers");
    if (!it->is_array()) return c.wrong("pretokenizers", "an array");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      JANUS_ASSIGN_OR_RETURN(auto p, parse_pre_tokenizer((*it)[i], c.at("pretokenizers").index(i),
                                                         last && i + 1 == it->size()));
      parts.push_back(std::move(p));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(parts)));
  }
  return refuse(c, "pre_tokenizer", type);
}

// ---------------------------------------------------------------------------------------
// Decoders: a chain over token strings, as the crate's decode_chain.

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual Status apply(std::vector<std::string>& tokens) const = 0;
  virtual bool has_byte_fallback() const { return false; }
};

class ByteLevelDecoder final : public Decoder {
 public:
  Status apply(std::vector<std::string>& tokens) const override {
    const auto& t = byte_level();
    std::string bytes;
    for (const std::string& tok : tokens) {
      const size_t mark = bytes.size();
      std::string_view v = tok;
      bool all = true;
      while (!v.empty()) {
        const CodePoint c = decode_utf8(v);
        v.remove_prefix(c.bytes);
        if (c.value < t.char_to_byte.size() && t.char_to_byte[c.value] >= 0) {
          bytes += static_cast<char>(t.char_to_byte[c.value]);
        } else {
          all = false;
          break;
        }
      }
      if (!all) {  // a token outside the byte alphabet (an added token) stays as written
        bytes.resize(mark);
        bytes += tok;
      }
    }
    std::string out;
    append_lossy(out, bytes);
    tokens.assign(1, std::move(out));
    return Status::Ok();
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t rep, PrependScheme scheme) : rep_(rep), scheme_(scheme) {}
  Status apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      std::string_view v = tokens[i];
      while (!v.empty()) {
        const CodePoint c = decode_utf8(v);
        if (c.value == rep_) {
          if (!(i == 0 && scheme_ != PrependScheme::kNever)) out += ' ';
        } else {
          out.append(v.data(), c.bytes);
        }
        v.remove_prefix(c.bytes);
      }
      tokens[i] = std::move(out);
    }
    return Status::Ok();
  }

 private:
  char32_t rep_;
  PrependScheme scheme_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  Status apply(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& tok : tokens) {
      std::string out;
      JANUS_TRY(replace_all(pattern_, content_, tok, out, matches));
      tok = std::move(out);
    }
    return Status::Ok();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  bool has_byte_fallback() const override { return true; }
  Status apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (is_valid_utf8(pending)) out.push_back(pending);
      else
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (std::string& tok : tokens) {
      int byte = -1;
      if (tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>') {
        const int hi = hex_digit(tok[3]), lo = hex_digit(tok[4]);
        if (hi >= 0 && lo >= 0) byte = hi * 16 + lo;
      }
      if (byte >= 0) {
        pending += static_cast<char>(byte);
      } else {
        flush();
        out.push_back(std::move(tok));
      }
    }
    flush();
    tokens = std::move(out);
    return Status::Ok();
  }
};

class FuseDecoder final : public Decoder {
 public:
  Status apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
    return Status::Ok();
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  Status apply(std::vector<std::string>& tokens) const override {
    for (std::string& tok : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // byte offset, code point
      std::string_view v = tok;
      size_t off = 0;
      while (!v.empty()) {
        const CodePoint c = decode_utf8(v);
        chars.emplace_back(off, c.value);
        off += c.bytes;
        v.remove_prefix(c.bytes);
      }
      size_t start_cut = 0;
      for (size_t i = 0; i < chars.size() && i < start_ && chars[i].second == content_; ++i) start_cut = i + 1;
      size_t stop_cut = chars.size();
      for (size_t i = 0; i < chars.size() && i < stop_ && chars[chars.size() - 1 - i].second == content_; ++i)
        stop_cut = chars.size() - i - 1;
      if (stop_cut < start_cut) stop_cut = start_cut;
      const size_t b0 = start_cut < chars.size() ? chars[start_cut].first : tok.size();
      const size_t b1 = stop_cut < chars.size() ? chars[stop_cut].first : tok.size();
      tok = tok.substr(b0, b1 - b0);
    }
    return Status::Ok();
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  bool has_byte_fallback() const override {
    for (const auto& p : parts_)
      if (p->has_byte_fallback()) return true;
    return false;
  }
  Status apply(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) JANUS_TRY(p->apply(tokens));
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

Result<std::unique_ptr<Decoder>> parse_decoder(const json& j, const Ctx& c) {
  JANUS_ASSIGN_OR_RETURN(std::string type, type_of(j, c));
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "Metaspace") {
    JANUS_ASSIGN_OR_RETURN(char32_t rep, single_char(j, c, "replacement"));
    JANUS_ASSIGN_OR_RETURN(PrependScheme scheme, parse_prepend_scheme(j, c));
    return std::unique_ptr<Decoder>(new MetaspaceDecoder(rep, scheme));
  }
  if (type == "Replace") {
    JANUS_ASSIGN_OR_RETURN(Pattern p, parse_pattern(j, c));
    JANUS_ASSIGN_OR_RETURN(std::string content, get_string(j, c, "content"));
    return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(p), std::move(content)));
  }
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Strip") {
    JANUS_ASSIGN_OR_RETURN(char32_t content, single_char(j, c, "content"));
    JANUS_ASSIGN_OR_RETURN(int64_t start, get_int(j, c, "start"));
    JANUS_ASSIGN_OR_RETURN(int64_t stop, get_int(j, c, "stop"));
    if (start < 0 || stop < 0) return c.wrong("start", "counts >= 0");
    return std::unique_ptr<Decoder>(
        new StripDecoder(content, static_cast<size_t>(start), static_cast<size_t>(stop)));
  }
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end()) return c.missing("decoders");
    if (!it->is_array()) return c.wrong("decoders", "an array");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      JANUS_ASSIGN_OR_RETURN(auto p, parse_decoder((*it)[i], c.at("decoders").index(i)));
      parts.push_back(std::move(p));
    }
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(parts)));
  }
  return refuse(c, "decoder", type);
}

// ---------------------------------------------------------------------------------------
// BPE.

// Merge ranks keyed by the pair of ids: open addressing, since a lookup per adjacent pair
// per word is the inner loop of encoding.
class PairMap {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t new_id = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Entry{});
    mask_ = cap - 1;
  }
  // A later merge of the same pair replaces the earlier one, as collecting into the
  // crate's HashMap does.
  void put(uint64_t key, int32_t rank, int32_t new_id) {
    size_t i = hash(key);
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    slots_[i] = {key, rank, new_id};
  }
  const Entry* find(int32_t a, int32_t b) const {
    const uint64_t key = pack(a, b);
    size_t i = hash(key);
    while (true) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

 private:
  size_t hash(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  int32_t len;  // 0: merged into its left neighbour
};

struct MergeCandidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std::push_heap keeps the largest on top: "larger" is the lower rank, then lower pos.
  bool operator<(const MergeCandidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

// Bounded word -> ids memo, locked because encode is const and shared across threads.
class WordCache {
 public:
  static constexpr size_t kCapacity = 10000;
  static constexpr size_t kMaxWordBytes = 256;
  bool get(std::string_view w, std::vector<int32_t>& out) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(w);
    if (it == map_.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void put(std::string_view w, const int32_t* ids, size_t n) const {
    if (w.size() >= kMaxWordBytes) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kCapacity) return;  // full: keep what is there, as the crate does
    map_.emplace(std::string(w), std::vector<int32_t>(ids, ids + n));
  }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> map_;
};

class Bpe {
 public:
  StringMap vocab;
  std::vector<std::string> id_to_token;  // model ids only
  PairMap merges;
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::array<int32_t, 256> byte_fallback_id{};  // <0xXX>, -1 when missing
  std::array<int32_t, 256> byte_level_id{};     // the byte-level char of b, -1 when missing
  bool byte_level_complete = false;
  std::vector<int32_t> bmp_id;  // code points below 0x10000 -> id, -1 when not a token
  WordCache cache;

  std::optional<int32_t> lookup(std::string_view s) const {
    auto it = vocab.find(s);
    if (it == vocab.end()) return std::nullopt;
    return it->second;
  }

  void finish_tables() {
    const auto& t = byte_level();
    byte_level_complete = true;
    for (int b = 0; b < 256; ++b) {
      auto f = lookup(hex_byte_token(static_cast<unsigned>(b)));
      byte_fallback_id[b] = f ? *f : -1;
      auto l = lookup(t.byte_to_utf8[b]);
      byte_level_id[b] = l ? *l : -1;
      byte_level_complete &= l.has_value();
    }
    bmp_id.assign(0x10000, -1);
    for (const auto& [tok, id] : vocab) {
      const CodePoint c = decode_utf8(tok);
      if (c.valid && c.bytes == tok.size() && c.value < 0x10000) bmp_id[c.value] = id;
    }
  }

  // Appends the ids of one word. `raw_bytes`: the word is raw bytes still to be mapped to
  // byte-level chars (the ByteLevel pre-tokenizer ran last).
  Status tokenize(std::string_view word, bool raw_bytes, std::vector<int32_t>& out, Scratch& s) const {
    if (word.empty()) return Status::Ok();
    if (cache.get(word, out)) return Status::Ok();
    const size_t mark = out.size();
    std::string_view text = word;
    if (raw_bytes && (!byte_level_complete || ignore_merges)) {
      s.mapped.clear();
      append_byte_level(s.mapped, word);
      text = s.mapped;
      raw_bytes = false;
    }
    if (ignore_merges) {
      if (auto id = lookup(text)) {
        out.push_back(*id);
        cache.put(word, out.data() + mark, 1);
        return Status::Ok();
      }
    }
    thread_local std::vector<Symbol> symbols;
    thread_local std::vector<MergeCandidate> heap;
    symbols.clear();
    auto add = [&](int32_t id, int32_t len) {
      const int32_t i = static_cast<int32_t>(symbols.size());
      symbols.push_back({id, i - 1, i + 1, len});
    };
    if (raw_bytes) {
      for (unsigned char c : text) add(byte_level_id[c], 1);
    } else {
      JANUS_TRY(initial_symbols(text, add));
    }
    if (!symbols.empty()) symbols.back().next = -1;
    merge_all(symbols, heap);
    for (const Symbol& sym : symbols)
      if (sym.len != 0) out.push_back(sym.id);
    cache.put(word, out.data() + mark, out.size() - mark);
    return Status::Ok();
  }

 private:
  template <class Add>
  Status initial_symbols(std::string_view w, Add&& add) const {
    int32_t unk_id = -1, unk_len = 0;  // a pending unk, as merge_word keeps it
    size_t i = 0;
    while (i < w.size()) {
      const CodePoint c = decode_utf8(w.substr(i));
      const std::string_view ch = w.substr(i, c.bytes);
      i += c.bytes;
      int32_t id = -1;
      if (c.value < 0x10000) id = bmp_id[c.value];
      else if (auto f = lookup(ch)) id = *f;
      if (id >= 0) {
        if (unk_id >= 0) {
          add(unk_id, unk_len);
          unk_id = -1;
        }
        add(id, static_cast<int32_t>(c.bytes));
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (unsigned char b : ch) all &= byte_fallback_id[b] >= 0;
        if (all) {
          for (unsigned char b : ch) add(byte_fallback_id[b], 1);
          continue;
        }
      }
      if (unk_token) {
        auto u = lookup(*unk_token);
        if (!u) return invalid_argument("tokenizer.json: unk_token \"" + *unk_token + "\" is not in the vocabulary");
        if (unk_id >= 0 && fuse_unk) {
          unk_len += static_cast<int32_t>(c.bytes);
        } else {
          if (unk_id >= 0) add(unk_id, unk_len);
          unk_id = *u;
          unk_len = static_cast<int32_t>(c.bytes);
        }
      }
    }
    if (unk_id >= 0) add(unk_id, unk_len);
    return Status::Ok();
  }

  // The crate's Word::merge_all, stale-entry checks included.
  void merge_all(std::vector<Symbol>& sym, std::vector<MergeCandidate>& heap) const {
    const int32_t n = static_cast<int32_t>(sym.size());
    if (n < 2) return;
    heap.clear();
    for (int32_t i = 0; i + 1 < n; ++i) {
      if (const auto* m = merges.find(sym[i].id, sym[i + 1].id)) heap.push_back({m->rank, i, m->new_id});
    }
    std::make_heap(heap.begin(), heap.end());
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      const MergeCandidate top = heap.back();
      heap.pop_back();
      Symbol& cur = sym[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      const int32_t next_pos = cur.next;
      const Symbol right = sym[next_pos];
      const auto* m = merges.find(cur.id, right.id);
      if (!m || m->new_id != top.new_id) continue;
      cur.id = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      sym[next_pos].len = 0;
      if (right.next >= 0 && right.next < n) sym[right.next].prev = top.pos;
      if (cur.prev >= 0) {
        if (const auto* pm = merges.find(sym[cur.prev].id, cur.id)) {
          heap.push_back({pm->rank, cur.prev, pm->new_id});
          std::push_heap(heap.begin(), heap.end());
        }
      }
      if (cur.next >= 0 && cur.next < n) {
        if (const auto* nm = merges.find(cur.id, sym[cur.next].id)) {
          heap.push_back({nm->rank, top.pos, nm->new_id});
          std::push_heap(heap.begin(), heap.end());
        }
      }
    }
  }
};

Status parse_bpe(const json& j, const Ctx& c, Bpe& bpe) {
  if (auto it = j.find("dropout"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0)
      return unsupported(c.where + ".dropout: BPE dropout is not supported (it makes encoding random)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto it = j.find(key); it != j.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
      return unsupported(c.where + "." + key + " is not supported");
  }
  if (auto it = j.find("unk_token"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return c.wrong("unk_token", "a string or null");
    bpe.unk_token = it->get<std::string>();
  }
  JANUS_ASSIGN_OR_RETURN(bpe.fuse_unk, get_bool(j, c, "fuse_unk", false));
  JANUS_ASSIGN_OR_RETURN(bpe.byte_fallback, get_bool(j, c, "byte_fallback", false));
  JANUS_ASSIGN_OR_RETURN(bpe.ignore_merges, get_bool(j, c, "ignore_merges", false));
  auto v = j.find("vocab");
  if (v == j.end()) return c.missing("vocab");
  if (!v->is_object()) return c.wrong("vocab", "an object of token: id");
  bpe.vocab.reserve(v->size());
  int64_t max_id = -1;
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX)
      return invalid_argument(c.where + ".vocab[\"" + it.key() + "\"]: expected an id >= 0");
    const int64_t id = it->get<int64_t>();
    bpe.vocab[it.key()] = static_cast<int32_t>(id);
    max_id = std::max(max_id, id);
  }
  if (max_id >= static_cast<int64_t>(v->size()) * 4 + 1024)
    return invalid_argument(c.where + ".vocab: ids are too sparse (largest " + std::to_string(max_id) + ")");
  bpe.id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [tok, id] : bpe.vocab) bpe.id_to_token[id] = tok;
  auto m = j.find("merges");
  if (m == j.end()) return c.missing("merges");
  if (!m->is_array()) return c.wrong("merges", "an array");
  bpe.merges.reserve(m->size());
  std::string a, b;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& e = (*m)[i];
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos)
        return invalid_argument(c.where + ".merges[" + std::to_string(i) + "]: \"" + s + "\" is not \"a b\"");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return invalid_argument(c.where + ".merges[" + std::to_string(i) + "]: expected \"a b\" or [a, b]");
    }
    auto ia = bpe.lookup(a), ib = bpe.lookup(b), inew = bpe.lookup(a + b);
    if (!ia || !ib || !inew)
      return invalid_argument(c.where + ".merges[" + std::to_string(i) + "]: \"" + (!ia ? a : !ib ? b : a + b) +
                              "\" is not in the vocabulary");
    bpe.merges.put(PairMap::pack(*ia, *ib), static_cast<int32_t>(i), *inew);
  }
  bpe.finish_tables();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Added tokens: matched in the text before the model sees it.

struct AddedToken {
  int32_t id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
};

// The crate's Aho-Corasick (leftmost-longest) over the added tokens of one kind.
class AddedMatcher {
 public:
  void add(std::string pattern, size_t token) {
    if (pattern.empty()) return;
    patterns_.push_back({std::move(pattern), token});
  }
  void finish() {
    for (auto& f : by_first_) f.clear();
    for (size_t i = 0; i < patterns_.size(); ++i)
      by_first_[static_cast<unsigned char>(patterns_[i].text[0])].push_back(i);
    for (auto& f : by_first_)
      std::stable_sort(f.begin(), f.end(),
                       [&](size_t x, size_t y) { return patterns_[x].text.size() > patterns_[y].text.size(); });
  }
  bool empty() const { return patterns_.empty(); }

  // Pieces of `s`: (token index or -1, start, end), as AddedVocabulary::find_matches.
  void split(std::string_view s, const std::vector<AddedToken>& tokens,
             std::vector<std::tuple<int64_t, size_t, size_t>>& out) const {
    out.clear();
    size_t start_offset = 0;
    size_t i = 0;
    while (i < s.size()) {
      const auto& cands = by_first_[static_cast<unsigned char>(s[i])];
      const Pat* hit = nullptr;
      for (size_t k : cands) {
        const Pat& p = patterns_[k];
        if (s.size() - i >= p.text.size() && std::memcmp(s.data() + i, p.text.data(), p.text.size()) == 0) {
          hit = &p;
          break;
        }
      }
      if (!hit) {
        ++i;
        continue;
      }
      size_t start = i, stop = i + hit->text.size();
      i = stop;
      const AddedToken& t = tokens[hit->token];
      if (t.single_word) {
        const bool start_space = start == 0 || !is_word_char(last_char(s.substr(0, start)).value);
        const bool stop_space = stop == s.size() || !is_word_char(decode_utf8(s.substr(stop)).value);
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        size_t ns = start;
        while (ns > 0) {
          const CodePoint c = last_char(s.substr(0, ns));
          if (!is_rust_whitespace(c.value)) break;
          ns -= c.bytes;
        }
        start = std::max(ns, start_offset);
      }
      if (t.rstrip) {
        while (stop < s.size()) {
          const CodePoint c = decode_utf8(s.substr(stop));
          if (!is_rust_whitespace(c.value)) break;
          stop += c.bytes;
        }
      }
      if (start_offset < start) out.emplace_back(-1, start_offset, start);
      out.emplace_back(static_cast<int64_t>(hit->token), start, stop);
      start_offset = stop;
    }
    if (start_offset != s.size()) out.emplace_back(-1, start_offset, s.size());
  }

 private:
  struct Pat {
    std::string text;
    size_t token;
  };
  std::vector<Pat> patterns_;
  std::array<std::vector<size_t>, 256> by_first_;
};

// ---------------------------------------------------------------------------------------
// Post-processors (ids only: offsets and type ids are not kept).

struct TemplatePiece {
  bool sequence = false;
  std::vector<int32_t> ids;  // special tokens
};

struct PostProcessor {
  bool present = false;
  std::vector<TemplatePiece> single;
};

Status parse_post_processor(const json& j, const Ctx& c, PostProcessor& pp) {
  JANUS_ASSIGN_OR_RETURN(std::string type, type_of(j, c));
  if (type == "ByteLevel") return Status::Ok();  // offsets only
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end()) return c.missing("processors");
    if (!it->is_array()) return c.wrong("processors", "an array");
    for (size_t i = 0; i < it->size(); ++i)
      JANUS_TRY(parse_post_processor((*it)[i], c.at("processors").index(i), pp));
    return Status::Ok();
  }
  if (type != "TemplateProcessing") return refuse(c, "post_processor", type);
  if (pp.present) return unsupported(c.where + ": more than one TemplateProcessing is not supported");
  pp.present = true;
  auto specials = j.find("special_tokens");
  if (specials == j.end()) return c.missing("special_tokens");
  if (!specials->is_object()) return c.wrong("special_tokens", "an object");
  auto single = j.find("single");
  if (single == j.end()) return c.missing("single");
  if (!single->is_array()) return c.wrong("single", "an array");
  for (size_t i = 0; i < single->size(); ++i) {
    const json& e = (*single)[i];
    const Ctx ec = c.at("single").index(i);
    TemplatePiece piece;
    if (auto s = e.find("Sequence"); s != e.end()) {
      JANUS_ASSIGN_OR_RETURN(std::string id, get_string(*s, ec.at("Sequence"), "id"));
      if (id != "A") return unsupported(ec.where + ": sequence \"" + id + "\" in a single template");
      piece.sequence = true;
    } else if (auto t = e.find("SpecialToken"); t != e.end()) {
      JANUS_ASSIGN_OR_RETURN(std::string id, get_string(*t, ec.at("SpecialToken"), "id"));
      auto st = specials->find(id);
      if (st == specials->end())
        return invalid_argument(ec.where + ": special token \"" + id + "\" is not in special_tokens");
      auto ids = st->find("ids");
      if (ids == st->end() || !ids->is_array())
        return invalid_argument(c.where + ".special_tokens[\"" + id + "\"]: missing \"ids\"");
      for (const auto& x : *ids) {
        if (!x.is_number_integer()) return invalid_argument(c.where + ".special_tokens[\"" + id + "\"].ids: expected integers");
        piece.ids.push_back(x.get<int32_t>());
      }
    } else {
      return invalid_argument(ec.where + ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    pp.single.push_back(std::move(piece));
  }
  return Status::Ok();
}

Result<json> parse_json_text(std::string_view text, const std::string& name) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Parse again with exceptions for the byte offset of the error.
    try {
      json again = json::parse(text.begin(), text.end());
      (void)again;
    } catch (const json::parse_error& e) {
      return invalid_argument(name + ": malformed JSON: " + e.what());
    }
    return invalid_argument(name + ": malformed JSON");
  }
  return j;
}

Result<std::optional<std::string>> read_optional_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::optional<std::string>();
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return io_error(path + ": read failed");
  return std::optional<std::string>(ss.str());
}

}  // namespace

// ---------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  StringMap added_by_content;
  AddedMatcher raw_matcher, normalized_matcher;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  Bpe bpe;
  PostProcessor post;
  std::unique_ptr<Decoder> decoder;
  std::optional<int32_t> bos;
  std::vector<int32_t> eos;
  size_t vocab_size = 0;

  Status encode_into(std::string_view text, bool add_special, std::vector<int32_t>& ids) const;
  Status pre_tokenize_segment(std::string_view raw, bool first, Buf& buf, Scratch& s) const;
};

namespace {

Result<std::unique_ptr<Tokenizer::Impl>> build(const json& root) {
  const Ctx top{"tokenizer.json"};
  if (!root.is_object()) return invalid_argument("tokenizer.json: expected a JSON object");
  auto impl = std::make_unique<Tokenizer::Impl>();
  for (const char* key : {"truncation", "padding"}) {
    if (auto it = root.find(key); it != root.end() && !it->is_null())
      return unsupported(std::string("tokenizer.json: ") + key + " is not supported (it must be null)");
  }
  // The model first: added tokens may refer to it and the normalizer is needed to match them.
  auto model = root.find("model");
  if (model == root.end() || model->is_null()) return top.missing("model");
  const Ctx mc = top.at("model");
  if (!model->is_object()) return invalid_argument(mc.where + ": expected an object");
  std::string mtype;
  if (auto t = model->find("type"); t != model->end() && t->is_string()) mtype = t->get<std::string>();
  else if (model->contains("merges")) mtype = "BPE";
  else return mc.missing("type");
  if (mtype != "BPE") return unsupported("tokenizer.json: model type \"" + mtype + "\" is not supported");
  JANUS_TRY(parse_bpe(*model, mc, impl->bpe));

  if (auto n = root.find("normalizer"); n != root.end() && !n->is_null()) {
    JANUS_ASSIGN_OR_RETURN(impl->normalizer, parse_normalizer(*n, top.at("normalizer")));
  }
  if (auto p = root.find("pre_tokenizer"); p != root.end() && !p->is_null()) {
    JANUS_ASSIGN_OR_RETURN(impl->pre_tokenizer, parse_pre_tokenizer(*p, top.at("pre_tokenizer"), true));
  }
  if (auto p = root.find("post_processor"); p != root.end() && !p->is_null()) {
    JANUS_TRY(parse_post_processor(*p, top.at("post_processor"), impl->post));
  }
  if (auto d = root.find("decoder"); d != root.end() && !d->is_null()) {
    JANUS_ASSIGN_OR_RETURN(impl->decoder, parse_decoder(*d, top.at("decoder")));
  }

  size_t vocab_size = impl->bpe.id_to_token.size();
  if (auto a = root.find("added_tokens"); a != root.end() && !a->is_null()) {
    if (!a->is_array()) return top.wrong("added_tokens", "an array");
    for (size_t i = 0; i < a->size(); ++i) {
      const json& e = (*a)[i];
      const Ctx ac = top.at("added_tokens").index(i);
      if (!e.is_object()) return invalid_argument(ac.where + ": expected an object");
      AddedToken t;
      JANUS_ASSIGN_OR_RETURN(int64_t id, get_int(e, ac, "id"));
      if (id < 0 || id > INT32_MAX) return ac.wrong("id", "an id >= 0");
      t.id = static_cast<int32_t>(id);
      JANUS_ASSIGN_OR_RETURN(t.content, get_string(e, ac, "content"));
      JANUS_ASSIGN_OR_RETURN(t.single_word, get_bool(e, ac, "single_word", false));
      JANUS_ASSIGN_OR_RETURN(t.lstrip, get_bool(e, ac, "lstrip", false));
      JANUS_ASSIGN_OR_RETURN(t.rstrip, get_bool(e, ac, "rstrip", false));
      JANUS_ASSIGN_OR_RETURN(t.special, get_bool(e, ac, "special", false));
      JANUS_ASSIGN_OR_RETURN(t.normalized, get_bool(e, ac, "normalized", !t.special));
      vocab_size = std::max(vocab_size, static_cast<size_t>(t.id) + 1);
      impl->added_by_id[t.id] = impl->added.size();
      impl->added_by_content[t.content] = t.id;
      impl->added.push_back(std::move(t));
    }
  }
  if (vocab_size > impl->bpe.id_to_token.size() * 4 + 65536)
    return invalid_argument("tokenizer.json: added token ids are too sparse");
  impl->vocab_size = vocab_size;
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& t = impl->added[i];
    if (t.normalized && impl->normalizer) {
      std::string content = t.content;
      JANUS_TRY(impl->normalizer->apply(content).with_context("tokenizer.json: added token \"" + t.content + "\""));
      impl->normalized_matcher.add(std::move(content), i);
    } else if (t.normalized) {
      impl->normalized_matcher.add(t.content, i);
    } else {
      impl->raw_matcher.add(t.content, i);
    }
  }
  impl->raw_matcher.finish();
  impl->normalized_matcher.finish();
  for (const auto& piece : impl->post.single) {
    if (!piece.sequence && !piece.ids.empty()) {
      impl->bos = piece.ids.front();
      break;
    }
    if (piece.sequence) break;
  }
  for (const auto& piece : impl->post.single)
    for (int32_t id : piece.ids)
      if (id < 0 || static_cast<size_t>(id) >= impl->vocab_size)
        return invalid_argument("tokenizer.json: post_processor names id " + std::to_string(id) +
                                " outside the vocabulary");
  return impl;
}

}  // namespace

Status Tokenizer::Impl::pre_tokenize_segment(std::string_view raw, bool first, Buf& buf, Scratch& s) const {
  // Normalize one stretch between non-normalized added tokens, then match the normalized ones.
  s.segment.assign(raw);
  if (normalizer) JANUS_TRY(normalizer->apply(s.segment));
  if (s.segment.empty()) return Status::Ok();
  auto push_text = [&](size_t a, size_t b) {
    if (b <= a) return;
    buf.spans.push_back({static_cast<uint32_t>(buf.text.size()), static_cast<uint32_t>(b - a), -1, first && a == 0});
    buf.text.append(s.segment, a, b - a);
  };
  if (normalized_matcher.empty()) {
    push_text(0, s.segment.size());
    return Status::Ok();
  }
  thread_local std::vector<std::tuple<int64_t, size_t, size_t>> pieces;
  normalized_matcher.split(s.segment, added, pieces);
  for (const auto& [tok, a, b] : pieces) {
    if (tok >= 0) buf.spans.push_back({static_cast<uint32_t>(buf.text.size()), 0, added[tok].id, false});
    else push_text(a, b);
  }
  return Status::Ok();
}

Status Tokenizer::Impl::encode_into(std::string_view text, bool add_special, std::vector<int32_t>& ids) const {
  if (text.size() > UINT32_MAX / 4) return invalid_argument("encode: text longer than 1 GiB");
  Scratch& s = scratch();
  Buf& buf = s.a;
  buf.clear();
  if (raw_matcher.empty()) {
    JANUS_TRY(pre_tokenize_segment(text, true, buf, s));
  } else {
    std::vector<std::tuple<int64_t, size_t, size_t>> pieces;
    raw_matcher.split(text, added, pieces);
    for (const auto& [tok, a, b] : pieces) {
      if (tok >= 0) buf.spans.push_back({static_cast<uint32_t>(buf.text.size()), 0, added[tok].id, false});
      else JANUS_TRY(pre_tokenize_segment(text.substr(a, b - a), a == 0, buf, s));
    }
  }
  if (pre_tokenizer) JANUS_TRY(pre_tokenizer->apply(buf, s));
  std::vector<int32_t> body;
  std::vector<int32_t>& out = (add_special && post.present) ? body : ids;
  out.reserve(out.size() + buf.text.size() / 3 + buf.spans.size());
  for (const Span& sp : buf.spans) {
    if (sp.id >= 0) {
      out.push_back(sp.id);
      continue;
    }
    JANUS_TRY(bpe.tokenize(std::string_view(buf.text.data() + sp.off, sp.len), buf.bytes_pending, out, s));
  }
  if (add_special && post.present) {
    for (const auto& piece : post.single) {
      if (piece.sequence) ids.insert(ids.end(), body.begin(), body.end());
      else ids.insert(ids.end(), piece.ids.begin(), piece.ids.end());
    }
  }
  return Status::Ok();
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_json(std::string_view tokenizer_json) {
  JANUS_ASSIGN_OR_RETURN(json root, parse_json_text(tokenizer_json, "tokenizer.json"));
  JANUS_ASSIGN_OR_RETURN(auto impl, build(root));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

namespace {

// bos_token / eos_token are a string or an AddedToken object {"content": ...}.
Result<std::optional<std::string>> token_field(const json& cfg, const std::string& key, const std::string& file) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return std::optional<std::string>(c->get<std::string>());
  }
  return invalid_argument(file + ": " + key + ": expected a string or {\"content\": ...}");
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::load(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  JANUS_ASSIGN_OR_RETURN(auto text, read_optional_file(path));
  if (!text) return not_found(path + ": cannot open");
  auto root = parse_json_text(*text, path);
  if (!root.ok()) return root.status();
  auto built = build(*root);
  if (!built.ok()) return built.status().with_context(dir);
  std::unique_ptr<Tokenizer> tok(new Tokenizer(std::move(built).value()));
  Impl& impl = *tok->impl_;

  const std::string cfg_path = dir + "/tokenizer_config.json";
  JANUS_ASSIGN_OR_RETURN(auto cfg_text, read_optional_file(cfg_path));
  std::optional<int32_t> config_eos;
  if (cfg_text) {
    JANUS_ASSIGN_OR_RETURN(json cfg, parse_json_text(*cfg_text, cfg_path));
    if (!cfg.is_object()) return invalid_argument(cfg_path + ": expected a JSON object");
    JANUS_ASSIGN_OR_RETURN(auto bos, token_field(cfg, "bos_token", cfg_path));
    JANUS_ASSIGN_OR_RETURN(auto eos, token_field(cfg, "eos_token", cfg_path));
    if (bos) {
      auto id = tok->token_to_id(*bos);
      if (!id) return invalid_argument(cfg_path + ": bos_token \"" + *bos + "\" is not in the vocabulary");
      impl.bos = id;
    }
    if (eos) {
      auto id = tok->token_to_id(*eos);
      if (!id) return invalid_argument(cfg_path + ": eos_token \"" + *eos + "\" is not in the vocabulary");
      config_eos = id;
    }
    if (auto a = cfg.find("add_bos_token"); a != cfg.end() && !a->is_null()) {
      if (!a->is_boolean()) return invalid_argument(cfg_path + ": add_bos_token: expected true or false");
      auto& single = impl.post.single;
      const bool starts_with_bos = !single.empty() && !single.front().sequence && impl.bos &&
                                   single.front().ids == std::vector<int32_t>{*impl.bos};
      if (!impl.post.present) {
        impl.post.present = true;
        single.push_back({true, {}});
      }
      if (a->get<bool>() && !starts_with_bos && impl.bos) {
        single.insert(single.begin(), TemplatePiece{false, {*impl.bos}});
      } else if (!a->get<bool>() && starts_with_bos) {
        single.erase(single.begin());
      }
    }
  }
  const std::string gen_path = dir + "/generation_config.json";
  JANUS_ASSIGN_OR_RETURN(auto gen_text, read_optional_file(gen_path));
  if (gen_text) {
    JANUS_ASSIGN_OR_RETURN(json gen, parse_json_text(*gen_text, gen_path));
    if (!gen.is_object()) return invalid_argument(gen_path + ": expected a JSON object");
    if (auto e = gen.find("eos_token_id"); e != gen.end() && !e->is_null()) {
      std::vector<json> list = e->is_array() ? e->get<std::vector<json>>() : std::vector<json>{*e};
      for (const json& x : list) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= static_cast<int64_t>(impl.vocab_size))
          return invalid_argument(gen_path + ": eos_token_id: expected ids in the vocabulary");
        impl.eos.push_back(x.get<int32_t>());
      }
    }
  }
  if (config_eos && std::find(impl.eos.begin(), impl.eos.end(), *config_eos) == impl.eos.end())
    impl.eos.push_back(*config_eos);
  return tok;
}

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (!is_valid_utf8(text)) {
    size_t off = 0;
    std::string_view v = text;
    while (!v.empty()) {
      const CodePoint c = decode_utf8(v);
      if (!c.valid) break;
      off += c.bytes;
      v.remove_prefix(c.bytes);
    }
    return invalid_argument("encode: the text is not valid UTF-8 (at byte " + std::to_string(off) + ")");
  }
  std::vector<int32_t> ids;
  JANUS_TRY(impl_->encode_into(text, add_special_tokens, ids));
  return ids;
}

Result<std::string> Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= impl_->vocab_size)
      return invalid_argument("decode: id " + std::to_string(id) + " is outside the vocabulary (size " +
                              std::to_string(impl_->vocab_size) + ")");
    auto a = impl_->added_by_id.find(id);
    if (a != impl_->added_by_id.end()) {
      const AddedToken& t = impl_->added[a->second];
      if (skip_special_tokens && t.special) continue;
      tokens.push_back(t.content);
      continue;
    }
    if (static_cast<size_t>(id) >= impl_->bpe.id_to_token.size() || impl_->bpe.id_to_token[id].empty()) {
      continue;  // a hole in the ids: the crate finds no token and drops it
    }
    tokens.push_back(impl_->bpe.id_to_token[id]);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  JANUS_TRY(impl_->decoder->apply(tokens));
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

size_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) return it->second;
  return impl_->bpe.lookup(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (auto a = impl_->added_by_id.find(id); a != impl_->added_by_id.end()) return impl_->added[a->second].content;
  if (id < 0 || static_cast<size_t>(id) >= impl_->bpe.id_to_token.size()) return {};
  return impl_->bpe.id_to_token[id];
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::vector<int32_t> Tokenizer::eos_ids() const { return impl_->eos; }

bool Tokenizer::continues_byte_run(int32_t id) const {
  if (!impl_->decoder || !impl_->decoder->has_byte_fallback()) return false;
  const std::string tok = id_to_token(id);
  return tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>' && hex_digit(tok[3]) >= 0 &&
         hex_digit(tok[4]) >= 0;
}

bool Tokenizer::is_special(int32_t id) const {
  auto a = impl_->added_by_id.find(id);
  return a != impl_->added_by_id.end() && impl_->added[a->second].special;
}

// ---------------------------------------------------------------------------------------

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

namespace {
bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}
}  // namespace

Result<std::string> StreamingDetokenizer::push(int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= tokenizer_.vocab_size())
    return invalid_argument("detokenize: id " + std::to_string(id) + " is outside the vocabulary");
  ids_.push_back(id);
  if (tokenizer_.continues_byte_run(id)) return std::string();
  const std::vector<int32_t> before(ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_),
                                    ids_.begin() + static_cast<std::ptrdiff_t>(read_offset_));
  const std::vector<int32_t> window(ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_), ids_.end());
  JANUS_ASSIGN_OR_RETURN(std::string prefix_text, tokenizer_.decode(before, skip_special_));
  JANUS_ASSIGN_OR_RETURN(std::string new_text, tokenizer_.decode(window, skip_special_));
  // An unfinished character decodes as U+FFFD at the end: wait for the bytes that finish it.
  if (new_text.size() <= prefix_text.size() || ends_with_replacement(new_text)) return std::string();
  // Normally new_text extends prefix_text; where a decoder re-renders the window
  // differently, start on a character boundary all the same.
  size_t start = prefix_text.size();
  while (start < new_text.size() && (static_cast<unsigned char>(new_text[start]) & 0xC0) == 0x80) ++start;
  std::string delta = new_text.substr(start);
  const size_t whole = complete_utf8_prefix(delta);
  delta.resize(whole);
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return delta;
}

std::string StreamingDetokenizer::finish() {
  std::string rest;
  if (read_offset_ < ids_.size()) {
    const std::vector<int32_t> before(ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_),
                                      ids_.begin() + static_cast<std::ptrdiff_t>(read_offset_));
    const std::vector<int32_t> window(ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_), ids_.end());
    auto p = tokenizer_.decode(before, skip_special_);
    auto n = tokenizer_.decode(window, skip_special_);
    if (p.ok() && n.ok() && n->size() > p->size()) rest = n->substr(p->size());
  }
  ids_.clear();
  prefix_offset_ = read_offset_ = 0;
  return rest;
}

}  // namespace janus::text
