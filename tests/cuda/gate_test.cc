// The router's gates on the GPU (gpu/cuda/gate.h) against their CPU twins (gpu/cpu/kernels.h)
// on fresh random inputs: the softmax top-k, DeepSeek-V2's greedy / group-limited greedy
// gate and DeepSeek-V3's noaux_tc sigmoid gate, over the families' shapes (V2-Lite's 64
// experts top-6, V2's 160 in 8 groups, V3's 256 in 8 groups top-8) and odd ones, with
// exact ties among experts and among groups. Ids must be the twin's in the twin's order
// (tokens must not depend on where routing ran); weights within 1e-6 in max-norm.
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <tuple>

#include "gpu/cpu/kernels.h"
#include "gpu/cuda/gate.h"
#include "kernel_test_util.h"

using namespace janus;
using namespace janus::cuda::test;

namespace {

struct GateShape {
  int rows, experts, top_k, n_group, topk_group;
  float scale;
};

// Softmax shapes: V2 fixture (8 experts, 4 groups keep 2, top-3), V2-Lite (64 top-6, no
// groups), DeepSeek-V2 (160 in 8 groups keep 3, top-6, x16), V3's layout under a softmax,
// a group limit that keeps fewer experts than top_k (the dropped groups' zeros are then
// chosen by id), one expert per group, the launcher's limits, and an odd width.
const GateShape kShapes[] = {
    {1, 8, 3, 4, 2, 1.5f},    {33, 64, 6, 1, 1, 1.0f},   {64, 160, 6, 8, 3, 16.0f}, {17, 256, 8, 8, 4, 2.5f},
    {9, 16, 8, 8, 2, 1.0f},   {6, 32, 4, 32, 3, 1.0f},   {5, 1024, 32, 32, 5, 1.0f}, {7, 60, 4, 6, 2, 0.5f},
    {130, 256, 8, 8, 4, 2.5f}};

// Exact ties in the first rows: row 0 has two equal best experts; row 1's group 1 repeats
// group 0 (equal group scores, equal experts across groups); row 2 is all equal.
void add_ties(std::vector<float>& logits, const GateShape& s) {
  const int E = s.experts, per = E / s.n_group;
  if (E >= 8) logits[3] = logits[5] = 10.f;
  if (s.rows >= 2 && s.n_group >= 2)
    for (int i = 0; i < per; ++i) logits[E + per + i] = logits[E + i];
  if (s.rows >= 3)
    for (int e = 0; e < E; ++e) logits[2 * E + e] = 0.25f;
}

struct GateOut {
  std::vector<int32_t> ids;
  std::vector<float> w;
};

size_t count_id_mismatches(const std::vector<int32_t>& got, const std::vector<int32_t>& want, int top_k, const char* what) {
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ < 5)
      std::printf("%s: row %zu choice %zu: got expert %d, want %d\n", what, i / top_k, i % top_k, got[i], want[i]);
  return bad;
}

size_t count_bit_mismatches(const std::vector<float>& got, const std::vector<float>& want) {
  size_t n = 0;
  for (size_t i = 0; i < got.size(); ++i) n += std::memcmp(&got[i], &want[i], 4) != 0;
  return n;
}

// Runs a launcher into poisoned outputs (0xff: id -1, weight NaN) and downloads them.
template <class Launch>
GateOut run_gate(const GateShape& s, Launch&& launch) {
  const size_t nk = static_cast<size_t>(s.rows) * s.top_k;
  DeviceBuffer d_ids(nk * 4), d_w(nk * 4);
  d_ids.poison();
  d_w.poison();
  JANUS_STATUS_CHECK(launch(d_ids.as<int32_t>(), d_w.as<float>()));
  JANUS_CUDA_CHECK(cudaGetLastError());
  return {download_raw<int32_t>(d_ids, nk), download(d_w, DType::kF32, nk)};
}

// Counts, over a test case, the weights that are not the twin's bits (printed at its end:
// the exp rounding is meant to make them none, but only the tolerance is the rule).
struct BitTally {
  const char* what;
  size_t differ = 0, total = 0;
  ~BitTally() { std::printf("%s: %zu of %zu weights differ from the CPU twin's bits\n", what, differ, total); }
};

