// The janus command's contract, run as a real process.
#include <doctest/doctest.h>

#include <filesystem>
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

TEST_CASE("janus generate on the Qwen2-MoE, OLMoE, DeepSeek-V2 (plain and YaRN), DeepSeek-V3 and GLM-4-MoE fixtures: transformers' tokens, logits within 1e-4") {
  for (const char* name : {"qwen2_moe", "olmoe", "deepseek_v2", "deepseek_v2_yarn", "deepseek_v3", "glm4_moe"}) {
    CAPTURE(name);
    const std::string fx = janus::test::fixture(name);
    auto expected = nlohmann::json::parse(janus::test::read_file(fx + "/expected.json"));
    std::string args;
    for (int k : {1, 3, 5}) {
      std::string ids;
      for (auto v : expected["prompts"][k]) ids += (ids.empty() ? "" : ",") + std::to_string(v.get<int>());
      args += " --prompt-ids " + ids;
    }
    Run r = run_janus("generate --model " + fx + args + " --max-new-tokens 16 --ignore-eos --print-logits");
    REQUIRE(r.code == 0);
    auto lines = json_lines(r.out);
    REQUIRE(lines.size() == 3);
    for (int i = 0; i < 3; ++i) {
      const int k = 1 + 2 * i;
      CHECK(lines[i]["prompt"] == expected["prompts"][k]);
      CHECK(lines[i]["tokens"].get<std::vector<int>>() == expected["greedy_tokens"][k].get<std::vector<int>>());
      auto logits = lines[i]["last_logits"].get<std::vector<float>>();
      auto ref = expected["last_logits"][k].get<std::vector<float>>();
      REQUIRE(logits.size() == ref.size());
      CHECK(janus::test::rel_max_err(logits.data(), ref.data(), ref.size()) < 1e-4);
    }
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

TEST_CASE("outputs that cannot be written fail before the work starts, naming the path; bad sampling is refused") {
  janus::test::TempDir d;
  const std::string src = janus::test::source_dir();
  // A path below a regular file cannot be created, not even by root.
  janus::test::write_file(d / "file", "x");
  const std::string nowhere = d / "file/sub/out.json";
  Run trace = run_janus("run --trace " + nowhere, true);
  CHECK(trace.code == 1);
  CHECK_MESSAGE(trace.out.find("cannot write " + nowhere) != std::string::npos, trace.out);
  CHECK(trace.out.find("requests,") == std::string::npos);  // refused before serving anything
  Run profile = run_janus("profile --out " + nowhere, true);
  CHECK(profile.code == 1);
  CHECK_MESSAGE(profile.out.find("cannot write " + nowhere) != std::string::npos, profile.out);
  janus::test::write_file(d / "study.lua", "simulate{profile = \"" + src + "/examples/profiles/h100-dsv2-slice.json\",\n"
                                           "  shape = \"deepseek-v2\", study_batches = {256}, study_slos_ms = {150}, max_devices = 24}\n");
  Run sim = run_janus("simulate " + d / "study.lua" + " --study --quiet --out " + d / "file/sub", true);
  CHECK(sim.code == 1);
  CHECK_MESSAGE(sim.out.find("cannot create directory " + d / "file/sub") != std::string::npos, sim.out);
  // A writable trace still works, and says where it went.
  Run ok = run_janus("run --trace " + d / "t.json");
  CHECK(ok.code == 0);
  CHECK(janus::test::read_file(d / "t.json").find("traceEvents") != std::string::npos);

  const std::string fx = janus::test::fixture("qwen3_moe");
  Run temp = run_janus("generate --model " + fx + " --prompt-ids 5,6 --temperature -1", true);
  CHECK(temp.code == 1);
  CHECK_MESSAGE(temp.out.find("temperature must be a finite number >= 0") != std::string::npos, temp.out);
  Run top_p = run_janus("generate --model " + fx + " --prompt-ids 5,6 --top-p 2", true);
  CHECK(top_p.code == 1);
  CHECK_MESSAGE(top_p.out.find("top_p must be in (0, 1]") != std::string::npos, top_p.out);
}

TEST_CASE("janus run refuses configs written for bench-serve or simulate instead of serving nothing") {
  const std::string src = janus::test::source_dir();
  Run bursty = run_janus("run " + src + "/examples/configs/autoscale_bursty.lua", true);
  CHECK(bursty.code == 1);
  CHECK_MESSAGE(bursty.out.find("generates its requests (workload{arrivals=\"gamma\"}): serve it with `janus bench-serve") !=
                    std::string::npos,
                bursty.out);
  Run sim = run_janus("run " + src + "/examples/configs/sim/dsv2_study.lua", true);
  CHECK(sim.code == 1);
  CHECK_MESSAGE(sim.out.find("is a simulator config (simulate{}): run it with `janus simulate") != std::string::npos, sim.out);
  janus::test::TempDir d;
  janus::test::write_file(d / "empty.lua", "attention{shards = 1}\n");
  Run empty = run_janus("run " + d / "empty.lua", true);
  CHECK(empty.code == 1);
  CHECK_MESSAGE(empty.out.find("has no workload{prompts = ...}: nothing to serve") != std::string::npos, empty.out);
  janus::test::write_file(d / "events.lua", "workload{prompts = {{1, 2, 3}}}\nat(1, kill \"expert-0\")\n");
  Run events = run_janus("run " + d / "events.lua", true);
  CHECK(events.code == 1);
  CHECK_MESSAGE(events.out.find("scripts events (at(...)), which `janus bench-serve") != std::string::npos, events.out);
}

TEST_CASE("a GPU config names the missing device before any preset checkpoint is written") {
  janus::test::TempDir d;
  // gpu-qwen3-moe is 10 GB: once it was written in full before cuda:N was found missing.
  janus::test::write_file(d / "gpu.lua", "model{preset = \"gpu-qwen3-moe\"}\nattention{devices = \"cuda:7\"}\nexperts{devices = \"cuda:7\"}\n"
                                         "workload{prompts = {{1, 2, 3}}}\n");
  for (const char* cmd : {"graph", "run"}) {
    auto r = janus::test::run_shell("JANUS_MODEL_CACHE=" + d / "cache" + " " + std::string(JANUS_BINARY_DIR) + "/janus " + cmd + " " +
                                    d / "gpu.lua" + " 2>&1");
    REQUIRE(r.has_value());
    const std::string& out = r->out;
    CHECK(r->code == 1);
    CHECK_MESSAGE(out.find("gpu.lua:2: attention{}: device 'cuda:7' does not exist") != std::string::npos, out);
    CHECK_MESSAGE(!std::filesystem::exists(d / "cache"), "a checkpoint was written before the device check");
  }
}
