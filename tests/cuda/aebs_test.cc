// The AEBS kernel (gpu/cuda/aebs.h) against the CPU reference (gpu/cpu/aebs.h): every
// output array identical, bit for bit, on uniform and Zipf-skewed routing, from B = 1 to
// beyond what fits in shared memory, one block and clusters of 2 to 16 blocks, with and
// without the shared-memory sort, and from a replayed CUDA graph.
//
// The first test case needs no GPU: a lane-by-lane CPU emulation of the kernel's parallel
// decomposition (gpu/cuda/aebs.cu: blocks of a cluster, warps, strips of 32 choices,
// ballot-per-bit peer masks, per-warp counter rows, the cluster prefix, warp 0's packed
// greedy keys and bit-set repair, the block-wide replica scan, the sorted scatter) run on
// the launch shapes the real planner (cuda::aebs_plan) picks, against the CPU reference.
// It checks the indexing logic where no GPU is at hand; keep it in step with the kernel.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "gpu/cpu/aebs.h"
#include "gpu/cuda/aebs.h"
#include "runtime/scheduling/aebs_synthetic.h"
#include "runtime/scheduling/expert_placement.h"

using namespace janus;

namespace {

#define REQUIRE_OK(expr)                                 \
  do {                                                   \
    ::janus::Status s_ = (expr);                         \
    REQUIRE_MESSAGE(s_.ok(), s_.to_string());            \
  } while (0)
#define REQUIRE_CUDA(expr) REQUIRE((expr) == cudaSuccess)

std::string shape_name(const cuda::AebsLaunchShape& s) {
  char b[128];
  std::snprintf(b, sizeof b, "[blocks %d warps %d seg %d staged %d sorted %d]", s.blocks, s.warps, s.seg, s.staged ? 1 : 0,
                s.sorted ? 1 : 0);
  return b;
}

// Compares outputs `g` (GPU or emulation) with the CPU's; "" when identical, else a
// diagnosis of the first difference (array, index, both values, what the index means,
// how many entries of that array differ).
std::string compare_host(const AebsTableView& t, const int32_t* ids, int64_t n, int k, const AebsHostOutputs& g,
                         const AebsHostOutputs& cpu) {
  const size_t E = static_cast<size_t>(t.num_experts), R = static_cast<size_t>(t.num_replicas),
               G = static_cast<size_t>(t.num_instances);
  const size_t valid = static_cast<size_t>(cpu.summary[kAebsValidChoices]);
  const size_t active = static_cast<size_t>(cpu.summary[kAebsActivatedExperts]);
  auto replica_text = [&](int32_t r) -> std::string {
    if (r < 0 || r >= t.num_replicas) return std::to_string(r);
    return std::to_string(r) + " (expert " + std::to_string(t.replica_expert[r]) + " on instance " +
           std::to_string(t.replica_instance[r]) + ")";
  };
  auto list_of = [&](size_t pos) {  // the CPU replica whose work list holds item position pos
    const auto it = std::upper_bound(cpu.replica_offsets.begin(), cpu.replica_offsets.begin() + static_cast<long>(R) + 1,
                                     static_cast<int32_t>(pos));
    return static_cast<int32_t>(it - cpu.replica_offsets.begin()) - 1;
  };
  auto explain = [&](const std::string& name, size_t i) -> std::string {
    static const char* fields[] = {"a_max", "activated experts", "invalid choices", "valid choices", "repair moves"};
    if (name == "summary" && i < kAebsSummarySize) return std::string(" (") + fields[i] + ")";
    if (name == "choice_replica")
      return " (token " + std::to_string(static_cast<int64_t>(i) / k) + " slot " + std::to_string(static_cast<int64_t>(i) % k) +
             ", expert id " + std::to_string(ids[i]) + "; gpu replica " + replica_text(g.choice_replica[i]) +
             ", cpu replica " + replica_text(cpu.choice_replica[i]) + ")";
    if (name == "expert_replica")
      return " (gpu " + replica_text(g.expert_replica[i]) + ", cpu " + replica_text(cpu.expert_replica[i]) + "; " +
             std::to_string(t.expert_offsets[i + 1] - t.expert_offsets[i]) + " replicas)";
    if (name == "items") {
      const int32_t gc = g.items[i], cc = cpu.items[i];
      auto choice = [&](int32_t c) {
        return c >= 0 && c < n ? std::to_string(c) + " (expert " + std::to_string(ids[c]) + ")" : std::to_string(c);
      };
      return " (in the cpu list of replica " + replica_text(list_of(i)) + " from item " +
             std::to_string(cpu.replica_offsets[static_cast<size_t>(list_of(i))]) + "; gpu choice " + choice(gc) +
             ", cpu choice " + choice(cc) + ")";
    }
    if (name == "replica_offsets" || name == "active_replicas") return " (replica " + replica_text(static_cast<int32_t>(i)) + ")";
    return "";
  };
  auto diff = [&](const char* name, const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t count) -> std::string {
    size_t first = count, ndiff = 0;
    for (size_t i = 0; i < count; ++i)
      if (a[i] != b[i]) {
        if (first == count) first = i;
        ++ndiff;
      }
    if (!ndiff) return "";
    return std::string(name) + "[" + std::to_string(first) + "]: gpu " + std::to_string(a[first]) + " cpu " +
           std::to_string(b[first]) + explain(name, first) + "; " + std::to_string(ndiff) + " of " + std::to_string(count) +
           " entries differ";
  };
  for (auto s : {diff("summary", g.summary, cpu.summary, kAebsSummarySize),
                 diff("expert_replica", g.expert_replica, cpu.expert_replica, E),
                 diff("activated", g.activated, cpu.activated, G),
                 diff("choice_replica", g.choice_replica, cpu.choice_replica, static_cast<size_t>(n)),
                 diff("replica_offsets", g.replica_offsets, cpu.replica_offsets, R + 1),
                 diff("instance_item_offsets", g.instance_item_offsets, cpu.instance_item_offsets, G + 1),
                 diff("active_offsets", g.active_offsets, cpu.active_offsets, G + 1), diff("items", g.items, cpu.items, valid),
                 diff("active_replicas", g.active_replicas, cpu.active_replicas, active)})
    if (!s.empty()) return s;
  return "";
}

// Copies the device outputs back and compares them with the CPU's.
std::string compare(const AebsTableView& t, const AebsOutputs& dev, const AebsHostOutputs& cpu, const int32_t* ids, int64_t n,
                    int k) {
  AebsHostOutputs g;
  g.resize(t, n);
  auto back = [&](std::vector<int32_t>& dst, const int32_t* src, size_t count) {
    REQUIRE_CUDA(cudaMemcpy(dst.data(), src, count * sizeof(int32_t), cudaMemcpyDeviceToHost));
  };
  const size_t E = static_cast<size_t>(t.num_experts), R = static_cast<size_t>(t.num_replicas),
               G = static_cast<size_t>(t.num_instances);
  back(g.summary, dev.summary, kAebsSummarySize);
  back(g.choice_replica, dev.choice_replica, static_cast<size_t>(n));
  back(g.expert_replica, dev.expert_replica, E);
  back(g.replica_offsets, dev.replica_offsets, R + 1);
  back(g.instance_item_offsets, dev.instance_item_offsets, G + 1);
  back(g.activated, dev.activated, G);
  back(g.active_offsets, dev.active_offsets, G + 1);
  back(g.items, dev.items, static_cast<size_t>(cpu.summary[kAebsValidChoices]));
  back(g.active_replicas, dev.active_replicas, static_cast<size_t>(cpu.summary[kAebsActivatedExperts]));
  return compare_host(t, ids, n, k, g, cpu);
}

// ---- the lane-by-lane emulation of gpu/cuda/aebs.cu ----------------------------------

namespace emu {

constexpr uint32_t kFull = 0xffffffffu;
int popc(uint32_t x) { return __builtin_popcount(x); }
int ctz64(uint64_t x) { return __builtin_ctzll(x); }
uint32_t lanemask_lt(int lane) { return lane == 0 ? 0u : (kFull >> (32 - lane)); }
int key_of(int32_t id, int E) { return (id >= 0 && id < E) ? id : E; }

// peers_of for a whole warp: one ballot per key bit (at least 8 bits, as the kernel's
// unrolled form for E < 256).
void peers_of(const int key[32], const bool present[32], int nbits, uint32_t peers[32]) {
  nbits = std::max(nbits, 8);
  uint32_t pres = 0;
  for (int l = 0; l < 32; ++l) pres |= present[l] ? 1u << l : 0u;
  for (int l = 0; l < 32; ++l) peers[l] = pres;
  for (int b = 0; b < nbits; ++b) {
    uint32_t bb = 0;
    for (int l = 0; l < 32; ++l) bb |= ((key[l] >> b) & 1) ? 1u << l : 0u;
    for (int l = 0; l < 32; ++l) peers[l] &= ((key[l] >> b) & 1) ? bb : ~bb;
  }
}

struct Block {
  std::vector<int32_t> cnt, bcnt, total, base, inst, rep, lbase, rtok, ract, vinst, act, ids_s;
  std::vector<int64_t> sbuf;  // sorted: choice << 32 | item position, -1 unwritten
  int32_t load[64] = {};
  int nloc = 0, amax = 0, total_act = 0, repairs = 0;
};

// Emulates one launch with shape s; "" or the first out-of-range write it saw.
std::string run(const AebsTableView& t, const std::vector<int32_t>& blobv, const int32_t* ids, int64_t n64,
                const cuda::AebsLaunchShape& s, const AebsOutputs& out) {
  const int E = t.num_experts, G = t.num_instances, R = t.num_replicas, M = t.num_multi, MC = (M + 31) / 32;
  const int E1 = E + 1, n = static_cast<int>(n64);
  const int P = s.blocks, W = s.warps, T = 32 * W, seg = s.seg, strips = seg / 32, nb = W * seg;
  const bool kWide = G > 32;
  int nbits = 0;
  while ((1 << nbits) <= E) ++nbits;
  const cuda::AebsBlobLayout bl = cuda::aebs_blob_layout(E, G, R, M);
  const int32_t* etab = blobv.data() + bl.etab;
  const int32_t* vexp = blobv.data() + bl.vexp;
  const int32_t* hostv = blobv.data() + bl.hostv;
  const int32_t* rexp = blobv.data() + bl.rexp;
  const int32_t* rinst = blobv.data() + bl.rinst;
  const int32_t* ioff = blobv.data() + bl.ioff;
  std::string err;
  auto put = [&](int32_t* arr, int64_t size, int64_t i, int32_t v, const char* what) {
    if (i < 0 || i >= size) {
      if (err.empty()) err = std::string("emulation wrote ") + what + "[" + std::to_string(i) + "] out of [0, " + std::to_string(size) + ")";
      return;
    }
    arr[i] = v;
  };
  const int64_t ncap = std::max<int64_t>(n64, 1);
  std::vector<Block> blocks(static_cast<size_t>(P));

  // 0 and 1: per block, per warp, per strip.
  for (int b = 0; b < P; ++b) {
    Block& k = blocks[static_cast<size_t>(b)];
    k.cnt.assign(static_cast<size_t>(W) * E1, 0);
    k.bcnt.assign(static_cast<size_t>(E1), 0);
    k.total.assign(static_cast<size_t>(E1), 0);
    k.base.assign(static_cast<size_t>(E), 0);
    k.inst.assign(static_cast<size_t>(E), 0);
    k.rep.assign(static_cast<size_t>(E), 0);
    k.lbase.assign(static_cast<size_t>(E), 0);
    k.rtok.assign(static_cast<size_t>(R) + 1, 0);
    k.ract.assign(static_cast<size_t>(R) + 1, 0);
    k.vinst.assign(static_cast<size_t>(M), 0);
    k.act.assign(static_cast<size_t>(MC), 0);
    const int bbegin = b * nb, nids = std::max(0, std::min(nb, n - bbegin));
    if (s.staged) k.ids_s.assign(ids + bbegin, ids + bbegin + nids);
    for (int w = 0; w < W; ++w) {
      int32_t* wc = k.cnt.data() + static_cast<size_t>(w) * E1;
      for (int st = 0; st < strips; ++st) {
        int key[32];
        bool present[32];
        uint32_t peers[32];
        for (int l = 0; l < 32; ++l) {
          const int li = w * seg + 32 * st + l;
          present[l] = li < nids;
          key[l] = present[l] ? key_of(ids[bbegin + li], E) : (s.staged ? 0 : key_of(0, E));
        }
        peers_of(key, present, nbits, peers);
        int before[32];
        for (int l = 0; l < 32; ++l) before[l] = present[l] ? wc[key[l]] : 0;  // every lane reads, then __syncwarp
        for (int l = 0; l < 32; ++l) {
          const int below = popc(peers[l] & lanemask_lt(l));
          if (present[l] && below == 0) wc[key[l]] = before[l] + popc(peers[l]);
        }
        if (s.staged)
          for (int l = 0; l < 32; ++l)
            if (present[l]) {
              const int below = popc(peers[l] & lanemask_lt(l));
              k.ids_s[static_cast<size_t>(w * seg + 32 * st + l)] =
                  static_cast<int32_t>(static_cast<uint32_t>(before[l] + below) << 16 | static_cast<uint32_t>(key[l]));
            }
      }
    }
  }
  // 2. prefix over warps; the cluster's totals and lower-block prefixes; activation.
  auto finish_key = [&](int b, int e, int tot, int pre) {
    Block& k = blocks[static_cast<size_t>(b)];
    k.total[static_cast<size_t>(e)] = tot;
    if (e < E) {
      k.base[static_cast<size_t>(e)] = pre;
      const int g = etab[e];
      const bool act = tot > 0;
      k.inst[static_cast<size_t>(e)] = (act && g >= 0) ? g : -1;
      if (act && g >= 0) ++k.load[g];
      if (b == 0 && !act) put(out.expert_replica, E, e, -1, "expert_replica");
    }
  };
  for (int b = 0; b < P; ++b) {
    Block& k = blocks[static_cast<size_t>(b)];
    for (int e = 0; e < E1; ++e) {
      int run = 0;
      for (int w = 0; w < W; ++w) {
        const int x = k.cnt[static_cast<size_t>(w) * E1 + e];
        k.cnt[static_cast<size_t>(w) * E1 + e] = run;
        run += x;
      }
      k.bcnt[static_cast<size_t>(e)] = run;
      if (P == 1) finish_key(b, e, run, 0);
    }
  }
  if (P > 1)
    for (int b = 0; b < P; ++b)
      for (int e = 0; e < E1; ++e) {
        int tot = 0, pre = 0;
        for (int o = 0; o < P; ++o) {
          const int v = blocks[static_cast<size_t>(o)].bcnt[static_cast<size_t>(e)];
          tot += v;
          if (o < b) pre += v;
        }
        finish_key(b, e, tot, pre);
      }

  // 3. warp 0 of every block: the greedy and the repair.
  for (int b = 0; b < P; ++b) {
    Block& k = blocks[static_cast<size_t>(b)];
    bool valid_lo[32], valid_hi[32];
    for (int l = 0; l < 32; ++l) {
      valid_lo[l] = l < G;
      valid_hi[l] = kWide && l + 32 < G;
    }
    for (int c = 0; c < MC; ++c) {
      uint32_t w = 0;
      for (int l = 0; l < 32; ++l) {
        const int v = 32 * c + l;
        if (v < M && k.total[static_cast<size_t>(vexp[v])] > 0) w |= 1u << l;
      }
      k.act[static_cast<size_t>(c)] = static_cast<int32_t>(w);
    }
    int pd_lo[32] = {}, pd_hi[32] = {};
    for (int c = 0; c < MC; ++c)
      for (int l = 0; l < 32; ++l) {
        const uint32_t a = static_cast<uint32_t>(k.act[static_cast<size_t>(c)]);
        if (valid_lo[l]) pd_lo[l] += popc(static_cast<uint32_t>(hostv[c * G + l]) & a);
        if (valid_hi[l]) pd_hi[l] += popc(static_cast<uint32_t>(hostv[c * G + l + 32]) & a);
      }
    uint32_t lds_lo[32], lds_hi[32];
    for (int l = 0; l < 32; ++l) {
      lds_lo[l] = static_cast<uint32_t>(valid_lo[l] ? k.load[l] : 0) << 20;
      lds_hi[l] = static_cast<uint32_t>(valid_hi[l] ? k.load[l + 32] : 0) << 20;
    }
    for (int c = 0; c < MC; ++c) {
      uint32_t a = static_cast<uint32_t>(k.act[static_cast<size_t>(c)]);
      uint32_t h_lo[32], h_hi[32];
      int myg[32];
      for (int l = 0; l < 32; ++l) {
        h_lo[l] = valid_lo[l] ? static_cast<uint32_t>(hostv[c * G + l]) : 0u;
        h_hi[l] = valid_hi[l] ? static_cast<uint32_t>(hostv[c * G + l + 32]) : 0u;
        myg[l] = -1;
      }
      while (a) {
        const int j = __builtin_ctz(a);
        a &= a - 1;
        uint32_t key_lo[32], key_hi[32], kmin = kFull;
        for (int l = 0; l < 32; ++l) {
          const uint32_t in_lo = (h_lo[l] >> j) & 1u;
          pd_lo[l] -= static_cast<int>(in_lo);
          key_lo[l] = (in_lo ? (static_cast<uint32_t>(pd_lo[l]) << 6 | static_cast<uint32_t>(l)) : kFull) | lds_lo[l];
          key_hi[l] = kFull;
          if (kWide) {
            const uint32_t in_hi = (h_hi[l] >> j) & 1u;
            pd_hi[l] -= static_cast<int>(in_hi);
            key_hi[l] = (in_hi ? (static_cast<uint32_t>(pd_hi[l]) << 6 | static_cast<uint32_t>(l + 32)) : kFull) | lds_hi[l];
          }
          kmin = std::min(kmin, kWide ? std::min(key_lo[l], key_hi[l]) : key_lo[l]);
        }
        for (int l = 0; l < 32; ++l) {
          if (kWide && key_hi[l] == kmin) lds_hi[l] += 1u << 20;
          if (key_lo[l] == kmin) lds_lo[l] += 1u << 20;
          if (l == j) myg[l] = static_cast<int>(kmin & 63u);
        }
      }
      for (int l = 0; l < 32; ++l)
        if (32 * c + l < M) k.vinst[static_cast<size_t>(32 * c + l)] = myg[l];
    }
    int ld_lo[32], ld_hi[32];
    for (int l = 0; l < 32; ++l) {
      ld_lo[l] = static_cast<int>(lds_lo[l] >> 20);
      ld_hi[l] = static_cast<int>(lds_hi[l] >> 20);
    }
    // Repair.
    int A = 0;
    for (int l = 0; l < 32; ++l) A += ld_lo[l] + ld_hi[l];
    const int lower = (A + G - 1) / G;
    int repairs = 0;
    while (repairs < t.max_repairs && M > 0) {
      int L = 0;
      for (int l = 0; l < 32; ++l) L = std::max({L, ld_lo[l], ld_hi[l]});
      if (L <= lower) break;
      uint64_t r_lo[32] = {}, r_hi[32] = {};
      for (int c = 0; c < MC; ++c) {
        int vi[32];
        for (int l = 0; l < 32; ++l) vi[l] = 32 * c + l < M ? k.vinst[static_cast<size_t>(32 * c + l)] : -1;
        for (int g = 0; g < G; ++g) {
          uint32_t on = 0;
          for (int l = 0; l < 32; ++l) on |= vi[l] == g ? 1u << l : 0u;
          for (int l = 0; l < 32; ++l) {
            const uint32_t hl = valid_lo[l] ? static_cast<uint32_t>(hostv[c * G + l]) : 0u;
            const uint32_t hh = valid_hi[l] ? static_cast<uint32_t>(hostv[c * G + l + 32]) : 0u;
            if (on & hl) r_lo[l] |= 1ull << g;
            if (kWide && (on & hh)) r_hi[l] |= 1ull << g;
          }
        }
      }
      auto ballot64 = [&](auto lo, auto hi) {
        uint64_t m = 0;
        for (int l = 0; l < 32; ++l) {
          if (lo(l)) m |= 1ull << l;
          if (hi(l)) m |= 1ull << (l + 32);
        }
        return m;
      };
      const uint64_t in_max = ballot64([&](int l) { return valid_lo[l] && ld_lo[l] == L; },
                                       [&](int l) { return valid_hi[l] && ld_hi[l] == L; });
      const uint64_t low = ballot64([&](int l) { return valid_lo[l] && ld_lo[l] <= L - 2; },
                                    [&](int l) { return valid_hi[l] && ld_hi[l] <= L - 2; });
      uint64_t visited = in_max, frontier = in_max;
      int par_lo[32], par_hi[32], target = -1;
      std::fill(par_lo, par_lo + 32, -1);
      std::fill(par_hi, par_hi + 32, -1);
      while (frontier) {
        bool n_lo[32], n_hi[32];
        for (int l = 0; l < 32; ++l) {
          n_lo[l] = valid_lo[l] && !((visited >> l) & 1) && (r_lo[l] & frontier);
          n_hi[l] = valid_hi[l] && !((visited >> (l + 32)) & 1) && (r_hi[l] & frontier);
          if (n_lo[l]) par_lo[l] = ctz64(r_lo[l] & frontier);
          if (n_hi[l]) par_hi[l] = ctz64(r_hi[l] & frontier);
        }
        const uint64_t newly = ballot64([&](int l) { return n_lo[l]; }, [&](int l) { return n_hi[l]; });
        visited |= newly;
        if (newly & low) {
          target = ctz64(newly & low);
          break;
        }
        frontier = newly;
      }
      if (target < 0) break;
      int h = target;
      while (!((in_max >> h) & 1)) {
        const int g = h < 32 ? par_lo[h & 31] : par_hi[h & 31];
        int moved = -1;
        for (int c = 0; c < MC && moved < 0; ++c) {
          uint32_t bm = 0;
          for (int l = 0; l < 32; ++l) {
            const int v = 32 * c + l;
            if ((v < M ? k.vinst[static_cast<size_t>(v)] : -1) == g) bm |= 1u << l;
          }
          bm &= static_cast<uint32_t>(hostv[c * G + h]);
          if (bm) moved = 32 * c + __builtin_ctz(bm);
        }
        if (moved < 0) return "emulation: repair found no expert to move on an edge";
        k.vinst[static_cast<size_t>(moved)] = h;
        h = g;
      }
      if (h < 32)
        --ld_lo[h];
      else
        --ld_hi[h - 32];
      if (target < 32)
        ++ld_lo[target];
      else
        ++ld_hi[target - 32];
      ++repairs;
    }
    for (int v = 0; v < M; ++v)
      if (k.vinst[static_cast<size_t>(v)] >= 0) k.inst[static_cast<size_t>(vexp[v])] = k.vinst[static_cast<size_t>(v)];
    k.total_act = 0;
    k.amax = 0;
    for (int l = 0; l < 32; ++l) {
      k.total_act += ld_lo[l] + ld_hi[l];
      k.amax = std::max({k.amax, ld_lo[l], ld_hi[l]});
    }
    k.repairs = repairs;
    if (b == 0)
      for (int l = 0; l < 32; ++l) {
        if (l < G) put(out.activated, G, l, ld_lo[l], "activated");
        if (kWide && l + 32 < G) put(out.activated, G, l + 32, ld_hi[l], "activated");
      }
  }

  // 4. the replica scan, thread by thread.
  for (int b = 0; b < P; ++b) {
    Block& k = blocks[static_cast<size_t>(b)];
    const int q = (R + T - 1) / T;
    std::vector<int> st(static_cast<size_t>(T)), sa(static_cast<size_t>(T)), sl(static_cast<size_t>(T));
    for (int th = 0; th < T; ++th) {
      const int r0 = std::min(th * q, R), r1 = std::min(r0 + q, R);
      for (int r = r0; r < r1; ++r) {
        const int e = rexp[r];
        if (k.inst[static_cast<size_t>(e)] == rinst[r]) {
          st[static_cast<size_t>(th)] += k.total[static_cast<size_t>(e)];
          sa[static_cast<size_t>(th)] += 1;
          sl[static_cast<size_t>(th)] += k.bcnt[static_cast<size_t>(e)];
        }
      }
    }
    // Exclusive prefixes over threads: the warp scans plus the lower warps' sums.
    int ot_run = 0, oa_run = 0, ol_run = 0;
    for (int th = 0; th < T; ++th) {
      int ot = ot_run, oa = oa_run, ol = ol_run;
      ot_run += st[static_cast<size_t>(th)];
      oa_run += sa[static_cast<size_t>(th)];
      ol_run += sl[static_cast<size_t>(th)];
      const int r0 = std::min(th * q, R), r1 = std::min(r0 + q, R);
      for (int r = r0; r < r1; ++r) {
        const int e = rexp[r];
        k.rtok[static_cast<size_t>(r)] = ot;
        k.ract[static_cast<size_t>(r)] = oa;
        if (b == 0) put(out.replica_offsets, R + 1, r, ot, "replica_offsets");
        if (k.inst[static_cast<size_t>(e)] == rinst[r]) {
          k.rep[static_cast<size_t>(e)] = r;
          k.base[static_cast<size_t>(e)] += ot;
          if (s.sorted) k.lbase[static_cast<size_t>(e)] = ol;
          if (b == 0) {
            put(out.expert_replica, E, e, r, "expert_replica");
            put(out.active_replicas, std::max(R, 1), oa, r, "active_replicas");
          }
          ot += k.total[static_cast<size_t>(e)];
          oa += 1;
          ol += k.bcnt[static_cast<size_t>(e)];
        }
      }
      if (th == T - 1) {
        k.rtok[static_cast<size_t>(R)] = ot;
        k.ract[static_cast<size_t>(R)] = oa;
        k.nloc = ol;
      }
    }
  }

  // 5. small outputs (block 0) and every block's choices.
  for (int b = 0; b < P; ++b) {
    Block& k = blocks[static_cast<size_t>(b)];
    if (b == 0) {
      for (int g = 0; g <= G; ++g) {
        put(out.instance_item_offsets, G + 1, g, k.rtok[static_cast<size_t>(ioff[g])], "instance_item_offsets");
        put(out.active_offsets, G + 1, g, k.ract[static_cast<size_t>(ioff[g])], "active_offsets");
      }
      put(out.replica_offsets, R + 1, R, k.rtok[static_cast<size_t>(R)], "replica_offsets");
      out.summary[kAebsMaxActivated] = k.amax;
      out.summary[kAebsActivatedExperts] = k.total_act;
      out.summary[kAebsInvalidChoices] = k.total[static_cast<size_t>(E)];
      out.summary[kAebsValidChoices] = k.rtok[static_cast<size_t>(R)];
      out.summary[kAebsRepairs] = k.repairs;
    }
    const int bbegin = b * nb, nids = std::max(0, std::min(nb, n - bbegin));
    if (s.staged) {
      if (s.sorted) k.sbuf.assign(static_cast<size_t>(nb), -1);
      for (int w = 0; w < W; ++w) {
        const int32_t* wc = k.cnt.data() + static_cast<size_t>(w) * E1;
        for (int st = 0; st < strips; ++st)
          for (int l = 0; l < 32; ++l) {
            const int li = w * seg + 32 * st + l;
            if (li >= nids) continue;
            const int v = k.ids_s[static_cast<size_t>(li)];
            const int key = v & 0xffff, rank = static_cast<int>(static_cast<uint32_t>(v) >> 16);
            const int idx = bbegin + li;
            if (key < E) {
              const int wp = wc[key] + rank;
              put(out.choice_replica, ncap, idx, k.rep[static_cast<size_t>(key)], "choice_replica");
              if (s.sorted) {
                const int at = k.lbase[static_cast<size_t>(key)] + wp;
                if (at < 0 || at >= nb || k.sbuf[static_cast<size_t>(at)] != -1) {
                  if (err.empty()) err = "emulation: sorted slot " + std::to_string(at) + " out of range or written twice";
                  continue;
                }
                k.sbuf[static_cast<size_t>(at)] = static_cast<int64_t>(idx) << 32 | static_cast<uint32_t>(k.base[static_cast<size_t>(key)] + wp);
              } else {
                put(out.items, ncap, k.base[static_cast<size_t>(key)] + wp, idx, "items");
              }
            } else {
              put(out.choice_replica, ncap, idx, -1, "choice_replica");
            }
          }
      }
      if (s.sorted)
        for (int i = 0; i < k.nloc; ++i) {
          const int64_t v = k.sbuf[static_cast<size_t>(i)];
          if (v == -1) {
            if (err.empty()) err = "emulation: sorted slot " + std::to_string(i) + " of " + std::to_string(k.nloc) + " unwritten";
            continue;
          }
          put(out.items, ncap, static_cast<int32_t>(v & 0xffffffff), static_cast<int32_t>(v >> 32), "items");
        }
    } else {
      for (int w = 0; w < W; ++w) {
        int32_t* wc = k.cnt.data() + static_cast<size_t>(w) * E1;
        for (int st = 0; st < strips; ++st) {
          int key[32];
          bool present[32];
          uint32_t peers[32];
          for (int l = 0; l < 32; ++l) {
            const int li = w * seg + 32 * st + l;
            present[l] = li < nids;
            key[l] = key_of(present[l] ? ids[bbegin + li] : 0, E);
          }
          peers_of(key, present, nbits, peers);
          int before[32];
          for (int l = 0; l < 32; ++l) before[l] = present[l] ? wc[key[l]] : 0;
          for (int l = 0; l < 32; ++l) {
            const int below = popc(peers[l] & lanemask_lt(l));
            if (present[l] && below == 0) wc[key[l]] = before[l] + popc(peers[l]);
          }
          for (int l = 0; l < 32; ++l) {
            if (!present[l]) continue;
            const int below = popc(peers[l] & lanemask_lt(l));
            const int idx = bbegin + w * seg + 32 * st + l;
            if (key[l] < E) {
              put(out.items, ncap, k.base[static_cast<size_t>(key[l])] + before[l] + below, idx, "items");
              put(out.choice_replica, ncap, idx, k.rep[static_cast<size_t>(key[l])], "choice_replica");
            } else {
              put(out.choice_replica, ncap, idx, -1, "choice_replica");
            }
          }
        }
      }
    }
  }
  return err;
}

}  // namespace emu

struct Setup {
  int E, k, G, C;
  bool stats;  // statistics-based placement (uneven replica counts) or round-robin
};

ExpertLayout layout_for(const Setup& s, double zipf) {
  auto l = s.stats ? place_experts({s.E, s.G, s.C, synthetic_popularity(s.E, zipf, 1), {}, {}}) : auto_placement(s.E, s.G, s.C);
  REQUIRE_MESSAGE(l.ok(), l.status().to_string());
  return *l;
}

const std::vector<Setup> kSetups = {{8, 2, 4, 3, false},    {64, 6, 8, 10, true},   {160, 8, 16, 12, true},
                                    {160, 8, 16, 12, false}, {256, 8, 32, 10, true}, {64, 8, 32, 4, true},
                                    {128, 4, 64, 4, true},   {160, 8, 8, 22, true},  {96, 8, 48, 4, true}};
const std::vector<int64_t> kBatches = {0, 1, 2, 16, 64, 256, 1024, 4096, 8192, 20000};

// The launch variants every case runs: the planner's own choice and forced cluster sizes,
// with and without the sorted scatter (blocks beyond the device's cluster limit clamp).
const std::vector<cuda::AebsLaunchOptions> kVariants = {{0, 1, nullptr}, {1, 1, nullptr}, {3, 0, nullptr}, {16, 1, nullptr}};

// Runs every launch variant over the B x k ids at d_ids (outputs poisoned first) and holds
// each to the CPU's outputs; `what` leads the failure message.
void check_variants(const cuda::AebsDeviceTable& dt, const AebsTableView& view, const int32_t* d_ids, const int32_t* ids, int64_t B,
                    int k, cuda::AebsDeviceOutputs& dout, const AebsHostOutputs& cpu, const std::string& what) {
  for (const auto& opt : kVariants) {
    REQUIRE_CUDA(cudaMemset(dout.storage, 0x7b, dout.bytes));
    REQUIRE_OK(cuda::aebs_launch(dt, d_ids, B, k, dout.out, nullptr, opt));
    REQUIRE_CUDA(cudaDeviceSynchronize());
    const std::string d = compare(view, dout.out, cpu, ids, B * k, k);
    CHECK_MESSAGE(d.empty(), what << " " << shape_name(cuda::aebs_launch_shape(dt, B * k, opt)) << ": " << d);
  }
}

}  // namespace

