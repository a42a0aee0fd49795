#include "runtime/serving/profiler.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "gpu/backend/backend.h"
#include "actors/deployment.h"
#include "runtime/base/progress.h"

namespace janus {
namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <class F>
double median_time(int repeats, F&& f) {
  std::vector<double> t;
  f();  // warm-up
  for (int i = 0; i < repeats; ++i) {
    const double t0 = now_s();
    f();
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Messaging cost per layer batch with the null backend, for a deployment shape.
Result<double> comm_per_layer_batch(const GraphSpec& base, int shards, int instances) {
  GraphSpec g = base;
  g.attention.shards = shards;
  g.attention.devices = {"cpu"};
  g.attention.micro_batches = 1;
  g.experts.instances = instances;
  g.experts.devices = {"cpu"};
  g.experts.slots = 0;
  g.experts.auto_placement = true;
  g.workload.prompts.clear();
  for (int r = 0; r < 4 * shards; ++r) g.workload.prompts.push_back({1 + r});
  g.workload.max_new_tokens = 48;
  g.workload.ignore_eos = true;
  DeploymentOptions o;
  o.null_backend = true;
  JANUS_ASSIGN_OR_RETURN(auto d, Deployment::create(g, o));
  d->run_workload();
  const MetricsSnapshot before = d->metrics();
  const double t0 = now_s();
  for (auto& r : d->run_workload()) JANUS_TRY(r.status());
  const double secs = now_s() - t0;
  const MetricsSnapshot after = d->metrics();
  uint64_t batches = 0;
  for (size_t l = 0; l < after.amax.size(); ++l) batches += after.amax[l].batches - before.amax[l].batches;
  return batches ? secs / static_cast<double>(batches) : 0.0;
}

}  // namespace

Result<PerfModel> profile_deployment(GraphSpec spec, const ProfileOptions& opt) {
  Deployment::register_backends();
  JANUS_ASSIGN_OR_RETURN(auto model, Deployment::load_model(spec, opt.progress));
  spec.model_dir = model->dir();
  JANUS_TRY(resolve_graph(spec, model->config(), Deployment::cuda_device_count()));
  const ModelConfig& c = model->config();
  JANUS_ASSIGN_OR_RETURN(Device attn_dev, Device::parse(shard_device(spec, 0)));
  JANUS_ASSIGN_OR_RETURN(Device moe_dev, Device::parse(instance_device(spec, 0)));
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(0, c.vocab_size - 1);

  PerfModel pm;
  pm.source = family_name(c.family) + std::string(" ") + model->dir() + " on " + attn_dev.name() + " / " + moe_dev.name();
  pm.num_experts = c.num_experts;
  pm.top_k = c.top_k;
  pm.slots = spec.experts.slots;
  pm.attention_weight_bytes = static_cast<double>(model->weight_bytes() - model->expert_bytes());
  const double kv_elem = attn_dev.is_cpu() ? 4.0 : (model->weights().layers[0].o.dtype == DType::kF32 ? 4.0 : 2.0);
  // K and V per kv head, or MLA's one latent + RoPE key entry (runtime/model/model_config.h).
  pm.kv_bytes_per_token = (c.kv_cache_values() ? 2.0 : 1.0) * c.num_layers * c.kv_cache_heads() * c.kv_cache_head_dim() * kv_elem;
  {
    const LayerWeights& l0 = model->weights().layers[0];
    pm.attention_layer_bytes = static_cast<double>(l0.input_norm.nbytes() + l0.q.nbytes() + l0.k.nbytes() + l0.v.nbytes() +
                                                   l0.o.nbytes() + l0.q_norm.nbytes() + l0.k_norm.nbytes() + l0.post_norm.nbytes());
    pm.expert_bytes = 3.0 * c.hidden_size * c.moe_intermediate_size * static_cast<double>(dtype_size(l0.q.dtype));
  }
  pm.max_batch_per_shard = spec.attention.max_batch;
  if (attn_dev.is_cpu()) pm.device_bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));

