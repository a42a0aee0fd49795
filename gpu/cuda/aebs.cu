// The AEBS kernel: see gpu/cuda/aebs.h for the outline and gpu/cpu/aebs.h for the
// algorithm it reproduces bit for bit.
#include "gpu/cuda/aebs.h"

#include <algorithm>
#include <vector>

#include "gpu/cuda/device.h"

namespace janus::cuda {

namespace {

constexpr int kMaxInstances = 64;
constexpr int kMaxWarps = 32;
constexpr int kMinWarps = 4;
constexpr int kMaxExperts = 8192;
constexpr int kMaxPerInstance = 4095;  // load and pending are packed into 12 and 14 bits
constexpr int64_t kMaxStagedChoices = 65535;  // staged entries pack a 16-bit rank
constexpr unsigned kFull = 0xffffffffu;

struct Params {
  AebsTableView t;
  const int32_t* ids;
  int32_t n;        // choices T*k
  int32_t segment;  // choices per warp, a multiple of 32
  int32_t staged;   // 1: ids staged in shared memory
  AebsOutputs out;
};

__device__ __forceinline__ unsigned lanemask_lt() {
  unsigned m;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(m));
  return m;
}

__device__ __forceinline__ int warp_inclusive_scan(int v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int x = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += x;
  }
  return v;
}

// A 64-bit instance set from two per-lane predicates (instances lane and lane + 32).
__device__ __forceinline__ uint64_t ballot64(bool lo, bool hi) {
  return static_cast<uint64_t>(__ballot_sync(kFull, lo)) | static_cast<uint64_t>(__ballot_sync(kFull, hi)) << 32;
}

__device__ __forceinline__ int32_t valid_key(int32_t id, int32_t E) { return (id >= 0 && id < E) ? id : -1; }

// Shared memory carving, shared by the kernel and the host-side size computation.
struct Carve {
  size_t mask, cnt, total, inst, rep, base, vis, rexp, ioff, staged, end;
};
__host__ __device__ inline size_t align16(size_t x) { return (x + 15) & ~size_t{15}; }
__host__ __device__ inline Carve carve(int E, int R, int G, int multi, int warps, int64_t staged_choices) {
  Carve c{};
  size_t o = 0;
  c.mask = o;
  o = align16(o + sizeof(uint64_t) * static_cast<size_t>(E));
  c.cnt = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(warps) * static_cast<size_t>(E));
  c.total = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(E));
  c.inst = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(E));
  c.rep = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(E));
  c.base = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(E));
  c.vis = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(multi));
  c.rexp = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(R));
  c.ioff = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(G + 1));
  c.staged = o;
  o = align16(o + sizeof(int32_t) * static_cast<size_t>(staged_choices));
  c.end = o;
  return c;
}

