// The paged KV cache on the GPU: kv_write and paged attention (decode and prefill rows,
// grouped-query heads, sliding window, split contexts) against cpu::kv_write and
// cpu::paged_attention. Cache slots no row may read hold NaN and unused block-table
// entries are -1, so a kernel that reads outside a row's range fails loudly.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <tuple>

#include "gpu/cpu/kernels.h"
#include "gpu/cuda/attention.h"
#include "kernel_test_util.h"

using namespace janus;
using namespace janus::cuda::test;

namespace {

// A host paged cache with random contents at every position a sequence holds, NaN
// everywhere else, and shuffled blocks.
struct PagedCache {
  int block_size, kv_heads, head_dim, max_blocks, num_blocks;
  std::vector<int> lengths;
  std::vector<int32_t> tables;  // [seqs, max_blocks], -1 past a sequence's blocks
  std::vector<float> k, v;      // fp32, as rounded to the device dtype

  PagedCache(std::vector<int> lens, int bs, int kvh, int hd, DType kv_dtype, std::mt19937& rng)
      : block_size(bs), kv_heads(kvh), head_dim(hd), lengths(std::move(lens)) {
    max_blocks = 1;
    int total = 0;
    for (int l : lengths) {
      max_blocks = std::max(max_blocks, (l + bs - 1) / bs);
      total += (l + bs - 1) / bs;
    }
    num_blocks = total + 3;  // a few blocks nobody owns
    std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    tables.assign(lengths.size() * static_cast<size_t>(max_blocks), -1);
    const size_t width = static_cast<size_t>(kvh) * hd;
    k.assign(static_cast<size_t>(num_blocks) * bs * width, NAN);
    v = k;
    size_t next = 0;
    for (size_t s = 0; s < lengths.size(); ++s)
      for (int b = 0; b < (lengths[s] + bs - 1) / bs; ++b) tables[s * max_blocks + b] = perm[next++];
    for (size_t s = 0; s < lengths.size(); ++s)
      for (int p = 0; p < lengths[s]; ++p) {
        const size_t off = (static_cast<size_t>(tables[s * max_blocks + p / bs]) * bs + p % bs) * width;
        auto kr = round_to(random_floats(width, rng), kv_dtype), vr = round_to(random_floats(width, rng), kv_dtype);
        std::copy(kr.begin(), kr.end(), k.begin() + static_cast<long>(off));
        std::copy(vr.begin(), vr.end(), v.begin() + static_cast<long>(off));
      }
  }