void check_gate(const GateOut& got, const GateOut& want, const GateShape& s, BitTally& tally) {
  CHECK(count_id_mismatches(got.ids, want.ids, s.top_k, tally.what) == 0);
  JANUS_CHECK_CLOSE(got.w, want.w, 1e-6, tally.what);
  tally.differ += count_bit_mismatches(got.w, want.w);
  tally.total += got.w.size();
}

// cpu::gate_topk_grouped has no renormalisation (DeepSeek-V2 never renormalises): the
// twin of a renormalised grouped gate is its unscaled choice, divided by the sum of its
// weights in choice order, then scaled, as the kernel does.
void renormalize_then_scale(std::vector<float>& w, int rows, int top_k, float scale) {
  for (int r = 0; r < rows; ++r) {
    float* x = w.data() + static_cast<size_t>(r) * top_k;
    float sum = 0.f;
    for (int j = 0; j < top_k; ++j) sum += x[j];
    for (int j = 0; j < top_k; ++j) x[j] = x[j] / sum * scale;
  }
}

}  // namespace

TEST_CASE("cuda gate_topk picks the same experts in the same order with the same weights as cpu::gate_topk") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(41);
  BitTally tally{"gate_topk"};
  for (auto [rows, experts, top_k] : {std::tuple{1, 8, 2}, {33, 128, 8}, {256, 128, 8}, {7, 60, 4}, {5, 1000, 32}, {40, 64, 6}})
    for (bool renorm : {true, false}) {
      CAPTURE(rows);
      CAPTURE(experts);
      CAPTURE(renorm);
      const GateShape s{rows, experts, top_k, 1, 1, 1.0f};
      auto logits = random_floats(static_cast<size_t>(rows) * experts, rng, 4.f);
      add_ties(logits, s);
      auto d_logits = upload(logits, DType::kF32);
      GateOut got = run_gate(s, [&](int32_t* ids, float* w) {
        return cuda::gate_topk(d_logits.as<float>(), rows, experts, top_k, renorm, ids, w, nullptr);
      });
      GateOut want{std::vector<int32_t>(got.ids.size()), std::vector<float>(got.w.size())};
      cpu::gate_topk(logits.data(), rows, experts, top_k, renorm, want.ids.data(), want.w.data());
      check_gate(got, want, s, tally);
      if (experts >= 8) {
        CHECK(got.ids[0] == 3);
        CHECK(got.ids[1] == 5);
      }
    }
}

TEST_CASE("cuda gate_topk_grouped (DeepSeek-V2 greedy / group_limited_greedy) equals cpu::gate_topk_grouped") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(43);
  BitTally tally{"gate_topk_grouped"};
  for (const GateShape& s : kShapes)
    for (bool renorm : {false, true}) {
      CAPTURE(s.rows);
      CAPTURE(s.experts);
      CAPTURE(s.top_k);
      CAPTURE(s.n_group);
      CAPTURE(s.topk_group);
      CAPTURE(renorm);
      auto logits = random_floats(static_cast<size_t>(s.rows) * s.experts, rng, 4.f);
      add_ties(logits, s);
      auto d_logits = upload(logits, DType::kF32);
      GateOut got = run_gate(s, [&](int32_t* ids, float* w) {
        return cuda::gate_topk_grouped(d_logits.as<float>(), s.rows, s.experts, s.top_k, s.n_group, s.topk_group, renorm,
                                       s.scale, ids, w, nullptr);
      });
      GateOut want{std::vector<int32_t>(got.ids.size()), std::vector<float>(got.w.size())};
      cpu::gate_topk_grouped(logits.data(), s.rows, s.experts, s.top_k, s.n_group, s.topk_group, renorm ? 1.0f : s.scale,
                             want.ids.data(), want.w.data());
      if (renorm) renormalize_then_scale(want.w, s.rows, s.top_k, s.scale);
      check_gate(got, want, s, tally);
      if (s.rows >= 3) {
        // The all-equal row: the kept groups are the first topk_group, their experts by id.
        const int per = s.experts / s.n_group;
        for (int j = 0; j < std::min(s.top_k, s.topk_group * per); ++j) CHECK(got.ids[2 * s.top_k + j] == j);
      }
    }
}

