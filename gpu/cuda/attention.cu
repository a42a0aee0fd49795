#include "gpu/cuda/attention.h"

#include <algorithm>
#include <cmath>

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

using detail::bf16;
using detail::from_f32;
using detail::to_f32;

constexpr float kLog2e = 1.4426950408889634f;

struct KvAddressing {
  const int32_t* block_tables;
  int32_t max_blocks;
  int32_t block_size;
  int64_t token_stride;  // kv_heads * head_dim

  // Element offset of (seq, pos) in a cache, at kv head 0.
  __device__ __forceinline__ int64_t offset(int32_t seq, int32_t pos) const {
    const int32_t block = block_tables[static_cast<int64_t>(seq) * max_blocks + pos / block_size];
    return (static_cast<int64_t>(block) * block_size + pos % block_size) * token_stride;
  }
};

KvAddressing addressing(const cpu::PagedKvLayout& L) {
  return {L.block_tables, L.max_blocks, L.block_size, static_cast<int64_t>(L.kv_heads) * L.head_dim};
}

__device__ __forceinline__ int first_position(int pos, int window) { return window > 0 ? max(0, pos - window + 1) : 0; }

// -- kv_write ----------------------------------------------------------------------------

template <class ST, class CT>
__global__ void kv_write_kernel(const ST* k, const ST* v, const cpu::KvRow* row, KvAddressing A, CT* kc, CT* vc) {
  const int64_t r = blockIdx.x;
  const int64_t width = A.token_stride;
  const int64_t off = A.offset(row[r].seq, row[r].pos);
  for (int64_t e = threadIdx.x; e < width; e += blockDim.x) {
    kc[off + e] = from_f32<CT>(to_f32(k[r * width + e]));
    vc[off + e] = from_f32<CT>(to_f32(v[r * width + e]));
  }
}

// -- tensor-core path ----------------------------------------------------------------------
//
// One block per (row, kv head, context split): the kv head's whole query group (up to 16
// heads, zero-padded) is the 16-row A tile of mma.sync, so each key and value is read
// once for the group. The 4 warps take interleaved 16-token steps of the split, each
// with its own online softmax; the block merges them at the end. Keys and values go
// straight from memory to registers in the operand order (common.cuh): for q·kᵀ the
// head dimension is permuted as in the weight kernels; for p·v the lane with column g
// owns head dimensions [g * HD/8, (g + 1) * HD/8) and pairs two tokens' values with one
// byte permute per register. Splits (flash-decoding) keep long contexts from serialising
// on a few blocks; their partial outputs are merged by attn_combine_kernel.

constexpr int kAttnThreads = 128;

template <class QT, class OT>
struct AttnParams {
  const QT* q;
  const cpu::KvRow* row;
  int heads, kv_heads, group;
  KvAddressing kv;
  const bf16* k_cache;
  const bf16* v_cache;
  int window;
  float scale_log2;  // scale * log2(e): the softmax runs in base 2
  int split_len, splits;
  OT* out;
  float* part_o;    // [rows, heads, splits, head_dim] (splits > 1)
  float* part_lse;  // [rows, heads, splits], base 2
};