  // -- attention: T(b, S) for a few batches and context lengths -------------------------
  const int max_ctx = std::min(spec.attention.max_seq_len - 1, 1024);
  std::vector<int> contexts = {std::max(16, max_ctx / 8), std::max(32, max_ctx / 2)};
  std::vector<int> batches;
  for (int b = 1; b <= spec.attention.max_batch && b <= 256; b *= 4) batches.push_back(b);
  BackendOptions bo;
  bo.kv.layers = c.num_layers;
  bo.kv.kv_heads = c.kv_cache_heads();
  bo.kv.head_dim = c.kv_cache_head_dim();
  bo.kv.values = c.kv_cache_values();
  bo.kv.block_size = spec.attention.block_size;
  bo.kv.max_seqs = batches.back();
  bo.kv.max_seq_len = contexts.back() + 1;
  bo.kv.num_blocks = batches.back() * ((bo.kv.max_seq_len + bo.kv.block_size - 1) / bo.kv.block_size);
  JANUS_ASSIGN_OR_RETURN(auto attn, make_attention_backend(model, attn_dev, bo));
  std::unique_ptr<ProgressBar> bar;
  // The expert FFN at these numbers of activated experts (denser at small a, where it bends).
  const int C = std::min(spec.experts.slots, c.num_experts);
  std::vector<int> counts;
  for (int a = 1; a <= C; a = a < 4 ? a + 1 : a + std::max(1, a / 2)) counts.push_back(a);
  if (counts.back() != C) counts.push_back(C);
  const int points = static_cast<int>(contexts.size() * batches.size() + counts.size()) + 2;
  if (opt.progress) bar = std::make_unique<ProgressBar>("profile", points, "points");
  int done = 0;
  std::vector<double> slopes, slope_ctx;
  double c_a = 1e30;
  for (int S : contexts) {
    std::vector<double> xs, ys;
    for (int b : batches) {
      PagedKvCache& kv = attn->kv();
      std::vector<int> seqs;
      std::vector<int32_t> prompt;
      std::vector<cpu::KvRow> rows;
      for (int i = 0; i < b; ++i) {
        JANUS_ASSIGN_OR_RETURN(int seq, kv.add_sequence());
        JANUS_TRY(kv.reserve(seq, S + 1));
        seqs.push_back(seq);
        for (int t = 0; t < S; ++t) {
          prompt.push_back(token(rng));
          rows.push_back({seq, t});
        }
      }
      // Fill layer 0's cache for the context (a real prefill), then time one decode row each.
      Tensor x, h;
      JANUS_TRY(attn->embed(prompt, &x));
      JANUS_TRY(attn->attention(0, x, rows, &h));
      std::vector<int32_t> next;
      std::vector<cpu::KvRow> drows;
      for (int i = 0; i < b; ++i) {
        next.push_back(token(rng));
        drows.push_back({seqs[static_cast<size_t>(i)], S});
      }
      // Each timing embeds afresh: attention adds into x, so the input must not carry over.
      Status st;
      const double t = median_time(opt.repeats, [&] {
        Tensor xd;
        st = attn->embed(next, &xd);
        if (st.ok()) st = attn->attention(0, xd, drows, &h);
      });
      JANUS_TRY(st);
      for (int seq : seqs) kv.release(seq);
      xs.push_back(b);
      ys.push_back(t);
      c_a = std::min(c_a, t);
      if (bar) bar->update(++done);
    }
    auto [slope, icept] = fit_line(xs, ys);
    (void)icept;
    slopes.push_back(std::max(0.0, slope));
    slope_ctx.push_back(S);
  }
  auto [c_kv, alpha] = fit_line(slope_ctx, slopes);  // slope(S) = alpha + c_kv * S

  // -- experts: T(a) at a fixed batch for a = 1..C activated experts ----------------------
  std::vector<int32_t> held;
  for (int e = 0; e < C; ++e) held.push_back(e);
  JANUS_ASSIGN_OR_RETURN(auto experts, make_expert_backend(model, moe_dev, held));
  // A batch large enough that every activated expert gets rows at every a (B * k >= C).
  const int B = std::max(64, (C + c.top_k - 1) / c.top_k);
  Tensor hb;
  {
    std::vector<int32_t> toks;
    for (int i = 0; i < B; ++i) toks.push_back(token(rng));
    JANUS_TRY(attn->embed(toks, &hb));  // any activations of the right shape and device
    if (!(hb.device == moe_dev)) {
      // Experts on another device: make host activations instead.
      Tensor host = Tensor::host(DType::kF32, B, c.hidden_size);
      std::uniform_real_distribution<float> u(-1, 1);
      for (int64_t i = 0; i < host.rows * host.cols; ++i) host.as<float>()[i] = u(rng);
      hb = host;
    }
  }
  std::vector<double> as, ts;
  const int sparse_layer = [&] {
    for (int l = 0; l < c.num_layers; ++l)
      if (c.is_sparse(l)) return l;
    return 0;
  }();
  for (int a : counts) {
    // Exactly a distinct experts, spread evenly: choice j of row r goes to (r*k + j) mod a.
    std::vector<ExpertWork> work;
    for (int r = 0; r < B; ++r)
      for (int j = 0; j < std::min(c.top_k, a); ++j) work.push_back({r, (r * c.top_k + j) % a, 1.0f / c.top_k});
    Tensor partial;
    Status st;
    const double t = median_time(opt.repeats, [&] { st = experts->run(sparse_layer, hb, work, &partial); });
    JANUS_TRY(st);
    as.push_back(a);
    ts.push_back(t);
    if (bar) bar->update(++done);
  }
  auto [beta, c_e] = fit_line(as, ts);
  for (size_t i = 0; i < as.size(); ++i) pm.moe_curve.push_back({as[i], ts[i]});

  // -- messaging per layer batch: two shapes, with the null backend ----------------------
  double c_comm = 0, per_member = 0;
  if (opt.comm) {
    JANUS_ASSIGN_OR_RETURN(double small, comm_per_layer_batch(spec, 1, 1));
    JANUS_ASSIGN_OR_RETURN(double big, comm_per_layer_batch(spec, 2, 4));
    per_member = std::max(0.0, (big - small) / 4.0);
    c_comm = std::max(0.0, small - 2 * per_member);
  }
  if (bar) bar->finish();

  for (int l = 0; l < c.num_layers; ++l) {
    LayerCoefficients lc;
    lc.c_a = c_a;
    lc.alpha = std::max(0.0, alpha);
    lc.c_kv = std::max(0.0, c_kv);
    if (c.is_sparse(l)) {
      lc.beta = std::max(0.0, beta);
      lc.c_e = std::max(0.0, c_e);
      lc.c_comm = c_comm;
      lc.comm_per_member = per_member;
    }
    pm.layers.push_back(lc);
  }
  return pm;
}

}  // namespace janus
