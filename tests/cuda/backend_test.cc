// The CUDA backend (gpu/backend/cuda/backend.h) op by op against the CPU backend, the reference:
// embed, attention over the paged cache (prefill, decode, a sequence slot reused with new
// blocks), dense MLP, router, experts (held subsets, set_experts changes, every row-count
// class of the MoE kernel), the combine of partial sums from GPUs and hosts, sampling,
// concat_rows; and the errors it gives. Models: the transformers fixtures (F32: the exact
// fp32 paths) and small synthetic BF16 models shaped for the tensor-core paths.
//
// Each GPU op gets the CPU's input (the residual is copied over before every op), so a
// comparison measures that op's error alone: 1e-4 relative max-norm for F32 models
// (orders of addition differ, nothing else), 1e-2 for BF16 ones (the GPU rounds matmul
// inputs and the KV cache to BF16; the CPU keeps fp32 activations).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "backend_test_util.h"
#include "runtime/model/sampling.h"

using namespace janus;
using namespace janus::cuda::test;

namespace {

#define REQUIRE_OK(expr)                                         \
  do {                                                           \
    ::janus::Status s_ = (expr);                                 \
    REQUIRE_MESSAGE(s_.ok(), #expr << " -> " << s_.to_string()); \
  } while (0)

std::vector<std::pair<std::string, std::shared_ptr<const Model>>> all_models() {
  std::vector<std::pair<std::string, std::shared_ptr<const Model>>> v;
  for (const char* f : {"qwen3_moe", "qwen3_moe_bf16", "mixtral"}) v.emplace_back(f, fixture_model(f));
  for (const SyntheticShape& s : kSyntheticShapes) v.emplace_back(s.name, synthetic_model(s));
  return v;
}

KvCacheShape kv_shape(const ModelConfig& c) {
  KvCacheShape s;
  s.layers = c.num_layers;
  s.kv_heads = c.num_kv_heads;
  s.head_dim = c.head_dim;
  s.block_size = 16;
  s.num_blocks = 48;
  s.max_seqs = 4;
  s.max_seq_len = 160;
  return s;
}

std::vector<int32_t> all_experts(const ModelConfig& c) {
  std::vector<int32_t> v(static_cast<size_t>(c.num_experts));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<int32_t> random_tokens(size_t n, int vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = d(rng);
  return v;
}

// The top-1 minus top-2 logit, relative to the largest magnitude: how safe a greedy
// comparison is.
double greedy_margin(const std::vector<float>& l) {
  std::vector<float> s(l);
  std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<float>());
  double mx = 0;
  for (float v : l) mx = std::max(mx, std::fabs(static_cast<double>(v)));
  return mx > 0 ? (s[0] - s[1]) / mx : 0;
}

// Router outputs agree: the same experts in the same order, or, where they differ, a
// near-tie (every weight of the row equal within 1e-5: both add the same fp32 products in
// other orders, so two experts within ~1e-7 may swap). Prints the rows that differ.
bool same_routing(const std::vector<int32_t>& ig, const std::vector<float>& wg, const std::vector<int32_t>& ic,
                  const std::vector<float>& wc, int k, const std::string& what) {
  if (ig.size() != ic.size() || wg.size() != wc.size()) return false;
  bool ok = true;
  for (size_t r = 0; r * k < ic.size(); ++r) {
    bool ids_equal = true, tie = true;
    for (int j = 0; j < k; ++j) {
      const size_t i = r * k + j;
      ids_equal = ids_equal && ig[i] == ic[i];
      tie = tie && std::fabs(wg[i] - wc[i]) <= 1e-5f * std::max(1.f, std::fabs(wc[i]));
    }
    if (ids_equal) continue;
    std::ostringstream os;
    os << what << ": row " << r << " routed differently" << (tie ? " (a near-tie, accepted)" : "") << ": GPU";
    for (int j = 0; j < k; ++j) os << " " << ig[r * k + j] << ":" << wg[r * k + j];
    os << " / CPU";
    for (int j = 0; j < k; ++j) os << " " << ic[r * k + j] << ":" << wc[r * k + j];
    std::printf("%s\n", os.str().c_str());
    ok = ok && tie;
  }
  return ok;
}

// Both backends of an attention shard, driven in lockstep.
class Lockstep {
 public:
  Lockstep(std::shared_ptr<const Model> model, std::string name) : model_(std::move(model)), name_(std::move(name)) {
    cuda::register_backends();
    BackendOptions o;
    o.kv = kv_shape(model_->config());
    auto c = make_attention_backend(model_, Device{}, o);
    REQUIRE_MESSAGE(c.ok(), c.status().to_string());
    cpu_ = std::move(*c);
    auto g = make_attention_backend(model_, cuda0(), o);
    REQUIRE_MESSAGE(g.ok(), g.status().to_string());
    gpu_ = std::move(*g);
    CHECK(gpu_->device() == cuda0());
    auto ce = make_expert_backend(model_, Device{}, all_experts(model_->config()));
    REQUIRE_MESSAGE(ce.ok(), ce.status().to_string());
    cpu_experts_ = std::move(*ce);
    auto ge = make_expert_backend(model_, cuda0(), all_experts(model_->config()));
    REQUIRE_MESSAGE(ge.ok(), ge.status().to_string());
    gpu_experts_ = std::move(*ge);
    CHECK(gpu_experts_->partial_dtype() == DType::kF32);
    tol_ = tolerance_for(*model_);
    f32_ = tol_ < 1e-3;
  }

  int add_sequence(int tokens) {
    auto a = cpu_->kv().add_sequence();
    auto b = gpu_->kv().add_sequence();
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    REQUIRE(*a == *b);
    reserve(*a, tokens);
    return *a;
  }
  void reserve(int seq, int tokens) {
    REQUIRE_OK(cpu_->kv().reserve(seq, tokens));
    REQUIRE_OK(gpu_->kv().reserve(seq, tokens));
  }
  void release(int seq) {
    cpu_->kv().release(seq);
    gpu_->kv().release(seq);
  }

  /// One step (every layer, then sampling) on both; returns the CPU's tokens.
  std::vector<int32_t> step(const std::vector<int32_t>& tokens, const std::vector<cpu::KvRow>& rows,
                            const std::vector<SampleRow>& sample_rows, const std::string& label) {
    const ModelConfig& c = model_->config();
    const std::string what = name_ + " " + label;
    Tensor xc, xg;
    REQUIRE_OK(cpu_->embed(tokens, &xc));
    REQUIRE_OK(gpu_->embed(tokens, &xg));
    CHECK(xg.device == cuda0());
    JANUS_CHECK_CLOSE(to_floats(xg), to_floats(xc), 1e-6, what + ": embed");
    for (int l = 0; l < c.num_layers; ++l) {
      const std::string at = what + ", layer " + std::to_string(l);
      Tensor xg_in = on_gpu(xc), hc, hg;
      REQUIRE_OK(cpu_->attention(l, xc, rows, &hc));
      REQUIRE_OK(gpu_->attention(l, xg_in, rows, &hg));
      CHECK(hg.device == cuda0());
      CHECK(hg.dtype == DType::kF32);
      REQUIRE(hg.rows == hc.rows);
      JANUS_CHECK_CLOSE(to_floats(xg_in), to_floats(xc), tol_, at + ": attention, residual x");
      JANUS_CHECK_CLOSE(to_floats(hg), to_floats(hc), tol_, at + ": attention, post-norm h");
      if (!c.is_sparse(l)) {
        xg_in = on_gpu(xc);
        REQUIRE_OK(cpu_->dense_mlp(l, hc, xc));
        REQUIRE_OK(gpu_->dense_mlp(l, on_gpu(hc), xg_in));
        JANUS_CHECK_CLOSE(to_floats(xg_in), to_floats(xc), tol_, at + ": dense MLP");
        continue;
      }
      std::vector<int32_t> ids_c, ids_g;
      std::vector<float> w_c, w_g;
      REQUIRE_OK(cpu_->route(l, hc, &ids_c, &w_c));
      REQUIRE_OK(gpu_->route(l, on_gpu(hc), &ids_g, &w_g));
      CHECK_MESSAGE(same_routing(ids_g, w_g, ids_c, w_c, c.top_k, at),
                    at << ": the GPU router chose other experts than the CPU on the same input");
      JANUS_CHECK_CLOSE(w_g, w_c, 1e-5, at + ": router weights");
      // Both sides run the CPU's routing, all experts on one instance each.
      std::vector<ExpertWork> work;
      for (int64_t r = 0; r < hc.rows; ++r)
        for (int j = 0; j < c.top_k; ++j) {
          const size_t i = static_cast<size_t>(r * c.top_k + j);
          work.push_back({static_cast<int32_t>(r), ids_c[i], w_c[i]});
        }
      Tensor pc, pg;
      REQUIRE_OK(cpu_experts_->run(l, hc, work, &pc));
      REQUIRE_OK(gpu_experts_->run(l, on_gpu(hc), work, &pg));
      CHECK(pg.device == cuda0());
      JANUS_CHECK_CLOSE(to_floats(pg), to_floats(pc), tol_, at + ": experts' partial sums");
      xg_in = on_gpu(xc);
      REQUIRE_OK(cpu_->add_moe_output({pc}, xc));
      REQUIRE_OK(gpu_->add_moe_output({pg}, xg_in));
      JANUS_CHECK_CLOSE(to_floats(xg_in), to_floats(xc), tol_, at + ": residual after the MoE combine");
    }
    std::vector<int32_t> tc, tg;
    std::vector<std::vector<float>> lc, lg;
    REQUIRE_OK(cpu_->sample(xc, sample_rows, &tc, &lc));
    REQUIRE_OK(gpu_->sample(on_gpu(xc), sample_rows, &tg, &lg));
    REQUIRE(tg.size() == tc.size());
    REQUIRE(lg.size() == lc.size());
    for (size_t i = 0, li = 0; i < sample_rows.size(); ++i) {
      const SampleRow& r = sample_rows[i];
      CAPTURE(i);
      if (!r.want_logits) {
        if (r.params.greedy() || f32_) CHECK(tg[i] == tc[i]);
        continue;
      }
      JANUS_CHECK_CLOSE(lg[li], lc[li], tol_, what + ": logits of sampled row " + std::to_string(i));
      const double margin = greedy_margin(lc[li]);
      // Identical tokens where the logits cannot disagree on them: always for F32
      // models (sampling draws the same uniform), for BF16 greedy rows with a clear margin.
      if (f32_ || (r.params.greedy() && margin > 4 * tol_))
        CHECK_MESSAGE(tg[i] == tc[i], what << ": row " << i << " token " << tg[i] << " on the GPU, " << tc[i]
                                           << " on the CPU (relative top-2 margin " << margin << ")");
      ++li;
    }
    return tc;
  }

 private:
  std::shared_ptr<const Model> model_;
  std::string name_;
  std::unique_ptr<AttentionBackend> cpu_, gpu_;
  std::unique_ptr<ExpertBackend> cpu_experts_, gpu_experts_;
  double tol_ = 1e-4;
  bool f32_ = true;
};

std::vector<cpu::KvRow> prefill_rows(int seq, int n) {
  std::vector<cpu::KvRow> v;
  for (int p = 0; p < n; ++p) v.push_back({seq, p});
  return v;
}

SampleRow greedy_row(int64_t row, uint64_t step) { return {row, SamplingParams{}, step, true}; }

SampleRow drawn_row(int64_t row, uint64_t step, uint64_t seed) {
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.top_k = 50;
  p.seed = seed;
  return {row, p, step, true};
}

}  // namespace

TEST_CASE("cuda backend: attention shard ops equal the CPU backend's over prefill, decode and a reused sequence slot") {
  JANUS_SKIP_WITHOUT_GPU();
  for (const auto& [name, model] : all_models()) {
    CAPTURE(name);
    const int V = model->config().vocab_size;
    std::mt19937 rng(1234);
    Lockstep ls(model, name);
    const auto prompt_a = random_tokens(20, V, rng), prompt_b = random_tokens(7, V, rng);
    const int a = ls.add_sequence(20 + 8), b = ls.add_sequence(7 + 8);
    // Prefill A alone, then B alone (rows of A's prefill are remembered for the end).
    const int32_t ta = ls.step(prompt_a, prefill_rows(a, 20), {greedy_row(19, 0)}, "prefill A")[0];
    const int32_t tb = ls.step(prompt_b, prefill_rows(b, 7), {drawn_row(6, 0, 77)}, "prefill B")[0];
    // Three decode steps of both, one greedy and one sampled.
    std::vector<int32_t> next = {ta, tb};
    for (int i = 0; i < 3; ++i) {
      next = ls.step(next, {{a, 20 + i}, {b, 7 + i}}, {greedy_row(0, 1 + i), drawn_row(1, 1 + i, 77)},
                     "decode step " + std::to_string(i));
    }
    // A finishes; B grows into A's old blocks; C takes A's sequence slot with other
    // blocks. C's prefill rows equal A's exactly: the device block table must still be
    // refreshed (the backend compares the table, not the rows).
    ls.release(a);
    ls.reserve(b, 7 + 8 + 40);
    const int c = ls.add_sequence(20 + 8);
    CHECK(c == a);
    ls.step(random_tokens(20, V, rng), prefill_rows(c, 20), {greedy_row(19, 0)}, "prefill C in A's slot");
    ls.step({tb, 5}, {{b, 10}, {c, 20}}, {greedy_row(0, 4), greedy_row(1, 1)}, "decode B and C");
  }
}

TEST_CASE("cuda backend: the router equals the CPU router on random activations (fp32 logits, the same experts)") {
  JANUS_SKIP_WITHOUT_GPU();
  cuda::register_backends();
  // Every family's gate: the softmax top-k, DeepSeek-V2's group-limited greedy (and plain
  // greedy, V2-Lite) gate scaled, DeepSeek-V3's noaux_tc sigmoid gate with its bias.
  auto models = all_models();
  for (const char* f : {"deepseek_v2", "deepseek_v2_lite", "deepseek_v3"}) models.emplace_back(f, fixture_model(f));
  for (const auto& [name, model] : models) {
    CAPTURE(name);
    const ModelConfig& c = model->config();
    auto cr = make_router_backend(model, Device{});
    auto gr = make_router_backend(model, cuda0());
    REQUIRE_MESSAGE(gr.ok(), gr.status().to_string());
    CHECK((*gr)->device() == cuda0());
    std::mt19937 rng(7);
    for (int64_t rows : {1, 16, 17, 200}) {
      CAPTURE(rows);
      Tensor h = host_tensor(random_floats(static_cast<size_t>(rows * c.hidden_size), rng), rows, c.hidden_size);
      for (int l = 0; l < c.num_layers; ++l) {
        if (!c.is_sparse(l)) continue;
        std::vector<int32_t> ic, ig, ih;
        std::vector<float> wc, wg, wh;
        REQUIRE_OK((*cr)->route(l, h, &ic, &wc));
        REQUIRE_OK((*gr)->route(l, on_gpu(h), &ig, &wg));
        REQUIRE_OK((*gr)->route(l, h, &ih, &wh));  // a host tensor is uploaded
        REQUIRE(ig.size() == static_cast<size_t>(rows * c.top_k));
        CHECK(same_routing(ig, wg, ic, wc, c.top_k, name + " layer " + std::to_string(l)));
        CHECK(ih == ig);  // the same input uploaded or passed on the device: the same bits
        JANUS_CHECK_CLOSE(wg, wc, 1e-5, name + ": router weights");
      }
    }
  }
}

TEST_CASE("cuda backend: experts hold only their experts, load and drop on set_experts, every row-count class") {
  JANUS_SKIP_WITHOUT_GPU();
  cuda::register_backends();
  for (const auto& [name, model] : all_models()) {
    if (name == "qwen3_moe_bf16" || name == "mixtral") continue;  // same paths as qwen3_moe
    CAPTURE(name);
    const ModelConfig& c = model->config();
    const int E = c.num_experts, k = c.top_k;
    const double tol = tolerance_for(*model);
    auto cpu_b = make_expert_backend(model, Device{}, all_experts(c));
    REQUIRE(cpu_b.ok());
    std::vector<int32_t> held;
    for (int e = E - 1; e >= 0; --e)  // not ascending: slots follow the list's order
      if (e % 3 != 0) held.push_back(e);
    auto gpu_b = make_expert_backend(model, cuda0(), held);
    REQUIRE_MESSAGE(gpu_b.ok(), gpu_b.status().to_string());
    std::mt19937 rng(99);
    auto check_rows = [&](const std::set<int32_t>& mine, const std::string& label) {
      for (int64_t rows : {1, 5, 16, 17, 40, 300}) {
        CAPTURE(rows);
        Tensor h = host_tensor(random_floats(static_cast<size_t>(rows * c.hidden_size), rng), rows, c.hidden_size);
        // Each row picks k distinct experts; this instance gets the ones it holds, in
        // choice order (some rows get none).
        std::vector<ExpertWork> work;
        std::vector<int32_t> order(static_cast<size_t>(E));
        std::iota(order.begin(), order.end(), 0);
        std::uniform_real_distribution<float> wd(0.05f, 1.f);
        for (int64_t r = 0; r < rows; ++r) {
          std::shuffle(order.begin(), order.end(), rng);
          for (int j = 0; j < k; ++j)
            if (mine.count(order[static_cast<size_t>(j)])) work.push_back({static_cast<int32_t>(r), order[static_cast<size_t>(j)], wd(rng)});
        }
        for (int l = 0; l < c.num_layers; ++l) {
          if (!c.is_sparse(l)) continue;
          Tensor pc, pg, ph;
          REQUIRE_OK((*cpu_b)->run(l, h, work, &pc));
          REQUIRE_OK((*gpu_b)->run(l, on_gpu(h), work, &pg));
          REQUIRE_OK((*gpu_b)->run(l, h, work, &ph));  // host activations are uploaded
          CHECK(pg.device == cuda0());
          CHECK(pg.dtype == DType::kF32);
          CHECK(pg.rows == rows);
          const auto want = to_floats(pc);
          JANUS_CHECK_CLOSE(to_floats(pg), want, tol, name + " " + label + ": partial sums");
          CHECK(to_floats(ph) == to_floats(pg));  // deterministic, wherever h came from
        }
      }
    };
    check_rows(std::set<int32_t>(held.begin(), held.end()), "first placement");
    // Another placement: drops experts 1, 4, ..., loads 0, 3, ...
    std::vector<int32_t> next;
    for (int e = 0; e < E; ++e)
      if (e % 3 != 1) next.push_back(e);
    REQUIRE_OK((*gpu_b)->set_experts(next));
    REQUIRE_OK((*gpu_b)->set_experts(next));  // the same set again: nothing to do
    check_rows(std::set<int32_t>(next.begin(), next.end()), "after set_experts");
    int sparse = 0;
    while (!c.is_sparse(sparse)) ++sparse;
    Tensor h = on_gpu(host_tensor(random_floats(static_cast<size_t>(2 * c.hidden_size), rng), 2, c.hidden_size));
    Tensor p;
    Status s = (*gpu_b)->run(sparse, h, {{0, 1, 0.5f}}, &p);  // expert 1 was dropped
    CHECK_FALSE(s.ok());
    CHECK(s.message().find("expert 1 is not held") != std::string::npos);
    std::vector<ExpertWork> too_many;
    for (int j = 0; j <= k; ++j) too_many.push_back({1, next[static_cast<size_t>(j)], 0.1f});
    s = (*gpu_b)->run(sparse, h, too_many, &p);
    CHECK_FALSE(s.ok());
    CHECK(s.message().find("more than top_k") != std::string::npos);
    // No work: zeros.
    REQUIRE_OK((*gpu_b)->run(sparse, h, {}, &p));
    for (float v : to_floats(p)) CHECK(v == 0.f);
  }
}

TEST_CASE("cuda backend: add_moe_output adds partials from GPUs and hosts, F32 and F64, in double like the CPU backend") {
  JANUS_SKIP_WITHOUT_GPU();
  cuda::register_backends();
  for (const auto& [name, model] : all_models()) {
    if (name != "qwen3_moe" && name != "bf16-hd128") continue;
    CAPTURE(name);
    const ModelConfig& c = model->config();
    const int64_t H = c.hidden_size;
    BackendOptions o;
    o.kv = kv_shape(c);
    auto cpu_b = make_attention_backend(model, Device{}, o);
    auto gpu_b = make_attention_backend(model, cuda0(), o);
    REQUIRE(cpu_b.ok());
    REQUIRE_MESSAGE(gpu_b.ok(), gpu_b.status().to_string());
    std::mt19937 rng(3);
    for (int count : {1, 4, 20}) {
      CAPTURE(count);
      const int64_t n = 9;
      const auto x0 = random_floats(static_cast<size_t>(n * H), rng);
      std::vector<Tensor> host_parts, gpu_parts;
      for (int i = 0; i < count; ++i) {
        auto v = random_floats(static_cast<size_t>(n * H), rng, 0.5f);
        Tensor hp;
        switch (i % 4) {
          case 0:  // device F32
            hp = host_tensor(v, n, H);
            gpu_parts.push_back(on_gpu(hp));
            break;
          case 1: {  // host F64
            hp = Tensor::host(DType::kF64, n, H);
            for (size_t j = 0; j < v.size(); ++j) hp.as<double>()[j] = v[j] * (1.0 + 1e-9);
            gpu_parts.push_back(hp);
            break;
          }
          case 2: {  // a device view of rows 3.. of a larger tensor (the scheduler's per-shard slice)
            std::vector<float> big(static_cast<size_t>(3 * H), 7.f);
            big.insert(big.end(), v.begin(), v.end());
            Tensor whole = on_gpu(host_tensor(big, n + 3, H));
            Tensor view = whole;
            view.rows = n;
            view.data = static_cast<char*>(whole.data) + 3 * H * 4;
            gpu_parts.push_back(view);
            hp = host_tensor(v, n, H);
            break;
          }
          default:  // host F32
            hp = host_tensor(v, n, H);
            gpu_parts.push_back(hp);
        }
        host_parts.push_back(hp);
      }
      Tensor xc = host_tensor(x0, n, H), xg = on_gpu(xc);
      REQUIRE_OK((*cpu_b)->add_moe_output(host_parts, xc));
      REQUIRE_OK((*gpu_b)->add_moe_output(gpu_parts, xg));
      JANUS_CHECK_CLOSE(to_floats(xg), to_floats(xc), count > 16 ? 1e-6 : 1e-7, name + ": x + partials");
    }
    // A partial of the wrong shape is refused.
    Tensor xg = on_gpu(host_tensor(random_floats(static_cast<size_t>(4 * H), rng), 4, H));
    Tensor bad = on_gpu(host_tensor(random_floats(static_cast<size_t>(3 * H), rng), 3, H));
    CHECK_FALSE((*gpu_b)->add_moe_output({bad}, xg).ok());
  }
}

TEST_CASE("cuda backend: concat_rows joins device parts; copy_to_host copies them back") {
  JANUS_SKIP_WITHOUT_GPU();
  cuda::register_backends();
  std::mt19937 rng(5);
  const int64_t H = 48;
  std::vector<float> all;
  std::vector<Tensor> parts;
  for (int64_t rows : {3, 0, 5, 1}) {
    auto v = random_floats(static_cast<size_t>(rows * H), rng);
    all.insert(all.end(), v.begin(), v.end());
    Tensor t = rows ? on_gpu(host_tensor(v, rows, H)) : Tensor{};
    t.rows = rows;
    t.cols = H;
    if (rows == 0) t.device = cuda0();
    parts.push_back(t);
  }
  Tensor joined;
  REQUIRE_OK(concat_rows(parts, H, &joined));
  CHECK(joined.device == cuda0());
  CHECK(joined.rows == 9);
  CHECK(to_floats(joined) == all);
  // One non-empty part is shared, not copied.
  Tensor one;
  REQUIRE_OK(concat_rows({parts[1], parts[0]}, H, &one));
  CHECK(one.data == parts[0].data);
  Tensor back;
  REQUIRE_OK(copy_to_host(joined, &back));
  CHECK(back.device.is_cpu());
  CHECK(std::vector<float>(back.as<float>(), back.as<float>() + 9 * H) == all);
}

TEST_CASE("cuda backend: clear errors for what it cannot do") {
  JANUS_SKIP_WITHOUT_GPU();
  cuda::register_backends();
  auto model = fixture_model("qwen3_moe");
  const ModelConfig& c = model->config();
  BackendOptions o;
  o.kv = kv_shape(c);
  auto none = make_attention_backend(model, Device{DeviceKind::kCuda, 999}, o);
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().message().find("cuda:999") != std::string::npos);
  auto b = make_attention_backend(model, cuda0(), o);
  REQUIRE(b.ok());
  Tensor host_x = Tensor::host(DType::kF32, 1, c.hidden_size), h;
  Status s = (*b)->attention(0, host_x, {{0, 0}}, &h);
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("residual stream") != std::string::npos);
  Tensor x;
  REQUIRE_OK((*b)->embed({1, 2}, &x));
  CHECK_FALSE((*b)->embed({1, c.vocab_size}, &x).ok());  // outside the vocabulary
  // A row whose position has no reserved block.
  Tensor x2;
  REQUIRE_OK((*b)->embed({3}, &x2));
  s = (*b)->attention(0, x2, {{0, 0}}, &h);
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("no block reserved") != std::string::npos);
  std::vector<int32_t> ids;
  std::vector<float> w;
  CHECK_FALSE((*b)->route(1, x, &ids, &w).ok());  // layer 1 is dense in this fixture
  auto e = make_expert_backend(model, cuda0(), {0, 1});
  REQUIRE(e.ok());
  CHECK_FALSE((*e)->set_experts({0, 0}).ok());
  CHECK_FALSE((*e)->set_experts({c.num_experts}).ok());
  Tensor p;
  CHECK_FALSE((*e)->run(1, x, {{0, 0, 1.f}}, &p).ok());  // dense layer
}

