#include "runtime/model/cpu_forward.h"

#include <algorithm>
#include <cmath>

#include "runtime/base/parallel.h"

namespace janus {
namespace {

// y[r] += bias for each of n rows (bias is [1, cols] in any dtype).
void add_bias(float* y, int64_t n, const WeightView& bias) {
  std::vector<float> b(static_cast<size_t>(bias.cols));
  convert_to_f32(bias.data, bias.dtype, b.data(), b.size());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < bias.cols; ++i) y[r * bias.cols + i] += b[static_cast<size_t>(i)];
}

}  // namespace

CpuForward::CpuForward(std::shared_ptr<const Model> model) : model_(std::move(model)) {
  const ModelConfig& c = model_->config();
  inv_freq_.resize(static_cast<size_t>(c.rotary_dim() / 2));
  if (c.rope_yarn) {  // the config refuses yarn outside the MLA families, whose head_dim is the RoPE part
    const YarnScaling& y = c.yarn;
    cpu::rope_yarn_inv_freq(c.rope_theta, c.head_dim, y.factor, y.original_max_position_embeddings, y.beta_fast, y.beta_slow,
                            y.truncate, inv_freq_.data());
    rope_scale_ = static_cast<float>(y.cos_sin_factor());
  } else {
    cpu::rope_inv_freq(c.rope_theta, c.rotary_dim(), inv_freq_.data());
  }
}

void CpuForward::embed(const int32_t* tokens, int64_t n, float* x) const {
  const WeightView& e = model_->weights().embed;
  cpu::embedding(tokens, n, e.data, e.dtype, e.cols, x);
}