template <int HD, class QT, class OT>
__global__ void __launch_bounds__(kAttnThreads, 3) attn_mma_kernel(AttnParams<QT, OT> p) {
  constexpr int KB = HD / 64;  // 64-element k-blocks of q·kᵀ
  constexpr int NTV = HD / 8;  // 8-column tiles of p·v; also head dims per lane of v
  constexpr int VW = HD / 64;  // 16-byte loads per token per lane of v
  extern __shared__ float smem[];
  float* so = smem;                  // [4 warps][16 rows][HD]
  float* sm = smem + 4 * 16 * HD;    // [4][16] running max
  float* sl = sm + 64;               // [4][16] running sum

  const int64_t r = blockIdx.x;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const cpu::KvRow rr = p.row[r];
  const int first = first_position(rr.pos, p.window);
  // The last split takes everything up to pos, so a max_context that was too small
  // costs speed, never tokens.
  const int lo = max(first, split * p.split_len);
  const int hi = split == p.splits - 1 ? rr.pos : min(rr.pos, (split + 1) * p.split_len - 1);
  if (lo > hi) return;  // this split lies outside the row's range; the combine skips it

  uint32_t qa[KB][8], qb[KB][8];
  const int h0 = kvh * p.group;
  {
    const bool va = g < p.group, vb = g + 8 < p.group;
    const QT* qh = p.q + (r * p.heads + h0) * HD;
#pragma unroll
    for (int kb = 0; kb < KB; ++kb) {
      detail::load_kblock_act(qh + (va ? g : 0) * HD + kb * 64, t, va, qa[kb]);
      detail::load_kblock_act(qh + (vb ? g + 8 : 0) * HD + kb * 64, t, vb, qb[kb]);
    }
  }

  float o[NTV][4];
#pragma unroll
  for (int nt = 0; nt < NTV; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const bf16* kbase = p.k_cache + static_cast<int64_t>(kvh) * HD;
  const bf16* vbase = p.v_cache + static_cast<int64_t>(kvh) * HD + g * NTV;

  for (int tb = (lo & ~15) + 16 * warp; tb <= hi; tb += 64) {
    // Issue every load of the step before any math: 16 x 16 bytes per lane in flight.
    uint32_t kw[2][KB][8];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int tok = tb + 8 * j + g;
      const bool valid = tok >= lo && tok <= hi;
      const bf16* kp = kbase + (valid ? p.kv.offset(rr.seq, tok) : 0);
#pragma unroll
      for (int kb = 0; kb < KB; ++kb) {
        if (valid) {
          detail::load_kblock_stream(kp + kb * 64, t, kw[j][kb]);
        } else {
#pragma unroll
          for (int i = 0; i < 8; ++i) kw[j][kb][i] = 0;
        }
      }
    }
    uint4 vv[4][VW];  // tokens tb + 2t, 2t + 1, 2t + 8, 2t + 9
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int tok = tb + 2 * t + (i & 1) + (i >> 1) * 8;
      const bool valid = tok >= lo && tok <= hi;
      const bf16* vp = vbase + (valid ? p.kv.offset(rr.seq, tok) : 0);
#pragma unroll
      for (int w = 0; w < VW; ++w) vv[i][w] = valid ? detail::ld_stream(vp + 8 * w) : make_uint4(0, 0, 0, 0);
    }

    float s[2][4];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kb = 0; kb < KB; ++kb) detail::mma_kblock(s[j], qa[kb], qb[kb], kw[j][kb]);
    }
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = tb + 8 * j + 2 * t + (e & 1);
        s[j][e] = tok >= lo && tok <= hi ? s[j][e] * p.scale_log2 : -INFINITY;
      }
    float mx0 = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
    float mx1 = fmaxf(fmaxf(s[0][2], s[0][3]), fmaxf(s[1][2], s[1][3]));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    // While a row has seen only masked tokens its max is -inf: exponentiate against 0
    // instead, so that -inf - -inf never makes a NaN.
    const float b0 = mn0 == -INFINITY ? 0.f : mn0, b1 = mn1 == -INFINITY ? 0.f : mn1;
    const float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1);
    m0 = mn0, m1 = mn1;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      s[j][0] = exp2f(s[j][0] - b0), s[j][1] = exp2f(s[j][1] - b0);
      s[j][2] = exp2f(s[j][2] - b1), s[j][3] = exp2f(s[j][3] - b1);
    }
    l0 = l0 * c0 + (s[0][0] + s[0][1]) + (s[1][0] + s[1][1]);
    l1 = l1 * c1 + (s[0][2] + s[0][3]) + (s[1][2] + s[1][3]);
    const uint32_t pa0 = detail::pack_bf16x2(s[0][0], s[0][1]), pa1 = detail::pack_bf16x2(s[0][2], s[0][3]);
    const uint32_t pa2 = detail::pack_bf16x2(s[1][0], s[1][1]), pa3 = detail::pack_bf16x2(s[1][2], s[1][3]);
    const uint32_t* vw0 = reinterpret_cast<const uint32_t*>(vv[0]);
    const uint32_t* vw1 = reinterpret_cast<const uint32_t*>(vv[1]);
    const uint32_t* vw2 = reinterpret_cast<const uint32_t*>(vv[2]);
    const uint32_t* vw3 = reinterpret_cast<const uint32_t*>(vv[3]);
