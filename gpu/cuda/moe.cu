#include "gpu/cuda/moe.h"

#include <algorithm>
#include <string>

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

using detail::bf16;
using detail::from_f32;
using detail::to_f32;

// -- workspace -----------------------------------------------------------------------------

struct WorkspaceLayout {
  size_t offsets, active, num_active, entry_row, entry_of, counters, act, y, total;
};

WorkspaceLayout workspace_layout(int64_t rows, int top_k, int num_slots, int64_t hidden, int64_t inter) {
  const size_t n = static_cast<size_t>(rows) * top_k;
  WorkspaceLayout L{};
  size_t o = 0;
  auto take = [&](size_t bytes) {
    const size_t at = o;
    o += detail::align_up(std::max<size_t>(bytes, 1), 256);
    return at;
  };
  L.offsets = take(4 * (static_cast<size_t>(num_slots) + 1));
  L.active = take(4 * static_cast<size_t>(num_slots));
  L.num_active = take(4);
  L.entry_row = take(4 * n);
  L.entry_of = take(4 * n);
  L.counters = take(4 * (static_cast<size_t>(num_slots) + 1));
  L.act = take(4 * n * static_cast<size_t>(inter));  // fp32 on the fallback, bf16 on tensor cores
  L.y = take(4 * n * static_cast<size_t>(hidden));
  L.total = o;
  return L;
}

template <class T>
T* at(void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

// -- work list -----------------------------------------------------------------------------
//
// Three small launches: count per slot, scan, fill. A warp owns a slot and walks all
// choices in order with ballots, so entries come out sorted by (row, choice) with no
// atomics: the list is the same on every run.

constexpr int kListWarps = 4;

__global__ void count_kernel(const int32_t* slot, int n, int num_slots, int32_t* counts) {
  const int s = blockIdx.x * kListWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (s >= num_slots) return;
  int c = 0;
  for (int base = 0; base < n; base += 32) {
    const int i = base + lane;
    c += __popc(__ballot_sync(0xffffffffu, i < n && slot[i] == s));
  }
  if (lane == 0) counts[s] = c;
}

constexpr int kScanThreads = 1024;

// Exclusive prefix sum over the block; *total gets the block's sum.
__device__ int block_exclusive_scan(int v, int* total) {
  __shared__ int warp_sums[kScanThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int inc = v;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int u = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += u;
  }
  __syncthreads();
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < kScanThreads / 32; ++w) {
    if (w < warp) before += warp_sums[w];
    all += warp_sums[w];
  }
  *total = all;
  return before + inc - v;
}

__global__ void __launch_bounds__(kScanThreads) scan_kernel(const int32_t* slot, int n, int num_slots, int32_t* offsets,
                                                            int32_t* active, int32_t* num_active, int32_t* entry_of) {
  int carry = 0, carry_active = 0;
  for (int base = 0; base < num_slots; base += kScanThreads) {
    const int s = base + threadIdx.x;
    const int c = s < num_slots ? offsets[s] : 0;  // the counts, replaced in place
    int total, total_active;
    const int ex = block_exclusive_scan(c, &total);
    const int ex_active = block_exclusive_scan(c > 0 ? 1 : 0, &total_active);
    if (s < num_slots) {
      offsets[s] = carry + ex;
      if (c > 0) active[carry_active + ex_active] = s;
    }
    carry += total;
    carry_active += total_active;
  }
  if (threadIdx.x == 0) {
    offsets[num_slots] = carry;
    *num_active = carry_active;
  }
  for (int i = threadIdx.x; i < n; i += kScanThreads)
    if (slot[i] < 0 || slot[i] >= num_slots) entry_of[i] = -1;
}

__global__ void fill_kernel(const int32_t* slot, int n, int top_k, int num_slots, const int32_t* offsets,
                            int32_t* entry_row, int32_t* entry_of) {
  const int s = blockIdx.x * kListWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (s >= num_slots) return;
  int next = offsets[s];
  for (int base = 0; base < n; base += 32) {
    const int i = base + lane;
    const bool mine = i < n && slot[i] == s;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (mine) {
      const int e = next + __popc(ballot & ((1u << lane) - 1u));
      entry_row[e] = i / top_k;
      entry_of[i] = e;
    }
    next += __popc(ballot);
  }
}