TEST_CASE("cuda gate_topk_sigmoid_grouped (DeepSeek-V3 noaux_tc) equals cpu::gate_topk_sigmoid_grouped") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(47);
  BitTally tally{"gate_topk_sigmoid_grouped"};
  for (const GateShape& s : kShapes)
    for (bool renorm : {true, false})
      for (bool flat_bias : {false, true}) {
        CAPTURE(s.rows);
        CAPTURE(s.experts);
        CAPTURE(s.top_k);
        CAPTURE(s.n_group);
        CAPTURE(s.topk_group);
        CAPTURE(renorm);
        CAPTURE(flat_bias);
        auto logits = random_floats(static_cast<size_t>(s.rows) * s.experts, rng, 4.f);
        add_ties(logits, s);
        // A bias that reorders the choice (as trained ones do), group 1 repeating group 0's
        // so that row 1's tie survives it; or one constant, so that row 2 ties everywhere.
        std::vector<float> bias = random_floats(static_cast<size_t>(s.experts), rng, 0.5f);
        const int per = s.experts / s.n_group;
        if (s.n_group >= 2)
          for (int i = 0; i < per; ++i) bias[per + i] = bias[i];
        if (flat_bias) std::fill(bias.begin(), bias.end(), 0.125f);
        auto d_logits = upload(logits, DType::kF32);
        auto d_bias = upload(bias, DType::kF32);
        GateOut got = run_gate(s, [&](int32_t* ids, float* w) {
          return cuda::gate_topk_sigmoid_grouped(d_logits.as<float>(), d_bias.as<float>(), s.rows, s.experts, s.top_k,
                                                 s.n_group, s.topk_group, renorm, s.scale, ids, w, nullptr);
        });
        GateOut want{std::vector<int32_t>(got.ids.size()), std::vector<float>(got.w.size())};
        cpu::gate_topk_sigmoid_grouped(logits.data(), bias.data(), s.rows, s.experts, s.top_k, s.n_group, s.topk_group,
                                       renorm, s.scale, want.ids.data(), want.w.data());
        check_gate(got, want, s, tally);
        if (flat_bias && s.rows >= 3 && per >= 2)
          for (int j = 0; j < std::min(s.top_k, s.topk_group * per); ++j) CHECK(got.ids[2 * s.top_k + j] == j);
      }
}

TEST_CASE("cuda gates: shapes the kernels cannot take are refused; no rows is a no-op") {
  JANUS_SKIP_WITHOUT_GPU();
  DeviceBuffer d(64 * 4);
  float* f = d.as<float>();
  int32_t* i = d.as<int32_t>();
  CHECK(cuda::gate_topk(f, 1, 2048, 8, true, i, f, nullptr).code() == ErrorCode::kUnsupported);
  CHECK(cuda::gate_topk(f, 1, 16, 33, true, i, f, nullptr).code() == ErrorCode::kUnsupported);
  CHECK(cuda::gate_topk_grouped(f, 1, 60, 4, 8, 2, false, 1.f, i, f, nullptr).code() == ErrorCode::kUnsupported);  // 8 does not divide 60
  CHECK(cuda::gate_topk_grouped(f, 1, 64, 4, 4, 5, false, 1.f, i, f, nullptr).code() == ErrorCode::kUnsupported);
  CHECK(cuda::gate_topk_sigmoid_grouped(f, f, 1, 2048, 4, 64, 4, true, 1.f, i, f, nullptr).code() == ErrorCode::kUnsupported);
  CHECK_FALSE(cuda::gate_topk_sigmoid_grouped(f, nullptr, 1, 16, 4, 4, 2, true, 1.f, i, f, nullptr).ok());
  CHECK(cuda::gate_topk_grouped(nullptr, 0, 64, 6, 1, 1, false, 1.f, nullptr, nullptr, nullptr).ok());
  CHECK(cuda::gate_topk_sigmoid_grouped(nullptr, f, 0, 256, 8, 8, 4, true, 2.5f, nullptr, nullptr, nullptr).ok());
  JANUS_CUDA_SYNC();
}