TEST_CASE("AEBS kernel emulation (lane by lane, no GPU) equals the CPU reference on the planner's shapes") {
  // Shared-memory limits: an H100's opt-in (227 KB less the static part), and 48 KB
  // (forces fewer warps and the unstaged, two-pass path on large batches).
  const int limits[] = {232448 - 1024, 48 * 1024};
  int runs = 0, failures = 0, unstaged = 0, clustered = 0, sorted = 0;
  for (const Setup& s : kSetups)
    for (double zipf : {0.0, 1.2})
      for (int max_repairs : {-1, 0}) {
        ExpertLayout layout = layout_for(s, zipf);
        AebsReplicaTable table = AebsReplicaTable::build(layout, AebsVisitOrder::kFewestReplicasFirst, max_repairs);
        const AebsTableView view = table.view();
        const std::vector<int32_t> blob = cuda::aebs_build_blob(view);
        for (int64_t B : kBatches) {
          auto ids = synthetic_routing(s.E, s.k, B, zipf, 5, static_cast<uint64_t>(B));
          REQUIRE(ids.ok());
          if (B == 256 || B == 20000)  // invalid ids too
            for (size_t i = 3; i < ids->size(); i += 101) (*ids)[i] = (i % 2) ? s.E + static_cast<int32_t>(i) : -1;
          const int64_t n = B * s.k;
          AebsHostOutputs cpu;
          cpu.resize(view, n);
          (void)cpu::aebs(view, ids->data(), B, s.k, cpu.outputs());
          for (int limit : limits)
            for (int max_cluster : {1, 16})
              for (const auto& opt : kVariants) {
                if (max_cluster == 1 && opt.blocks > 1) continue;
                const cuda::AebsLaunchShape shape = cuda::aebs_plan(view, n, limit, max_cluster, opt);
                AebsHostOutputs g;
                g.resize(view, n);
                for (auto* v : {&g.choice_replica, &g.expert_replica, &g.replica_offsets, &g.items, &g.instance_item_offsets,
                                &g.activated, &g.active_offsets, &g.active_replicas, &g.summary})
                  std::fill(v->begin(), v->end(), 0x7b7b7b7b);  // poison
                std::string d = emu::run(view, blob, ids->data(), n, shape, g.outputs());
                if (d.empty()) d = compare_host(view, ids->data(), n, s.k, g, cpu);
                ++runs;
                unstaged += !shape.staged;
                clustered += shape.blocks > 1;
                sorted += shape.sorted;
                if (!d.empty()) {
                  ++failures;
                  if (failures <= 10)
                    std::printf("EMULATION MISMATCH E%d k%d ne%d C%d %s zipf %.1f repair %d B %lld limit %d %s: %s\n", s.E, s.k,
                                s.G, s.C, s.stats ? "stats" : "rr", zipf, max_repairs, static_cast<long long>(B), limit,
                                shape_name(shape).c_str(), d.c_str());
                }
                CHECK_MESSAGE(d.empty(), "E" << s.E << " ne" << s.G << " B " << B << " " << shape_name(shape) << ": " << d);
              }
        }
      }
  std::printf("AEBS emulation vs CPU: %d runs (%d clustered, %d sorted, %d unstaged), %d mismatches\n", runs, clustered, sorted,
              unstaged, failures);
  CHECK(unstaged > 0);
  CHECK(clustered > 0);
  CHECK(sorted > 0);
}