// -- tensor-core FFN -------------------------------------------------------------------------
//
// Decode is memory-bound: an activated expert sees a few rows, so the time is its
// weights' bytes over HBM bandwidth. One persistent kernel streams every weight byte of
// the activated slots exactly once (16-byte loads, 16 or 24 per lane in flight, L1
// bypassed) through mma.sync with the weight rows as the 16-row A tile and the slot's
// rows of x as 8-column B tiles (common.cuh), in fp32 accumulators.
//
// Work items, handed out by an atomic counter in order: first every (slot, 64-row tile)
// of gate/up — a warp owns 16 gate rows and the same 16 up rows, so silu(g) * u is
// formed in registers and written as a BF16 activation row per entry — then every
// (slot, 64-row tile) of down over those activations. A down item waits (one thread
// spinning on an acquire load) until its slot's gate/up items have all published; the
// items it waits for were taken earlier by running blocks that never wait, so this
// cannot deadlock, and by the time down items are taken those are usually long done.
// One kernel instead of two removes the drain between the phases: blocks that finish
// gate/up go straight on to down.
//
// Slots with more than 8 * NT rows are processed 8 * NT rows at a time, streaming the
// weights again per chunk (prefill-sized batches; decode stays within one chunk).

constexpr int kMoeThreads = 128;  // 4 warps x 16 rows = one 64-row tile per item
constexpr int kTileRows = 64;
constexpr int kDownChunk = 1024;  // k-chunk of activations staged in shared memory
// 64-element k-blocks whose weight loads a warp issues before it waits for any: 16 (gate/
// up) or 24 (down) loads of 16 bytes per lane, 8 or 12 KB per warp, 64 to 96 KB per SM at
// two resident blocks. More spills registers (about 250 used, no spills).
constexpr int kGateUpUnroll = 2;  // x 8 loads (2 gate + 2 up rows, 2 halves each)
constexpr int kDownUnroll = 6;    // x 4 loads (2 rows, 2 halves each)

template <class XT>
struct MoeMmaParams {
  const XT* x;
  int hidden, inter;
  const bf16* const* gate;
  const bf16* const* up;
  const bf16* const* down;
  const int32_t* offsets;
  const int32_t* active;
  const int32_t* num_active;
  const int32_t* entry_row;
  bf16* act;      // [entries, inter]
  float* y;       // [entries, hidden]
  int* counters;  // [0]: next item; [1 + a]: gate/up items of active slot a published
  int kc;         // activation k-chunk (elements, multiple of 64)
};