#pragma unroll
    for (int nt = 0; nt < NTV; ++nt) {
      o[nt][0] *= c0, o[nt][1] *= c0, o[nt][2] *= c1, o[nt][3] *= c1;
      const uint32_t sel = (nt & 1) ? 0x7632u : 0x5410u;  // high or low halves of two words
      const uint32_t vb0 = __byte_perm(vw0[nt / 2], vw1[nt / 2], sel);
      const uint32_t vb1 = __byte_perm(vw2[nt / 2], vw3[nt / 2], sel);
      detail::mma_bf16(o[nt], pa0, pa1, pa2, pa3, vb0, vb1);
    }
  }

  // Merge the warps: each warp's sum over its lanes' columns, then the block's rows.
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (t == 0) {
    sm[warp * 16 + g] = m0, sm[warp * 16 + g + 8] = m1;
    sl[warp * 16 + g] = l0, sl[warp * 16 + g + 8] = l1;
  }
#pragma unroll
  for (int nt = 0; nt < NTV; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = g + (e >= 2 ? 8 : 0);
      const int dim = (2 * t + (e & 1)) * NTV + nt;
      so[(warp * 16 + row) * HD + dim] = o[nt][e];
    }
  __syncthreads();
  for (int idx = threadIdx.x; idx < p.group * HD; idx += kAttnThreads) {
    const int row = idx / HD, d = idx % HD;
    float M = -INFINITY;
    for (int w = 0; w < 4; ++w) M = fmaxf(M, sm[w * 16 + row]);
    float L = 0.f, O = 0.f;
    for (int w = 0; w < 4; ++w) {
      const float mw = sm[w * 16 + row];
      if (mw == -INFINITY) continue;
      const float f = exp2f(mw - M);
      L += f * sl[w * 16 + row];
      O += f * so[(w * 16 + row) * HD + d];
    }
    const int64_t rh = r * p.heads + h0 + row;
    if (p.splits == 1) {
      p.out[rh * HD + d] = from_f32<OT>(O / L);
    } else {
      const int64_t ps = rh * p.splits + split;
      p.part_o[ps * HD + d] = O / L;
      if (d == 0) p.part_lse[ps] = M + log2f(L);
    }
  }
}

// Merges the splits of one (row, head): weights 2^(lse - max) over the splits that
// intersect the row's range (exactly those the attention kernel wrote).
template <class OT>
__global__ void attn_combine_kernel(const float* part_o, const float* part_lse, const cpu::KvRow* row, int heads,
                                    int head_dim, int splits, int split_len, int window, OT* out) {
  const int64_t r = blockIdx.x;
  const int h = blockIdx.y;
  const int pos = row[r].pos;
  const int c0 = min(first_position(pos, window) / split_len, splits - 1), c1 = min(pos / split_len, splits - 1);
  const int64_t rh = r * heads + h;
  const float* lse = part_lse + rh * splits;
  float M = -INFINITY;
  for (int c = c0; c <= c1; ++c) M = fmaxf(M, lse[c]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float num = 0.f, den = 0.f;
    for (int c = c0; c <= c1; ++c) {
      const float f = exp2f(lse[c] - M);
      num += f * part_o[(rh * splits + c) * head_dim + d];
      den += f;
    }
    out[rh * head_dim + d] = from_f32<OT>(num / den);
  }
}

// -- fp32 fallback -----------------------------------------------------------------------------
//
// One warp per (row, head), one pass with an online softmax in natural exponentials:
// the CPU twin's function in fp32 to rounding, for any dtype, head_dim and group.

constexpr int kSimtMaxHeadDim = 512;

template <class QT, class KT, class OT>
__global__ void attn_simt_kernel(const QT* q, const cpu::KvRow* row, int heads, int group, int head_dim, KvAddressing A,
                                 const KT* kc, const KT* vc, int window, float scale, OT* out) {
  constexpr int kPerLane = kSimtMaxHeadDim / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int h = blockIdx.y * (blockDim.x / 32) + warp;
  if (h >= heads) return;
  const int64_t r = blockIdx.x;
  const int kvh = h / group;
  const cpu::KvRow rr = row[r];
  float qv[kPerLane], o[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < head_dim ? to_f32(q[(r * heads + h) * head_dim + d]) : 0.f;
    o[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int pos = first_position(rr.pos, window); pos <= rr.pos; ++pos) {
    const int64_t off = A.offset(rr.seq, pos) + static_cast<int64_t>(kvh) * head_dim;
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < head_dim) dot += qv[i] * to_f32(kc[off + d]);
    }
    const float s = detail::warp_sum(dot) * scale;
    const float mn = fmaxf(m, s);
    const float c = expf(m - mn), e = expf(s - mn);
    l = l * c + e;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < head_dim) o[i] = o[i] * c + e * to_f32(vc[off + d]);
    }
    m = mn;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < head_dim) out[(r * heads + h) * head_dim + d] = from_f32<OT>(o[i] / l);
  }
}

