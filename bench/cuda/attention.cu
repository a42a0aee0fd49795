// Decode attention over the paged KV cache on the GPU: one query row per sequence, 32
// query heads over 4 kv heads of 128, bf16 cache in blocks of 16 (shuffled), batches 1 to
// 256 at contexts 512, 2048 and 8192 (pairs beyond 8 GB of cache skipped). The floor is
// the cache's bytes (k and v, read once) over the device's copy bandwidth measured here
// (read + write bytes). Peer: torch scaled_dot_product_attention on a contiguous cache
// of the same shape, and flash-attn's paged kernel when installed
// (bench/peers/attention_torch.py).
//
//   bench_attention [--no-peers] [--iters N]
//
// Each timing is the median over CUDA-graph replays of R launches over different copies
// of the cache (enough to pass well beyond the 50 MB L2), divided by R.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/cuda/cuda_bench_util.h"
#include "gpu/cpu/kernels.h"
#include "gpu/cuda/attention.h"
#include "gpu/cuda/device.h"

using namespace janus;

namespace {

constexpr int kHeads = 32, kKvHeads = 4, kHeadDim = 128, kBlock = 16;
const int kBatches[] = {1, 8, 32, 64, 128, 256};
const int kContexts[] = {512, 2048, 8192};
constexpr double kMaxCacheBytes = 8e9;

#define ST(expr)                                                          \
  do {                                                                    \
    Status s_ = (expr);                                                   \
    if (!s_.ok()) {                                                       \
      std::fprintf(stderr, "%s: %s\n", #expr, s_.to_string().c_str());     \
      std::exit(1);                                                       \
    }                                                                     \
  } while (0)

__device__ uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void fill_bf16(__nv_bfloat16* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float u = static_cast<float>(mix(seed ^ (i * 0x632be59bd9b4e019ull)) >> 40) * (1.0f / 16777216.0f);
    float v = 2.f * u - 1.f;
    if (v == 0.f) v = 1e-3f;
    p[i] = __float2bfloat16_rn(v);
  }
}

float bf16_bits_to_f32(uint16_t h) { return bf16_to_f32(h); }

struct Row {
  int batch, context, copies;
  double bytes, seconds;
  double rel_err = -1;
};

}  // namespace

