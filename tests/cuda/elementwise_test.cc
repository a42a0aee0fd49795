// Embedding, RMSNorm (plain and fused with the residual add) and q/k norm + RoPE on the
// GPU, each against its CPU twin on fresh random inputs (the router's top-k: gate_test.cc).
#include <doctest/doctest.h>

#include <random>
#include <tuple>

#include "gpu/cpu/fused.h"
#include "gpu/cpu/kernels.h"
#include "gpu/cuda/embedding.h"
#include "gpu/cuda/norm_rope.h"
#include "kernel_test_util.h"

using namespace janus;
using namespace janus::cuda::test;

namespace {
const DType kFloatTypes[] = {DType::kF32, DType::kBF16};
}

TEST_CASE("cuda embedding gathers rows like cpu::embedding, any table and output dtype") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (DType tt : kFloatTypes)
    for (DType ot : kFloatTypes)
      for (auto [vocab, dim, n] : {std::tuple{50, 7, 3}, {1000, 129, 17}, {32000, 2048, 64}}) {
        CAPTURE(name(tt));
        CAPTURE(name(ot));
        CAPTURE(dim);
        auto table = random_floats(static_cast<size_t>(vocab) * dim, rng);
        std::vector<int32_t> ids(static_cast<size_t>(n));
        std::uniform_int_distribution<int> pick(0, vocab - 1);
        for (auto& i : ids) i = pick(rng);
        ids[0] = vocab - 1;
        auto d_table = upload(table, tt);
        auto d_ids = upload_raw(ids);
        DeviceBuffer d_out(static_cast<size_t>(n) * dim * dtype_size(ot));
        d_out.poison();
        JANUS_STATUS_CHECK(cuda::embedding(d_ids.as<int32_t>(), n, d_table.get(), tt, vocab, dim, d_out.get(), ot, nullptr));
        auto got = download(d_out, ot, static_cast<size_t>(n) * dim);
        auto tq = to_dtype(table, tt);
        std::vector<float> want(got.size());
        cpu::embedding(ids.data(), n, tq.data(), tt, dim, want.data());
        // A gather is exact; only the output rounding remains.
        JANUS_CHECK_CLOSE(got, round_to(want, ot), 0.0, "embedding");
      }
}

TEST_CASE("cuda embedding writes NaN rows for ids outside the vocabulary") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  auto table = random_floats(10 * 8, rng);
  auto d_table = upload(table, DType::kF32);
  auto d_ids = upload_raw(std::vector<int32_t>{3, 10, -1});
  DeviceBuffer d_out(3 * 8 * 4);
  JANUS_STATUS_CHECK(cuda::embedding(d_ids.as<int32_t>(), 3, d_table.get(), DType::kF32, 10, 8, d_out.get(), DType::kF32, nullptr));
  auto got = download(d_out, DType::kF32, 24);
  CHECK(got[0] == table[24]);
  CHECK(std::isnan(got[8]));
  CHECK(std::isnan(got[16]));
}

TEST_CASE("cuda rms_norm matches cpu::rms_norm for every dtype, narrow and wide rows, in place too") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(21);
  for (DType xt : kFloatTypes)
    for (DType wt : kFloatTypes)
      for (auto [rows, dim] : {std::tuple{1, 7}, {37, 128}, {5, 257}, {64, 2048}, {3, 5000}}) {
        CAPTURE(name(xt));
        CAPTURE(name(wt));
        CAPTURE(rows);
        CAPTURE(dim);
        const size_t n = static_cast<size_t>(rows) * dim;
        auto x = random_floats(n, rng, 3.f);
        auto w = random_floats(static_cast<size_t>(dim), rng);
        for (auto& v : w) v += 1.f;
        auto d_x = upload(x, xt);
        auto d_w = upload(w, wt);
        DeviceBuffer d_y(n * dtype_size(xt));
        d_y.poison();
        JANUS_STATUS_CHECK(cuda::rms_norm(d_x.get(), xt, rows, dim, d_w.get(), wt, 1e-6f, d_y.get(), xt, nullptr));
        auto got = download(d_y, xt, n);
        auto xr = round_to(x, xt);
        auto wq = to_dtype(w, wt);
        std::vector<float> want(n);
        cpu::rms_norm(xr.data(), rows, dim, wq.data(), wt, 1e-6f, want.data());
        JANUS_CHECK_CLOSE(got, want, tolerance(xt), "rms_norm");
        // In place.
        JANUS_STATUS_CHECK(cuda::rms_norm(d_x.get(), xt, rows, dim, d_w.get(), wt, 1e-6f, d_x.get(), xt, nullptr));
        JANUS_CHECK_CLOSE(download(d_x, xt, n), want, tolerance(xt), "rms_norm in place");
      }
}

