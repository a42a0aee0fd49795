// The transformers fixtures (tests/fixtures/NAME, made by make_fixtures.py): a checkpoint
// and what Hugging Face transformers computed on it; and the greedy requests and reference
// engine tokens that the tests hold the runtime to.
#pragma once

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/model/reference_engine.h"
#include "test_util.h"

namespace janus::test {

struct TransformersFixture {
  std::string dir;
  nlohmann::json expected;                    // expected.json: prompts, greedy_tokens, logits
  std::vector<std::vector<int32_t>> prompts;  // expected["prompts"]
  std::vector<std::vector<int32_t>> greedy;   // expected["greedy_tokens"]: transformers' tokens
};

/// The fixture `name` ("qwen3_moe", "mixtral", "qwen3_moe_bf16"), read once per test binary.
inline const TransformersFixture& transformers_fixture(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, TransformersFixture> read;
  std::lock_guard<std::mutex> lk(mu);
  auto it = read.find(name);
  if (it != read.end()) return it->second;
  TransformersFixture f;
  f.dir = fixture(name);
  f.expected = nlohmann::json::parse(read_file(f.dir + "/expected.json"));
  f.prompts = f.expected["prompts"].get<std::vector<std::vector<int32_t>>>();
  f.greedy = f.expected["greedy_tokens"].get<std::vector<std::vector<int32_t>>>();
  return read.emplace(name, std::move(f)).first->second;
}

/// A greedy request that runs past EOS, so that it makes exactly `max_new_tokens` tokens.
inline GenerateRequest greedy_request(const std::vector<int32_t>& prompt, int max_new_tokens, bool want_prompt_logits = false) {
  GenerateRequest r;
  r.prompt = prompt;
  r.max_new_tokens = max_new_tokens;
  r.stop_at_eos = false;
  r.want_prompt_logits = want_prompt_logits;
  return r;
}

/// One greedy request per prompt.
inline std::vector<GenerateRequest> greedy_requests(const std::vector<std::vector<int32_t>>& prompts, int max_new_tokens,
                                                    bool want_prompt_logits = false) {
  std::vector<GenerateRequest> reqs;
  for (const auto& p : prompts) reqs.push_back(greedy_request(p, max_new_tokens, want_prompt_logits));
  return reqs;
}

/// The reference engine's tokens for `requests` on the checkpoint in `dir`.
inline Result<std::vector<std::vector<int32_t>>> reference_tokens(const std::string& dir,
                                                                  const std::vector<GenerateRequest>& requests) {
  auto model = Model::load(dir);
  if (!model.ok()) return model.status();
  ReferenceEngine engine(*model);
  auto out = engine.generate(requests);
  if (!out.ok()) return out.status();
  std::vector<std::vector<int32_t>> tokens;
  for (const GenerateResult& r : *out) tokens.push_back(r.tokens);
  return tokens;
}

}  // namespace janus::test
