// The OpenAI request layer of janus serve without a server: body parsing and its refusals,
// stop strings across token boundaries, /tokenize against HF tokenizers' ids.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "runtime/serving/openai_api.h"

using namespace janus;
using namespace janus::serving;

namespace {

const text::Tokenizer& mixtral() {
  static std::unique_ptr<text::Tokenizer> t = [] {
    auto r = text::Tokenizer::load(std::string(JANUS_SOURCE_DIR) + "/tests/fixtures/tokenizers/mixtral");
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    return std::move(*r);
  }();
  return *t;
}

ApiModel model() {
  ApiModel m;
  m.served_name = "tiny";
  m.tokenizer = &mixtral();
  m.vocab_size = 32000;
  m.max_model_len = 64;
  m.eos_ids = {2};
  return m;
}

}  // namespace

TEST_CASE("a completions body becomes the request it says; defaults as OpenAI's") {
  ApiRequest r;
  auto e = parse_generate_request(R"({"model":"tiny","prompt":"Hello world","max_tokens":5,"temperature":0,"stop":"x",
                                      "stream":true,"stream_options":{"include_usage":true},"seed":7,"top_k":3,"ignore_eos":true})",
                                  false, model(), &r);
  REQUIRE_FALSE(e.has_value());
  CHECK(r.generate.prompt == std::vector<int32_t>{1, 22557, 1526});  // HF tokenizers' ids, bos first
  CHECK(r.generate.max_new_tokens == 5);
  CHECK(r.generate.sampling.greedy());
  CHECK(r.generate.sampling.seed == 7);
  CHECK(r.generate.sampling.top_k == 3);
  CHECK_FALSE(r.generate.stop_at_eos);
  CHECK(r.generate.eos_ids == std::vector<int32_t>{2});
  CHECK(r.stop == std::vector<std::string>{"x"});
  CHECK(r.stream);
  CHECK(r.include_usage);
  ApiRequest d;
  REQUIRE_FALSE(parse_generate_request(R"({"prompt":[5,6]})", false, model(), &d).has_value());
  CHECK(d.generate.max_new_tokens == 16);
  CHECK(d.generate.sampling.temperature == 1.0f);
  CHECK(d.generate.stop_at_eos);
  CHECK(d.generate.logprobs == -1);  // none unless asked
  ApiRequest lp;
  REQUIRE_FALSE(parse_generate_request(R"({"prompt":[5,6],"logprobs":3})", false, model(), &lp).has_value());
  CHECK(lp.generate.logprobs == 3);
  REQUIRE_FALSE(parse_generate_request(R"({"prompt":[5,6],"logprobs":0})", false, model(), &lp).has_value());
  CHECK(lp.generate.logprobs == 0);  // the chosen token's own only
}