TEST_CASE("cuda add_rms_norm adds into the residual and normalises it, like cpu::add_rms_norm") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(22);
  for (DType rt : kFloatTypes)
    for (DType yt : kFloatTypes)
      for (auto [rows, dim] : {std::tuple{3, 100}, {17, 2048}, {2, 300}}) {
        CAPTURE(name(rt));
        CAPTURE(name(yt));
        CAPTURE(dim);
        const size_t n = static_cast<size_t>(rows) * dim;
        auto res = random_floats(n, rng, 2.f), delta = random_floats(n, rng);
        auto w = random_floats(static_cast<size_t>(dim), rng);
        auto d_res = upload(res, rt);
        auto d_delta = upload(delta, DType::kF32);
        auto d_w = upload(w, DType::kBF16);
        DeviceBuffer d_y(n * dtype_size(yt));
        d_y.poison();
        JANUS_STATUS_CHECK(cuda::add_rms_norm(d_res.get(), rt, d_delta.get(), DType::kF32, rows, dim, d_w.get(),
                                              DType::kBF16, 1e-5f, d_y.get(), yt, nullptr));
        auto rr = round_to(res, rt);
        auto wq = to_dtype(w, DType::kBF16);
        std::vector<float> want(n);
        cpu::add_rms_norm(rr.data(), delta.data(), rows, dim, wq.data(), DType::kBF16, 1e-5f, want.data());
        JANUS_CHECK_CLOSE(download(d_res, rt, n), rr, tolerance(rt), "add_rms_norm residual");
        JANUS_CHECK_CLOSE(download(d_y, yt, n), want, std::max(tolerance(rt), tolerance(yt)), "add_rms_norm output");
      }
}

TEST_CASE("cuda qk_norm_rope matches cpu::qk_norm_rope (norm then rotate_half RoPE), with and without the norm") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  for (DType t : kFloatTypes)
    for (bool with_norm : {true, false})
      for (auto [rows, heads, kv_heads, hd] : {std::tuple{3, 4, 2, 32}, {9, 32, 4, 128}, {5, 3, 1, 66}}) {
        CAPTURE(name(t));
        CAPTURE(with_norm);
        CAPTURE(hd);
        auto q = random_floats(static_cast<size_t>(rows) * heads * hd, rng, 2.f);
        auto k = random_floats(static_cast<size_t>(rows) * kv_heads * hd, rng, 2.f);
        auto qn = random_floats(static_cast<size_t>(hd), rng), kn = random_floats(static_cast<size_t>(hd), rng);
        std::vector<cpu::KvRow> row(static_cast<size_t>(rows));
        std::uniform_int_distribution<int> pos(0, 30000);
        for (auto& r : row) r = {0, pos(rng)};
        row[0].pos = 0;
        std::vector<float> inv(static_cast<size_t>(hd / 2));
        cpu::rope_inv_freq(1e6, hd, inv.data());
        auto d_q = upload(q, t), d_k = upload(k, t);
        auto d_qn = upload(qn, DType::kF32), d_kn = upload(kn, DType::kF32);
        auto d_row = upload_raw(row);
        auto d_inv = upload(inv, DType::kF32);
        JANUS_STATUS_CHECK(cuda::qk_norm_rope(d_q.get(), d_k.get(), t, rows, heads, kv_heads, hd,
                                              with_norm ? d_qn.get() : nullptr, with_norm ? d_kn.get() : nullptr,
                                              DType::kF32, 1e-6f, d_row.as<cpu::KvRow>(), d_inv.as<float>(), nullptr));
        auto wq = round_to(q, t), wk = round_to(k, t);
        cpu::qk_norm_rope(wq.data(), wk.data(), rows, heads, kv_heads, hd, with_norm ? qn.data() : nullptr,
                          with_norm ? kn.data() : nullptr, DType::kF32, 1e-6f, row.data(), inv.data());
        JANUS_CHECK_CLOSE(download(d_q, t, q.size()), wq, tolerance(t), "qk_norm_rope q");
        JANUS_CHECK_CLOSE(download(d_k, t, k.size()), wk, tolerance(t), "qk_norm_rope k");
      }
}