template <int NT, class XT>
__device__ __forceinline__ void gate_up_item(const MoeMmaParams<XT>& p, int slot, int tile) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int H = p.hidden, I = p.inter;
  const int off = p.offsets[slot], cnt = p.offsets[slot + 1] - off;
  const int i0 = tile * kTileRows + warp * 16;
  const bf16* g0 = p.gate[slot] + static_cast<int64_t>(i0 + g) * H;
  const bf16* g1 = g0 + 8 * static_cast<int64_t>(H);
  const bf16* u0 = p.up[slot] + static_cast<int64_t>(i0 + g) * H;
  const bf16* u1 = u0 + 8 * static_cast<int64_t>(H);
  const int nkb = H / 64;
  for (int c0 = 0; c0 < cnt; c0 += 8 * NT) {
    const XT* xr[NT];
    bool xv[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int e = c0 + nt * 8 + g;
      xv[nt] = e < cnt;
      xr[nt] = p.x + static_cast<int64_t>(xv[nt] ? p.entry_row[off + e] : 0) * H;
    }
    float ag[NT][4], au[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) ag[nt][e] = au[nt][e] = 0.f;
    for (int kb = 0; kb < nkb; kb += kGateUpUnroll) {
      constexpr int U = kGateUpUnroll;
      uint32_t wg0[U][8], wg1[U][8], wu0[U][8], wu1[U][8];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (kb + u < nkb) {
          const int k = (kb + u) * 64;
          detail::load_kblock_stream(g0 + k, t, wg0[u]);
          detail::load_kblock_stream(g1 + k, t, wg1[u]);
          detail::load_kblock_stream(u0 + k, t, wu0[u]);
          detail::load_kblock_stream(u1 + k, t, wu1[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (kb + u < nkb) {
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            if (c0 + nt * 8 < cnt) {
              uint32_t xb[8];
              detail::load_kblock_act(xr[nt] + (kb + u) * 64, t, xv[nt], xb);
              detail::mma_kblock(ag[nt], wg0[u], wg1[u], xb);
              detail::mma_kblock(au[nt], wu0[u], wu1[u], xb);
            }
          }
        }
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = c0 + nt * 8 + 2 * t + (e & 1);
        const int row = i0 + g + (e >= 2 ? 8 : 0);
        if (tok < cnt) p.act[static_cast<int64_t>(off + tok) * I + row] = from_f32<bf16>(detail::silu_mul(ag[nt][e], au[nt][e]));
      }
  }
}

template <int NT, class XT>
__device__ __forceinline__ void down_item(const MoeMmaParams<XT>& p, int slot, int tile, bf16* s_act) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int H = p.hidden, I = p.inter;
  const int off = p.offsets[slot], cnt = p.offsets[slot + 1] - off;
  const int h0 = tile * kTileRows + warp * 16;
  const bf16* d0 = p.down[slot] + static_cast<int64_t>(h0 + g) * I;
  const bf16* d1 = d0 + 8 * static_cast<int64_t>(I);
  // Row stride of the staged activations: 64 bytes of padding put rows g and g + 1 in
  // opposite halves of the 32 banks, so a warp's 16-byte reads take 4 wavefronts, not 8.
  const int srow = p.kc + 32;
  for (int c0 = 0; c0 < cnt; c0 += 8 * NT) {
    const int ntok = min(8 * NT, cnt - c0);
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    for (int kc0 = 0; kc0 < I; kc0 += p.kc) {
      const int kc = min(p.kc, I - kc0);
      const int units = kc / 8;  // 16-byte units per row
      const int nkb = kc / 64;
      constexpr int U = kDownUnroll;
      // Start the first weight lines towards L2 while the activations are staged.
      if (t == 0)
        for (int u = 0; u < U && u < nkb; ++u) {
          detail::prefetch_l2(d0 + kc0 + u * 64);
          detail::prefetch_l2(d1 + kc0 + u * 64);
        }
      __syncthreads();  // the previous chunk's readers are done
      for (int u = threadIdx.x; u < 8 * NT * units; u += kMoeThreads) {
        const int rr = u / units, cc = u % units;
        uint4 v = make_uint4(0, 0, 0, 0);
        // Written by this launch's gate/up items: read through L2 (.cg), never a
        // possibly stale L1 line.
        if (rr < ntok) v = __ldcg(reinterpret_cast<const uint4*>(p.act + static_cast<int64_t>(off + c0 + rr) * I + kc0) + cc);
        *reinterpret_cast<uint4*>(s_act + rr * srow + cc * 8) = v;
      }
      __syncthreads();
      for (int kb = 0; kb < nkb; kb += U) {
        uint32_t w0[U][8], w1[U][8];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (kb + u < nkb) {
            const int k = kc0 + (kb + u) * 64;
            detail::load_kblock_stream(d0 + k, t, w0[u]);
            detail::load_kblock_stream(d1 + k, t, w1[u]);
          }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (kb + u < nkb) {
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              if (nt * 8 < ntok) {
                const bf16* sr = s_act + (nt * 8 + g) * srow + (kb + u) * 64;
                const uint4 lo = *reinterpret_cast<const uint4*>(sr + 8 * t);
                const uint4 hi = *reinterpret_cast<const uint4*>(sr + 32 + 8 * t);
                const uint32_t xb[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
                detail::mma_kblock(acc[nt], w0[u], w1[u], xb);
              }
            }
          }
        }
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = c0 + nt * 8 + 2 * t + (e & 1);
        const int row = h0 + g + (e >= 2 ? 8 : 0);
        if (tok < cnt) p.y[static_cast<int64_t>(off + tok) * H + row] = acc[nt][e];
      }
  }
}