  cpu::PagedKvLayout layout(const int32_t* device_tables) const {
    cpu::PagedKvLayout L;
    L.block_size = block_size;
    L.kv_heads = kv_heads;
    L.head_dim = head_dim;
    L.block_tables = device_tables;
    L.max_blocks = max_blocks;
    return L;
  }
};

struct Case {
  int heads, kv_heads, head_dim, block_size;
  DType kv, q, out;
  int window;
};

// Runs paged_attention over `rows` and compares with the CPU twin. `max_context` and the
// workspace size steer the split plan.
void check_attention(const Case& c, const PagedCache& cache, const std::vector<cpu::KvRow>& rows, int max_context,
                     bool full_workspace, std::mt19937& rng, const char* what) {
  const int64_t n = static_cast<int64_t>(rows.size());
  auto q = random_floats(static_cast<size_t>(n) * c.heads * c.head_dim, rng);
  auto d_q = upload(q, c.q);
  auto d_k = upload(cache.k, c.kv), d_v = upload(cache.v, c.kv);
  auto d_tables = upload_raw(cache.tables);
  auto d_rows = upload_raw(rows);
  DeviceBuffer d_out(static_cast<size_t>(n) * c.heads * c.head_dim * dtype_size(c.out));
  d_out.poison();
  const size_t ws_bytes = cuda::paged_attention_workspace_bytes(n, c.heads, c.kv_heads, c.head_dim, max_context);
  DeviceBuffer ws(full_workspace ? ws_bytes : ws_bytes / 3);
  ws.poison();
  cuda::PagedAttentionArgs a;
  a.q = d_q.get(), a.q_dtype = c.q, a.rows = n, a.row = d_rows.as<cpu::KvRow>(), a.heads = c.heads;
  a.layout = cache.layout(d_tables.as<int32_t>());
  a.k_cache = d_k.get(), a.v_cache = d_v.get(), a.kv_dtype = c.kv;
  a.sliding_window = c.window;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  a.out = d_out.get(), a.out_dtype = c.out;
  a.max_context = max_context;
  a.workspace = ws.get(), a.workspace_bytes = ws.bytes();
  const bool tc = cuda::paged_attention_uses_tensor_cores(a);
  INFO(what << ": heads " << c.heads << "/" << c.kv_heads << " x " << c.head_dim << ", block " << c.block_size << ", kv "
            << name(c.kv) << ", q " << name(c.q) << ", out " << name(c.out) << ", window " << c.window << ", rows " << n
            << ", max_context " << max_context << ", workspace " << ws.bytes() << "/" << ws_bytes << ", tensor cores "
            << tc);
  JANUS_STATUS_CHECK(cuda::paged_attention(a, nullptr));
  auto got = download(d_out, c.out, static_cast<size_t>(n) * c.heads * c.head_dim);
  auto qr = round_to(q, c.q);
  std::vector<float> want(got.size());
  cpu::paged_attention(qr.data(), n, rows.data(), c.heads, cache.layout(cache.tables.data()), cache.k.data(),
                       cache.v.data(), c.window, a.scale, want.data());
  const bool exact = c.kv == DType::kF32 && c.q == DType::kF32 && c.out == DType::kF32 && !tc;
  JANUS_CHECK_CLOSE(got, want, exact ? 1e-5 : 1e-2, std::string(what) + (tc ? " (tensor cores)" : " (fp32 path)"));
}

std::vector<cpu::KvRow> decode_rows(const std::vector<int>& lengths) {
  std::vector<cpu::KvRow> rows;
  for (size_t s = 0; s < lengths.size(); ++s) rows.push_back({static_cast<int32_t>(s), lengths[s] - 1});
  return rows;
}

}  // namespace

TEST_CASE("cuda kv_write stores each row at its (seq, pos) slot like cpu::kv_write") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(61);
  for (DType src : {DType::kF32, DType::kBF16})
    for (DType cache_t : {DType::kF32, DType::kBF16}) {
      CAPTURE(name(src));
      CAPTURE(name(cache_t));
      PagedCache cache({40, 7, 100}, 16, 4, 128, DType::kF32, rng);
      std::vector<cpu::KvRow> rows = {{0, 39}, {1, 3}, {2, 64}, {2, 99}, {0, 17}};
      const size_t width = 4 * 128;
      auto k = random_floats(rows.size() * width, rng), v = random_floats(rows.size() * width, rng);
      auto d_k = upload(k, src), d_v = upload(v, src);
      DeviceBuffer d_kc(cache.k.size() * dtype_size(cache_t)), d_vc(cache.v.size() * dtype_size(cache_t));
      d_kc.poison();
      d_vc.poison();
      auto d_tables = upload_raw(cache.tables);
      auto d_rows = upload_raw(rows);
      JANUS_STATUS_CHECK(cuda::kv_write(d_k.get(), d_v.get(), src, static_cast<int64_t>(rows.size()),
                                        d_rows.as<cpu::KvRow>(), cache.layout(d_tables.as<int32_t>()), d_kc.get(),
                                        d_vc.get(), cache_t, nullptr));
      std::vector<float> want_k(cache.k.size(), NAN), want_v(cache.v.size(), NAN);
      auto kr = round_to(k, src), vr = round_to(v, src);
      cpu::kv_write(kr.data(), vr.data(), static_cast<int64_t>(rows.size()), rows.data(), cache.layout(cache.tables.data()),
                    want_k.data(), want_v.data());
      auto got_k = download(d_kc, cache_t, cache.k.size()), got_v = download(d_vc, cache_t, cache.v.size());
      size_t wrong = 0;
      for (size_t i = 0; i < got_k.size(); ++i) {
        const bool written = !std::isnan(want_k[i]);
        const float tol = cache_t == DType::kF32 && src == DType::kF32 ? 0.f : 1e-2f;
        if (written != !std::isnan(got_k[i]) || written != !std::isnan(got_v[i]) ||
            (written && (std::fabs(got_k[i] - want_k[i]) > tol || std::fabs(got_v[i] - want_v[i]) > tol))) {
          if (wrong++ < 5) std::printf("kv_write: slot element %zu: got k %g v %g, want k %g v %g\n", i, got_k[i], got_v[i], want_k[i], want_v[i]);
        }
      }
      CHECK(wrong == 0);
    }
}

