// tokenizer.json against Hugging Face `tokenizers` (the Rust crate): ids and decoded text
// recorded by tests/fixtures/make_tokenizer_fixtures.py for five tokenizers (Mixtral's real
// vocabulary and four trained ones that between them use every supported component), the
// streaming detokenizer against decode(), and the refusals of what is not supported.
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "runtime/text/tokenizer.h"
#include "runtime/text/utf8.h"

using namespace janus::text;
using json = nlohmann::json;

namespace {

std::string fixture_dir(const std::string& name) {
  return std::string(JANUS_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + name;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json cases_of(const std::string& name) { return json::parse(read_file(fixture_dir(name) + "/cases.json")); }

std::unique_ptr<Tokenizer> load_fixture(const std::string& name) {
  auto t = Tokenizer::load(fixture_dir(name));
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(t).value();
}

std::string shown(const std::string& s) { return s.size() > 200 ? s.substr(0, 200) + "..." : s; }

// Where two id lists part, with a few ids either side, for a readable failure.
std::string first_difference(const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  if (i == got.size() && i == want.size()) return "same";
  auto around = [&](const std::vector<int32_t>& v) {
    std::string s;
    for (size_t k = i >= 3 ? i - 3 : 0; k < v.size() && k < i + 5; ++k) s += std::to_string(v[k]) + " ";
    return s;
  };
  return "at " + std::to_string(i) + ": got " + around(got) + "/ want " + around(want);
}

const char* kNames[] = {"mixtral", "qwen_small", "dsv3_small", "sp_small", "misc_small"};

}  // namespace

TEST_CASE("tokenizer encodes and decodes exactly as Hugging Face tokenizers") {
  for (const char* name : kNames) {
    SUBCASE(name) {
      auto tok = load_fixture(name);
      const json meta = cases_of(name);
      CHECK(tok->vocab_size() == meta["vocab_size"].get<size_t>());
      int checked = 0;
      for (const json& c : meta["cases"]) {
        const std::string text = c["text"].get<std::string>();
        CAPTURE(shown(text));
        auto ids = tok->encode(text, true);
        REQUIRE_MESSAGE(ids.ok(), ids.status().to_string());
        CHECK_MESSAGE(*ids == c["ids"].get<std::vector<int32_t>>(),
                      first_difference(*ids, c["ids"].get<std::vector<int32_t>>()));
        auto plain = tok->encode(text, false);
        REQUIRE(plain.ok());
        CHECK(*plain == c["ids_plain"].get<std::vector<int32_t>>());
        const auto hf_ids = c["ids"].get<std::vector<int32_t>>();
        auto dec = tok->decode(hf_ids, false);
        REQUIRE(dec.ok());
        CHECK(*dec == c["decode"].get<std::string>());
        auto dec_skip = tok->decode(hf_ids, true);
        REQUIRE(dec_skip.ok());
        CHECK(*dec_skip == c["decode_skip"].get<std::string>());
        ++checked;
      }
      CHECK(checked > 60);
      for (const json& c : meta["random_id_decodes"]) {
        const auto ids = c["ids"].get<std::vector<int32_t>>();
        auto dec = tok->decode(ids, false);
        REQUIRE(dec.ok());
        CHECK(*dec == c["decode"].get<std::string>());
        auto dec_skip = tok->decode(ids, true);
        REQUIRE(dec_skip.ok());
        CHECK(*dec_skip == c["decode_skip"].get<std::string>());
      }
    }
  }
}

TEST_CASE("tokenizer reads bos, eos and add_bos_token from the model directory") {
  auto tok = load_fixture("mixtral");
  REQUIRE(tok->bos_id().has_value());
  CHECK(*tok->bos_id() == 1);
  CHECK(tok->eos_ids() == std::vector<int32_t>{2});
  CHECK(tok->is_special(1));
  CHECK_FALSE(tok->is_special(100));
  CHECK(tok->token_to_id("<s>") == std::optional<int32_t>(1));
  CHECK(tok->token_to_id("▁Hello") == std::optional<int32_t>(22557));
  CHECK(tok->id_to_token(22557) == "▁Hello");
  CHECK_FALSE(tok->token_to_id("no such token").has_value());

  // add_bos_token false drops the template's bos, as transformers rebuilds it.
  const std::string dir = std::string(JANUS_BINARY_DIR) + "/tokenizer_test_nobos";
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir + "/tokenizer.json") << read_file(fixture_dir("mixtral") + "/tokenizer.json");
    std::ofstream(dir + "/tokenizer_config.json") << R"({"add_bos_token": false, "bos_token": {"content": "<s>"}, "eos_token": "</s>"})";
    std::ofstream(dir + "/generation_config.json") << R"({"eos_token_id": [2, 0]})";
  }
  auto nobos = Tokenizer::load(dir);
  REQUIRE_MESSAGE(nobos.ok(), nobos.status().to_string());
  auto with = tok->encode("Hello", true);
  auto without = (*nobos)->encode("Hello", true);
  REQUIRE(with.ok());
  REQUIRE(without.ok());
  CHECK(with->front() == 1);
  CHECK(std::vector<int32_t>(with->begin() + 1, with->end()) == *without);
  CHECK((*nobos)->eos_ids() == std::vector<int32_t>{2, 0});