TEST_CASE("cuda backend: Qwen2-MoE, OLMoE, DeepSeek-V2 and GLM-4-MoE attention shards are refused naming the features; their routers and experts run") {
  JANUS_SKIP_WITHOUT_GPU();
  cuda::register_backends();
  struct Case {
    const char* fixture;
    std::vector<const char*> named;
  };
  for (const Case& k : {Case{"qwen2_moe", {"'qkv_bias'", "'shared_expert_intermediate_size'"}},
                        Case{"olmoe", {"q_norm/k_norm over the whole projection", "'clip_qkv'"}},
                        Case{"deepseek_v2", {"'kv_lora_rank' (multi-head latent attention)", "'n_shared_experts'"}},
                        Case{"glm4_moe", {"'partial_rotary_factor'"}}}) {
    CAPTURE(k.fixture);
    auto model = fixture_model(k.fixture);
    const ModelConfig& c = model->config();
    BackendOptions o;
    o.kv = kv_shape(c);
    auto b = make_attention_backend(model, cuda0(), o);
    REQUIRE_FALSE(b.ok());
    CHECK(b.status().code() == ErrorCode::kUnsupported);
    for (const char* n : k.named) CHECK_MESSAGE(b.status().message().find(n) != std::string::npos, b.status().to_string());
    // Their gates (the softmax top-k; DeepSeek-V2's group limit and scaling) and their
    // SwiGLU experts run on the GPU.
    auto r = make_router_backend(model, cuda0());
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    auto e = make_expert_backend(model, cuda0(), all_experts(c));
    REQUIRE_MESSAGE(e.ok(), e.status().to_string());
  }
}