// DeepSeek-V2's Multi-head Latent Attention. The cache keeps, per token, the normalised
// latent and the rotated RoPE key (kv_lora_rank + qk_rope_head_dim values); attention runs
// in the absorbed form for prefill and decode alike: each query head's no-RoPE part is
// mapped into latent space through its block of kv_b (W_uk), scored against the latents,
// and the weighted latent is mapped out through the head's value block (W_uv). That equals
// transformers' expanded K/V up to the order of fp32 sums.
void CpuForward::mla_attention(int layer, float* x, int64_t n, const cpu::KvRow* rows, PagedKvCache& kv, float* h) const {
  const ModelConfig& c = model_->config();
  const LayerWeights& w = model_->weights().layers[static_cast<size_t>(layer)];
  const int64_t H = c.hidden_size, heads = c.num_heads, L = c.kv_lora_rank, R = c.qk_rope_head_dim;
  const int64_t nope = c.qk_nope_head_dim, vd = c.v_head_dim, qk = c.qk_head_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);
  cpu::rms_norm(x, n, H, w.input_norm.data, w.input_norm.dtype, eps, h);
  std::vector<float> q(static_cast<size_t>(n * heads * qk));
  if (c.q_lora_rank > 0) {
    std::vector<float> qa(static_cast<size_t>(n * c.q_lora_rank));
    cpu::matmul(h, n, H, w.q_a.data, w.q_a.dtype, c.q_lora_rank, qa.data());
    cpu::rms_norm(qa.data(), n, c.q_lora_rank, w.q_a_norm.data, w.q_a_norm.dtype, eps, qa.data());
    cpu::matmul(qa.data(), n, c.q_lora_rank, w.q_b.data, w.q_b.dtype, heads * qk, q.data());
  } else {
    cpu::matmul(h, n, H, w.q.data, w.q.dtype, heads * qk, q.data());
  }
  // The cache entry of each row: RMSNorm of the latent, then the rotated RoPE key.
  std::vector<float> entry(static_cast<size_t>(n * (L + R)));
  cpu::matmul(h, n, H, w.kv_a.data, w.kv_a.dtype, L + R, entry.data());
  for (int64_t r = 0; r < n; ++r) {
    float* e = entry.data() + r * (L + R);
    cpu::rms_norm(e, 1, L, w.kv_a_norm.data, w.kv_a_norm.dtype, eps, e);
  }
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) pos[r] = rows[r].pos;
  std::vector<float> kpe(static_cast<size_t>(n * R)), qpe(static_cast<size_t>(n * heads * R));
  for (int64_t r = 0; r < n; ++r) {
    std::copy_n(entry.data() + r * (L + R) + L, R, kpe.data() + r * R);
    for (int64_t hh = 0; hh < heads; ++hh) std::copy_n(q.data() + (r * heads + hh) * qk + nope, R, qpe.data() + (r * heads + hh) * R);
  }
  // V3 may store the RoPE part in halves (rope_interleave false): the plain rotate_half then.
  auto rotate = [&](float* t, int t_heads) {
    if (c.rope_interleave) cpu::rope_interleaved(t, n, t_heads, static_cast<int>(R), pos.data(), inv_freq_.data(), rope_scale_);
    else cpu::rope(t, n, t_heads, static_cast<int>(R), static_cast<int>(R), pos.data(), inv_freq_.data(), rope_scale_);
  };
  rotate(kpe.data(), 1);
  rotate(qpe.data(), static_cast<int>(heads));
  for (int64_t r = 0; r < n; ++r) std::copy_n(kpe.data() + r * R, R, entry.data() + r * (L + R) + L);
  const cpu::PagedKvLayout KL = kv.layout();
  cpu::kv_write_keys(entry.data(), n, rows, KL, kv.k(layer));
  // kv_b rows: per head, nope rows of W_uk then vd rows of W_uv, each [L].
  std::vector<float> kvb(static_cast<size_t>(heads * (nope + vd) * L));
  convert_to_f32(w.kv_b.data, w.kv_b.dtype, kvb.data(), kvb.size());
  std::vector<float> qlat(static_cast<size_t>(n * heads * L), 0.f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t hh = 0; hh < heads; ++hh) {
      const float* qn = q.data() + (r * heads + hh) * qk;
      float* ql = qlat.data() + (r * heads + hh) * L;
      for (int64_t d = 0; d < nope; ++d) {
        const float* wk = kvb.data() + (hh * (nope + vd) + d) * L;
        for (int64_t l = 0; l < L; ++l) ql[l] += qn[d] * wk[l];
      }
    }
  std::vector<float> olat(static_cast<size_t>(n * heads * L));
  // YaRN's mscale_all_dim correction scales the whole q.k (transformers' yarn_apply_mscale).
  const double mscale = c.rope_yarn ? c.yarn.softmax_factor() : 1.0;
  const float scale = static_cast<float>(std::pow(static_cast<double>(qk), -0.5) * mscale);
  cpu::latent_attention(qlat.data(), qpe.data(), n, rows, static_cast<int>(heads), static_cast<int>(L), static_cast<int>(R), KL,
                        kv.k(layer), scale, olat.data());
  std::vector<float> a(static_cast<size_t>(n * heads * vd));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t hh = 0; hh < heads; ++hh) {
      const float* ol = olat.data() + (r * heads + hh) * L;
      for (int64_t j = 0; j < vd; ++j) {
        const float* wv = kvb.data() + (hh * (nope + vd) + nope + j) * L;
        float s = 0.f;
        for (int64_t l = 0; l < L; ++l) s += ol[l] * wv[l];
        a[static_cast<size_t>((r * heads + hh) * vd + j)] = s;
      }
    }
  std::vector<float> y(static_cast<size_t>(n * H));
  cpu::matmul(a.data(), n, heads * vd, w.o.data, w.o.dtype, H, y.data());
  for (int64_t i = 0; i < n * H; ++i) x[i] += y[i];
  cpu::rms_norm(x, n, H, w.post_norm.data, w.post_norm.dtype, eps, h);
}

