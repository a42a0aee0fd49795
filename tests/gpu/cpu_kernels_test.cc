// The CPU reference kernels against straightforward double-precision formulas, on fresh
// random inputs (never zeros) and several shapes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gpu/cpu/kernels.h"
#include "runtime/base/parallel.h"
#include "test_util.h"

using namespace janus;
using janus::test::random_floats;
using janus::test::rel_max_err;

namespace {

std::vector<char> to_dtype(const std::vector<float>& v, DType t) {
  std::vector<char> out(v.size() * dtype_size(t));
  convert_from_f32(v.data(), t, out.data(), v.size());
  return out;
}

std::vector<float> from_dtype(const std::vector<char>& v, DType t, size_t n) {
  std::vector<float> out(n);
  convert_to_f32(v.data(), t, out.data(), n);
  return out;
}

}  // namespace

TEST_CASE("matmul matches a double-precision product for every weight dtype and shape") {
  std::mt19937 rng(1);
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16})
    for (auto [m, k, n] : {std::tuple{1, 7, 3}, {5, 64, 33}, {17, 130, 257}, {64, 256, 512}}) {
      CAPTURE(dtype_name(t));
      const int rows = m;  // a copy: clang 14 cannot capture a structured binding
      CAPTURE(rows);
      auto x = random_floats(static_cast<size_t>(m * k), rng);
      auto w = random_floats(static_cast<size_t>(n * k), rng);
      auto wq = to_dtype(w, t);
      auto wr = from_dtype(wq, t, w.size());  // the weights as the kernel sees them
      std::vector<float> y(static_cast<size_t>(m * n), NAN), ref(y.size());
      cpu::matmul(x.data(), m, k, wq.data(), t, n, y.data());
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double s = 0;
          for (int q = 0; q < k; ++q) s += static_cast<double>(x[i * k + q]) * wr[j * k + q];
          ref[i * n + j] = static_cast<float>(s);
        }
      CHECK(rel_max_err(y.data(), ref.data(), y.size()) < 1e-5);
    }
}

TEST_CASE("matmul rows do not depend on the batch they share or the thread count") {
  std::mt19937 rng(2);
  const int k = 96, n = 700;
  auto x = random_floats(static_cast<size_t>(40 * k), rng);
  auto w = random_floats(static_cast<size_t>(n * k), rng);
  std::vector<float> all(static_cast<size_t>(40 * n)), one(static_cast<size_t>(n));
  cpu::matmul(x.data(), 40, k, w.data(), DType::kF32, n, all.data());
  set_cpu_threads(1);
  for (int r : {0, 17, 39}) {
    cpu::matmul(x.data() + r * k, 1, k, w.data(), DType::kF32, n, one.data());
    CHECK(std::equal(one.begin(), one.end(), all.begin() + r * n));
  }
  set_cpu_threads(0);
}

TEST_CASE("rms_norm matches the formula and may run in place") {
  std::mt19937 rng(3);
  for (int dim : {16, 128, 2048}) {
    auto x = random_floats(static_cast<size_t>(3 * dim), rng, 3.0f);
    auto w = random_floats(static_cast<size_t>(dim), rng);
    std::vector<float> y(x.size(), NAN), ref(x.size());
    cpu::rms_norm(x.data(), 3, dim, w.data(), DType::kF32, 1e-6f, y.data());
    for (int r = 0; r < 3; ++r) {
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
      double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
      for (int i = 0; i < dim; ++i) ref[r * dim + i] = static_cast<float>(w[i] * x[r * dim + i] * inv);
    }
    CHECK(rel_max_err(y.data(), ref.data(), y.size()) < 1e-5);
    cpu::rms_norm(x.data(), 3, dim, w.data(), DType::kF32, 1e-6f, x.data());
    CHECK(std::equal(x.begin(), x.end(), y.begin()));
  }
}