TEST_CASE("each bad body is refused with its status and a message naming the field") {
  struct Case {
    const char* body;
    bool chat;
    int status;
    const char* says;
  };
  const Case cases[] = {
      {"{oops", false, 400, "not valid JSON"},
      {"[1]", false, 400, "JSON object"},
      {R"({"prompt":"hi","max_tokens":"5"})", false, 400, "'max_tokens' must be an integer"},
      {R"({"prompt":"hi","max_tokens":0})", false, 400, "at least 1"},
      {R"({"prompt":"hi","max_tokens":1000})", false, 400, "maximum context length is 64"},
      {R"({"prompt":[1,32000]})", false, 400, "outside the vocabulary"},
      {R"({"prompt":[-3]})", false, 400, "outside the vocabulary"},
      {R"({"prompt":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,
                     38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64]})", false, 400, "your prompt has 64"},
      {R"({"prompt":["a","b"]})", false, 400, "several prompts"},
      {R"({"prompt":"hi","temperature":-1})", false, 400, "'temperature'"},
      {R"({"prompt":"hi","top_p":0})", false, 400, "'top_p'"},
      {R"({"prompt":"hi","n":2})", false, 400, "'n' must be 1"},
      {R"({"prompt":"hi","stop":[1]})", false, 400, "'stop'"},
      {R"({"prompt":"hi","stop":""})", false, 400, "empty stop string"},
      {R"({"prompt":"hi","logprobs":-1})", false, 400, "'logprobs' must be in 0..20"},
      {R"({"prompt":"hi","logprobs":21})", false, 400, "'logprobs' must be in 0..20"},
      {R"({"prompt":"hi","logprobs":1.5})", false, 400, "'logprobs' must be an integer"},
      {R"({"prompt":"hi","logprobs":true})", false, 400, "'logprobs' must be an integer"},
      {R"({"prompt":"hi","logprobs":"2"})", false, 400, "'logprobs' must be an integer"},
      {R"({"prompt":"hi","top_logprobs":2})", false, 400, "chat completions field"},
      {R"({"prompt":"hi","logprobs":2,"echo":true})", false, 400, "prompt's log-probabilities"},
      {R"({"prompt":"hi","prompt_logprobs":1})", false, 400, "'prompt_logprobs' is not supported"},
      {R"({"prompt":"hi","stream":"yes"})", false, 400, "'stream' must be a boolean"},
      {R"({"prompt":"hi","model":"other"})", false, 404, "does not exist"},
      {R"({"messages":[{"role":"user","content":"hi"}]})", true, 400, "no chat template"},
      {R"({"max_tokens":3})", true, 400, "'messages' is required"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.body);
    ApiRequest r;
    auto e = parse_generate_request(c.body, c.chat, model(), &r);
    REQUIRE(e.has_value());
    CHECK(e->http_status == c.status);
    CHECK(e->message.find(c.says) != std::string::npos);
    auto j = nlohmann::json::parse(error_body(*e));
    CHECK(j["error"]["code"] == c.status);
    CHECK(j["error"]["message"] == e->message);
    CHECK(j["error"]["type"].get<std::string>().size() > 0);
  }
}

TEST_CASE("stop strings: matched across pieces, the prefix of a possible match held back, nothing after it sent") {
  StopMatcher m({"STOP", "end."});
  std::string out;
  out += m.push("Hello S");
  CHECK(out == "Hello ");  // "S" may start STOP
  out += m.push("T");
  CHECK(out == "Hello ");
  out += m.push("x");  // "STx": no longer a match
  CHECK(out == "Hello STx");
  out += m.push(" and the en");
  CHECK(out == "Hello STx and the ");
  out += m.push("d. More");
  CHECK(m.stopped());
  CHECK(out == "Hello STx and the ");
  CHECK(m.push("after").empty());
  CHECK(m.finish().empty());
  StopMatcher n({"zz"});
  CHECK(n.push("abz") == "ab");
  CHECK(n.finish() == "z");  // the end of the stream: what was held goes out
  StopMatcher none({});
  CHECK(none.push("anything") == "anything");
}

TEST_CASE("/tokenize and /detokenize bodies against HF tokenizers' ids") {
  std::string out;
  REQUIRE_FALSE(handle_tokenize(R"({"prompt":"Hello world"})", model(), &out).has_value());
  auto j = nlohmann::json::parse(out);
  CHECK(j["tokens"] == nlohmann::json::array({1, 22557, 1526}));
  CHECK(j["count"] == 3);
  CHECK(j["max_model_len"] == 64);
  REQUIRE_FALSE(handle_tokenize(R"({"prompt":"Hello world","add_special_tokens":false})", model(), &out).has_value());
  CHECK(nlohmann::json::parse(out)["tokens"] == nlohmann::json::array({22557, 1526}));
  REQUIRE_FALSE(handle_detokenize(R"({"tokens":[1,22557,1526]})", model(), &out).has_value());
  CHECK(nlohmann::json::parse(out)["prompt"] == "<s> Hello world");
  auto bad = handle_detokenize(R"({"tokens":[40000]})", model(), &out);
  REQUIRE(bad.has_value());
  CHECK(bad->http_status == 400);
  CHECK(handle_tokenize(R"({"messages":[{"role":"user","content":"x"}]})", model(), &out)->message.find("no chat template") !=
        std::string::npos);
}