void CpuForward::attention(int layer, float* x, int64_t n, const cpu::KvRow* rows, PagedKvCache& kv, float* h) const {
  const ModelConfig& c = model_->config();
  if (c.mla()) return mla_attention(layer, x, n, rows, kv, h);
  const LayerWeights& w = model_->weights().layers[static_cast<size_t>(layer)];
  const int64_t H = c.hidden_size, QD = c.q_dim(), KD = c.kv_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);
  std::vector<float> buf(static_cast<size_t>(n * (QD + 2 * KD + QD)));
  float* q = buf.data();
  float* k = q + n * QD;
  float* v = k + n * KD;
  float* a = v + n * KD;
  cpu::rms_norm(x, n, H, w.input_norm.data, w.input_norm.dtype, eps, h);
  cpu::matmul(h, n, H, w.q.data, w.q.dtype, QD, q);
  cpu::matmul(h, n, H, w.k.data, w.k.dtype, KD, k);
  cpu::matmul(h, n, H, w.v.data, w.v.dtype, KD, v);
  if (c.qkv_bias) {
    add_bias(q, n, w.q_bias);
    add_bias(k, n, w.k_bias);
    add_bias(v, n, w.v_bias);
  }
  if (c.qk_norm) {
    cpu::rms_norm(q, n * c.num_heads, c.head_dim, w.q_norm.data, w.q_norm.dtype, eps, q);
    cpu::rms_norm(k, n * c.num_kv_heads, c.head_dim, w.k_norm.data, w.k_norm.dtype, eps, k);
  }
  if (c.qk_norm_full) {  // OLMoE: one norm over all heads of a row
    cpu::rms_norm(q, n, QD, w.q_norm.data, w.q_norm.dtype, eps, q);
    cpu::rms_norm(k, n, KD, w.k_norm.data, w.k_norm.dtype, eps, k);
  }
  if (c.clip_qkv > 0) {  // after the norms, as transformers' OLMoE clamps
    const float clip = static_cast<float>(c.clip_qkv);
    for (float* t : {q, k, v}) {
      const int64_t m = n * (t == q ? QD : KD);
      for (int64_t i = 0; i < m; ++i) t[i] = std::clamp(t[i], -clip, clip);
    }
  }
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) pos[r] = rows[r].pos;
  cpu::rope(q, n, c.num_heads, c.head_dim, c.rotary_dim(), pos.data(), inv_freq_.data());
  cpu::rope(k, n, c.num_kv_heads, c.head_dim, c.rotary_dim(), pos.data(), inv_freq_.data());
  const cpu::PagedKvLayout L = kv.layout();
  cpu::kv_write(k, v, n, rows, L, kv.k(layer), kv.v(layer));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  cpu::paged_attention(q, n, rows, c.num_heads, L, kv.k(layer), kv.v(layer), c.sliding_window, scale, a);
  // o-projection into q's space (free now), then the residual add.
  cpu::matmul(a, n, QD, w.o.data, w.o.dtype, H, q);
  for (int64_t i = 0; i < n * H; ++i) x[i] += q[i];
  cpu::rms_norm(x, n, H, w.post_norm.data, w.post_norm.dtype, eps, h);
}

void CpuForward::shared_expert(int layer, const float* h, int64_t n, double* acc) const {
  const ModelConfig& c = model_->config();
  const LayerWeights& lw = model_->weights().layers[static_cast<size_t>(layer)];
  if (!c.has_shared_expert() || !lw.sparse) return;
  const int64_t H = c.hidden_size, I = c.shared_expert_intermediate_size;
  std::vector<float> scratch(static_cast<size_t>(2 * n * I)), y(static_cast<size_t>(n * H)), g(static_cast<size_t>(n));
  const ExpertWeights& s = lw.shared;
  cpu::swiglu_ffn(h, n, H, I, s.gate.data, s.gate.dtype, s.up.data, s.up.dtype, s.down.data, s.down.dtype, scratch.data(),
                  y.data());
  if (c.shared_expert_gate) cpu::matmul(h, n, H, lw.shared_gate.data, lw.shared_gate.dtype, 1, g.data());
  for (int64_t r = 0; r < n; ++r) {
    // The product in float, as transformers forms sigmoid(gate) * shared_expert(h).
    const float sg = c.shared_expert_gate ? 1.0f / (1.0f + std::exp(-g[static_cast<size_t>(r)])) : 1.0f;
    for (int64_t d = 0; d < H; ++d) acc[r * H + d] += static_cast<double>(sg * y[static_cast<size_t>(r * H + d)]);
  }
}

void CpuForward::dense_mlp(int layer, const float* h, int64_t n, float* x) const {
  const ModelConfig& c = model_->config();
  const ExpertWeights& d = model_->weights().layers[static_cast<size_t>(layer)].dense;
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  std::vector<float> scratch(static_cast<size_t>(2 * n * I)), y(static_cast<size_t>(n * H));
  cpu::swiglu_ffn(h, n, H, I, d.gate.data, d.gate.dtype, d.up.data, d.up.dtype, d.down.data, d.down.dtype, scratch.data(),
                  y.data());
  for (int64_t i = 0; i < n * H; ++i) x[i] += y[i];
}