struct SplitPlan {
  int splits = 1;
  int split_len = 0;
};

// Enough blocks to fill the GPU a few times over, but at least 128 tokens per split:
// shorter ones spend more on the merge than they save.
SplitPlan split_plan(int64_t rows, int kv_heads, int max_context) {
  SplitPlan plan;
  plan.split_len = std::max(max_context, 1);
  if (max_context <= 0 || rows <= 0) return plan;
  const int64_t base = rows * kv_heads;
  const int64_t want = 4 * static_cast<int64_t>(detail::current_sm_count());
  if (base >= want) return plan;
  int64_t splits = (want + base - 1) / base;
  splits = std::min<int64_t>(splits, (max_context + 127) / 128);
  splits = std::max<int64_t>(splits, 1);
  int len = static_cast<int>((max_context + splits - 1) / splits);
  len = (len + 63) / 64 * 64;
  plan.split_len = len;
  plan.splits = (max_context + len - 1) / len;
  return plan;
}

size_t split_workspace(int64_t rows, int heads, int head_dim, int splits) {
  if (splits <= 1) return 0;
  const size_t parts = static_cast<size_t>(rows) * heads * splits;
  return detail::align_up(parts * head_dim * sizeof(float), 256) + parts * sizeof(float);
}

bool mma_applies(const PagedAttentionArgs& a) {
  const int kvh = a.layout.kv_heads;
  return a.kv_dtype == DType::kBF16 && (a.layout.head_dim == 64 || a.layout.head_dim == 128) && kvh > 0 &&
         a.heads % kvh == 0 && a.heads / kvh <= 16 && (a.q_dtype == DType::kF32 || a.q_dtype == DType::kBF16) &&
         detail::aligned16(a.q) && detail::aligned16(a.k_cache) && detail::aligned16(a.v_cache);
}

template <int HD, class QT, class OT>
Status launch_mma(const PagedAttentionArgs& a, SplitPlan plan, cudaStream_t stream) {
  AttnParams<QT, OT> p;
  p.q = static_cast<const QT*>(a.q);
  p.row = a.row;
  p.heads = a.heads;
  p.kv_heads = a.layout.kv_heads;
  p.group = a.heads / a.layout.kv_heads;
  p.kv = addressing(a.layout);
  p.k_cache = static_cast<const bf16*>(a.k_cache);
  p.v_cache = static_cast<const bf16*>(a.v_cache);
  p.window = a.sliding_window;
  p.scale_log2 = a.scale * kLog2e;
  p.split_len = plan.split_len;
  p.splits = plan.splits;
  p.out = static_cast<OT*>(a.out);
  p.part_o = static_cast<float*>(a.workspace);
  p.part_lse = reinterpret_cast<float*>(static_cast<char*>(a.workspace) +
                                        detail::align_up(static_cast<size_t>(a.rows) * a.heads * plan.splits * HD *
                                                             sizeof(float), 256));
  const size_t smem = (4 * 16 * HD + 128) * sizeof(float);
  dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>(a.layout.kv_heads), static_cast<unsigned>(plan.splits));
  attn_mma_kernel<HD, QT, OT><<<grid, kAttnThreads, smem, stream>>>(p);
  JANUS_CUDA_TRY_LAUNCH();
  if (plan.splits > 1) {
    attn_combine_kernel<OT><<<dim3(static_cast<unsigned>(a.rows), static_cast<unsigned>(a.heads)), HD, 0, stream>>>(
        p.part_o, p.part_lse, a.row, a.heads, HD, plan.splits, plan.split_len, a.sliding_window, p.out);
    JANUS_CUDA_TRY_LAUNCH();
  }
  return Status::Ok();
}

}  // namespace