// Random layouts (uneven replica counts, empty slots, up to 64 instances and 96 multi-
// replica experts) and skewed small batches, where the greedy often misses the optimum
// and the repair walks long paths with several candidate parents.
ExpertLayout random_layout(std::mt19937& rng, int E, int G, int slots) {
  std::vector<std::vector<int32_t>> place(static_cast<size_t>(G));
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) order[static_cast<size_t>(e)] = e;
  std::shuffle(order.begin(), order.end(), rng);
  for (int i = 0; i < E; ++i) place[static_cast<size_t>(i % G)].push_back(order[static_cast<size_t>(i)]);
  std::uniform_int_distribution<int> pick_e(0, E - 1);
  for (auto& inst : place) {
    const int want = std::uniform_int_distribution<int>(static_cast<int>(inst.size()), slots)(rng);
    for (int tries = 0; static_cast<int>(inst.size()) < want && tries < 4 * slots; ++tries) {
      const int e = pick_e(rng) % std::max(1, E / 3);  // replicas concentrate on a third of the experts
      if (std::find(inst.begin(), inst.end(), e) == inst.end()) inst.push_back(e);
    }
  }
  auto l = ExpertLayout::create(E, slots, place);
  REQUIRE_MESSAGE(l.ok(), l.status().to_string());
  return *l;
}