void CpuForward::route(int layer, const float* h, int64_t n, int32_t* ids, float* weights) const {
  const ModelConfig& c = model_->config();
  const WeightView& g = model_->weights().layers[static_cast<size_t>(layer)].router;
  std::vector<float> logits(static_cast<size_t>(n * c.num_experts));
  cpu::matmul(h, n, c.hidden_size, g.data, g.dtype, c.num_experts, logits.data());
  if (c.sigmoid_gate) {  // DeepSeek-V3: sigmoid, selection with the correction bias, group top-2 sums
    const WeightView& bias = model_->weights().layers[static_cast<size_t>(layer)].router_bias;
    std::vector<float> b(static_cast<size_t>(c.num_experts));
    convert_to_f32(bias.data, bias.dtype, b.data(), b.size());
    cpu::gate_topk_sigmoid_grouped(logits.data(), b.data(), n, c.num_experts, c.top_k, c.n_group, c.topk_group,
                                   c.norm_topk_prob, static_cast<float>(c.routed_scaling_factor), ids, weights);
  } else if (c.family == ModelFamily::kDeepseekV2)  // softmax top-k (within the best groups), scaled, never renormalised
    cpu::gate_topk_grouped(logits.data(), n, c.num_experts, c.top_k, c.n_group > 0 ? c.n_group : 1,
                           c.n_group > 0 ? c.topk_group : 1, static_cast<float>(c.routed_scaling_factor), ids, weights);
  else
    cpu::gate_topk(logits.data(), n, c.num_experts, c.top_k, c.norm_topk_prob, ids, weights);
}

void CpuForward::experts(int layer, const float* h, int64_t n, const ExpertWork* work, int64_t n_work, double* acc) const {
  (void)n;
  const ModelConfig& c = model_->config();
  const LayerWeights& lw = model_->weights().layers[static_cast<size_t>(layer)];
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size;
  // Group by expert (stable, so rows keep their order) and run each expert once over
  // its gathered rows.
  std::vector<int64_t> order(static_cast<size_t>(n_work));
  for (int64_t i = 0; i < n_work; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return work[a].expert < work[b].expert; });
  std::vector<int64_t> group_begin;  // start of each expert's run in `order`
  for (int64_t s = 0; s < n_work; ++s)
    if (s == 0 || work[order[s]].expert != work[order[s - 1]].expert) group_begin.push_back(s);
  group_begin.push_back(n_work);
  // Experts run in parallel, each over its gathered rows, into ys (one row per work item
  // in `order`); the accumulation below then runs in one fixed order.
  std::vector<float> ys(static_cast<size_t>(n_work * H));
  const int64_t groups = static_cast<int64_t>(group_begin.size()) - 1;
  parallel_for(groups, 1, [&](int64_t g0, int64_t g1) {
    std::vector<float> xs, scratch;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t s = group_begin[g], m = group_begin[g + 1] - s;
      xs.resize(static_cast<size_t>(m * H));
      scratch.resize(static_cast<size_t>(2 * m * I));
      for (int64_t i = 0; i < m; ++i) std::copy_n(h + work[order[s + i]].row * H, H, xs.data() + i * H);
      const ExpertWeights& ew = lw.experts[static_cast<size_t>(work[order[s]].expert)];
      cpu::swiglu_ffn(xs.data(), m, H, I, ew.gate.data, ew.gate.dtype, ew.up.data, ew.up.dtype, ew.down.data, ew.down.dtype,
                      scratch.data(), ys.data() + s * H);
    }
  });
  for (int64_t s = 0; s < n_work; ++s) {
    const ExpertWork& wk = work[order[s]];
    double* dst = acc + wk.row * H;
    const float* src = ys.data() + s * H;
    const double wgt = wk.weight;
    for (int64_t d = 0; d < H; ++d) dst[d] += wgt * static_cast<double>(src[d]);
  }
}

void CpuForward::add_moe_output(const double* acc, int64_t n, float* x) const {
  const int64_t total = n * model_->config().hidden_size;
  for (int64_t i = 0; i < total; ++i) x[i] += static_cast<float>(acc[i]);
}

void CpuForward::logits(const float* x, int64_t n, float* out) const {
  const ModelConfig& c = model_->config();
  const ModelWeights& w = model_->weights();
  std::vector<float> h(static_cast<size_t>(n * c.hidden_size));
  cpu::rms_norm(x, n, c.hidden_size, w.final_norm.data, w.final_norm.dtype, static_cast<float>(c.rms_norm_eps), h.data());
  cpu::matmul(h.data(), n, c.hidden_size, w.lm_head.data, w.lm_head.dtype, c.vocab_size, out);
}

}  // namespace janus
