// Token choice on the GPU against janus::sample_token: the same token for every row,
// greedy and sampled (temperature, top-k, top-p, their mixes), ties included.
#include <doctest/doctest.h>

#include <random>

#include "gpu/cuda/sampling.h"
#include "kernel_test_util.h"
#include "runtime/model/sampling.h"

using namespace janus;
using namespace janus::cuda::test;

namespace {

void check_sampling(const std::vector<float>& logits, int rows, int vocab, const std::vector<SamplingParams>& params,
                    const std::vector<uint64_t>& steps, const char* what) {
  std::vector<cuda::SamplingRow> dev_params(static_cast<size_t>(rows));
  bool any = false;
  for (int r = 0; r < rows; ++r) {
    const SamplingParams& p = params[static_cast<size_t>(r)];
    dev_params[static_cast<size_t>(r)] = {p.temperature, p.top_p, p.top_k, 0, p.seed, steps[static_cast<size_t>(r)]};
    any |= !p.greedy();
  }
  auto d_logits = upload(logits, DType::kF32);
  auto d_params = upload_raw(dev_params);
  DeviceBuffer d_tokens(static_cast<size_t>(rows) * 4);
  d_tokens.poison();
  DeviceBuffer ws(any ? cuda::sampling_workspace_bytes(rows, vocab) : 0);
  ws.poison();
  JANUS_STATUS_CHECK(cuda::sample_tokens(d_logits.as<float>(), rows, vocab, d_params.as<cuda::SamplingRow>(), any,
                                         d_tokens.as<int32_t>(), ws.get(), ws.bytes(), nullptr));
  auto got = download_raw<int32_t>(d_tokens, static_cast<size_t>(rows));
  int wrong = 0;
  for (int r = 0; r < rows; ++r) {
    const SamplingParams& p = params[static_cast<size_t>(r)];
    const int32_t want = sample_token(logits.data() + static_cast<size_t>(r) * vocab, vocab, p, steps[static_cast<size_t>(r)]);
    if (got[static_cast<size_t>(r)] != want && wrong++ < 8)
      std::printf("%s: row %d (T %g, top_k %d, top_p %g, seed %llu, step %llu): got %d, want %d\n", what, r,
                  static_cast<double>(p.temperature), p.top_k, static_cast<double>(p.top_p),
                  static_cast<unsigned long long>(p.seed), static_cast<unsigned long long>(steps[static_cast<size_t>(r)]),
                  got[static_cast<size_t>(r)], want);
  }
  INFO(what << ": " << wrong << " of " << rows << " rows picked a different token");
  CHECK(wrong == 0);
}

}  // namespace

TEST_CASE("cuda argmax is the CPU's greedy choice, lowest id on ties") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(81);
  for (int vocab : {1, 7, 513, 32000}) {
    const int rows = 9;
    auto logits = random_floats(static_cast<size_t>(rows) * vocab, rng, 5.f);
    if (vocab > 10) {
      logits[3] = logits[9] = 100.f;                          // row 0: tie, lower id wins
      logits[static_cast<size_t>(vocab) + vocab - 1] = 100.f;  // row 1: the last id
    }
    std::vector<SamplingParams> params(rows);
    check_sampling(logits, rows, vocab, params, std::vector<uint64_t>(rows, 0), "greedy");
  }
}

TEST_CASE("cuda sampling draws the CPU's token: temperature, top-k, top-p and mixes, many seeds and steps") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(82);
  for (int vocab : {10, 1000, 32000}) {
    const int rows = 64;
    auto logits = random_floats(static_cast<size_t>(rows) * vocab, rng, 4.f);
    // Ties inside the kept set: the sort must keep ids ascending among equal logits.
    for (int r = 0; r < rows; r += 4) {
      float* l = logits.data() + static_cast<size_t>(r) * vocab;
      l[1] = l[2] = l[vocab - 1] = 6.f;
    }
    std::vector<SamplingParams> params(rows);
    std::vector<uint64_t> steps(rows);
    for (int r = 0; r < rows; ++r) {
      SamplingParams& p = params[static_cast<size_t>(r)];
      p.temperature = r % 8 == 7 ? 0.f : 0.3f + 0.25f * static_cast<float>(r % 6);
      p.top_k = r % 3 == 0 ? 0 : (r % 3 == 1 ? 1 + r : 50);
      p.top_p = r % 5 == 0 ? 1.f : 0.5f + 0.1f * static_cast<float>(r % 5);
      p.seed = 1000003ull * static_cast<uint64_t>(r) + 17;
      steps[static_cast<size_t>(r)] = static_cast<uint64_t>(r * 7 % 13);
    }
    check_sampling(logits, rows, vocab, params, steps, "sampled");
  }
}

TEST_CASE("cuda sampling follows the draw over steps like the CPU (one request, 200 steps)") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(83);
  const int vocab = 32000, rows = 200;
  auto one = random_floats(vocab, rng, 3.f);
  std::vector<float> logits;
  for (int r = 0; r < rows; ++r) logits.insert(logits.end(), one.begin(), one.end());
  SamplingParams p;
  p.temperature = 0.8f, p.top_p = 0.9f, p.top_k = 0, p.seed = 42;
  std::vector<uint64_t> steps(rows);
  for (int r = 0; r < rows; ++r) steps[static_cast<size_t>(r)] = static_cast<uint64_t>(r);
  check_sampling(logits, rows, vocab, std::vector<SamplingParams>(rows, p), steps, "steps");
}