TEST_CASE("AEBS kernel emulation equals the CPU reference on random layouts with many repairs") {
  std::mt19937 rng(12345);
  int runs = 0, failures = 0, with_repairs = 0, long_paths = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int G = std::uniform_int_distribution<int>(2, 64)(rng);
    const int E = std::uniform_int_distribution<int>(G / 2 + 1, 3 * G + 8)(rng);
    const int slots = (E + G - 1) / G + std::uniform_int_distribution<int>(1, 4)(rng);
    const ExpertLayout layout = random_layout(rng, E, G, slots);
    const AebsReplicaTable table = AebsReplicaTable::build(layout, trial % 3 ? AebsVisitOrder::kFewestReplicasFirst : AebsVisitOrder::kExpertId,
                                                           trial % 5 == 0 ? 0 : -1);
    const AebsTableView view = table.view();
    const std::vector<int32_t> blob = cuda::aebs_build_blob(view);
    const int k = std::uniform_int_distribution<int>(1, std::min(8, E))(rng);
    const int64_t B = std::uniform_int_distribution<int>(1, 3)(rng) == 1 ? std::uniform_int_distribution<int>(300, 3000)(rng)
                                                                          : std::uniform_int_distribution<int>(1, 40)(rng);
    std::vector<int32_t> ids(static_cast<size_t>(B * k));
    std::uniform_int_distribution<int> any(0, E - 1), hot(0, std::max(0, E / 4));
    for (auto& x : ids) x = (rng() % 3) ? hot(rng) : any(rng);
    if (trial % 7 == 0) ids[ids.size() / 2] = E + 3;  // an invalid id
    AebsHostOutputs cpu;
    cpu.resize(view, B * k);
    (void)cpu::aebs(view, ids.data(), B, k, cpu.outputs());
    with_repairs += cpu.summary[kAebsRepairs] > 0;
    long_paths += cpu.summary[kAebsRepairs] > 1;
    for (const auto& opt : {cuda::AebsLaunchOptions{0, 1, nullptr}, cuda::AebsLaunchOptions{5, 1, nullptr},
                            cuda::AebsLaunchOptions{2, 0, nullptr}}) {
      const cuda::AebsLaunchShape shape = cuda::aebs_plan(view, B * k, 232448 - 1024, 16, opt);
      AebsHostOutputs g;
      g.resize(view, B * k);
      for (auto* v : {&g.choice_replica, &g.expert_replica, &g.replica_offsets, &g.items, &g.instance_item_offsets, &g.activated,
                      &g.active_offsets, &g.active_replicas, &g.summary})
        std::fill(v->begin(), v->end(), 0x7b7b7b7b);
      std::string d = emu::run(view, blob, ids.data(), B * k, shape, g.outputs());
      if (d.empty()) d = compare_host(view, ids.data(), B * k, k, g, cpu);
      ++runs;
      failures += !d.empty();
      if (!d.empty() && failures <= 10)
        std::printf("EMULATION MISMATCH random trial %d E%d ne%d slots %d k%d B %lld %s: %s\n", trial, E, G, slots, k,
                    static_cast<long long>(B), shape_name(shape).c_str(), d.c_str());
      CHECK_MESSAGE(d.empty(), "trial " << trial << ": " << d);
    }
  }
  std::printf("AEBS emulation vs CPU on random layouts: %d runs, %d batches with repairs (%d with several), %d mismatches\n",
              runs, with_repairs, long_paths, failures);
  CHECK(with_repairs > 100);
}