__global__ void __launch_bounds__(1024, 1) aebs_kernel(const Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int32_t load_s[kMaxInstances], tok_s[kMaxInstances], pend_s[kMaxInstances];
  __shared__ int32_t tokoff_s[kMaxInstances + 1], actoff_s[kMaxInstances + 1];
  __shared__ int32_t invalid_s;
  __shared__ unsigned long long radj_s[kMaxInstances];  // repair: bit g of radj_s[h]: an expert on g can move to h

  const AebsTableView& t = p.t;
  const int E = t.num_experts, G = t.num_instances, R = t.num_replicas, M = t.num_multi;
  const int tid = static_cast<int>(threadIdx.x), nthreads = static_cast<int>(blockDim.x);
  const int lane = tid & 31, warp = tid >> 5, W = nthreads >> 5;
  const int N = p.n;
  const Carve c = carve(E, R, G, M, W, p.staged ? N : 0);
  uint64_t* mask_s = reinterpret_cast<uint64_t*>(smem + c.mask);
  int32_t* cnt_s = reinterpret_cast<int32_t*>(smem + c.cnt);      // [W][E]: per-warp counts, then bases
  int32_t* total_s = reinterpret_cast<int32_t*>(smem + c.total);  // choices per expert
  int32_t* inst_s = reinterpret_cast<int32_t*>(smem + c.inst);    // chosen instance, -1 if not activated
  int32_t* rep_s = reinterpret_cast<int32_t*>(smem + c.rep);      // chosen replica
  int32_t* base_s = reinterpret_cast<int32_t*>(smem + c.base);    // first item of the expert's list
  int32_t* vis_s = reinterpret_cast<int32_t*>(smem + c.vis);      // visit order
  int32_t* rexp_s = reinterpret_cast<int32_t*>(smem + c.rexp);    // expert of each replica
  int32_t* ioff_s = reinterpret_cast<int32_t*>(smem + c.ioff);    // first replica of each instance
  int32_t* pk_s = reinterpret_cast<int32_t*>(smem + c.staged);    // staged: key, then rank << 16 | key

  // 0. stage the table and the ids; zero the counters.
  for (int i = tid; i < W * E; i += nthreads) cnt_s[i] = 0;
  for (int e = tid; e < E; e += nthreads) mask_s[e] = t.instance_mask[e];
  for (int i = tid; i < M; i += nthreads) vis_s[i] = t.visit_order[i];
  for (int r = tid; r < R; r += nthreads) rexp_s[r] = t.replica_expert[r];
  for (int g = tid; g <= G; g += nthreads) ioff_s[g] = t.instance_offsets[g];
  if (tid < kMaxInstances) {
    load_s[tid] = 0;
    tok_s[tid] = 0;
    pend_s[tid] = 0;
  }
  if (tid == 0) invalid_s = 0;
  int my_invalid = 0;
  if (p.staged) {
#pragma unroll 8
    for (int i = tid; i < N; i += nthreads) {
      const int32_t key = valid_key(__ldg(p.ids + i), E);
      my_invalid += key < 0;
      pk_s[i] = key;
    }
  }
  __syncthreads();

  // 1. per-warp counts over contiguous segments; staged entries get their rank.
  {
    const int begin = warp * p.segment, end = min(begin + p.segment, N);
    int32_t* wc = cnt_s + warp * E;
    for (int b = begin; b < end; b += 32) {
      const int idx = b + lane;
      int32_t key = -1;
      if (idx < end) {
        if (p.staged) {
          key = pk_s[idx];
        } else {
          key = valid_key(__ldg(p.ids + idx), E);
          my_invalid += key < 0;
        }
      }
      const unsigned peers = __match_any_sync(kFull, key);
      const int rank = __popc(peers & lanemask_lt());
      const int before = key >= 0 ? wc[key] : 0;
      __syncwarp();
      if (key >= 0 && rank == 0) wc[key] = before + __popc(peers);
      __syncwarp();
      if (p.staged && key >= 0)
        pk_s[idx] = static_cast<int32_t>(static_cast<uint32_t>(before + rank) << 16 | static_cast<uint32_t>(key));
    }
  }
  if (my_invalid) atomicAdd(&invalid_s, my_invalid);
  __syncthreads();

  // 2. per expert: prefix over warps, activation, single-replica experts, pending.
  for (int e = tid; e < E; e += nthreads) {
    int run = 0;
    for (int w = 0; w < W; ++w) {
      const int x = cnt_s[w * E + e];
      cnt_s[w * E + e] = run;
      run += x;
    }
    total_s[e] = run;
    int inst = -1;
    if (run > 0) {
      const uint64_t m = mask_s[e];
      if (__popcll(m) == 1) {
        inst = __ffsll(static_cast<long long>(m)) - 1;
        atomicAdd(&load_s[inst], 1);
        atomicAdd(&tok_s[inst], run);
      } else {
        for (uint64_t b = m; b; b &= b - 1) atomicAdd(&pend_s[__ffsll(static_cast<long long>(b)) - 1], 1);
      }
    } else {
      p.out.expert_replica[e] = -1;
    }
    inst_s[e] = inst;
  }
  __syncthreads();

  // 3. the greedy over multi-replica experts (warp 0), then per-instance scans.
  if (warp == 0) {
    int ld_lo = load_s[lane], ld_hi = load_s[lane + 32];
    int pd_lo = pend_s[lane], pd_hi = pend_s[lane + 32];
    int tk_lo = tok_s[lane], tk_hi = tok_s[lane + 32];
    for (int c0 = 0; c0 < M; c0 += 32) {
      const int i = c0 + lane;
      int e = 0, tot = 0;
      uint64_t m = 0;
      if (i < M) {
        e = vis_s[i];
        tot = total_s[e];
        m = mask_s[e];
      }
      unsigned act = __ballot_sync(kFull, tot > 0);
      while (act) {
        const int src = __ffs(act) - 1;
        act &= act - 1;
        const unsigned mlo = __shfl_sync(kFull, static_cast<unsigned>(m), src);
        const unsigned mhi = __shfl_sync(kFull, static_cast<unsigned>(m >> 32), src);
        const int etot = __shfl_sync(kFull, tot, src);
        const int ee = __shfl_sync(kFull, e, src);
        const int in_lo = (mlo >> lane) & 1, in_hi = (mhi >> lane) & 1;
        pd_lo -= in_lo;
        pd_hi -= in_hi;
        const unsigned k_lo = in_lo ? (static_cast<unsigned>(ld_lo) << 20 | static_cast<unsigned>(pd_lo) << 6 | lane) : kFull;
        const unsigned k_hi =
            in_hi ? (static_cast<unsigned>(ld_hi) << 20 | static_cast<unsigned>(pd_hi) << 6 | (lane + 32)) : kFull;
        const unsigned kmin = __reduce_min_sync(kFull, min(k_lo, k_hi));
        const int g = static_cast<int>(kmin & 63);
        if (g == lane) {
          ++ld_lo;
          tk_lo += etot;
        } else if (g == lane + 32) {
          ++ld_hi;
          tk_hi += etot;
        }
        if (lane == 0) inst_s[ee] = g;
      }
    }
    __syncwarp();
    // Repair: augmenting paths from the instances at the max L to one at <= L-2 (breadth
    // first over 64-bit instance sets; gpu/cpu/aebs.h step 4), while L > ceil(A / G).
    int repairs = 0;
    {
      const int A = static_cast<int>(__reduce_add_sync(kFull, static_cast<unsigned>(ld_lo + ld_hi)));
      const int lower = (A + G - 1) / G;
      const bool valid_lo = lane < G, valid_hi = lane + 32 < G;
      while (repairs < t.max_repairs && M > 0) {
        const int L = static_cast<int>(__reduce_max_sync(kFull, static_cast<unsigned>(max(ld_lo, ld_hi))));
        if (L <= lower) break;
        radj_s[lane] = 0;
        radj_s[lane + 32] = 0;
        __syncwarp();
        for (int i = lane; i < M; i += 32) {
          const int e = vis_s[i];
          if (total_s[e] > 0) {
            const unsigned long long bit = 1ull << inst_s[e];
            for (uint64_t b = mask_s[e] & ~bit; b; b &= b - 1) atomicOr(&radj_s[__ffsll(static_cast<long long>(b)) - 1], bit);
          }
        }
        __syncwarp();
        const uint64_t r_lo = radj_s[lane], r_hi = radj_s[lane + 32];
        const uint64_t in_max = ballot64(valid_lo && ld_lo == L, valid_hi && ld_hi == L);
        const uint64_t low = ballot64(valid_lo && ld_lo <= L - 2, valid_hi && ld_hi <= L - 2);
        uint64_t visited = in_max, frontier = in_max;
        int par_lo = -1, par_hi = -1, target = -1;
        while (frontier) {
          const bool n_lo = !((visited >> lane) & 1) && (r_lo & frontier);
          const bool n_hi = !((visited >> (lane + 32)) & 1) && (r_hi & frontier);
          if (n_lo) par_lo = __ffsll(static_cast<long long>(r_lo & frontier)) - 1;
          if (n_hi) par_hi = __ffsll(static_cast<long long>(r_hi & frontier)) - 1;
          const uint64_t newly = ballot64(n_lo, n_hi);
          visited |= newly;
          if (newly & low) {
            target = __ffsll(static_cast<long long>(newly & low)) - 1;
            break;
          }
          frontier = newly;
        }
        if (target < 0) break;
        int h = target;
        while (!((in_max >> h) & 1)) {
          const int pl = __shfl_sync(kFull, par_lo, h & 31), ph = __shfl_sync(kFull, par_hi, h & 31);
          const int g = h < 32 ? pl : ph;
          // The activated multi-replica expert on g that h hosts, first in visit order.
          int moved = -1;
          for (int c0 = 0; c0 < M && moved < 0; c0 += 32) {
            const int i = c0 + lane;
            int e = 0;
            bool cand = false;
            if (i < M) {
              e = vis_s[i];
              cand = total_s[e] > 0 && inst_s[e] == g && ((mask_s[e] >> h) & 1);
            }
            const unsigned b = __ballot_sync(kFull, cand);
            if (b) moved = __shfl_sync(kFull, e, __ffs(b) - 1);
          }
          const int etot = total_s[moved];
          __syncwarp();
          if (lane == 0) inst_s[moved] = h;
          __syncwarp();
          if (lane == (g & 31)) {
            if (g < 32)
              tk_lo -= etot;
            else
              tk_hi -= etot;
          }
          if (lane == (h & 31)) {
            if (h < 32)
              tk_lo += etot;
            else
              tk_hi += etot;
          }
          h = g;
        }
        if (lane == (h & 31)) {
          if (h < 32)
            --ld_lo;
          else
            --ld_hi;
        }
        if (lane == (target & 31)) {
          if (target < 32)
            ++ld_lo;
          else
            ++ld_hi;
        }
        ++repairs;
      }
    }
    // a_i, exclusive scans over instances of a_i and of choices, the summary.
    const int a_lo = warp_inclusive_scan(ld_lo, lane);
    const int a_hi = warp_inclusive_scan(ld_hi, lane) + __shfl_sync(kFull, a_lo, 31);
    const int t_lo = warp_inclusive_scan(tk_lo, lane);
    const int t_hi = warp_inclusive_scan(tk_hi, lane) + __shfl_sync(kFull, t_lo, 31);
    actoff_s[lane] = a_lo - ld_lo;
    actoff_s[lane + 32] = a_hi - ld_hi;
    tokoff_s[lane] = t_lo - tk_lo;
    tokoff_s[lane + 32] = t_hi - tk_hi;
    const int total_act = __shfl_sync(kFull, a_hi, 31), total_tok = __shfl_sync(kFull, t_hi, 31);
    if (lane == 31) {
      actoff_s[kMaxInstances] = total_act;
      tokoff_s[kMaxInstances] = total_tok;
    }
    if (lane < G) p.out.activated[lane] = ld_lo;
    if (lane + 32 < G) p.out.activated[lane + 32] = ld_hi;
    // Instances >= G hold nothing, so the scans at G equal the totals.
    if (lane <= G) {
      p.out.active_offsets[lane] = a_lo - ld_lo;
      p.out.instance_item_offsets[lane] = t_lo - tk_lo;
    }
    if (lane + 32 <= G) {
      p.out.active_offsets[lane + 32] = a_hi - ld_hi;
      p.out.instance_item_offsets[lane + 32] = t_hi - tk_hi;
    }
    if (lane == 0 && G == kMaxInstances) {
      p.out.active_offsets[G] = total_act;
      p.out.instance_item_offsets[G] = total_tok;
    }
    const int amax = __reduce_max_sync(kFull, static_cast<unsigned>(max(ld_lo, ld_hi)));
    if (lane == 0) {
      p.out.summary[kAebsMaxActivated] = amax;
      p.out.summary[kAebsActivatedExperts] = total_act;
      p.out.summary[kAebsInvalidChoices] = invalid_s;
      p.out.summary[kAebsValidChoices] = total_tok;
      p.out.summary[kAebsRepairs] = repairs;
      p.out.replica_offsets[R] = total_tok;
    }
  }
  __syncthreads();

  // 4. one warp per instance: replica offsets, the chosen replicas, active lists.
  for (int g = warp; g < G; g += W) {
    const int rb = ioff_s[g], re = ioff_s[g + 1];
    int carry_tok = tokoff_s[g], carry_act = actoff_s[g];
    for (int b = rb; b < re; b += 32) {
      const int r = b + lane;
      int e = -1, cnt = 0;
      bool active = false;
      if (r < re) {
        e = rexp_s[r];
        active = inst_s[e] == g;
        cnt = active ? total_s[e] : 0;
      }
      const int inc = warp_inclusive_scan(cnt, lane);
      const int off = carry_tok + inc - cnt;
      const unsigned ab = __ballot_sync(kFull, active);
      if (r < re) p.out.replica_offsets[r] = off;
      if (active) {
        rep_s[e] = r;
        base_s[e] = off;
        p.out.expert_replica[e] = r;
        p.out.active_replicas[carry_act + __popc(ab & lanemask_lt())] = r;
      }
      carry_tok += __shfl_sync(kFull, inc, 31);
      carry_act += __popc(ab);
    }
  }
  __syncthreads();

  // 5. every choice to its place.
  if (p.staged) {
    const int seg = p.segment;
#pragma unroll 4
    for (int idx = tid; idx < N; idx += nthreads) {
      const int32_t v = pk_s[idx];
      if (v == -1) {
        p.out.choice_replica[idx] = -1;
        continue;
      }
      const int key = v & 0xffff, rank = static_cast<int>(static_cast<uint32_t>(v) >> 16);
      const int pos = base_s[key] + cnt_s[(idx / seg) * E + key] + rank;
      p.out.items[pos] = idx;
      p.out.choice_replica[idx] = rep_s[key];
    }
  } else {
    const int begin = warp * p.segment, end = min(begin + p.segment, N);
    int32_t* wc = cnt_s + warp * E;
    for (int b = begin; b < end; b += 32) {
      const int idx = b + lane;
      const int32_t key = idx < end ? valid_key(__ldg(p.ids + idx), E) : -1;
      const unsigned peers = __match_any_sync(kFull, key);
      const int rank = __popc(peers & lanemask_lt());
      const int before = key >= 0 ? wc[key] : 0;
      __syncwarp();
      if (key >= 0 && rank == 0) wc[key] = before + __popc(peers);
      __syncwarp();
      if (key >= 0) {
        p.out.items[base_s[key] + before + rank] = idx;
        p.out.choice_replica[idx] = rep_s[key];
      } else if (idx < end) {
        p.out.choice_replica[idx] = -1;
      }
    }
  }
}