TEST_CASE("rope rotates pairs (i, i + d/2) by position * theta^(-2i/d)") {
  std::mt19937 rng(4);
  const int heads = 3, hd = 16, rows = 4;
  auto x = random_floats(static_cast<size_t>(rows * heads * hd), rng);
  auto orig = x;
  std::vector<int32_t> pos = {0, 1, 37, 1000};
  std::vector<float> inv(hd / 2);
  cpu::rope_inv_freq(10000.0, hd, inv.data());
  cpu::rope(x.data(), rows, heads, hd, hd, pos.data(), inv.data());
  std::vector<float> ref(x.size());
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double f = std::pow(10000.0, -2.0 * i / hd);
        const double a = pos[r] * f;
        const float* v = orig.data() + (r * heads + h) * hd;
        ref[(r * heads + h) * hd + i] = static_cast<float>(v[i] * std::cos(a) - v[i + hd / 2] * std::sin(a));
        ref[(r * heads + h) * hd + i + hd / 2] = static_cast<float>(v[i + hd / 2] * std::cos(a) + v[i] * std::sin(a));
      }
  // Position 1000 amplifies fp32 rounding of the angle; 1e-4 is still far below a real bug.
  CHECK(rel_max_err(x.data(), ref.data(), x.size()) < 1e-4);
  // Position 0 leaves the vector unchanged.
  CHECK(std::equal(x.begin(), x.begin() + heads * hd, orig.begin()));
}

TEST_CASE("partial rope rotates the first rotary_dim values of each head as a rotary_dim head, and passes the rest through") {
  std::mt19937 rng(14);
  const int heads = 3, hd = 16, rd = 8, rows = 3;
  auto x = random_floats(static_cast<size_t>(rows * heads * hd), rng);
  const auto orig = x;
  std::vector<int32_t> pos = {0, 5, 300};
  std::vector<float> inv(rd / 2);
  cpu::rope_inv_freq(10000.0, rd, inv.data());
  cpu::rope(x.data(), rows, heads, hd, rd, pos.data(), inv.data());
  // The reference: each head's rotary part alone, rotated as a whole head of rd.
  std::vector<float> part(static_cast<size_t>(rows * heads * rd));
  for (int t = 0; t < rows * heads; ++t) std::copy_n(orig.data() + t * hd, rd, part.data() + t * rd);
  cpu::rope(part.data(), rows, heads, rd, rd, pos.data(), inv.data());
  int moved = 0;
  for (int t = 0; t < rows * heads; ++t) {
    CHECK(std::equal(part.begin() + t * rd, part.begin() + (t + 1) * rd, x.begin() + t * hd));
    CHECK(std::equal(orig.begin() + t * hd + rd, orig.begin() + (t + 1) * hd, x.begin() + t * hd + rd));
    moved += !std::equal(orig.begin() + t * hd, orig.begin() + t * hd + rd, x.begin() + t * hd);
  }
  CHECK(moved == 2 * heads);  // every head but those at position 0
}

TEST_CASE("paged attention equals dense causal attention, GQA and sliding window included") {
  std::mt19937 rng(5);
  const int heads = 4, kvh = 2, hd = 8, bs = 4;
  for (int window : {0, 5}) {
    CAPTURE(window);
    // Two sequences of lengths 11 and 6, stored in scattered physical blocks.
    const std::vector<int> lens = {11, 6};
    const int max_blocks = 3, num_blocks = 8;
    std::vector<int32_t> tables = {5, 0, 7, 2, 6, -1};
    cpu::PagedKvLayout L{bs, kvh, hd, tables.data(), max_blocks};
    std::vector<float> kc(static_cast<size_t>(num_blocks * bs * kvh * hd), NAN), vc(kc.size(), NAN);
    std::vector<std::vector<float>> K(2), Vv(2);
    std::vector<cpu::KvRow> rows;
    for (int s = 0; s < 2; ++s) {
      K[s] = random_floats(static_cast<size_t>(lens[s] * kvh * hd), rng);
      Vv[s] = random_floats(static_cast<size_t>(lens[s] * kvh * hd), rng);
      std::vector<cpu::KvRow> sr;
      for (int p = 0; p < lens[s]; ++p) sr.push_back({s, p});
      cpu::kv_write(K[s].data(), Vv[s].data(), lens[s], sr.data(), L, kc.data(), vc.data());
      for (int p = 0; p < lens[s]; ++p) rows.push_back({s, p});
    }
    const int n = static_cast<int>(rows.size());
    auto q = random_floats(static_cast<size_t>(n * heads * hd), rng);
    std::vector<float> out(q.size(), NAN), ref(q.size());
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    cpu::paged_attention(q.data(), n, rows.data(), heads, L, kc.data(), vc.data(), window, scale, out.data());
    for (int r = 0; r < n; ++r) {
      const int s = rows[r].seq, p = rows[r].pos;
      const int first = window > 0 ? std::max(0, p - window + 1) : 0;
      for (int h = 0; h < heads; ++h) {
        const int g = h / (heads / kvh);
        std::vector<double> sc;
        double mx = -1e300;
        for (int t = first; t <= p; ++t) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += static_cast<double>(q[(r * heads + h) * hd + i]) * K[s][(t * kvh + g) * hd + i];
          sc.push_back(d * scale);
          mx = std::max(mx, sc.back());
        }
        double sum = 0;
        for (double& v : sc) sum += (v = std::exp(v - mx));
        for (int i = 0; i < hd; ++i) {
          double o = 0;
          for (int t = first; t <= p; ++t) o += sc[t - first] / sum * Vv[s][(t * kvh + g) * hd + i];
          ref[(r * heads + h) * hd + i] = static_cast<float>(o);
        }
      }
    }
    CHECK(rel_max_err(out.data(), ref.data(), out.size()) < 1e-5);
  }
}