TEST_CASE("GPU AEBS equals the CPU reference bit for bit") {
  JANUS_SKIP_WITHOUT_GPU();
  int runs = 0, mismatches = 0, repaired = 0;
  bool shown_cluster = false;
  std::printf("%-24s %-6s %-6s %6s %6s %7s %-46s %s\n", "setup", "zipf", "repair", "B", "a_max", "moves", "shape", "result");
  for (const Setup& s : kSetups)
    for (double zipf : {0.0, 1.2})
      for (int max_repairs : {-1, 0}) {
        ExpertLayout layout = layout_for(s, zipf);
        AebsReplicaTable table = AebsReplicaTable::build(layout, AebsVisitOrder::kFewestReplicasFirst, max_repairs);
        cuda::AebsDeviceTable dt;
        REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
        if (!shown_cluster) {
          std::printf("device cluster limit: %d blocks (1: no clusters; forced larger variants clamp)\n", dt.max_cluster);
          shown_cluster = true;
        }
        cuda::AebsDeviceOutputs dout;
        REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), 20000 * s.k, &dout));
        int32_t* d_ids = nullptr;
        REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_ids), sizeof(int32_t) * 20000 * static_cast<size_t>(s.k)));
        for (int64_t B : kBatches) {
          auto ids = synthetic_routing(s.E, s.k, B, zipf, 5, static_cast<uint64_t>(B));
          REQUIRE(ids.ok());
          if (B > 0) REQUIRE_CUDA(cudaMemcpy(d_ids, ids->data(), ids->size() * sizeof(int32_t), cudaMemcpyHostToDevice));
          AebsHostOutputs cpu;
          cpu.resize(table.view(), B * s.k);
          REQUIRE_OK(cpu::aebs(table.view(), ids->data(), B, s.k, cpu.outputs()));
          for (const auto& opt : kVariants) {
            // Poison the outputs: a value the kernel fails to write shows up.
            REQUIRE_CUDA(cudaMemset(dout.storage, 0x7b, dout.bytes));
            REQUIRE_OK(cuda::aebs_launch(dt, d_ids, B, s.k, dout.out, nullptr, opt));
            const cudaError_t err = cudaDeviceSynchronize();
            const cuda::AebsLaunchShape shape = cuda::aebs_launch_shape(dt, B * s.k, opt);
            REQUIRE_MESSAGE(err == cudaSuccess, "kernel failed: " << cudaGetErrorString(err) << " " << shape_name(shape));
            const std::string d = compare(table.view(), dout.out, cpu, ids->data(), B * s.k, s.k);
            char name[64];
            std::snprintf(name, sizeof name, "E%d k%d ne%d C%d %s", s.E, s.k, s.G, s.C, s.stats ? "stats" : "rr");
            if ((opt.blocks == 0 && max_repairs != 0 && (B == 1 || B == 4096 || B == 20000)) || !d.empty())
              std::printf("%-24s %-6.1f %-6s %6lld %6d %7d %-46s %s\n", name, zipf, max_repairs ? "yes" : "no",
                          static_cast<long long>(B), cpu.summary[kAebsMaxActivated], cpu.summary[kAebsRepairs],
                          shape_name(shape).c_str(), d.empty() ? "ok" : ("MISMATCH " + d).c_str());
            ++runs;
            repaired += cpu.summary[kAebsRepairs] > 0;
            mismatches += !d.empty();
            CHECK_MESSAGE(d.empty(), name << " zipf " << zipf << " B " << B << " " << shape_name(shape) << ": " << d);
          }
        }
        cudaFree(d_ids);
        cuda::aebs_free_outputs(&dout);
        cuda::aebs_free_table(&dt);
      }
  std::printf("GPU AEBS vs CPU: %d runs (%d with repair moves), %d mismatches\n", runs, repaired, mismatches);
  CHECK(runs == static_cast<int>(kSetups.size() * 4 * kBatches.size() * kVariants.size()));
  CHECK(repaired > 0);
}