// The launch shape for `n` choices within `limit` bytes of dynamic shared memory.
AebsLaunchShape shape_for(const AebsTableView& t, int64_t n, int limit) {
  AebsLaunchShape s;
  int w = static_cast<int>(std::clamp<int64_t>((n + 255) / 256, kMinWarps, kMaxWarps));
  auto bytes = [&](int warps, int64_t staged) {
    return carve(t.num_experts, t.num_replicas, t.num_instances, t.num_multi, warps, staged).end;
  };
  while (w > 1 && bytes(w, 0) > static_cast<size_t>(limit)) --w;
  s.warps = w;
  s.staged = n <= kMaxStagedChoices && bytes(w, n) <= static_cast<size_t>(limit);
  s.shared_bytes = bytes(w, s.staged ? n : 0);
  return s;
}

}  // namespace

Status aebs_upload_table(const AebsTableView& h, AebsDeviceTable* out) {
  if (!out) return invalid_argument("aebs_upload_table: null output");
  const int E = h.num_experts, G = h.num_instances, R = h.num_replicas, M = h.num_multi;
  if (E <= 0 || G <= 0 || R < E) return invalid_argument("aebs_upload_table: empty or inconsistent table");
  if (G > kMaxInstances || !h.instance_mask)
    return unsupported("aebs on the GPU: " + std::to_string(G) + " expert instances, at most " +
                       std::to_string(kMaxInstances) + " supported");
  if (E > kMaxExperts)
    return unsupported("aebs on the GPU: " + std::to_string(E) + " experts, at most " + std::to_string(kMaxExperts));
  for (int g = 0; g < G; ++g)
    if (h.instance_offsets[g + 1] - h.instance_offsets[g] > kMaxPerInstance)
      return unsupported("aebs on the GPU: instance " + std::to_string(g) + " holds more than " +
                         std::to_string(kMaxPerInstance) + " replicas");
  int dev = 0, limit = 0;
  JANUS_CUDA_TRY(cudaGetDevice(&dev));
  JANUS_CUDA_TRY(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  // The kernel's static shared memory (five int arrays of 64 or 65, a counter, 64 masks).
  limit -= static_cast<int>(sizeof(int32_t) * (5 * kMaxInstances + 3) + sizeof(uint64_t) * kMaxInstances) + 64;
  if (carve(E, R, G, M, 1, 0).end > static_cast<size_t>(limit))
    return unsupported("aebs on the GPU: the table does not fit in shared memory");
  JANUS_CUDA_TRY(cudaFuncSetAttribute(aebs_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit));

  // One allocation: int32 arrays, then the 8-byte masks at an aligned offset.
  std::vector<int32_t> ints;
  auto put = [&](const int32_t* src, size_t n) {
    const size_t at = ints.size();
    ints.insert(ints.end(), src, src + n);
    ints.resize(ints.size() + ((4 - n % 4) % 4));  // keep 16-byte alignment
    return at;
  };
  const size_t o_eoff = put(h.expert_offsets, static_cast<size_t>(E) + 1);
  const size_t o_erep = put(h.expert_replicas, static_cast<size_t>(R));
  const size_t o_rins = put(h.replica_instance, static_cast<size_t>(R));
  const size_t o_rexp = put(h.replica_expert, static_cast<size_t>(R));
  const size_t o_ioff = put(h.instance_offsets, static_cast<size_t>(G) + 1);
  const size_t o_vis = put(h.visit_order, static_cast<size_t>(M));
  const size_t int_bytes = ints.size() * sizeof(int32_t);
  const size_t bytes = int_bytes + sizeof(uint64_t) * static_cast<size_t>(E);
  AebsDeviceTable d;
  JANUS_CUDA_TRY(cudaMalloc(&d.storage, bytes));
  char* base = static_cast<char*>(d.storage);
  cudaError_t err = cudaMemcpy(base, ints.data(), int_bytes, cudaMemcpyHostToDevice);
  if (err == cudaSuccess)
    err = cudaMemcpy(base + int_bytes, h.instance_mask, sizeof(uint64_t) * static_cast<size_t>(E), cudaMemcpyHostToDevice);
  if (err != cudaSuccess) {
    cudaFree(d.storage);
    return cuda_status(err, "cudaMemcpy (aebs table)", __FILE__, __LINE__);
  }
  const int32_t* ib = reinterpret_cast<const int32_t*>(base);
  d.view = h;
  d.view.expert_offsets = ib + o_eoff;
  d.view.expert_replicas = ib + o_erep;
  d.view.replica_instance = ib + o_rins;
  d.view.replica_expert = ib + o_rexp;
  d.view.instance_offsets = ib + o_ioff;
  d.view.visit_order = ib + o_vis;
  d.view.instance_mask = reinterpret_cast<const uint64_t*>(base + int_bytes);
  d.bytes = bytes;
  d.device = dev;
  d.max_shared_bytes = limit;
  *out = d;
  return Status::Ok();
}

void aebs_free_table(AebsDeviceTable* t) {
  if (t && t->storage) cudaFree(t->storage);
  if (t) *t = AebsDeviceTable{};
}

Status aebs_alloc_outputs(const AebsTableView& t, int64_t max_choices, AebsDeviceOutputs* out) {
  if (!out) return invalid_argument("aebs_alloc_outputs: null output");
  if (max_choices < 0 || max_choices >= (int64_t{1} << 30)) return invalid_argument("aebs_alloc_outputs: bad choice count");
  const size_t n = static_cast<size_t>(std::max<int64_t>(max_choices, 1));
  const size_t E = static_cast<size_t>(t.num_experts), R = static_cast<size_t>(t.num_replicas),
               G = static_cast<size_t>(t.num_instances);
  auto pad = [](size_t x) { return (x + 3) & ~size_t{3}; };
  const size_t sizes[] = {n, E, R + 1, n, G + 1, G, G + 1, std::max<size_t>(R, 1), kAebsSummarySize};
  size_t total = 0;
  for (size_t s : sizes) total += pad(s);
  AebsDeviceOutputs d;
  d.bytes = total * sizeof(int32_t);
  JANUS_CUDA_TRY(cudaMalloc(&d.storage, d.bytes));
  int32_t* p = static_cast<int32_t*>(d.storage);
  int32_t** slots[] = {&d.out.choice_replica, &d.out.expert_replica, &d.out.replica_offsets,
                       &d.out.items,          &d.out.instance_item_offsets, &d.out.activated,
                       &d.out.active_offsets, &d.out.active_replicas,   &d.out.summary};
  for (size_t i = 0; i < 9; ++i) {
    *slots[i] = p;
    p += pad(sizes[i]);
  }
  d.max_choices = max_choices;
  *out = d;
  return Status::Ok();
}

void aebs_free_outputs(AebsDeviceOutputs* o) {
  if (o && o->storage) cudaFree(o->storage);
  if (o) *o = AebsDeviceOutputs{};
}

AebsLaunchShape aebs_launch_shape(const AebsDeviceTable& table, int64_t choices) {
  return shape_for(table.view, choices, table.max_shared_bytes);
}

Status aebs_launch(const AebsDeviceTable& table, const int32_t* ids, int64_t tokens, int k, const AebsOutputs& out,
                   cudaStream_t stream) {
  if (!table.storage) return invalid_argument("aebs_launch: the table is not uploaded");
  if (tokens < 0 || k <= 0) return invalid_argument("aebs_launch: tokens must be >= 0 and k > 0");
  const int64_t n = tokens * k;
  if (n >= (int64_t{1} << 30)) return unsupported("aebs_launch: more than 2^30 choices");
  if (n > 0 && !ids) return invalid_argument("aebs_launch: null expert ids");
  if (!out.choice_replica || !out.expert_replica || !out.replica_offsets || !out.items || !out.instance_item_offsets ||
      !out.activated || !out.active_offsets || !out.active_replicas || !out.summary)
    return invalid_argument("aebs_launch: an output array is null");
  const AebsLaunchShape s = shape_for(table.view, n, table.max_shared_bytes);
  Params p;
  p.t = table.view;
  p.ids = ids;
  p.n = static_cast<int32_t>(n);
  const int64_t per_warp = (n + s.warps - 1) / s.warps;
  p.segment = static_cast<int32_t>(std::max<int64_t>(32, (per_warp + 31) / 32 * 32));
  p.staged = s.staged ? 1 : 0;
  p.out = out;
  aebs_kernel<<<1, s.warps * 32, s.shared_bytes, stream>>>(p);
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

}  // namespace janus::cuda