int main(int argc, char** argv) {
  bool peers = true;
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--no-peers")) peers = false;
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
  }
  if (cuda::device_count() == 0) {
    std::printf("bench_attention: no CUDA device\n");
    return 0;
  }
  std::printf("device: %s\n", cuda::device_description(0).c_str());
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double copy_bw = bench::copy_bandwidth(stream);
  const size_t token_elems = static_cast<size_t>(kKvHeads) * kHeadDim;
  std::mt19937 rng(7);
  std::vector<Row> rows;
  std::string peer_cases;

  for (int ctx : kContexts)
    for (int B : kBatches) {
      const double cache_bytes = static_cast<double>(B) * ctx * token_elems * 2 * 2;
      if (cache_bytes > kMaxCacheBytes) continue;
      const int R = std::clamp(static_cast<int>(std::ceil(160e6 / cache_bytes)), 1, 64);
      const int blocks_per_seq = ctx / kBlock;
      const int num_blocks = R * B * blocks_per_seq;
      const size_t cache_elems = static_cast<size_t>(num_blocks) * kBlock * token_elems;
      __nv_bfloat16 *k, *v;
      CK(cudaMalloc(&k, cache_elems * 2));
      CK(cudaMalloc(&v, cache_elems * 2));
      fill_bf16<<<4096, 256, 0, stream>>>(k, cache_elems, rng());
      fill_bf16<<<4096, 256, 0, stream>>>(v, cache_elems, rng());
      CK(cudaGetLastError());
      std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      int32_t* tables;
      CK(cudaMalloc(&tables, perm.size() * 4));
      CK(cudaMemcpy(tables, perm.data(), perm.size() * 4, cudaMemcpyHostToDevice));
      std::vector<cpu::KvRow> kvrows(static_cast<size_t>(B));
      for (int s = 0; s < B; ++s) kvrows[static_cast<size_t>(s)] = {s, ctx - 1};
      cpu::KvRow* d_rows;
      CK(cudaMalloc(&d_rows, kvrows.size() * sizeof(cpu::KvRow)));
      CK(cudaMemcpy(d_rows, kvrows.data(), kvrows.size() * sizeof(cpu::KvRow), cudaMemcpyHostToDevice));
      const size_t q_elems = static_cast<size_t>(B) * kHeads * kHeadDim;
      __nv_bfloat16 *q, *out;
      CK(cudaMalloc(&q, q_elems * 2 * R));
      CK(cudaMalloc(&out, q_elems * 2 * R));
      fill_bf16<<<1024, 256, 0, stream>>>(q, q_elems * R, rng());
      const size_t ws_bytes = cuda::paged_attention_workspace_bytes(B, kHeads, kKvHeads, kHeadDim, ctx);
      void* ws = nullptr;
      if (ws_bytes) CK(cudaMalloc(&ws, ws_bytes));
      std::vector<cuda::PagedAttentionArgs> args;
      for (int r = 0; r < R; ++r) {
        cuda::PagedAttentionArgs a;
        a.q = q + q_elems * r, a.q_dtype = DType::kBF16, a.rows = B, a.row = d_rows, a.heads = kHeads;
        a.layout.block_size = kBlock, a.layout.kv_heads = kKvHeads, a.layout.head_dim = kHeadDim;
        a.layout.block_tables = tables + static_cast<size_t>(r) * B * blocks_per_seq;  // copy r: its own blocks
        a.layout.max_blocks = blocks_per_seq;
        a.k_cache = k, a.v_cache = v, a.kv_dtype = DType::kBF16;
        a.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
        a.out = out + q_elems * r, a.out_dtype = DType::kBF16;
        a.max_context = ctx;
        a.workspace = ws, a.workspace_bytes = ws_bytes;
        args.push_back(a);
      }
      ST(cuda::paged_attention(args[0], stream));
      CK(cudaStreamSynchronize(stream));
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      for (const auto& a : args) ST(cuda::paged_attention(a, stream));
      CK(cudaStreamEndCapture(stream, &graph));
      CK(cudaGraphInstantiate(&exec, graph, 0));
      Row row{B, ctx, R, cache_bytes, bench::time_graph(exec, stream, iters) / R};
      CK(cudaGraphExecDestroy(exec));
      CK(cudaGraphDestroy(graph));

      // Correctness of copy 0 against the CPU twin on up to 4 rows (their blocks only).
      {
        const int check = std::min(B, 4);
        std::vector<uint16_t> qh(static_cast<size_t>(check) * kHeads * kHeadDim), oh(qh.size());
        CK(cudaMemcpy(qh.data(), q, qh.size() * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(oh.data(), out, oh.size() * 2, cudaMemcpyDeviceToHost));
        // A compact host cache holding just these rows' blocks, renumbered.
        const size_t block_elems = static_cast<size_t>(kBlock) * token_elems;
        std::vector<float> kf(static_cast<size_t>(check) * blocks_per_seq * block_elems), vf(kf.size());
        std::vector<int32_t> local_tables(static_cast<size_t>(check) * blocks_per_seq);
        std::vector<uint16_t> tmp(block_elems);
        for (int s = 0; s < check; ++s)
          for (int b = 0; b < blocks_per_seq; ++b) {
            const int phys = perm[static_cast<size_t>(s) * blocks_per_seq + b];
            const size_t local = static_cast<size_t>(s) * blocks_per_seq + b;
            local_tables[local] = static_cast<int32_t>(local);
            CK(cudaMemcpy(tmp.data(), k + phys * block_elems, block_elems * 2, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < block_elems; ++i) kf[local * block_elems + i] = bf16_bits_to_f32(tmp[i]);
            CK(cudaMemcpy(tmp.data(), v + phys * block_elems, block_elems * 2, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < block_elems; ++i) vf[local * block_elems + i] = bf16_bits_to_f32(tmp[i]);
          }
        std::vector<float> qf(qh.size()), want(qh.size());
        for (size_t i = 0; i < qh.size(); ++i) qf[i] = bf16_bits_to_f32(qh[i]);
        cpu::PagedKvLayout L;
        L.block_size = kBlock, L.kv_heads = kKvHeads, L.head_dim = kHeadDim;
        L.block_tables = local_tables.data(), L.max_blocks = blocks_per_seq;
        cpu::paged_attention(qf.data(), check, kvrows.data(), kHeads, L, kf.data(), vf.data(), 0,
                             1.0f / std::sqrt(static_cast<float>(kHeadDim)), want.data());
        double num = 0, den = 0;
        bool nan = false;
        for (size_t i = 0; i < want.size(); ++i) {
          const float g = bf16_bits_to_f32(oh[i]);
          if (!std::isfinite(g)) nan = true;
          num = std::max(num, std::fabs(static_cast<double>(g) - want[i]));
          den = std::max(den, std::fabs(static_cast<double>(want[i])));
        }
        row.rel_err = nan ? 1e9 : num / den;
      }
      rows.push_back(row);
      peer_cases += (peer_cases.empty() ? "" : ",") + std::to_string(B) + ":" + std::to_string(ctx);
      std::printf("  B=%-4d ctx=%-5d R=%-2d %.1f us  err %.2g\n", B, ctx, R, row.seconds * 1e6, row.rel_err);
      std::fflush(stdout);
      CK(cudaFree(k));
      CK(cudaFree(v));
      CK(cudaFree(tables));
      CK(cudaFree(d_rows));
      CK(cudaFree(q));
      CK(cudaFree(out));
      if (ws) CK(cudaFree(ws));
    }

  nlohmann::json peer;
  if (peers) {
    const std::string out =
        bench::capture("python3 " + bench::source_dir() + "/bench/peers/attention_torch.py --cases " + peer_cases);
    try {
      peer = nlohmann::json::parse(out);
    } catch (const std::exception&) {
      peer = {{"error", "no JSON from the torch peer: " + out.substr(0, 300)}};
    }
  }
  auto peer_us = [&](int B, int ctx, const char* key) {
    if (!peer.contains("cases")) return -1.0;
    for (const auto& c : peer["cases"])
      if (c.value("batch", 0) == B && c.value("context", 0) == ctx && c.contains(key)) return c[key].get<double>();
    return -1.0;
  };

  std::printf("\nDecode attention over a paged KV cache: %d query / %d kv heads of %d, bf16 cache, blocks of %d\n", kHeads,
              kKvHeads, kHeadDim, kBlock);
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_bw / 1e9);
  if (peers && peer.contains("error")) std::printf("torch peer: %s\n", peer["error"].get<std::string>().c_str());
  std::printf("\n%5s %6s %9s %9s %8s %7s %9s %9s %8s  %s\n", "B", "ctx", "KV MB", "us", "GB/s", "%copy", "sdpa us",
              "flash us", "vs sdpa", "check");
  for (const Row& r : rows) {
    const double gbs = r.bytes / r.seconds / 1e9;
    const double sdpa = peer_us(r.batch, r.context, "sdpa_us"), flash = peer_us(r.batch, r.context, "flash_us");
    char speed[16] = "-";
    if (sdpa > 0) std::snprintf(speed, sizeof speed, "%.2fx", sdpa / (r.seconds * 1e6));
    std::printf("%5d %6d %9.1f %9.1f %8.0f %6.1f%% %9.1f %9.1f %8s  %s (err %.1e)\n", r.batch, r.context, r.bytes / 1e6,
                r.seconds * 1e6, gbs, 100 * gbs * 1e9 / copy_bw, sdpa, flash, speed, r.rel_err <= 1e-2 ? "ok" : "MISMATCH",
                r.rel_err);
  }
  std::printf("\nbytes = k and v of every context position, read once; vs sdpa = torch time / ours; -1 = not measured\n");
  if (peer.contains("cases") && !peer.empty())
    std::printf("peer: torch %s, sdpa %s, flash-attn %s\n", peer.value("torch", std::string("?")).c_str(),
                peer["cases"].empty() ? "?" : peer["cases"][0].value("sdpa_variant", std::string("?")).c_str(),
                peer.value("flash_attn", false) ? "yes" : "not installed");
  return 0;
}