TEST_CASE("GPU AEBS repairs the greedy along an augmenting path like the CPU") {
  JANUS_SKIP_WITHOUT_GPU();
  // The case of tests/gpu/aebs_test.cc: the greedy gives loads 3 2 1, one move 2 2 2.
  auto layout = ExpertLayout::create(9, 4, {{2, 7, 4, 8}, {2, 6, 1, 8}, {5, 0, 1, 3}});
  REQUIRE(layout.ok());
  const std::vector<int32_t> ids = {4, 8, 8, 3, 2, 1, 7, 8, 3, 1};
  for (int max_repairs : {-1, 0}) {
    AebsReplicaTable table = AebsReplicaTable::build(*layout, AebsVisitOrder::kFewestReplicasFirst, max_repairs);
    cuda::AebsDeviceTable dt;
    REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
    cuda::AebsDeviceOutputs dout;
    REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), 10, &dout));
    int32_t* d_ids = nullptr;
    REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_ids), sizeof(int32_t) * 10));
    REQUIRE_CUDA(cudaMemcpy(d_ids, ids.data(), sizeof(int32_t) * 10, cudaMemcpyHostToDevice));
    REQUIRE_OK(cuda::aebs_launch(dt, d_ids, 5, 2, dout.out, nullptr));
    REQUIRE_CUDA(cudaDeviceSynchronize());
    AebsHostOutputs cpu;
    cpu.resize(table.view(), 10);
    REQUIRE_OK(cpu::aebs(table.view(), ids.data(), 5, 2, cpu.outputs()));
    CHECK(cpu.summary[kAebsMaxActivated] == (max_repairs ? 2 : 3));
    const std::string d = compare(table.view(), dout.out, cpu, ids.data(), 10, 2);
    CHECK_MESSAGE(d.empty(), "max_repairs " << max_repairs << ": " << d);
    cudaFree(d_ids);
    cuda::aebs_free_outputs(&dout);
    cuda::aebs_free_table(&dt);
  }
}