TEST_CASE("gate_topk: softmax, top-k in descending order, optional renormalisation") {
  std::mt19937 rng(6);
  const int rows = 9, E = 16, k = 4;
  auto logits = random_floats(static_cast<size_t>(rows * E), rng, 4.0f);
  for (bool renorm : {false, true}) {
    std::vector<int32_t> ids(static_cast<size_t>(rows * k), -1);
    std::vector<float> w(ids.size(), NAN);
    cpu::gate_topk(logits.data(), rows, E, k, renorm, ids.data(), w.data());
    for (int r = 0; r < rows; ++r) {
      std::vector<double> p(E);
      double mx = *std::max_element(logits.begin() + r * E, logits.begin() + (r + 1) * E), sum = 0;
      for (int e = 0; e < E; ++e) sum += (p[e] = std::exp(logits[r * E + e] - mx));
      for (double& v : p) v /= sum;
      std::vector<int> order(E);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
      double ks = 0;
      for (int j = 0; j < k; ++j) ks += p[order[j]];
      for (int j = 0; j < k; ++j) {
        CHECK(ids[r * k + j] == order[j]);
        CHECK(w[r * k + j] == doctest::Approx(renorm ? p[order[j]] / ks : p[order[j]]).epsilon(1e-5));
      }
    }
  }
  // Ties go to the lower expert id.
  std::vector<float> tie = {1.f, 3.f, 3.f, 0.f};
  int32_t ids[2];
  float w[2];
  cpu::gate_topk(tie.data(), 1, 4, 2, true, ids, w);
  CHECK(ids[0] == 1);
  CHECK(ids[1] == 2);
}

TEST_CASE("swiglu_ffn is down(silu(gate x) * up x)") {
  std::mt19937 rng(7);
  const int rows = 5, H = 24, I = 40;
  auto x = random_floats(static_cast<size_t>(rows * H), rng);
  auto g = random_floats(static_cast<size_t>(I * H), rng, 0.3f);
  auto u = random_floats(static_cast<size_t>(I * H), rng, 0.3f);
  auto d = random_floats(static_cast<size_t>(H * I), rng, 0.3f);
  std::vector<float> scratch(static_cast<size_t>(2 * rows * I)), y(static_cast<size_t>(rows * H), NAN), ref(y.size());
  cpu::swiglu_ffn(x.data(), rows, H, I, g.data(), DType::kF32, u.data(), DType::kF32, d.data(), DType::kF32, scratch.data(),
                  y.data());
  for (int r = 0; r < rows; ++r) {
    const std::vector<double> s = janus::test::swiglu_row_f64(x.data() + r * H, g.data(), u.data(), d.data(), H, I);
    for (int h = 0; h < H; ++h) ref[r * H + h] = static_cast<float>(s[h]);
  }
  CHECK(rel_max_err(y.data(), ref.data(), y.size()) < 1e-5);
}

TEST_CASE("embedding gathers rows in any dtype") {
  std::mt19937 rng(8);
  auto table = random_floats(10 * 6, rng);
  auto tb = to_dtype(table, DType::kBF16);
  auto tr = from_dtype(tb, DType::kBF16, table.size());
  std::vector<int32_t> ids = {3, 9, 0, 3};
  std::vector<float> out(4 * 6, NAN);
  cpu::embedding(ids.data(), 4, tb.data(), DType::kBF16, 6, out.data());
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) CHECK(out[i * 6 + j] == tr[ids[i] * 6 + j]);
}

