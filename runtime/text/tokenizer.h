// Hugging Face tokenizers (`tokenizer.json`) in C++: what `janus serve` turns text into ids
// and ids back into text with, so no Python sits on the request path. The pipeline is the
// one the Rust `tokenizers` crate runs (added tokens, normalizer, pre-tokenizer, BPE model,
// post-processor; decoder for the way back) and its output is held to that crate's, id for
// id, by tests/text/tokenizer_test.cc. Components outside the supported set are refused at
// load with a Status that names them, never approximated.
//
// Supported: model BPE (merges as "a b" or [a, b], byte_fallback, fuse_unk, unk_token,
// ignore_merges); normalizers NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace,
// Sequence; pre-tokenizers ByteLevel, Split, Metaspace, Digits, Sequence; post-processors
// TemplateProcessing (single sequences), ByteLevel, Sequence; decoders ByteLevel, Metaspace,
// Replace, ByteFallback, Fuse, Strip, Sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/status.h"

namespace janus::text {

/// A loaded tokenizer. Immutable after load: encode and decode are const and may be called
/// from many threads at once (the word cache inside is locked).
class Tokenizer {
 public:
  /// Reads `dir`/tokenizer.json, and where present `dir`/tokenizer_config.json (bos_token,
  /// eos_token, add_bos_token) and `dir`/generation_config.json (eos_token_id, an int or a
  /// list), which is where transformers reads the ids a server stops on.
  ///
  /// `add_bos_token`, where tokenizer_config.json gives it, rewrites the single-sequence
  /// template the way transformers' Llama-style fast tokenizers do: false drops a leading
  /// bos from it, true puts one in front when it is missing (and a bos_token is named).
  static Result<std::unique_ptr<Tokenizer>> load(const std::string& dir);

  /// Builds a tokenizer from the text of a tokenizer.json alone (no bos/eos beyond what the
  /// post-processor's template names).
  static Result<std::unique_ptr<Tokenizer>> from_json(std::string_view tokenizer_json);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  /// The ids `tokenizers`' `Tokenizer.encode(text, add_special_tokens).ids` gives. Added
  /// tokens (special or not) written in `text` are matched as tokens. `add_special_tokens`
  /// applies the post-processor's template (e.g. a leading bos). Invalid UTF-8 is refused.
  Result<std::vector<int32_t>> encode(std::string_view text, bool add_special_tokens = true) const;

  /// The text `tokenizers`' `Tokenizer.decode(ids, skip_special_tokens)` gives (bytes that
  /// do not form UTF-8 come out as U+FFFD, as Rust's from_utf8_lossy writes them). An id
  /// outside the vocabulary is an error (the Rust crate drops it silently).
  Result<std::string> decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  /// One more than the largest id of the model vocabulary and the added tokens.
  size_t vocab_size() const;
  /// The id of a token (an added token or a model token), as written in the vocabulary.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  /// The vocabulary string of `id` ("" when there is none).
  std::string id_to_token(int32_t id) const;

  /// The beginning-of-sequence id: tokenizer_config.json's bos_token, else the first special
  /// token of the single-sequence template.
  std::optional<int32_t> bos_id() const;
  /// The ids generation stops on: generation_config.json's eos_token_id(s), then
  /// tokenizer_config.json's eos_token, without repeats.
  std::vector<int32_t> eos_ids() const;
  /// True for added tokens marked special (what skip_special_tokens leaves out).
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  friend class StreamingDetokenizer;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  // True for a <0xXX> token under a ByteFallback decoder: the run it belongs to may still
  // grow, and the decoder renders a run as a whole (an invalid run as one U+FFFD per byte).
  bool continues_byte_run(int32_t id) const;
  std::unique_ptr<Impl> impl_;
};

/// Turns a stream of generated ids into text as they come, the way Hugging Face's and
/// vLLM's incremental detokenizers do: it decodes a short window of the latest ids, with
/// and without the newest one, and emits the difference. Decoding in context keeps what
/// depends on neighbours (a Metaspace's leading space, bytes of one character split over
/// several byte-level tokens) right, and the window keeps each step O(1) in the length of
/// the stream. Text whose last character is not complete yet (it decodes to U+FFFD) is held
/// back until a later id completes it, so a client never sees half a character. Under a
/// ByteFallback decoder a run of <0xXX> tokens is held until a token that is not a byte ends
/// it, because the decoder renders the run as a whole.
///
/// The concatenation of every push() and the final finish() equals
/// `tokenizer.decode(all ids, skip_special_tokens)` (tests/text/tokenizer_test.cc checks it
/// on random ids for every fixture). Holds a reference to the tokenizer, which must outlive
/// it. One stream per object; not thread-safe.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false);

  /// Adds one id and returns the text it completes (possibly empty). Always whole UTF-8
  /// characters. An id outside the vocabulary is an error and is not added.
  Result<std::string> push(int32_t id);

  /// Returns whatever was held back (an unfinished character at the end of the stream,
  /// rendered as decode() renders it: U+FFFD) and clears the stream.
  std::string finish();

  /// Every id pushed so far.
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // the window starts here: its decode is already emitted...
  size_t read_offset_ = 0;    // ...up to here
};

}  // namespace janus::text