  std::ofstream(dir + "/generation_config.json") << R"({"eos_token_id": "two"})";
  auto bad = Tokenizer::load(dir);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("eos_token_id") != std::string::npos);
}

TEST_CASE("tokenizer refuses invalid UTF-8 and out-of-range ids") {
  auto tok = load_fixture("qwen_small");
  auto r = tok->encode(std::string("ok \xC3\x28 bad"), true);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("UTF-8") != std::string::npos);
  CHECK(r.status().message().find("byte 3") != std::string::npos);
  auto d = tok->decode({1, 2, static_cast<int32_t>(tok->vocab_size())});
  REQUIRE_FALSE(d.ok());
  CHECK(d.status().message().find("outside the vocabulary") != std::string::npos);
  CHECK_FALSE(tok->decode({-1}).ok());
}

TEST_CASE("streaming detokenizer: whole characters only, and the same text as decode") {
  std::mt19937 rng(1234);
  for (const char* name : kNames) {
    SUBCASE(name) {
      auto tok = load_fixture(name);
      const json meta = cases_of(name);
      std::vector<std::vector<int32_t>> streams;
      for (const json& c : meta["cases"]) streams.push_back(c["ids"].get<std::vector<int32_t>>());
      for (int i = 0; i < 40; ++i) {  // random ids: split characters, byte tokens, specials
        std::vector<int32_t> ids(1 + rng() % 60);
        for (auto& id : ids) id = static_cast<int32_t>(rng() % tok->vocab_size());
        streams.push_back(ids);
      }
      for (bool skip : {false, true}) {
        for (const auto& ids : streams) {
          StreamingDetokenizer stream(*tok, skip);
          std::string all;
          for (int32_t id : ids) {
            auto piece = stream.push(id);
            REQUIRE(piece.ok());
            CHECK(is_valid_utf8(*piece));
            all += *piece;
          }
          all += stream.finish();
          auto want = tok->decode(ids, skip);
          REQUIRE(want.ok());
          CAPTURE(shown(*want));
          CHECK(all == *want);
        }
      }
      StreamingDetokenizer stream(*tok);
      CHECK_FALSE(stream.push(-5).ok());
      CHECK(stream.ids().empty());
    }
  }
}

TEST_CASE("streaming detokenizer holds a byte-fallback run until it ends") {
  auto tok = load_fixture("sp_small");
  const auto c3 = tok->token_to_id("<0xC3>");
  const auto a9 = tok->token_to_id("<0xA9>");
  REQUIRE(c3.has_value());
  REQUIRE(a9.has_value());
  auto word = tok->encode("the", false);
  REQUIRE(word.ok());
  REQUIRE(word->size() == 1);
  const int32_t the = word->front();
  {
    // "é" as two byte tokens: nothing until a token that is not a byte closes the run.
    StreamingDetokenizer stream(*tok);
    CHECK(*stream.push(*c3) == "");
    CHECK(*stream.push(*a9) == "");
    auto closed = stream.push(the);
    REQUIRE(closed.ok());
    CHECK(*closed == *tok->decode({*c3, *a9, the}));
    CHECK(closed->rfind("\xC3\xA9", 0) == 0);
    CHECK(stream.finish() == "");
  }
  {
    // "é" then a lone lead byte: the decoder renders the invalid run byte by byte as U+FFFD,
    // and so does the stream, since it showed nothing of the run before.
    StreamingDetokenizer stream(*tok);
    std::string all;
    for (int32_t id : {*c3, *a9, *c3}) all += *stream.push(id);
    CHECK(all == "");
    all += stream.finish();
    CHECK(all == *tok->decode({*c3, *a9, *c3}));
    CHECK(all == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  }
}

TEST_CASE("tokenizer encodes from many threads at once with the same result") {
  auto tok = load_fixture("qwen_small");
  const json meta = cases_of("qwen_small");
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> want;
  for (const json& c : meta["cases"]) {
    texts.push_back(c["text"].get<std::string>());
    want.push_back(c["ids"].get<std::vector<int32_t>>());
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + t * 7) % texts.size();
          auto ids = tok->encode(texts[k], true);
          if (!ids.ok() || *ids != want[k]) ++mismatches;
        }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mismatches.load() == 0);
}