TEST_CASE("rope_interleaved rotates pairs (2i, 2i + 1) by position * inv_freq[i]") {
  std::mt19937 rng(21);
  const int rows = 3, heads = 2, hd = 8;
  auto x = random_floats(static_cast<size_t>(rows * heads * hd), rng);
  std::vector<float> inv(hd / 2);
  cpu::rope_inv_freq(10000.0, hd, inv.data());
  const std::vector<int32_t> pos = {0, 5, 37};
  auto y = x;
  cpu::rope_interleaved(y.data(), rows, heads, hd, pos.data(), inv.data());
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const size_t o = static_cast<size_t>((r * heads + h) * hd + 2 * i);
        const double a = x[o], b = x[o + 1], t = static_cast<double>(pos[r]) * inv[i];
        CHECK(y[o] == doctest::Approx(a * std::cos(t) - b * std::sin(t)).epsilon(1e-5));
        CHECK(y[o + 1] == doctest::Approx(a * std::sin(t) + b * std::cos(t)).epsilon(1e-5));
      }
}

TEST_CASE("latent_attention equals attention over the expanded keys and values (the absorbed form is exact)") {
  std::mt19937 rng(22);
  const int heads = 3, lora = 6, rope = 4, bs = 4, len = 7, num_blocks = 4;
  std::vector<int32_t> tables = {2, 0};
  cpu::PagedKvLayout L{bs, 1, lora + rope, tables.data(), 2};
  std::vector<float> cache(static_cast<size_t>(num_blocks * bs * (lora + rope)), NAN);
  auto entries = random_floats(static_cast<size_t>(len * (lora + rope)), rng);
  std::vector<cpu::KvRow> rows;
  for (int p = 0; p < len; ++p) rows.push_back({0, p});
  cpu::kv_write_keys(entries.data(), len, rows.data(), L, cache.data());
  auto ql = random_floats(static_cast<size_t>(len * heads * lora), rng);
  auto qp = random_floats(static_cast<size_t>(len * heads * rope), rng);
  std::vector<float> out(static_cast<size_t>(len * heads * lora), NAN), ref(out.size());
  const float scale = 0.3f;
  cpu::latent_attention(ql.data(), qp.data(), len, rows.data(), heads, lora, rope, L, cache.data(), scale, out.data());
  for (int r = 0; r < len; ++r)
    for (int h = 0; h < heads; ++h) {
      std::vector<double> sc;
      double mx = -1e300;
      for (int t = 0; t <= r; ++t) {
        const float* e = entries.data() + t * (lora + rope);
        double d = 0;
        for (int i = 0; i < lora; ++i) d += static_cast<double>(ql[(r * heads + h) * lora + i]) * e[i];
        for (int i = 0; i < rope; ++i) d += static_cast<double>(qp[(r * heads + h) * rope + i]) * e[lora + i];
        sc.push_back(d * scale);
        mx = std::max(mx, sc.back());
      }
      double sum = 0;
      for (double& v : sc) sum += (v = std::exp(v - mx));
      for (int i = 0; i < lora; ++i) {
        double o = 0;
        for (int t = 0; t <= r; ++t) o += sc[t] / sum * entries[t * (lora + rope) + i];
        ref[(r * heads + h) * lora + i] = static_cast<float>(o);
      }
    }
  CHECK(rel_max_err(out.data(), ref.data(), out.size()) < 1e-5);
}

TEST_CASE("gate_topk_grouped: one group is the greedy gate scaled; the group limit drops experts of other groups") {
  std::mt19937 rng(23);
  const int rows = 7, E = 16, k = 4;
  auto logits = random_floats(static_cast<size_t>(rows * E), rng, 4.0f);
  std::vector<int32_t> ids(static_cast<size_t>(rows * k)), ref_ids(ids.size());
  std::vector<float> w(ids.size()), ref_w(ids.size());
  cpu::gate_topk_grouped(logits.data(), rows, E, k, 1, 1, 2.5f, ids.data(), w.data());
  cpu::gate_topk(logits.data(), rows, E, k, false, ref_ids.data(), ref_w.data());
  CHECK(ids == ref_ids);
  for (size_t i = 0; i < w.size(); ++i) CHECK(w[i] == doctest::Approx(2.5 * ref_w[i]).epsilon(1e-6));
  // Groups {0,1} {2,3} {4,5} {6,7}, keep 2: group maxima 5, 4.9, 1, 4.95 keep groups 0 and 3,
  // so expert 2 (second best overall) is dropped and the top 3 are 0, 7, 1.
  const std::vector<float> l = {5.f, 4.f, 4.9f, 0.f, 1.f, 0.f, 0.f, 4.95f};
  int32_t gi[3];
  float gw[3];
  cpu::gate_topk_grouped(l.data(), 1, 8, 3, 4, 2, 1.f, gi, gw);
  CHECK(gi[0] == 0);
  CHECK(gi[1] == 7);
  CHECK(gi[2] == 1);
  double sum = 0;
  for (float v : l) sum += std::exp(v - 5.0);
  CHECK(gw[1] == doctest::Approx(std::exp(4.95 - 5.0) / sum).epsilon(1e-5));
}

