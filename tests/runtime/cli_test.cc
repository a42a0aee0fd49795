// The janus command's contract, run as a real process.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace {

struct Run {
  int code;
  std::string out;
};

// Runs `janus <args>` with stderr folded into the output when `with_stderr`.
Run run_janus(const std::string& args, bool with_stderr = false) {
  auto r = janus::test::run_shell(std::string(JANUS_BINARY_DIR) + "/janus " + args + (with_stderr ? " 2>&1" : " 2>/dev/null"));
  REQUIRE(r.has_value());
  return {r->code, r->out};
}

std::vector<nlohmann::json> json_lines(const std::string& s) {
  std::vector<nlohmann::json> out;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST_CASE("janus generate prints one JSON object per prompt, matching transformers") {
  const std::string fx = janus::test::fixture("qwen3_moe");
  auto expected = nlohmann::json::parse(janus::test::read_file(fx + "/expected.json"));
  std::string ids0, ids1;
  for (auto v : expected["prompts"][2]) ids0 += (ids0.empty() ? "" : ",") + std::to_string(v.get<int>());
  for (auto v : expected["prompts"][4]) ids1 += (ids1.empty() ? "" : ",") + std::to_string(v.get<int>());
  Run r = run_janus("generate --model " + fx + " --prompt-ids " + ids0 + " --prompt-ids " + ids1 +
                " --max-new-tokens 12 --ignore-eos --print-logits");
  REQUIRE(r.code == 0);
  auto lines = json_lines(r.out);
  REQUIRE(lines.size() == 2);
  for (int i = 0; i < 2; ++i) {
    const int k = i == 0 ? 2 : 4;
    CHECK(lines[i]["prompt"] == expected["prompts"][k]);
    auto want = expected["greedy_tokens"][k].get<std::vector<int>>();
    want.resize(12);
    CHECK(lines[i]["tokens"].get<std::vector<int>>() == want);
    auto logits = lines[i]["last_logits"].get<std::vector<float>>();
    auto ref = expected["last_logits"][k].get<std::vector<float>>();
    REQUIRE(logits.size() == ref.size());
    CHECK(janus::test::rel_max_err(logits.data(), ref.data(), ref.size()) < 1e-4);
  }
}

TEST_CASE("janus generate refuses bad arguments with a message and exit code 2") {
  const std::string fx = janus::test::fixture("qwen3_moe");
  Run bad_ids = run_janus("generate --model " + fx + " --prompt-ids 5,x,7", true);
  CHECK(bad_ids.code == 2);
  CHECK(bad_ids.out.find("'x' is not a token id") != std::string::npos);
  Run unknown = run_janus("generate --model " + fx + " --prompt-ids 5 --bogus 1", true);
  CHECK(unknown.code == 2);
  CHECK(unknown.out.find("unknown option --bogus") != std::string::npos);
  Run oov = run_janus("generate --model " + fx + " --prompt-ids 5,999", true);
  CHECK(oov.code == 1);
  CHECK(oov.out.find("token id 999") != std::string::npos);
  Run nomodel = run_janus("generate --model /nonexistent --prompt-ids 5", true);
  CHECK(nomodel.code == 1);
  CHECK(nomodel.out.find("/nonexistent") != std::string::npos);
  Run cmd = run_janus("frobnicate", true);
  CHECK(cmd.code == 2);
  CHECK(cmd.out.find("unknown command 'frobnicate'") != std::string::npos);
}

TEST_CASE("janus make-model writes a loadable checkpoint and refuses bad presets") {
  janus::test::TempDir d;
  Run r = run_janus("make-model --preset tiny-mixtral --out " + d.path() + "/m --seed 5");
  REQUIRE(r.code == 0);
  Run g = run_janus("generate --model " + d.path() + "/m --prompt-ids 1,2,3 --max-new-tokens 4 --ignore-eos");
  REQUIRE(g.code == 0);
  auto lines = json_lines(g.out);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["tokens"].size() == 4);
  Run bad = run_janus("make-model --preset nope --out " + d.path() + "/x", true);
  CHECK(bad.code == 2);
  CHECK(bad.out.find("no preset named 'nope'") != std::string::npos);
}

TEST_CASE("janus simulate runs the study and a served workload from the committed H100 profile") {
  janus::test::TempDir d;
  const std::string src = janus::test::source_dir();
  // The study on a smaller grid (the example's, cut to one batch and 24 GPUs).
  janus::test::write_file(d / "study.lua", "simulate{profile = \"" + src + "/examples/profiles/h100-dsv2-slice.json\",\n"
                                           "  shape = \"deepseek-v2\", study_batches = {256}, study_slos_ms = {150}, max_devices = 24}\n");
  Run s = run_janus("simulate " + d / "study.lua" + " --study --quiet --out " + d / "out");
  REQUIRE(s.code == 0);
  CHECK(s.out.find("28 expert slots per instance (6 instances at least)") != std::string::npos);
  for (const char* sys : {"janus", "megascale", "monolithic", "monolithic-dp"}) CHECK(s.out.find(std::string("\n") + sys + " ") != std::string::npos);
  const std::string csv = janus::test::read_file(d / "out/study.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 5);
  // Serving: a Poisson workload on a fixed Janus deployment.
  janus::test::write_file(d / "serve.lua", "simulate{profile = \"" + src + "/examples/profiles/h100-dsv2-slice.json\", shape = \"deepseek-v2\"}\n"
                                           "attention{shards = 2}\nexperts{instances = 6}\n"
                                           "workload{arrivals = \"poisson\", rate = 5, requests = 50, prompt_len = 16, output_len = 64}\n");
  Run v = run_janus("simulate " + d / "serve.lua" + " --quiet");
  REQUIRE(v.code == 0);
  CHECK(v.out.find("50 of 50 requests done, 3200 tokens") != std::string::npos);
  CHECK(v.out.find("TPOT ms  p50") != std::string::npos);
  // Bad input: no simulate{} section, an unknown system.
  janus::test::write_file(d / "bare.lua", "attention{shards = 1}\n");
  Run bare = run_janus("simulate " + d / "bare.lua", true);
  CHECK(bare.code == 1);
  CHECK(bare.out.find("simulate{} needs 'profile'") != std::string::npos);
  Run sys = run_janus("simulate " + d / "serve.lua" + " --system vllm", true);
  CHECK(sys.code == 2);
  CHECK(sys.out.find("unknown system 'vllm'") != std::string::npos);
}