template <int NT, class XT>
__global__ void __launch_bounds__(kMoeThreads, 2) moe_mma_kernel(MoeMmaParams<XT> p) {
  extern __shared__ uint4 moe_smem[];
  bf16* s_act = reinterpret_cast<bf16*>(moe_smem);
  __shared__ int s_item;
  const int tiles_gu = p.inter / kTileRows, tiles_dn = p.hidden / kTileRows;
  const int nact = *p.num_active;
  const int total_gu = nact * tiles_gu, total = nact * (tiles_gu + tiles_dn);
  for (;;) {
    if (threadIdx.x == 0) s_item = atomicAdd(&p.counters[0], 1);
    __syncthreads();
    const int item = s_item;
    __syncthreads();
    if (item >= total) break;
    if (item < total_gu) {
      const int a = item / tiles_gu;
      gate_up_item<NT>(p, p.active[a], item % tiles_gu);
      // Publish: every thread's activation stores are made visible at device scope
      // before the count moves.
      __threadfence();
      __syncthreads();
      if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(&p.counters[1 + a], 1);
      }
    } else {
      const int j = item - total_gu;
      const int a = j / tiles_dn;
      if (threadIdx.x == 0) {
        while (detail::ld_acquire(&p.counters[1 + a]) < tiles_gu) __nanosleep(100);
        __threadfence();
      }
      __syncthreads();
      down_item<NT>(p, p.active[a], j % tiles_dn, s_act);
    }
  }
}

template <int NT, class XT>
Status launch_mma(const MoeArgs& a, const WorkspaceLayout& L, const MoeWorkList& wl, cudaStream_t stream) {
  MoeMmaParams<XT> p;
  p.x = static_cast<const XT*>(a.x);
  p.hidden = static_cast<int>(a.experts.hidden);
  p.inter = static_cast<int>(a.experts.inter);
  p.gate = reinterpret_cast<const bf16* const*>(a.experts.gate);
  p.up = reinterpret_cast<const bf16* const*>(a.experts.up);
  p.down = reinterpret_cast<const bf16* const*>(a.experts.down);
  p.offsets = wl.slot_offsets;
  p.active = wl.active_slots;
  p.num_active = wl.num_active;
  p.entry_row = wl.entry_row;
  p.act = static_cast<bf16*>(wl.entry_act);
  p.y = wl.entry_out;
  p.counters = at<int>(a.workspace, L.counters);
  p.kc = std::min(p.inter, kDownChunk);
  const size_t smem = static_cast<size_t>(8 * NT) * (p.kc + 32) * sizeof(bf16);
  auto kernel = moe_mma_kernel<NT, XT>;
  JANUS_CUDA_TRY(detail::allow_dynamic_smem(kernel, static_cast<int>(8 * NT * (kDownChunk + 32) * sizeof(bf16))));
  // A persistent grid: as many blocks as can be resident, each taking items until none
  // are left.
  int blocks_per_sm = 0;
  JANUS_CUDA_TRY(detail::resident_blocks_per_sm(kernel, kMoeThreads, smem, &blocks_per_sm));
  JANUS_CUDA_TRY(cudaMemsetAsync(p.counters, 0, sizeof(int) * (static_cast<size_t>(a.experts.num_slots) + 1), stream));
  const int blocks = detail::current_sm_count() * std::max(blocks_per_sm, 1);
  kernel<<<blocks, kMoeThreads, smem, stream>>>(p);
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

// -- fp32 fallback -------------------------------------------------------------------------------
//
// Any dtype and shape: a warp per output row of one active slot, lanes striding over k,
// four entries at a time. Fp32 to rounding, slow; the reference for the fast path.

constexpr int kSimtWarps = 8;

template <class XT, class WT>
__global__ void gate_up_simt_kernel(const XT* x, int64_t H, int64_t I, const WT* const* gate, const WT* const* up,
                                    const int32_t* offsets, const int32_t* active, const int32_t* num_active,
                                    const int32_t* entry_row, float* act) {
  if (static_cast<int>(blockIdx.y) >= *num_active) return;
  const int lane = threadIdx.x % 32;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kSimtWarps + threadIdx.x / 32;
  if (i >= I) return;
  const int slot = active[blockIdx.y];
  const int off = offsets[slot], cnt = offsets[slot + 1] - off;
  const WT* gw = gate[slot] + i * H;
  const WT* uw = up[slot] + i * H;
  for (int c0 = 0; c0 < cnt; c0 += 4) {
    const XT* xr[4];
    for (int n = 0; n < 4; ++n) xr[n] = x + static_cast<int64_t>(c0 + n < cnt ? entry_row[off + c0 + n] : 0) * H;
    float ag[4] = {0, 0, 0, 0}, au[4] = {0, 0, 0, 0};
    for (int64_t k = lane; k < H; k += 32) {
      const float wg = to_f32(gw[k]), wu = to_f32(uw[k]);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        const float xv = to_f32(xr[n][k]);
        ag[n] += wg * xv;
        au[n] += wu * xv;
      }
    }
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const float gs = detail::warp_sum(ag[n]), us = detail::warp_sum(au[n]);
      if (lane == 0 && c0 + n < cnt) act[static_cast<int64_t>(off + c0 + n) * I + i] = detail::silu_mul(gs, us);
    }
  }
}