TEST_CASE("gate_topk_sigmoid_grouped: the correction bias chooses, the plain sigmoid scores weigh; groups by their top-2 sums") {
  auto sig = [](float x) { return 1.0f / (1.0f + std::exp(-x)); };
  // Groups {0,1} {2,3} {4,5} {6,7}. With the bias, group scores (top-2 sums of score + bias)
  // favour groups 1 and 3 although expert 0 has the highest plain score.
  const std::vector<float> l = {3.f, -3.f, 1.f, 1.f, 0.f, 0.f, 0.5f, 0.5f};
  const std::vector<float> bias = {0.f, 0.f, 0.5f, 0.5f, 0.f, 0.f, 0.4f, 0.4f};
  int32_t ids[3];
  float w[3];
  cpu::gate_topk_sigmoid_grouped(l.data(), bias.data(), 1, 8, 3, 4, 2, false, 2.0f, ids, w);
  CHECK(ids[0] == 2);  // 0.73 + 0.5, ties broken by the lower id
  CHECK(ids[1] == 3);
  CHECK(ids[2] == 6);
  CHECK(w[0] == doctest::Approx(2.0 * sig(1.f)));  // no bias in the weight
  CHECK(w[2] == doctest::Approx(2.0 * sig(0.5f)));
  // Renormalised: the weights sum to the scaling factor.
  cpu::gate_topk_sigmoid_grouped(l.data(), bias.data(), 1, 8, 3, 4, 2, true, 2.5f, ids, w);
  CHECK(w[0] + w[1] + w[2] == doctest::Approx(2.5));
  // Without bias and with every group kept, the top-3 plain sigmoid scores.
  const std::vector<float> zero(8, 0.f);
  cpu::gate_topk_sigmoid_grouped(l.data(), zero.data(), 1, 8, 3, 4, 4, false, 1.0f, ids, w);
  CHECK(ids[0] == 0);
  CHECK(ids[1] == 2);
  CHECK(ids[2] == 3);
}

TEST_CASE("rope_yarn_inv_freq: plain RoPE at factor 1; extrapolated high frequencies, interpolated low ones") {
  const int dim = 64;
  std::vector<float> plain(dim / 2), yarn(dim / 2);
  cpu::rope_inv_freq(10000.0, dim, plain.data());
  cpu::rope_yarn_inv_freq(10000.0, dim, 1.0, 4096, 32, 1, true, yarn.data());
  for (int i = 0; i < dim / 2; ++i) CHECK(yarn[i] == doctest::Approx(plain[i]).epsilon(1e-6));
  cpu::rope_yarn_inv_freq(10000.0, dim, 40.0, 4096, 32, 1, true, yarn.data());
  // DeepSeek-V2's ramp over 64 dims: floor(10.47) = 10 to ceil(22.51) = 23.
  for (int i = 0; i <= 10; ++i) CHECK(yarn[i] == doctest::Approx(plain[i]).epsilon(1e-6));
  for (int i = 23; i < dim / 2; ++i) CHECK(yarn[i] == doctest::Approx(plain[i] / 40.0).epsilon(1e-6));
  CHECK(yarn[16] < plain[16]);
  CHECK(yarn[16] > plain[16] / 40.0);
  // cos and sin scaled: a rotation by rope with scale s is s times the unscaled one.
  std::vector<float> x = {1.f, 2.f, 3.f, 4.f}, y = x;
  const int32_t pos = 5;
  std::vector<float> inv(2);
  cpu::rope_inv_freq(10000.0, 4, inv.data());
  cpu::rope_interleaved(x.data(), 1, 1, 4, &pos, inv.data());
  cpu::rope_interleaved(y.data(), 1, 1, 4, &pos, inv.data(), 1.5f);
  for (int i = 0; i < 4; ++i) CHECK(y[i] == doctest::Approx(1.5 * x[i]).epsilon(1e-6));
}