TEST_CASE("GPU AEBS counts invalid ids in the summary and leaves them out, like the CPU") {
  JANUS_SKIP_WITHOUT_GPU();
  ExpertLayout layout = layout_for({64, 6, 8, 10, true}, 1.0);
  AebsReplicaTable table = AebsReplicaTable::build(layout);
  cuda::AebsDeviceTable dt;
  REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
  for (int64_t B : {3, 300, 20000}) {
    auto ids = synthetic_routing(64, 6, B, 1.0, 9, 0);
    REQUIRE(ids.ok());
    for (size_t i = 0; i < ids->size(); i += 97) (*ids)[i] = (i % 2) ? 64 + static_cast<int32_t>(i) : -1 - static_cast<int32_t>(i);
    cuda::AebsDeviceOutputs dout;
    REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), B * 6, &dout));
    int32_t* d_ids = nullptr;
    REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_ids), ids->size() * sizeof(int32_t)));
    REQUIRE_CUDA(cudaMemcpy(d_ids, ids->data(), ids->size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    AebsHostOutputs cpu;
    cpu.resize(table.view(), B * 6);
    CHECK(cpu::aebs(table.view(), ids->data(), B, 6, cpu.outputs()).code() == ErrorCode::kInvalidArgument);
    CHECK(cpu.summary[kAebsInvalidChoices] == static_cast<int32_t>((ids->size() + 96) / 97));
    check_variants(dt, table.view(), d_ids, ids->data(), B, 6, dout, cpu, "B " + std::to_string(B));
    cudaFree(d_ids);
    cuda::aebs_free_outputs(&dout);
  }
  cuda::aebs_free_table(&dt);
}