TEST_CASE("cuda paged attention, decode rows: every path, dtype, GQA shape and context length") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(62);
  const std::vector<Case> cases = {
      {32, 4, 128, 16, DType::kBF16, DType::kBF16, DType::kBF16, 0},  // the GPU preset
      {32, 4, 128, 16, DType::kBF16, DType::kF32, DType::kF32, 0},
      {32, 4, 128, 16, DType::kF32, DType::kF32, DType::kF32, 0},     // exact fp32 path
      {8, 8, 64, 16, DType::kBF16, DType::kBF16, DType::kF32, 0},     // group 1
      {16, 1, 64, 8, DType::kBF16, DType::kF32, DType::kBF16, 0},     // group 16, block 8
      {20, 4, 128, 32, DType::kBF16, DType::kBF16, DType::kF32, 0},   // group 5, block 32
      {32, 4, 128, 16, DType::kBF16, DType::kBF16, DType::kF32, 100},  // sliding window
      {6, 2, 96, 16, DType::kBF16, DType::kF32, DType::kF32, 0},      // head_dim 96: fallback
      {4, 2, 32, 16, DType::kF32, DType::kBF16, DType::kF32, 7},      // tiny model shape
      {34, 2, 64, 16, DType::kBF16, DType::kBF16, DType::kF32, 0},    // group 17: fallback
  };
  const std::vector<int> lengths = {1, 15, 16, 17, 64, 300, 1000, 2049};
  for (const Case& c : cases) {
    PagedCache cache(lengths, c.block_size, c.kv_heads, c.head_dim, c.kv, rng);
    auto rows = decode_rows(lengths);
    check_attention(c, cache, rows, 0, true, rng, "decode, no split");
    check_attention(c, cache, rows, 2049, true, rng, "decode, split");
    check_attention(c, cache, rows, 2049, false, rng, "decode, split limited by workspace");
    check_attention(c, cache, rows, 500, true, rng, "decode, max_context below the longest row");
  }
}

TEST_CASE("cuda paged attention, one long sequence at batch 1 (flash-decoding splits)") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(63);
  const Case c{32, 4, 128, 16, DType::kBF16, DType::kBF16, DType::kF32, 0};
  for (int len : {129, 4096, 8192}) {
    PagedCache cache({len}, 16, 4, 128, c.kv, rng);
    check_attention(c, cache, decode_rows({len}), len, true, rng, "batch 1");
  }
}

TEST_CASE("cuda paged attention, prefill rows: causal over a sequence's own prefix, rows of two sequences mixed") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(64);
  for (const Case& c : {Case{32, 4, 128, 16, DType::kBF16, DType::kBF16, DType::kBF16, 0},
                        Case{32, 4, 128, 16, DType::kF32, DType::kF32, DType::kF32, 0},
                        Case{8, 2, 64, 16, DType::kBF16, DType::kF32, DType::kF32, 33}}) {
    PagedCache cache({181, 70}, c.block_size, c.kv_heads, c.head_dim, c.kv, rng);
    std::vector<cpu::KvRow> rows;
    for (int p = 0; p < 181; ++p) rows.push_back({0, p});
    for (int p = 30; p < 70; ++p) rows.push_back({1, p});  // a chunked prefill's second chunk
    std::shuffle(rows.begin(), rows.end(), rng);
    check_attention(c, cache, rows, 181, true, rng, "prefill");
  }
}

TEST_CASE("cuda paged attention refuses shapes it cannot run") {
  JANUS_SKIP_WITHOUT_GPU();
  cuda::PagedAttentionArgs a;
  a.rows = 1, a.heads = 6;
  a.layout.kv_heads = 4, a.layout.head_dim = 64;
  CHECK(cuda::paged_attention(a, nullptr).code() == ErrorCode::kInvalidArgument);
}