namespace {

// The smallest valid tokenizer.json, with `patch` merged over it.
std::string tiny(const json& patch) {
  json j = json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
    "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})");
  j.merge_patch(patch);
  return j.dump();
}

std::string load_error(const std::string& text) {
  auto t = Tokenizer::from_json(text);
  if (t.ok()) return "(loaded)";
  return t.status().message();
}

}  // namespace

TEST_CASE("tokenizer.json: the smallest file works, merges as pairs too") {
  auto t = Tokenizer::from_json(tiny(json::object()));
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  auto ids = (*t)->encode("abab");
  REQUIRE(ids.ok());
  CHECK(*ids == std::vector<int32_t>{2, 2});
  auto p = Tokenizer::from_json(tiny(json::parse(R"({"model": {"merges": [["a", "b"]]}})")));
  REQUIRE(p.ok());
  CHECK(*(*p)->encode("ab") == std::vector<int32_t>{2});
  auto dec = (*p)->decode({2, 0});
  REQUIRE(dec.ok());
  CHECK(*dec == "ab a");  // no decoder: tokens joined by spaces, as the crate does
}

TEST_CASE("tokenizer.json: unsupported components are refused by name") {
  CHECK(load_error(tiny(json::parse(R"({"model": {"type": "WordPiece"}})"))) ==
        "tokenizer.json: model type \"WordPiece\" is not supported");
  CHECK(load_error(tiny(json::parse(R"({"model": {"type": "Unigram"}})"))).find("\"Unigram\" is not supported") !=
        std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"normalizer": {"type": "BertNormalizer"}})"))) ==
        "tokenizer.json.normalizer: normalizer type \"BertNormalizer\" is not supported");
  CHECK(load_error(tiny(json::parse(R"({"normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}})")))
            .find("\"Precompiled\" is not supported") != std::string::npos);
  CHECK(load_error(tiny(json::parse(
            R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "Whitespace"}]}})"))) ==
        "tokenizer.json.pre_tokenizer.pretokenizers[1]: pre_tokenizer type \"Whitespace\" is not supported");
  CHECK(load_error(tiny(json::parse(R"({"post_processor": {"type": "RobertaProcessing"}})")))
            .find("post_processor type \"RobertaProcessing\" is not supported") != std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"decoder": {"type": "WordPiece"}})")))
            .find("decoder type \"WordPiece\" is not supported") != std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"model": {"continuing_subword_prefix": "##"}})")))
            .find("continuing_subword_prefix is not supported") != std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"model": {"dropout": 0.1}})"))).find("dropout") != std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"truncation": {"max_length": 10}})"))).find("truncation is not supported") !=
        std::string::npos);
  CHECK(load_error(tiny(json::parse(
            R"({"pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"}})")))
            .find("\"Sideways\"") != std::string::npos);
}

TEST_CASE("tokenizer.json: malformed files get errors that say where") {
  CHECK(load_error("{\"model\": ").find("tokenizer.json: malformed JSON") == 0);
  CHECK(load_error("[]") == "tokenizer.json: expected a JSON object");
  CHECK(load_error("{}") == "tokenizer.json: missing field \"model\"");
  CHECK(load_error(R"({"model": {"type": "BPE", "merges": []}})") == "tokenizer.json.model: missing field \"vocab\"");
  CHECK(load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}}})") == "tokenizer.json.model: missing field \"merges\"");
  CHECK(load_error(tiny(json::parse(R"({"model": {"vocab": {"a": "zero"}}})"))).find("vocab[\"a\"]") !=
        std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"model": {"merges": ["a c"]}})"))) ==
        "tokenizer.json.model.merges[0]: \"c\" is not in the vocabulary");
  CHECK(load_error(tiny(json::parse(R"({"model": {"merges": ["ab"]}})"))).find("is not \"a b\"") != std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"model": {"merges": [1]}})"))).find("merges[0]") != std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"added_tokens": [{"content": "x"}]})"))) ==
        "tokenizer.json.added_tokens[0]: missing field \"id\"");
  CHECK(load_error(tiny(json::parse(R"({"normalizer": {"type": "Replace", "pattern": {"Regex": "(["}, "content": ""}})")))
            .find("does not compile") != std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"pre_tokenizer": {"type": "Metaspace", "replacement": "ab"}})")))
            .find("replacement: expected a single character") != std::string::npos);
  CHECK(load_error(tiny(json::parse(R"({"normalizer": {"notype": 1}})"))) ==
        "tokenizer.json.normalizer: missing field \"type\"");
  CHECK(load_error(tiny(json::parse(
            R"({"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}], "special_tokens": {}}})")))
            .find("\"<s>\" is not in special_tokens") != std::string::npos);
  auto missing = Tokenizer::load("/nonexistent/dir");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == janus::ErrorCode::kNotFound);
}