TEST_CASE("GPU AEBS reads ids at any alignment (an offset slice of a larger buffer)") {
  JANUS_SKIP_WITHOUT_GPU();
  const Setup s{160, 8, 16, 12, true};
  ExpertLayout layout = layout_for(s, 1.0);
  AebsReplicaTable table = AebsReplicaTable::build(layout);
  cuda::AebsDeviceTable dt;
  REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
  const int64_t B = 300;
  auto ids = synthetic_routing(s.E, s.k, B, 1.0, 4, 1);
  REQUIRE(ids.ok());
  cuda::AebsDeviceOutputs dout;
  REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), B * s.k, &dout));
  int32_t* d_buf = nullptr;
  REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_buf), sizeof(int32_t) * (ids->size() + 4)));
  AebsHostOutputs cpu;
  cpu.resize(table.view(), B * s.k);
  REQUIRE_OK(cpu::aebs(table.view(), ids->data(), B, s.k, cpu.outputs()));
  for (int shift : {1, 2, 3}) {
    REQUIRE_CUDA(cudaMemcpy(d_buf + shift, ids->data(), ids->size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    check_variants(dt, table.view(), d_buf + shift, ids->data(), B, s.k, dout, cpu, "shift " + std::to_string(shift));
  }
  cudaFree(d_buf);
  cuda::aebs_free_outputs(&dout);
  cuda::aebs_free_table(&dt);
}

TEST_CASE("GPU AEBS runs from a captured CUDA graph and reads fresh ids on every replay") {
  JANUS_SKIP_WITHOUT_GPU();
  const Setup s{160, 8, 16, 12, true};
  ExpertLayout layout = layout_for(s, 1.0);
  AebsReplicaTable table = AebsReplicaTable::build(layout);
  cuda::AebsDeviceTable dt;
  REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
  for (int64_t B : {1, 256, 4096})
    for (int blocks : {0, 16}) {
      cuda::AebsLaunchOptions opt;
      opt.blocks = blocks;
      cuda::AebsDeviceOutputs dout;
      REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), B * s.k, &dout));
      int32_t* d_ids = nullptr;
      REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_ids), sizeof(int32_t) * static_cast<size_t>(B * s.k)));
      cudaStream_t stream;
      REQUIRE_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      REQUIRE_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      REQUIRE_OK(cuda::aebs_launch(dt, d_ids, B, s.k, dout.out, stream, opt));
      REQUIRE_CUDA(cudaStreamEndCapture(stream, &graph));
      REQUIRE_CUDA(cudaGraphInstantiate(&exec, graph, 0));
      for (uint64_t rep = 0; rep < 4; ++rep) {
        auto ids = synthetic_routing(s.E, s.k, B, rep % 2 ? 1.0 : 0.0, 3, rep);
        REQUIRE(ids.ok());
        REQUIRE_CUDA(cudaMemcpyAsync(d_ids, ids->data(), ids->size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
        REQUIRE_CUDA(cudaGraphLaunch(exec, stream));
        REQUIRE_CUDA(cudaStreamSynchronize(stream));
        AebsHostOutputs cpu;
        cpu.resize(table.view(), B * s.k);
        REQUIRE_OK(cpu::aebs(table.view(), ids->data(), B, s.k, cpu.outputs()));
        const std::string d = compare(table.view(), dout.out, cpu, ids->data(), B * s.k, s.k);
        CHECK_MESSAGE(d.empty(), "graph replay " << rep << " B " << B << " "
                                                 << shape_name(cuda::aebs_launch_shape(dt, B * s.k, opt)) << ": " << d);
      }
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      cudaStreamDestroy(stream);
      cudaFree(d_ids);
      cuda::aebs_free_outputs(&dout);
    }
  cuda::aebs_free_table(&dt);
}

TEST_CASE("GPU AEBS refuses tables outside its limits") {
  JANUS_SKIP_WITHOUT_GPU();
  auto layout = auto_placement(130, 65, 2);  // 65 instances: more than one warp's two registers hold
  REQUIRE(layout.ok());
  AebsReplicaTable table = AebsReplicaTable::build(*layout);
  cuda::AebsDeviceTable dt;
  Status st = cuda::aebs_upload_table(table.view(), &dt);
  CHECK(st.code() == ErrorCode::kUnsupported);
  CHECK(st.message().find("65 expert instances, at most 64") != std::string::npos);
  CHECK(cuda::aebs_launch(dt, nullptr, 1, 1, AebsOutputs{}, nullptr).code() == ErrorCode::kInvalidArgument);
}