Status kv_write(const void* k, const void* v, DType src_dtype, int64_t rows, const cpu::KvRow* row,
                const cpu::PagedKvLayout& layout, void* k_cache, void* v_cache, DType cache_dtype, cudaStream_t stream) {
  if (rows == 0) return Status::Ok();
  return detail::dispatch_float(src_dtype, "kv_write k/v", [&](auto st) {
    using ST = typename decltype(st)::type;
    return detail::dispatch_float(cache_dtype, "KV cache", [&](auto ct) {
      using CT = typename decltype(ct)::type;
      kv_write_kernel<ST, CT><<<static_cast<unsigned>(rows), 256, 0, stream>>>(
          static_cast<const ST*>(k), static_cast<const ST*>(v), row, addressing(layout), static_cast<CT*>(k_cache),
          static_cast<CT*>(v_cache));
      JANUS_CUDA_TRY_LAUNCH();
      return Status::Ok();
    });
  });
}

size_t paged_attention_workspace_bytes(int64_t rows, int heads, int kv_heads, int head_dim, int max_context) {
  return split_workspace(rows, heads, head_dim, split_plan(rows, kv_heads, max_context).splits);
}

bool paged_attention_uses_tensor_cores(const PagedAttentionArgs& a) { return mma_applies(a); }

Status paged_attention(const PagedAttentionArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return Status::Ok();
  const cpu::PagedKvLayout& L = a.layout;
  if (L.kv_heads <= 0 || a.heads % L.kv_heads != 0)
    return invalid_argument("paged_attention: " + std::to_string(a.heads) + " query heads are not a multiple of " +
                            std::to_string(L.kv_heads) + " kv heads");
  if (L.head_dim <= 0 || L.head_dim > kSimtMaxHeadDim)
    return unsupported("paged_attention: head_dim " + std::to_string(L.head_dim) + " (at most 512)");
  if (a.rows > 0x7fffffff) return unsupported("paged_attention: too many rows");
  if (mma_applies(a)) {
    SplitPlan plan = split_plan(a.rows, L.kv_heads, a.max_context);
    while (plan.splits > 1 && split_workspace(a.rows, a.heads, L.head_dim, plan.splits) > a.workspace_bytes) {
      // Not enough workspace for the preferred plan: halve the splits until it fits.
      const int splits = plan.splits / 2;
      plan.split_len = (a.max_context + splits - 1) / splits;
      plan.split_len = (plan.split_len + 63) / 64 * 64;
      plan.splits = (a.max_context + plan.split_len - 1) / plan.split_len;
    }
    if (plan.splits <= 1) plan = SplitPlan{1, std::max(a.max_context, 1 << 30)};
    return detail::dispatch_float(a.q_dtype, "attention q", [&](auto qt) {
      using QT = typename decltype(qt)::type;
      return detail::dispatch_float(a.out_dtype, "attention output", [&](auto ot) {
        using OT = typename decltype(ot)::type;
        return L.head_dim == 64 ? launch_mma<64, QT, OT>(a, plan, stream) : launch_mma<128, QT, OT>(a, plan, stream);
      });
    });
  }
  return detail::dispatch_float(a.q_dtype, "attention q", [&](auto qt) {
    using QT = typename decltype(qt)::type;
    return detail::dispatch_float(a.kv_dtype, "KV cache", [&](auto kt) {
      using KT = typename decltype(kt)::type;
      return detail::dispatch_float(a.out_dtype, "attention output", [&](auto ot) {
        using OT = typename decltype(ot)::type;
        constexpr int kWarps = 4;
        dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>((a.heads + kWarps - 1) / kWarps));
        attn_simt_kernel<QT, KT, OT><<<grid, kWarps * 32, 0, stream>>>(
            static_cast<const QT*>(a.q), a.row, a.heads, a.heads / L.kv_heads, L.head_dim, addressing(L),
            static_cast<const KT*>(a.k_cache), static_cast<const KT*>(a.v_cache), a.sliding_window, a.scale,
            static_cast<OT*>(a.out));
        JANUS_CUDA_TRY_LAUNCH();
        return Status::Ok();
      });
    });
  });
}

}  // namespace janus::cuda