template <class WT>
__global__ void down_simt_kernel(int64_t H, int64_t I, const WT* const* down, const int32_t* offsets,
                                 const int32_t* active, const int32_t* num_active, const float* act, float* y) {
  if (static_cast<int>(blockIdx.y) >= *num_active) return;
  const int lane = threadIdx.x % 32;
  const int64_t h = static_cast<int64_t>(blockIdx.x) * kSimtWarps + threadIdx.x / 32;
  if (h >= H) return;
  const int slot = active[blockIdx.y];
  const int off = offsets[slot], cnt = offsets[slot + 1] - off;
  const WT* dw = down[slot] + h * I;
  for (int c0 = 0; c0 < cnt; c0 += 4) {
    float acc[4] = {0, 0, 0, 0};
    for (int64_t k = lane; k < I; k += 32) {
      const float w = to_f32(dw[k]);
#pragma unroll
      for (int n = 0; n < 4; ++n)
        if (c0 + n < cnt) acc[n] += w * act[static_cast<int64_t>(off + c0 + n) * I + k];
    }
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const float s = detail::warp_sum(acc[n]);
      if (lane == 0 && c0 + n < cnt) y[static_cast<int64_t>(off + c0 + n) * H + h] = s;
    }
  }
}

// -- combine ---------------------------------------------------------------------------------------

template <class OT>
__global__ void combine_kernel(const float* y, const int32_t* entry_of, const float* weight, int top_k, int64_t H, OT* out,
                               bool accumulate) {
  const int64_t r = blockIdx.x;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float s = 0.f;
    for (int j = 0; j < top_k; ++j) {
      const int e = entry_of[r * top_k + j];
      if (e >= 0) s += weight[r * top_k + j] * y[static_cast<int64_t>(e) * H + h];
    }
    OT* dst = out + r * H + h;
    *dst = from_f32<OT>(accumulate ? to_f32(*dst) + s : s);
  }
}

