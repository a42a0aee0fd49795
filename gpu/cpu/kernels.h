// CPU reference kernels: the exact, readable twin of every CUDA kernel in gpu/cuda.
//
// Plain functions over raw pointers and sizes (as DeepEP's api.cuh), activations in
// fp32, weights in any DType (converted on the fly, accumulated in fp32). Each output
// row depends only on its own input row, never on how many other rows share the call:
// that is what lets the actor graph, which batches rows differently, reproduce the
// reference engine bit for bit. Kernels may split work over the pool in
// runtime/base/parallel.h; results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "runtime/base/dtype.h"

namespace janus::cpu {

/// out[i, :] = table[ids[i], :] for i < n. table is [vocab, dim].
void embedding(const int32_t* ids, int64_t n, const void* table, DType table_dtype, int64_t dim, float* out);

/// y[r] = w * x[r] / sqrt(mean(x[r]^2) + eps), computed as transformers does (fp32).
/// x and y may alias. w is [dim].
void rms_norm(const float* x, int64_t rows, int64_t dim, const void* w, DType w_dtype, float eps, float* y);

/// y[m, n] = sum_k x[m, k] * w[n, k]: a linear layer with PyTorch's [out, in] weight.
/// The sum runs in a fixed order per (m, n) whatever m is.
void matmul(const float* x, int64_t m, int64_t k, const void* w, DType w_dtype, int64_t n, float* y);

/// The inverse frequencies of rotary embeddings: inv_freq[i] = theta^(-2i/head_dim),
/// i < head_dim/2, in fp32 as transformers computes them.
void rope_inv_freq(double theta, int head_dim, float* inv_freq);

/// YaRN's scaled RoPE (transformers' _compute_yarn_parameters), in fp32 where it is: the
/// frequencies theta^(-2i/dim) (extrapolation) and the same divided by `factor`
/// (interpolation), blended per i by a linear ramp between the dimensions that make
/// beta_fast and beta_slow rotations over original_max_position (floor/ceil when
/// truncate). i < dim/2. The cos/sin attention factor is the caller's (rope's `scale`).
void rope_yarn_inv_freq(double theta, int dim, double factor, double original_max_position, double beta_fast,
                        double beta_slow, bool truncate, float* inv_freq);

/// Rotates x [rows, heads, head_dim] in place, the rotate_half (GPT-NeoX) layout over the
/// first rotary_dim values of each head: pairs (i, i + rotary_dim/2) at angle position *
/// inv_freq[i], i < rotary_dim/2; the rest of the head passes through (GLM-4-MoE's partial
/// rotary; rotary_dim == head_dim elsewhere). cos and sin are multiplied by `scale` first
/// (YaRN's attention factor; 1 for plain RoPE).
void rope(float* x, int64_t rows, int heads, int head_dim, int rotary_dim, const int32_t* positions, const float* inv_freq,
          float scale = 1.0f);

/// Rotates x [rows, heads, head_dim] in place, the interleaved (complex-pair) layout
/// DeepSeek's MLA uses: pairs (2i, 2i + 1) at angle position * inv_freq[i], cos and sin
/// times `scale`. No CUDA twin yet.
void rope_interleaved(float* x, int64_t rows, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
                      float scale = 1.0f);

/// Where one row of a ragged batch lives in the paged KV cache.
struct KvRow {
  int32_t seq;  // row of block_tables
  int32_t pos;  // absolute position of the token in its sequence
};

/// Paged KV cache layout of one layer: k and v are [num_blocks, block_size, kv_heads,
/// head_dim]; block_tables is [num_seqs, max_blocks] (physical block of each logical one).
struct PagedKvLayout {
  int32_t block_size = 16;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  const int32_t* block_tables = nullptr;
  int32_t max_blocks = 0;
};

/// Stores k, v [rows, kv_heads, head_dim] at each row's (seq, pos) slot.
void kv_write(const float* k, const float* v, int64_t rows, const KvRow* row, const PagedKvLayout& layout, float* k_cache,
              float* v_cache);

/// Causal attention for a ragged batch over the paged cache: row r (query heads
/// [heads, head_dim]) attends to positions [max(0, pos - window + 1), pos] of its
/// sequence (window 0: all). Grouped-query: query head h reads kv head h / (heads /
/// kv_heads). out is [rows, heads, head_dim].
void paged_attention(const float* q, int64_t rows, const KvRow* row, int heads, const PagedKvLayout& layout,
                     const float* k_cache, const float* v_cache, int sliding_window, float scale, float* out);

/// Stores one entry [kv_heads * head_dim] per row at its (seq, pos) slot of `cache` (a
/// cache without values: MLA's latent and RoPE key).
void kv_write_keys(const float* entry, int64_t rows, const KvRow* row, const PagedKvLayout& layout, float* cache);

/// Multi-head latent attention in its absorbed form over a cache of entries [latent (lora),
/// rope key (rope)] (layout.kv_heads == 1, layout.head_dim == lora + rope): row r's head h
/// scores position t as (q_lat[r, h] . latent_t + q_pe[r, h] . rope_t) * scale, causally
/// over [0, pos], and out_lat[r, h] = sum_t p_t latent_t. q_lat [rows, heads, lora], q_pe
/// [rows, heads, rope], out_lat [rows, heads, lora]. No CUDA twin yet.
void latent_attention(const float* q_lat, const float* q_pe, int64_t rows, const KvRow* row, int heads, int lora, int rope,
                      const PagedKvLayout& layout, const float* cache, float scale, float* out_lat);

/// DeepSeek-V2's group-limited greedy gate: softmax over the router logits [rows,
/// experts]; the experts split into n_group groups scored by their best expert; only the
/// topk_group best groups stay (ties: lower group first); the top_k of their experts
/// (ties: lower id) with weights p * scale. n_group == 1 is the plain greedy gate.
/// CUDA twin: cuda::gate_topk_grouped (gpu/cuda/gate.h).
void gate_topk_grouped(const float* logits, int64_t rows, int experts, int top_k, int n_group, int topk_group, float scale,
                       int32_t* ids, float* weights);

/// DeepSeek-V3's noaux_tc gate: scores sigmoid(logits) [rows, experts]; the choice uses
/// scores + bias (e_score_correction_bias): each of n_group groups is scored by the sum of
/// its two best, the topk_group best groups stay (ties: lower group first), the top_k of
/// their experts are chosen (ties: lower id). Weights are the plain scores of the chosen,
/// divided by their sum (+1e-20) when renormalize, times scale. CUDA twin:
/// cuda::gate_topk_sigmoid_grouped (gpu/cuda/gate.h).
void gate_topk_sigmoid_grouped(const float* logits, const float* bias, int64_t rows, int experts, int top_k, int n_group,
                               int topk_group, bool renormalize, float scale, int32_t* ids, float* weights);

/// Softmax over each row of router logits [rows, experts] (fp32), then the top_k largest
/// (ties: lower expert id first), in descending order; with renormalize, the k weights
/// are divided by their sum. ids and weights are [rows, top_k].
void gate_topk(const float* logits, int64_t rows, int experts, int top_k, bool renormalize, int32_t* ids, float* weights);

/// y = silu(x) * u elementwise over n (y may alias x or u).
void silu_mul(const float* x, const float* u, int64_t n, float* y);

/// One SwiGLU FFN: y[r] = down(silu(gate x[r]) * up x[r]) for rows of x [rows, hidden].
/// scratch holds 2 * rows * inter floats.
void swiglu_ffn(const float* x, int64_t rows, int64_t hidden, int64_t inter, const void* gate, DType gate_dtype,
                const void* up, DType up_dtype, const void* down, DType down_dtype, float* scratch, float* y);

}  // namespace janus::cpu
