// The AEBS kernel: see gpu/cuda/aebs.h for the outline and gpu/cpu/aebs.h for the
// algorithm it reproduces bit for bit. tests/cuda/aebs_test.cc holds a lane-by-lane CPU
// emulation of this kernel's decomposition (blocks, warps, strips, ballots, the cluster
// prefix, the greedy's packed keys, the bit-set repair, the replica scan, the sorted
// scatter): change both together.
#include "gpu/cuda/aebs.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gpu/cuda/device.h"

namespace janus::cuda {

namespace {

constexpr int kMaxInstances = 64;
constexpr int kMaxWarps = 32;
constexpr int kMinWarps = 8;
constexpr int kMaxExperts = 8192;
constexpr int kMaxPerInstance = 4095;  // load and pending are packed into 12 and 14 bits
constexpr int kMaxRank = 65535;        // staged entries pack rank << 16 | key
constexpr int kPrefetch = 4;           // unstaged: strips whose ids are loaded together
constexpr int kTargetStrips = 4;       // strips per warp the planner aims at
// The planner's shape rule, from the H100 sweep (bench_aebs --sweep, 2026-11-23): up to
// 512 choices one block is fastest (a cluster's barrier costs more than it saves); above,
// about 256 choices per block in a cluster; the shared-memory sort pays from about 512
// choices per block (at 256 per block the plain scatter was 0.2 us faster).
constexpr int kSingleBlockChoices = 512;
constexpr int kTargetPerBlock = 256;
constexpr int kSortFromPerBlock = 512;
constexpr int kMaxCluster = 16;
constexpr unsigned kFull = 0xffffffffu;

struct Params {
  const int32_t* blob;
  const int32_t* ids;
  AebsOutputs out;
  long long* clocks;
  int32_t E, G, R, M, MC, max_repairs;
  int32_t n;       // choices T*k
  int32_t P;       // blocks (the cluster size when > 1)
  int32_t seg;     // choices per warp, a multiple of 32
  int32_t strips;  // seg / 32
  int32_t nbits;   // bits of a key in [0, E] (E: an invalid id)
  int32_t staged;  // 1: the block's ids staged in shared memory (then rank << 16 | key)
  int32_t sorted;  // 1: items through the shared-memory sort (needs staged)
  uint32_t off[14];  // the shared-memory carving (Carve, bytes), computed by the launcher
};

// Shared memory carving (bytes), shared by the kernel and the planner.
struct Carve {
  size_t blob, cnt, bcnt, total, base, inst, rep, lbase, rtok, ract, vinst, act, ids, sbuf, end;
};
__host__ __device__ inline size_t align16(size_t x) { return (x + 15) & ~size_t{15}; }
// staged_ids: the block's choices when staged (else 0); sorted_items: the same when sorted.
__host__ __device__ inline Carve carve(int E, int G, int R, int M, int warps, int64_t staged_ids, int64_t sorted_items) {
  const AebsBlobLayout b = aebs_blob_layout(E, G, R, M);
  const size_t I = sizeof(int32_t), E1 = static_cast<size_t>(E) + 1;
  Carve c{};
  size_t o = 0;
  auto take = [&o](size_t bytes) {
    const size_t at = o;
    o = align16(o + bytes);
    return at;
  };
  c.blob = take(I * static_cast<size_t>(b.words));
  c.cnt = take(I * static_cast<size_t>(warps) * E1);
  c.bcnt = take(I * E1);
  c.total = take(I * E1);
  c.base = take(I * static_cast<size_t>(E));
  c.inst = take(I * static_cast<size_t>(E));
  c.rep = take(I * static_cast<size_t>(E));
  c.lbase = take(sorted_items > 0 ? I * static_cast<size_t>(E) : 0);
  c.rtok = take(I * (static_cast<size_t>(R) + 1));
  c.ract = take(I * (static_cast<size_t>(R) + 1));
  c.vinst = take(I * static_cast<size_t>(M));
  c.act = take(I * static_cast<size_t>((M + 31) / 32));
  c.ids = take(I * static_cast<size_t>(staged_ids));
  c.sbuf = take(sizeof(int2) * static_cast<size_t>(sorted_items));
  c.end = o;
  return c;
}

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

// The lanes holding the same key as this one, among the present lanes: one ballot per
// key bit (__match_any_sync is a slow multi-pass instruction; keys have <= 14 bits, and
// tables with E < 256 take the fully unrolled 8-bit form: present keys are < 2^nbits, so
// the extra high bits are zero on every present lane and change nothing).
template <int kBits>
__device__ __forceinline__ unsigned peers_fixed(int key, unsigned peers) {
  // Per bit: the test (LOP3 to a predicate), the ballot, and two predicated ANDs.
#pragma unroll
  for (int b = 0; b < kBits; ++b)
    asm volatile(
        "{\n\t.reg .pred p;\n\t.reg .b32 t, bb, nb;\n\t"
        "and.b32 t, %1, %2;\n\t"
        "setp.ne.b32 p, t, 0;\n\t"
        "vote.sync.ballot.b32 bb, p, 0xffffffff;\n\t"
        "not.b32 nb, bb;\n\t"
        "@p and.b32 %0, %0, bb;\n\t"
        "@!p and.b32 %0, %0, nb;\n\t}"
        : "+r"(peers)
        : "r"(key), "r"(1u << b));
  return peers;
}
__device__ __forceinline__ unsigned peers_of(int key, bool present, int nbits) {
  unsigned peers = __ballot_sync(kFull, present);
  if (nbits <= 8) return peers_fixed<8>(key, peers);
#pragma unroll 2
  for (int b = 0; b < nbits; ++b) {
    const bool bit = (key >> b) & 1;
    const unsigned bb = __ballot_sync(kFull, bit);
    peers &= bit ? bb : ~bb;
  }
  return peers;
}

__device__ __forceinline__ int key_of(int32_t id, int E) { return (id >= 0 && id < E) ? id : E; }

__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gsrc) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(gsrc) : "memory");
}
__device__ __forceinline__ void cp_async4(void* smem_dst, const void* gsrc) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(gsrc) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// Distributed shared memory (sm_90 clusters).
__device__ __forceinline__ int ld_cluster(const int32_t* local, int rank) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(local));
  unsigned r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(rank));
  int v;
  asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(r) : "memory");
  return v;
}
// The .aligned barriers need the whole warp converged: __syncwarp first.
__device__ __forceinline__ void cluster_arrive() {
  __syncwarp();
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  __syncwarp();
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// This lane's rank among the warp's present lanes holding the same key, counted on from the
// warp's counter row wc, which the lowest of those lanes then advances by their number.
__device__ __forceinline__ int warp_rank(int32_t* wc, int key, bool present, int nbits) {
  const unsigned peers = peers_of(key, present, nbits);
  const int below = __popc(peers & lanemask_lt());
  const int before = present ? wc[key] : 0;
  __syncwarp();
  if (present && below == 0) wc[key] = before + __popc(peers);
  __syncwarp();
  return before + below;
}

// Unstaged ids: the warp's strips, kPrefetch at a time (their ids loaded together first),
// every choice ranked; ranked(li, key, rank) for each present one.
template <class Ranked>
__device__ __forceinline__ void rank_unstaged(const Params& p, int32_t* wc, int wloc, int lane, int nids, int bbegin, int E,
                                              Ranked&& ranked) {
#pragma unroll 1
  for (int s0 = 0; s0 < p.strips; s0 += kPrefetch) {
    int raw[kPrefetch];
#pragma unroll
    for (int j = 0; j < kPrefetch; ++j) {
      const int li = wloc + 32 * (s0 + j) + lane;
      raw[j] = (s0 + j < p.strips && li < nids) ? __ldg(p.ids + bbegin + li) : 0;
    }
#pragma unroll
    for (int j = 0; j < kPrefetch; ++j) {
      if (s0 + j < p.strips) {
        const int li = wloc + 32 * (s0 + j) + lane;
        const bool present = li < nids;
        const int key = key_of(raw[j], E);
        const int rank = warp_rank(wc, key, present, p.nbits);
        if (present) ranked(li, key, rank);
      }
    }
  }
}

// Warp 0: the greedy over the activated multi-replica experts in visit order, then the
// repair moves. Lane l holds instance l (and l + 32 when kWide). Writes vinst[v] (the
// instance of visit position v, -1 when not activated); returns a_i in ld_lo / ld_hi.
template <bool kWide>
__device__ __forceinline__ void greedy_and_repair(const Params& p, const int32_t* __restrict__ vexp,
                                                  const int32_t* __restrict__ hostv, const int32_t* __restrict__ total,
                                                  const int32_t* __restrict__ load_s, int32_t* vinst, int32_t* act_s,
                                                  int lane, bool stamp, int& ld_lo, int& ld_hi, int& repairs) {
  const int G = p.G, M = p.M, MC = p.MC;
  const bool valid_lo = lane < G, valid_hi = kWide && lane + 32 < G;
  // Activated visit positions, one word per 32.
#pragma unroll 1
  for (int c = 0; c < MC; ++c) {
    const int v = 32 * c + lane;
    const bool a = v < M && total[vexp[v]] > 0;
    const unsigned w = __ballot_sync(kFull, a);
    if (lane == 0) act_s[c] = static_cast<int32_t>(w);
  }
  __syncwarp();
  // pending: activated multi-replica experts the instance hosts, not yet visited.
  int pd_lo = 0, pd_hi = 0;
#pragma unroll 1
  for (int c = 0; c < MC; ++c) {
    const unsigned a = static_cast<unsigned>(act_s[c]);
    if (valid_lo) pd_lo += __popc(static_cast<unsigned>(hostv[c * G + lane]) & a);
    if (valid_hi) pd_hi += __popc(static_cast<unsigned>(hostv[c * G + lane + 32]) & a);
  }
  // Keys (load << 20 | pending << 6 | instance), unique per lane; ~0 for non-hosts.
  unsigned lds_lo = static_cast<unsigned>(valid_lo ? load_s[lane] : 0) << 20;
  unsigned lds_hi = static_cast<unsigned>(valid_hi ? load_s[lane + 32] : 0) << 20;
#pragma unroll 1
  for (int c = 0; c < MC; ++c) {
    unsigned a = static_cast<unsigned>(act_s[c]);
    const unsigned h_lo = valid_lo ? static_cast<unsigned>(hostv[c * G + lane]) : 0u;
    const unsigned h_hi = valid_hi ? static_cast<unsigned>(hostv[c * G + lane + 32]) : 0u;
    int myg = -1;
    // The loop carries only lds through the reduction; the next step's key part that
    // does not depend on it (rest: pending and instance, all ones for a non-host) is
    // computed while the reduction is in flight.
    const unsigned my_bit = 1u << lane;
    unsigned bit = a & (0u - a);
    auto rest_of = [](unsigned h, unsigned b, int& pd, unsigned inst_id) {
      const bool in = (h & b) != 0;
      pd -= in ? 1 : 0;
      return in ? (static_cast<unsigned>(pd) << 6 | inst_id) : kFull;
    };
    unsigned rest_lo = 0, rest_hi = 0;
    if (bit) {
      rest_lo = rest_of(h_lo, bit, pd_lo, static_cast<unsigned>(lane));
      if constexpr (kWide) rest_hi = rest_of(h_hi, bit, pd_hi, static_cast<unsigned>(lane + 32));
    }
    while (bit) {
      const unsigned key_lo = rest_lo | lds_lo;
      unsigned kmin;
      if constexpr (kWide) {
        const unsigned key_hi = rest_hi | lds_hi;
        kmin = __reduce_min_sync(kFull, min(key_lo, key_hi));
        if (key_hi == kmin) lds_hi += 1u << 20;
      } else {
        kmin = __reduce_min_sync(kFull, key_lo);
      }
      if (key_lo == kmin) lds_lo += 1u << 20;
      if (bit == my_bit) myg = static_cast<int>(kmin & 63u);
      a ^= bit;
      bit = a & (0u - a);
      if (bit) {
        rest_lo = rest_of(h_lo, bit, pd_lo, static_cast<unsigned>(lane));
        if constexpr (kWide) rest_hi = rest_of(h_hi, bit, pd_hi, static_cast<unsigned>(lane + 32));
      }
    }
    if (32 * c + lane < M) vinst[32 * c + lane] = myg;
  }
  ld_lo = static_cast<int>(lds_lo >> 20);
  ld_hi = static_cast<int>(lds_hi >> 20);
  __syncwarp();
  if (stamp) p.clocks[4] = clock64();

  // Repair: augmenting paths from the instances at the max L to one at <= L-2 (breadth
  // first over 64-bit instance sets; gpu/cpu/aebs.h step 4), while L > ceil(A / G).
  // Edge g -> h: an activated multi-replica expert on g that h hosts, i.e. the visit
  // positions on[g] (ballot of vinst == g) meet hostv[h]; the expert moved is the lowest
  // such position (the first in visit order).
  repairs = 0;
  const int A = static_cast<int>(__reduce_add_sync(kFull, static_cast<unsigned>(ld_lo + ld_hi)));
  const int lower = (A + G - 1) / G;
  while (repairs < p.max_repairs && M > 0) {
    const int L = static_cast<int>(__reduce_max_sync(kFull, static_cast<unsigned>(max(ld_lo, ld_hi))));
    if (L <= lower) break;
    uint64_t r_lo = 0, r_hi = 0;  // bit g: an expert on g can move to this lane's instance
    for (int c = 0; c < MC; ++c) {
      const int v = 32 * c + lane;
      const int vi = v < M ? vinst[v] : -1;
      const unsigned hl = valid_lo ? static_cast<unsigned>(hostv[c * G + lane]) : 0u;
      const unsigned hh = valid_hi ? static_cast<unsigned>(hostv[c * G + lane + 32]) : 0u;
      for (int g = 0; g < G; ++g) {
        const unsigned on = __ballot_sync(kFull, vi == g);
        if (on & hl) r_lo |= 1ull << g;
        if (kWide && (on & hh)) r_hi |= 1ull << g;
      }
    }
    const uint64_t in_max = ballot64(valid_lo && ld_lo == L, valid_hi && ld_hi == L);
    const uint64_t low = ballot64(valid_lo && ld_lo <= L - 2, valid_hi && ld_hi <= L - 2);
    uint64_t visited = in_max, frontier = in_max;
    int par_lo = -1, par_hi = -1, target = -1;
    while (frontier) {
      const bool n_lo = valid_lo && !((visited >> lane) & 1) && (r_lo & frontier);
      const bool n_hi = valid_hi && !((visited >> (lane + 32)) & 1) && (r_hi & frontier);
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
      int moved = -1;
      for (int c = 0; c < MC && moved < 0; ++c) {
        const int v = 32 * c + lane;
        const int vi = v < M ? vinst[v] : -1;
        const unsigned b = __ballot_sync(kFull, vi == g) & static_cast<unsigned>(hostv[c * G + h]);
        if (b) moved = 32 * c + __ffs(b) - 1;
      }
      __syncwarp();
      if (lane == 0) vinst[moved] = h;
      __syncwarp();
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

template <bool kWide>
__global__ void __launch_bounds__(1024, 1) aebs_kernel(const __grid_constant__ Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int32_t load_s[kMaxInstances];
  __shared__ int32_t wsum_s[3][kMaxWarps];
  __shared__ int32_t nloc_s;

  const int E = p.E, G = p.G, R = p.R, M = p.M, P = p.P;
  const int E1 = E + 1;
  const int tid = static_cast<int>(threadIdx.x), T = static_cast<int>(blockDim.x);
  const int lane = tid & 31, warp = tid >> 5, W = T >> 5;
  const int blk = static_cast<int>(blockIdx.x);
  const bool staged = p.staged != 0;
  const bool stamp = p.clocks != nullptr && blk == 0 && tid == 0;
  if (stamp) p.clocks[0] = clock64();

  const int nb = W * p.seg;  // choices per block
  const AebsBlobLayout bl = aebs_blob_layout(E, G, R, M);
  struct {
    uint32_t blob, cnt, bcnt, total, base, inst, rep, lbase, rtok, ract, vinst, act, ids, sbuf;
  } c;
  static_assert(sizeof(c) == sizeof(p.off), "carving");
  memcpy(&c, p.off, sizeof(c));
  int32_t* blob = reinterpret_cast<int32_t*>(smem + c.blob);
  const int32_t* etab = blob + bl.etab;
  const int32_t* vexp = blob + bl.vexp;
  const int32_t* hostv = blob + bl.hostv;
  const int32_t* rexp = blob + bl.rexp;
  const int32_t* rinst = blob + bl.rinst;
  const int32_t* ioff = blob + bl.ioff;
  int32_t* cnt = reinterpret_cast<int32_t*>(smem + c.cnt);      // [W][E+1]: warp counts, then exclusive prefixes
  int32_t* bcnt = reinterpret_cast<int32_t*>(smem + c.bcnt);    // [E+1] this block's choices per key
  int32_t* total = reinterpret_cast<int32_t*>(smem + c.total);  // [E+1] all blocks' choices per key
  int32_t* base = reinterpret_cast<int32_t*>(smem + c.base);    // lower blocks' count, then + list offset
  int32_t* inst = reinterpret_cast<int32_t*>(smem + c.inst);    // chosen instance, -1 when not activated
  int32_t* rep = reinterpret_cast<int32_t*>(smem + c.rep);      // chosen replica
  int32_t* lbase = reinterpret_cast<int32_t*>(smem + c.lbase);  // sorted: the expert's run in this block's items
  int32_t* rtok = reinterpret_cast<int32_t*>(smem + c.rtok);    // [R+1] exclusive scan of items per replica
  int32_t* ract = reinterpret_cast<int32_t*>(smem + c.ract);    // [R+1] exclusive scan of active replicas
  int32_t* vinst = reinterpret_cast<int32_t*>(smem + c.vinst);  // [M] instance per visit position
  int32_t* act_s = reinterpret_cast<int32_t*>(smem + c.act);    // [MC] activated visit positions
  int32_t* ids_s = reinterpret_cast<int32_t*>(smem + c.ids);    // staged: ids, then rank << 16 | key
  int2* sbuf = reinterpret_cast<int2*>(smem + c.sbuf);          // sorted: (choice, item position)

  // 0. the table and (staged) this block's ids to shared memory, asynchronously; zero
  // the warp counters meanwhile.
  const int bbegin = blk * nb;
  const int nids = max(0, min(nb, p.n - bbegin));
  for (int i = tid; i < bl.words / 4; i += T) cp_async16(blob + 4 * i, p.blob + 4 * i);
  if (staged) {
    const int32_t* src = p.ids + bbegin;
    int i0 = 0;
    if ((reinterpret_cast<uintptr_t>(src) & 15) == 0) {  // bbegin is a multiple of 32
      i0 = nids & ~3;
      for (int i = 4 * tid; i < i0; i += 4 * T) cp_async16(ids_s + i, src + i);
    }
    for (int i = i0 + tid; i < nids; i += T) cp_async4(ids_s + i, src + i);
  }
  {
    int4* z = reinterpret_cast<int4*>(cnt);
    const int n4 = static_cast<int>((c.bcnt - c.cnt) / 16);
#pragma unroll 1
    for (int i = tid; i < n4; i += T) z[i] = make_int4(0, 0, 0, 0);
  }
  if (tid < kMaxInstances) load_s[tid] = 0;
  cp_async_wait_all();
  __syncthreads();
  if (stamp) p.clocks[1] = clock64();

  // 1. per-warp counts over contiguous segments (warp w: block-local choices
  // [w*seg, (w+1)*seg), strip s: the 32 after 32*s); each choice's rank among the warp's
  // choices of the same key. Staged: ids_s becomes rank << 16 | key.
  const int wloc = warp * p.seg;
  int32_t* wc = cnt + warp * E1;
  if (staged) {
#pragma unroll 1
    for (int s = 0; s < p.strips; ++s) {
      const int li = wloc + 32 * s + lane;
      const bool present = li < nids;
      const int key = present ? key_of(ids_s[li], E) : 0;
      const int rank = warp_rank(wc, key, present, p.nbits);
      if (present) ids_s[li] = static_cast<int>(static_cast<unsigned>(rank) << 16 | static_cast<unsigned>(key));
    }
  } else {
    rank_unstaged(p, wc, wloc, lane, nids, bbegin, E, [](int, int, int) {});
  }
  __syncthreads();
  if (stamp) p.clocks[2] = clock64();

  // 2. per key: exclusive prefix over the block's warps; over the cluster's lower blocks
  // and the total through distributed shared memory; activation; single-replica loads.
  auto finish_key = [&](int e, int tot, int pre) {
    total[e] = tot;
    if (e < E) {
      base[e] = pre;
      const int g = etab[e];
      const bool act = tot > 0;
      inst[e] = (act && g >= 0) ? g : -1;
      if (act && g >= 0) atomicAdd(&load_s[g], 1);
      if (blk == 0 && !act) p.out.expert_replica[e] = -1;
    }
  };
  for (int e = tid; e < E1; e += T) {
    int run = 0;
    for (int w0 = 0; w0 < W; w0 += 8) {
      int x[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) x[j] = w0 + j < W ? cnt[(w0 + j) * E1 + e] : 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (w0 + j < W) {
          cnt[(w0 + j) * E1 + e] = run;
          run += x[j];
        }
      }
    }
    bcnt[e] = run;
    if (P == 1) finish_key(e, run, 0);
  }
  if (P > 1) {
    cluster_arrive();  // every block's bcnt complete (release) ...
    cluster_wait();    // ... and visible here (acquire)
    for (int e = tid; e < E1; e += T) {
      int tot = 0, pre = 0;
#pragma unroll
      for (int b = 0; b < kMaxCluster; ++b) {
        if (b < P) {
          const int v = ld_cluster(bcnt + e, b);
          tot += v;
          if (b < blk) pre += v;
        }
      }
      finish_key(e, tot, pre);
    }
    cluster_arrive();  // done reading the other blocks' shared memory; the wait is at the end
  }
  __syncthreads();
  if (stamp) p.clocks[3] = clock64();

  // 3. warp 0: the greedy and the repair (every block computes the same).
  int ld_lo = 0, ld_hi = 0, repairs = 0, amax = 0, total_act = 0;
  if (warp == 0) {
    greedy_and_repair<kWide>(p, vexp, hostv, total, load_s, vinst, act_s, lane, stamp, ld_lo, ld_hi, repairs);
    if (stamp) p.clocks[5] = clock64();
    __syncwarp();
#pragma unroll 1
    for (int v = lane; v < M; v += 32) {
      const int g = vinst[v];
      if (g >= 0) inst[vexp[v]] = g;
    }
    total_act = static_cast<int>(__reduce_add_sync(kFull, static_cast<unsigned>(ld_lo + ld_hi)));
    amax = static_cast<int>(__reduce_max_sync(kFull, static_cast<unsigned>(max(ld_lo, ld_hi))));
    if (blk == 0) {
      if (lane < G) p.out.activated[lane] = ld_lo;
      if (kWide && lane + 32 < G) p.out.activated[lane + 32] = ld_hi;
    }
  }
  __syncthreads();

  // 4. the replicas in id order: a block-wide scan of (items, active, this block's items),
  // each thread over a contiguous run of q replicas.
  {
    const int q = (R + T - 1) / T;
    const int r0 = min(tid * q, R), r1 = min(r0 + q, R);
    int st = 0, sa = 0, sl = 0;
#pragma unroll 1
    for (int r = r0; r < r1; ++r) {
      const int e = rexp[r];
      if (inst[e] == rinst[r]) {
        st += total[e];
        sa += 1;
        sl += bcnt[e];
      }
    }
    const int it = warp_inclusive_scan(st, lane), ia = warp_inclusive_scan(sa, lane), il = warp_inclusive_scan(sl, lane);
    if (lane == 31) {
      wsum_s[0][warp] = it;
      wsum_s[1][warp] = ia;
      wsum_s[2][warp] = il;
    }
    __syncthreads();
    int ot = it - st, oa = ia - sa, ol = il - sl;
#pragma unroll 8
    for (int w = 0; w < warp; ++w) {
      ot += wsum_s[0][w];
      oa += wsum_s[1][w];
      ol += wsum_s[2][w];
    }
#pragma unroll 1
    for (int r = r0; r < r1; ++r) {
      const int e = rexp[r];
      rtok[r] = ot;
      ract[r] = oa;
      if (blk == 0) p.out.replica_offsets[r] = ot;
      if (inst[e] == rinst[r]) {
        rep[e] = r;
        base[e] += ot;
        if (p.sorted) lbase[e] = ol;  // (no lbase region otherwise)
        if (blk == 0) {
          p.out.expert_replica[e] = r;
          p.out.active_replicas[oa] = r;
        }
        ot += total[e];
        oa += 1;
        ol += bcnt[e];
      }
    }
    if (tid == T - 1) {
      rtok[R] = ot;
      ract[R] = oa;
      nloc_s = ol;
    }
  }
  __syncthreads();
  if (stamp) p.clocks[6] = clock64();

  // 5. block 0: the instance offsets and the summary; every block: its choices.
  if (blk == 0) {
    for (int g = tid; g <= G; g += T) {
      p.out.instance_item_offsets[g] = rtok[ioff[g]];
      p.out.active_offsets[g] = ract[ioff[g]];
    }
    if (tid == 0) {
      p.out.replica_offsets[R] = rtok[R];
      p.out.summary[kAebsMaxActivated] = amax;
      p.out.summary[kAebsActivatedExperts] = total_act;
      p.out.summary[kAebsInvalidChoices] = total[E];
      p.out.summary[kAebsValidChoices] = rtok[R];
      p.out.summary[kAebsRepairs] = repairs;
    }
  }
  if (staged) {
#pragma unroll 2
    for (int s = 0; s < p.strips; ++s) {
      const int li = wloc + 32 * s + lane;
      if (li < nids) {
        const int v = ids_s[li];
        const int key = v & 0xffff, rank = static_cast<int>(static_cast<unsigned>(v) >> 16);
        const int idx = bbegin + li;
        if (key < E) {
          const int wp = wc[key] + rank;  // lower warps' count + rank in this warp
          p.out.choice_replica[idx] = rep[key];
          if (p.sorted)
            sbuf[lbase[key] + wp] = make_int2(idx, base[key] + wp);
          else
            p.out.items[base[key] + wp] = idx;
        } else {
          p.out.choice_replica[idx] = -1;
        }
      }
    }
    if (p.sorted) {
      __syncthreads();
      if (stamp) p.clocks[7] = clock64();
      const int nloc = nloc_s;
#pragma unroll 4
      for (int i = tid; i < nloc; i += T) {
        const int2 v = sbuf[i];
        p.out.items[v.y] = v.x;
      }
    }
  } else {
    // Ranks again, with the warp's counter row now running from its exclusive prefix.
    rank_unstaged(p, wc, wloc, lane, nids, bbegin, E, [&](int li, int key, int rank) {
      const int idx = bbegin + li;
      if (key < E) {
        p.out.items[base[key] + rank] = idx;
        p.out.choice_replica[idx] = rep[key];
      } else {
        p.out.choice_replica[idx] = -1;
      }
    });
  }
  if (stamp) p.clocks[8] = clock64();
  if (P > 1) cluster_wait();  // no block leaves while another may still read its counts
  if (stamp) p.clocks[9] = clock64();
}

template <bool kWide>
void* kernel_ptr() {
  return reinterpret_cast<void*>(&aebs_kernel<kWide>);
}

int key_bits(int E) {
  int b = 0;
  while ((1 << b) <= E) ++b;  // keys 0..E
  return b;
}

}  // namespace

std::vector<int32_t> aebs_build_blob(const AebsTableView& h) {
  const int E = h.num_experts, G = h.num_instances, R = h.num_replicas, M = h.num_multi;
  const AebsBlobLayout b = aebs_blob_layout(E, G, R, M);
  std::vector<int32_t> w(static_cast<size_t>(b.words), 0);
  for (int e = 0; e < E; ++e) {
    const int n = h.expert_offsets[e + 1] - h.expert_offsets[e];
    w[static_cast<size_t>(b.etab + e)] = n == 1 ? h.replica_instance[h.expert_replicas[h.expert_offsets[e]]] : -1;
  }
  for (int v = 0; v < M; ++v) {
    const int e = h.visit_order[v];
    uint64_t m = 0;
    for (int i = h.expert_offsets[e]; i < h.expert_offsets[e + 1]; ++i) m |= uint64_t{1} << h.replica_instance[h.expert_replicas[i]];
    w[static_cast<size_t>(b.vmask + 2 * v)] = static_cast<int32_t>(static_cast<uint32_t>(m));
    w[static_cast<size_t>(b.vmask + 2 * v + 1)] = static_cast<int32_t>(static_cast<uint32_t>(m >> 32));
    w[static_cast<size_t>(b.vexp + v)] = e;
    for (int g = 0; g < G; ++g)
      if ((m >> g) & 1) w[static_cast<size_t>(b.hostv + (v / 32) * G + g)] |= static_cast<int32_t>(1u << (v % 32));
  }
  for (int r = 0; r < R; ++r) {
    w[static_cast<size_t>(b.rexp + r)] = h.replica_expert[r];
    w[static_cast<size_t>(b.rinst + r)] = h.replica_instance[r];
  }
  for (int g = 0; g <= G; ++g) w[static_cast<size_t>(b.ioff + g)] = h.instance_offsets[g];
  return w;
}

AebsLaunchShape aebs_plan(const AebsTableView& t, int64_t n, int limit, int max_cluster, const AebsLaunchOptions& opt) {
  AebsLaunchShape s;
  const int E = t.num_experts, G = t.num_instances, R = t.num_replicas, M = t.num_multi;
  max_cluster = std::clamp(max_cluster, 1, kMaxCluster);
  const int P = opt.blocks > 0             ? std::min(opt.blocks, max_cluster)
                : n <= kSingleBlockChoices ? 1
                                           : static_cast<int>(std::clamp<int64_t>((n + kTargetPerBlock - 1) / kTargetPerBlock, 1, max_cluster));
  const int64_t nb = std::max<int64_t>(1, (n + P - 1) / P);
  auto seg_for = [&](int w) { return std::max<int64_t>(32, ((nb + w - 1) / w + 31) / 32 * 32); };
  auto bytes = [&](int w, bool staged, bool sorted) {
    const int64_t ids = static_cast<int64_t>(w) * seg_for(w);
    return carve(E, G, R, M, w, staged ? ids : 0, sorted ? ids : 0).end;
  };
  int w = static_cast<int>(std::clamp<int64_t>((nb + 32 * kTargetStrips - 1) / (32 * kTargetStrips), kMinWarps, kMaxWarps));
  while (w > 1 && bytes(w, false, false) > static_cast<size_t>(limit)) --w;
  s.blocks = P;
  s.warps = w;
  s.seg = static_cast<int>(seg_for(w));
  s.staged = s.seg <= kMaxRank + 1 && bytes(w, true, false) <= static_cast<size_t>(limit);
  s.sorted = opt.sorted != 0 && (opt.blocks > 0 || nb >= kSortFromPerBlock) && s.staged &&
             bytes(w, true, true) <= static_cast<size_t>(limit);
  s.shared_bytes = bytes(w, s.staged, s.sorted);
  return s;
}

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
  // The kernel's static shared memory (64 loads, 3 x 32 warp sums, a count) and slack.
  limit -= static_cast<int>(sizeof(int32_t) * (kMaxInstances + 3 * kMaxWarps + 1)) + 64;
  if (carve(E, G, R, M, 1, 0, 0).end > static_cast<size_t>(limit))
    return unsupported("aebs on the GPU: the table does not fit in shared memory");
  void* kern = G > 32 ? kernel_ptr<true>() : kernel_ptr<false>();
  JANUS_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, limit));

  // The largest cluster (of the largest blocks) the device can place: 16 needs the
  // non-portable opt-in; anything that fails leaves plain one-block launches.
  int max_cluster = 1;
  int cc_major = 0;
  JANUS_CUDA_TRY(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, dev));
  if (cc_major >= 9) {
    if (cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) cudaGetLastError();
    for (int P : {16, 8, 4, 2}) {
      cudaLaunchConfig_t cfg = {};
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeClusterDimension;
      attr[0].val.clusterDim.x = static_cast<unsigned>(P);
      attr[0].val.clusterDim.y = 1;
      attr[0].val.clusterDim.z = 1;
      cfg.gridDim = dim3(static_cast<unsigned>(P));
      cfg.blockDim = dim3(32 * kMaxWarps);
      cfg.dynamicSmemBytes = static_cast<size_t>(limit);
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      int clusters = 0;
      if (cudaOccupancyMaxActiveClusters(&clusters, kern, &cfg) == cudaSuccess && clusters >= 1) {
        max_cluster = P;
        break;
      }
      cudaGetLastError();
    }
  }

  // One allocation: the table's int32 arrays, the packed table, then the 8-byte masks.
  std::vector<int32_t> ints;
  auto put = [&](const int32_t* src, size_t n) {
    const size_t at = ints.size();
    ints.insert(ints.end(), src, src + n);
    ints.resize(ints.size() + ((4 - n % 4) % 4));  // keep 16-byte alignment
    return at;
  };
  const std::vector<int32_t> blob = aebs_build_blob(h);
  const size_t o_eoff = put(h.expert_offsets, static_cast<size_t>(E) + 1);
  const size_t o_erep = put(h.expert_replicas, static_cast<size_t>(R));
  const size_t o_rins = put(h.replica_instance, static_cast<size_t>(R));
  const size_t o_rexp = put(h.replica_expert, static_cast<size_t>(R));
  const size_t o_ioff = put(h.instance_offsets, static_cast<size_t>(G) + 1);
  const size_t o_vis = put(h.visit_order, static_cast<size_t>(M));
  const size_t o_blob = put(blob.data(), blob.size());
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
  d.blob = ib + o_blob;
  d.blob_words = static_cast<int>(blob.size());
  d.bytes = bytes;
  d.device = dev;
  d.max_shared_bytes = limit;
  d.max_cluster = max_cluster;
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