Status check_args(const MoeArgs& a) {
  const MoeExperts& E = a.experts;
  if (E.num_slots <= 0 || E.hidden <= 0 || E.inter <= 0 || a.top_k <= 0)
    return invalid_argument("moe: empty shape (num_slots " + std::to_string(E.num_slots) + ", hidden " +
                            std::to_string(E.hidden) + ", inter " + std::to_string(E.inter) + ", top_k " +
                            std::to_string(a.top_k) + ")");
  if (a.rows * a.top_k > 0x7fffffff || E.hidden * E.inter > (int64_t{1} << 40))
    return unsupported("moe: rows * top_k or the expert shape is too large");
  const size_t need = moe_workspace_bytes(a.rows, a.top_k, E.num_slots, E.hidden, E.inter);
  if (!a.workspace || a.workspace_bytes < need)
    return invalid_argument("moe: workspace of " + std::to_string(a.workspace_bytes) + " bytes, " + std::to_string(need) +
                            " needed");
  return Status::Ok();
}

}  // namespace

size_t moe_workspace_bytes(int64_t rows, int top_k, int num_slots, int64_t hidden, int64_t inter) {
  return workspace_layout(rows, top_k, num_slots, hidden, inter).total;
}

MoeWorkList moe_work_list(void* workspace, int64_t rows, int top_k, int num_slots, int64_t hidden, int64_t inter) {
  const WorkspaceLayout L = workspace_layout(rows, top_k, num_slots, hidden, inter);
  MoeWorkList w;
  w.slot_offsets = at<int32_t>(workspace, L.offsets);
  w.active_slots = at<int32_t>(workspace, L.active);
  w.num_active = at<int32_t>(workspace, L.num_active);
  w.entry_row = at<int32_t>(workspace, L.entry_row);
  w.entry_of = at<int32_t>(workspace, L.entry_of);
  w.entry_act = at<void>(workspace, L.act);
  w.entry_out = at<float>(workspace, L.y);
  return w;
}

bool moe_uses_tensor_cores(const MoeArgs& a) {
  const MoeExperts& E = a.experts;
  return E.dtype == DType::kBF16 && E.hidden % 64 == 0 && E.inter % 64 == 0 &&
         (a.x_dtype == DType::kF32 || a.x_dtype == DType::kBF16) && detail::aligned16(a.x);
}