// Results are handed on with a completion marker, not waited for (Engine::finish): the
// shard's h goes to two expert instances on their own streams, their partial sums back to
// the shard, over every layer and several steps, with no host read in between. The same
// chain with every tensor copied between calls by a blocking copy that first waits on the
// host for its producer (so each producer is complete before its consumer starts) must give the same bits: the kernels are deterministic, so
// a consumer that ran before its producer finished, or a pool block reused while queued
// work still read it, would show as a difference.
TEST_CASE("cuda backend: a chain of calls across three streams without host waits equals the host-ordered chain bit for bit") {
  JANUS_SKIP_WITHOUT_GPU();
  cuda::register_backends();
  const SyntheticShape& shape = kSyntheticShapes[1];
  auto model = synthetic_model(shape);
  const ModelConfig& c = model->config();
  BackendOptions o;
  o.kv = kv_shape(c);
  o.kv.max_seqs = 4;
  o.kv.num_blocks = 64;
  const int rows_per_seq = 96;  // long enough kernels that a missing wait would race
  std::vector<int32_t> half_a, half_b;
  for (int e = 0; e < c.num_experts; ++e) (e % 2 ? half_b : half_a).push_back(e);

  auto run_chain = [&](bool host_ordered) {
    auto shard = make_attention_backend(model, cuda0(), o);
    auto e1 = make_expert_backend(model, cuda0(), half_a);
    auto e2 = make_expert_backend(model, cuda0(), half_b);
    REQUIRE_MESSAGE(shard.ok(), shard.status().to_string());
    REQUIRE(e1.ok());
    REQUIRE(e2.ok());
    auto pass = [&](const Tensor& t) { return host_ordered ? on_gpu(t) : t; };
    std::mt19937 rng(99);
    auto seq = (*shard)->kv().add_sequence();
    REQUIRE(seq.ok());
    REQUIRE_OK((*shard)->kv().reserve(*seq, rows_per_seq + 4));
    std::vector<int32_t> tokens = random_tokens(rows_per_seq, c.vocab_size, rng);
    std::vector<cpu::KvRow> rows = prefill_rows(*seq, rows_per_seq);
    std::vector<std::vector<float>> finals;
    for (int step = 0; step < 3; ++step) {
      Tensor x;
      REQUIRE_OK((*shard)->embed(tokens, &x));
      if (!host_ordered) CHECK(x.ready != nullptr);
      for (int l = 0; l < c.num_layers; ++l) {
        Tensor h;
        REQUIRE_OK((*shard)->attention(l, x, rows, &h));
        if (!host_ordered) CHECK_MESSAGE(h.ready != nullptr, "attention's output is handed on with its marker");
        if (!c.is_sparse(l)) {
          REQUIRE_OK((*shard)->dense_mlp(l, pass(h), x));
          continue;
        }
        std::vector<int32_t> ids;
        std::vector<float> w;
        REQUIRE_OK((*shard)->route(l, pass(h), &ids, &w));
        std::vector<ExpertWork> wa, wb;
        for (size_t i = 0; i < ids.size(); ++i)
          (ids[i] % 2 ? wb : wa).push_back({static_cast<int32_t>(i / c.top_k), ids[i], w[i]});
        Tensor pa, pb;
        REQUIRE_OK((*e1)->run(l, pass(h), wa, &pa));
        REQUIRE_OK((*e2)->run(l, pass(h), wb, &pb));
        if (!host_ordered) CHECK(pa.ready != nullptr);
        REQUIRE_OK((*shard)->add_moe_output({pass(pa), pass(pb)}, x));
      }
      finals.push_back(to_floats(x));
      // The next step re-runs the same rows over fresh tokens (the cache rows are rewritten).
      tokens = random_tokens(rows_per_seq, c.vocab_size, rng);
    }
    return finals;
  };
  const auto ordered = run_chain(true);
  const auto chained = run_chain(false);
  REQUIRE(ordered.size() == chained.size());
  for (size_t s = 0; s < ordered.size(); ++s) {
    CAPTURE(s);
    REQUIRE(ordered[s].size() == chained[s].size());
    size_t differ = 0;
    for (size_t i = 0; i < ordered[s].size(); ++i) differ += std::memcmp(&ordered[s][i], &chained[s][i], 4) != 0;
    CHECK_MESSAGE(differ == 0, differ << " of " << ordered[s].size() << " residual values differ from the host-ordered chain");
  }
}