AebsLaunchShape aebs_launch_shape(const AebsDeviceTable& table, int64_t choices, const AebsLaunchOptions& options) {
  return aebs_plan(table.view, choices, table.max_shared_bytes, table.max_cluster, options);
}

Status aebs_launch(const AebsDeviceTable& table, const int32_t* ids, int64_t tokens, int k, const AebsOutputs& out,
                   cudaStream_t stream, const AebsLaunchOptions& options) {
  if (!table.storage) return invalid_argument("aebs_launch: the table is not uploaded");
  if (tokens < 0 || k <= 0) return invalid_argument("aebs_launch: tokens must be >= 0 and k > 0");
  const int64_t n = tokens * k;
  if (n >= (int64_t{1} << 30)) return unsupported("aebs_launch: more than 2^30 choices");
  if (n > 0 && !ids) return invalid_argument("aebs_launch: null expert ids");
  if (!out.choice_replica || !out.expert_replica || !out.replica_offsets || !out.items || !out.instance_item_offsets ||
      !out.activated || !out.active_offsets || !out.active_replicas || !out.summary)
    return invalid_argument("aebs_launch: an output array is null");
  const AebsLaunchShape s = aebs_launch_shape(table, n, options);
  const AebsTableView& t = table.view;
  Params p;
  p.blob = table.blob;
  p.ids = ids;
  p.out = out;
  p.clocks = options.clocks;
  p.E = t.num_experts;
  p.G = t.num_instances;
  p.R = t.num_replicas;
  p.M = t.num_multi;
  p.MC = (t.num_multi + 31) / 32;
  p.max_repairs = t.max_repairs;
  p.n = static_cast<int32_t>(n);
  p.P = s.blocks;
  p.seg = s.seg;
  p.strips = s.seg / 32;
  p.nbits = key_bits(t.num_experts);
  p.staged = s.staged ? 1 : 0;
  p.sorted = s.sorted ? 1 : 0;
  {
    const int64_t nb = static_cast<int64_t>(s.warps) * s.seg;
    const Carve c = carve(p.E, p.G, p.R, p.M, s.warps, s.staged ? nb : 0, s.sorted ? nb : 0);
    const size_t offs[14] = {c.blob, c.cnt, c.bcnt, c.total, c.base, c.inst, c.rep, c.lbase,
                             c.rtok, c.ract, c.vinst, c.act,  c.ids,  c.sbuf};
    for (int i = 0; i < 14; ++i) p.off[i] = static_cast<uint32_t>(offs[i]);
  }
  void* kern = t.num_instances > 32 ? kernel_ptr<true>() : kernel_ptr<false>();
  void* args[] = {&p};
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(s.blocks));
  cfg.blockDim = dim3(static_cast<unsigned>(32 * s.warps));
  cfg.dynamicSmemBytes = s.shared_bytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if (s.blocks > 1) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(s.blocks);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  JANUS_CUDA_TRY(cudaLaunchKernelExC(&cfg, kern, args));
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

}  // namespace janus::cuda