Status moe_build_work_list(const MoeArgs& a, cudaStream_t stream) {
  JANUS_TRY(check_args(a));
  const int n = static_cast<int>(a.rows * a.top_k);
  const int S = a.experts.num_slots;
  const MoeWorkList wl = moe_work_list(a.workspace, a.rows, a.top_k, S, a.experts.hidden, a.experts.inter);
  const unsigned slot_blocks = static_cast<unsigned>((S + kListWarps - 1) / kListWarps);
  count_kernel<<<slot_blocks, kListWarps * 32, 0, stream>>>(a.choice_slot, n, S, wl.slot_offsets);
  JANUS_CUDA_TRY_LAUNCH();
  scan_kernel<<<1, kScanThreads, 0, stream>>>(a.choice_slot, n, S, wl.slot_offsets, wl.active_slots, wl.num_active,
                                              wl.entry_of);
  JANUS_CUDA_TRY_LAUNCH();
  fill_kernel<<<slot_blocks, kListWarps * 32, 0, stream>>>(a.choice_slot, n, a.top_k, S, wl.slot_offsets, wl.entry_row,
                                                           wl.entry_of);
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

Status moe_grouped_ffn(const MoeArgs& a, cudaStream_t stream) {
  JANUS_TRY(check_args(a));
  if (a.rows == 0) return Status::Ok();
  const MoeExperts& E = a.experts;
  const WorkspaceLayout L = workspace_layout(a.rows, a.top_k, E.num_slots, E.hidden, E.inter);
  const MoeWorkList wl = moe_work_list(a.workspace, a.rows, a.top_k, E.num_slots, E.hidden, E.inter);
  if (moe_uses_tensor_cores(a)) {
    // Column tiles of the slot's rows held in registers: rows beyond 8 * NT take
    // another pass over the weights, so NT follows the largest possible row count.
    const int64_t most = a.rows;
    return detail::dispatch_float(a.x_dtype, "moe x", [&](auto xt) {
      using XT = typename decltype(xt)::type;
      if (most <= 8) return launch_mma<1, XT>(a, L, wl, stream);
      if (most <= 16) return launch_mma<2, XT>(a, L, wl, stream);
      return launch_mma<4, XT>(a, L, wl, stream);
    });
  }
  const unsigned max_active = static_cast<unsigned>(std::min<int64_t>(E.num_slots, a.rows * a.top_k));
  float* act = static_cast<float*>(wl.entry_act);
  float* y = wl.entry_out;
  return detail::dispatch_float(a.x_dtype, "moe x", [&](auto xt) {
    using XT = typename decltype(xt)::type;
    return detail::dispatch_float(E.dtype, "moe expert weights", [&](auto wt) {
      using WT = typename decltype(wt)::type;
      const auto* gate = reinterpret_cast<const WT* const*>(E.gate);
      const auto* up = reinterpret_cast<const WT* const*>(E.up);
      const auto* down = reinterpret_cast<const WT* const*>(E.down);
      gate_up_simt_kernel<XT, WT><<<dim3(static_cast<unsigned>((E.inter + kSimtWarps - 1) / kSimtWarps), max_active),
                                    kSimtWarps * 32, 0, stream>>>(static_cast<const XT*>(a.x), E.hidden, E.inter, gate, up,
                                                                  wl.slot_offsets, wl.active_slots, wl.num_active,
                                                                  wl.entry_row, act);
      JANUS_CUDA_TRY_LAUNCH();
      down_simt_kernel<WT><<<dim3(static_cast<unsigned>((E.hidden + kSimtWarps - 1) / kSimtWarps), max_active),
                             kSimtWarps * 32, 0, stream>>>(E.hidden, E.inter, down, wl.slot_offsets, wl.active_slots,
                                                           wl.num_active, act, y);
      JANUS_CUDA_TRY_LAUNCH();
      return Status::Ok();
    });
  });
}

Status moe_combine(const MoeArgs& a, cudaStream_t stream) {
  JANUS_TRY(check_args(a));
  if (a.rows == 0) return Status::Ok();
  const MoeExperts& E = a.experts;
  const MoeWorkList wl = moe_work_list(a.workspace, a.rows, a.top_k, E.num_slots, E.hidden, E.inter);
  return detail::dispatch_float(a.out_dtype, "moe output", [&](auto ot) {
    using OT = typename decltype(ot)::type;
    combine_kernel<OT><<<static_cast<unsigned>(a.rows), 256, 0, stream>>>(wl.entry_out, wl.entry_of,
                                                                         a.choice_weight, a.top_k, E.hidden,
                                                                         static_cast<OT*>(a.out), a.accumulate);
    JANUS_CUDA_TRY_LAUNCH();
    return Status::Ok();
  });
}

namespace {
__global__ void choices_from_routing_kernel(const int32_t* ids, const float* weights, int64_t n, const int32_t* slot_of,
                                            int num_experts, int32_t* choice_slot, float* choice_weight) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t e = ids[i];
    const int32_t s = e >= 0 && e < num_experts ? slot_of[e] : -1;
    choice_slot[i] = s;
    choice_weight[i] = s >= 0 ? weights[i] : 0.f;
  }
}
}  // namespace

Status moe_choices_from_routing(const int32_t* ids, const float* weights, int64_t choices, const int32_t* slot_of,
                                int num_experts, int32_t* choice_slot, float* choice_weight, cudaStream_t stream) {
  if (choices < 0 || num_experts <= 0) return invalid_argument("moe routing: negative choice count or no experts");
  if (choices == 0) return Status::Ok();
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((choices + 255) / 256, 1024));
  choices_from_routing_kernel<<<blocks, 256, 0, stream>>>(ids, weights, choices, slot_of, num_experts, choice_slot,
                                                          choice_weight);
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

Status moe_expert_layer(const MoeArgs& a, cudaStream_t stream) {
  JANUS_TRY(moe_build_work_list(a, stream));
  JANUS_TRY(moe_grouped_ffn(a, stream));
  return moe_combine(a, stream);
}

}  // namespace janus::cuda
