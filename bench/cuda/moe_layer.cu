// One expert instance running a Qwen3-30B-A3B-like MoE layer on the GPU: hidden 2048,
// expert intermediate 768, 128 experts all on this instance, top-8, bf16 weights,
// random routing, per-instance batches 1 to 256. Decode MoE is memory-bound: the floor is
// the activated experts' weight bytes over the device's copy bandwidth (measured here,
// read + write bytes). Peers, on the same shapes and routing: torch._grouped_mm over
// sorted rows, and the Hugging Face per-expert loop (bench/peers/moe_layer_torch.py).
//
//   bench_moe_layer [--no-peers] [--iters N]
//
// Each timing is the median over CUDA-graph replays of R consecutive layers with
// different routings and inputs (so that one layer's weights are not left in L2 for the
// next), divided by R.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench/cuda/cuda_bench_util.h"
#include "gpu/cpu/moe.h"
#include "gpu/cuda/device.h"
#include "gpu/cuda/moe.h"

using namespace janus;

namespace {

constexpr int kHidden = 2048, kInter = 768, kExperts = 128, kTopK = 8;
const int kBatches[] = {1, 8, 32, 64, 128, 256};

#define ST(expr)                                                                        \
  do {                                                                                  \
    Status s_ = (expr);                                                                 \
    if (!s_.ok()) {                                                                     \
      std::fprintf(stderr, "%s: %s\n", #expr, s_.to_string().c_str());                   \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

__device__ uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-scale, scale), never exactly zero.
__global__ void fill_bf16(__nv_bfloat16* p, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float u = static_cast<float>(mix(seed ^ (i * 0x632be59bd9b4e019ull)) >> 40) * (1.0f / 16777216.0f);
    float v = (2.f * u - 1.f) * scale;
    if (v == 0.f) v = scale * 1e-3f;
    p[i] = __float2bfloat16_rn(v);
  }
}

struct Routing {
  std::vector<int32_t> slot;  // [B, K]
  std::vector<float> weight;  // [B, K], a softmax over the chosen logits (renormalised top-k)
  int distinct = 0;
};

Routing random_routing(int B, std::mt19937& rng) {
  Routing r;
  std::vector<int32_t> all(kExperts);
  std::iota(all.begin(), all.end(), 0);
  std::normal_distribution<float> logit(0.f, 1.f);
  std::set<int> used;
  for (int b = 0; b < B; ++b) {
    std::shuffle(all.begin(), all.end(), rng);
    float w[kTopK], sum = 0;
    for (int j = 0; j < kTopK; ++j) sum += (w[j] = std::exp(logit(rng)));
    for (int j = 0; j < kTopK; ++j) {
      r.slot.push_back(all[j]);
      r.weight.push_back(w[j] / sum);
      used.insert(all[j]);
    }
  }
  r.distinct = static_cast<int>(used.size());
  return r;
}

struct Row {
  int batch = 0, rotations = 0;
  double distinct = 0, bytes = 0, layer_s = 0, ffn_s = 0;
  double rel_err = -1;
  bool nan = false;
  int checked_rows = 0;
};

}  // namespace

int main(int argc, char** argv) {
  bool peers = true;
  int iters = 15;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--no-peers")) peers = false;
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
  }
  if (cuda::device_count() == 0) {
    std::printf("bench_moe_layer: no CUDA device\n");
    return 0;
  }
  std::printf("device: %s\n", cuda::device_description(0).c_str());
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double copy_bw = bench::copy_bandwidth(stream);

  // The instance: every expert in one slot, weights of one expert contiguous.
  const size_t per_matrix = static_cast<size_t>(kHidden) * kInter;
  const size_t weight_elems = 3 * per_matrix * kExperts;
  __nv_bfloat16* weights;
  CK(cudaMalloc(&weights, weight_elems * 2));
  fill_bf16<<<4096, 256, 0, stream>>>(weights, weight_elems, 7, 1.7f / std::sqrt(static_cast<float>(kHidden)));
  CK(cudaGetLastError());
  std::vector<const void*> gate(kExperts), up(kExperts), down(kExperts);
  for (int e = 0; e < kExperts; ++e) {
    gate[e] = weights + (3 * e + 0) * per_matrix;
    up[e] = weights + (3 * e + 1) * per_matrix;
    down[e] = weights + (3 * e + 2) * per_matrix;
  }
  const void **d_gate, **d_up, **d_down;
  CK(cudaMalloc(&d_gate, kExperts * sizeof(void*)));
  CK(cudaMalloc(&d_up, kExperts * sizeof(void*)));
  CK(cudaMalloc(&d_down, kExperts * sizeof(void*)));
  CK(cudaMemcpy(d_gate, gate.data(), kExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_up, up.data(), kExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_down, down.data(), kExperts * sizeof(void*), cudaMemcpyHostToDevice));
  // The weights on the host for the CPU twin.
  std::vector<uint16_t> host_w(weight_elems);
  CK(cudaStreamSynchronize(stream));
  CK(cudaMemcpy(host_w.data(), weights, weight_elems * 2, cudaMemcpyDeviceToHost));
  std::vector<cpu::ExpertSlotWeights> cpu_slots(kExperts);
  for (int e = 0; e < kExperts; ++e)
    cpu_slots[e] = {host_w.data() + (3 * e + 0) * per_matrix, host_w.data() + (3 * e + 1) * per_matrix,
                    host_w.data() + (3 * e + 2) * per_matrix};

  cuda::MoeExperts experts;
  experts.gate = d_gate, experts.up = d_up, experts.down = d_down;
  experts.dtype = DType::kBF16, experts.num_slots = kExperts, experts.hidden = kHidden, experts.inter = kInter;
  const double expert_bytes = 3.0 * per_matrix * 2;

  nlohmann::json spec = {{"hidden", kHidden}, {"inter", kInter}, {"experts", kExperts}, {"top_k", kTopK}};
  spec["cases"] = nlohmann::json::array();
  std::vector<Row> rows;
  std::mt19937 rng(2024);
  for (int B : kBatches) {
    Row row;
    row.batch = B;
    // Enough consecutive layers per replay that their weights (distinct experts each)
    // pass well beyond the 50 MB L2 and the replay lasts a few hundred microseconds.
    const double expect_distinct = kExperts * (1.0 - std::pow(1.0 - double(kTopK) / kExperts, B));
    const int R = std::clamp(static_cast<int>(std::ceil(2.5e9 / (expect_distinct * expert_bytes))), 4, 32);
    row.rotations = R;
    std::vector<Routing> routing;
    std::vector<std::vector<float>> xs;
    std::vector<void*> bufs;
    auto dev_copy = [&](const void* src, size_t bytes) {
      void* p;
      CK(cudaMalloc(&p, bytes));
      CK(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice));
      bufs.push_back(p);
      return p;
    };
    std::vector<cuda::MoeArgs> args;
    const size_t ws_bytes = cuda::moe_workspace_bytes(B, kTopK, kExperts, kHidden, kInter);
    void* ws;
    CK(cudaMalloc(&ws, ws_bytes));
    nlohmann::json c = {{"batch", B}, {"ids", nlohmann::json::array()}, {"weights", nlohmann::json::array()}};
    for (int r = 0; r < R; ++r) {
      routing.push_back(random_routing(B, rng));
      row.distinct += routing.back().distinct / double(R);
      std::uniform_real_distribution<float> ud(-2.f, 2.f);
      std::vector<float> x(static_cast<size_t>(B) * kHidden);
      for (auto& v : x) v = bf16_to_f32(f32_to_bf16(ud(rng)));
      std::vector<uint16_t> xb(x.size());
      for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]);
      xs.push_back(x);
      cuda::MoeArgs a;
      a.x = dev_copy(xb.data(), xb.size() * 2), a.x_dtype = DType::kBF16, a.rows = B;
      a.choice_slot = static_cast<const int32_t*>(dev_copy(routing.back().slot.data(), routing.back().slot.size() * 4));
      a.choice_weight = static_cast<const float*>(dev_copy(routing.back().weight.data(), routing.back().weight.size() * 4));
      a.top_k = kTopK;
      a.experts = experts;
      void* out;
      CK(cudaMalloc(&out, static_cast<size_t>(B) * kHidden * 4));
      bufs.push_back(out);
      a.out = out, a.out_dtype = DType::kF32;
      a.workspace = ws, a.workspace_bytes = ws_bytes;
      args.push_back(a);
      c["ids"].push_back(routing.back().slot);
      c["weights"].push_back(routing.back().weight);
    }
    spec["cases"].push_back(c);
    row.bytes = row.distinct * expert_bytes;
    ST(cuda::moe_expert_layer(args[0], stream));  // one-time setup outside the capture
    CK(cudaStreamSynchronize(stream));

    // The whole layer (work list, FFN, combine), R routings back to back.
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (const auto& a : args) ST(cuda::moe_expert_layer(a, stream));
    CK(cudaStreamEndCapture(stream, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    row.layer_s = bench::time_graph(exec, stream, iters) / R;
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    // The FFN kernel alone over each routing's (already built) work list would reuse
    // one list; instead time build + FFN without the combine's extra bytes.
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (const auto& a : args) {
      ST(cuda::moe_build_work_list(a, stream));
      ST(cuda::moe_grouped_ffn(a, stream));
    }
    CK(cudaStreamEndCapture(stream, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    row.ffn_s = bench::time_graph(exec, stream, iters) / R;
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));

    // Correctness of routing 0 against the CPU twin (the first 32 rows beyond B = 64).
    ST(cuda::moe_expert_layer(args[0], stream));
    CK(cudaStreamSynchronize(stream));
    const int check = B <= 64 ? B : 32;
    std::vector<float> got(static_cast<size_t>(check) * kHidden), want(got.size());
    CK(cudaMemcpy(got.data(), args[0].out, got.size() * 4, cudaMemcpyDeviceToHost));
    cpu::moe_grouped_ffn(xs[0].data(), check, kTopK, routing[0].slot.data(), routing[0].weight.data(), cpu_slots.data(),
                         DType::kBF16, kExperts, kHidden, kInter, false, want.data());
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!std::isfinite(got[i])) row.nan = true;
      num = std::max(num, std::fabs(static_cast<double>(got[i]) - want[i]));
      den = std::max(den, std::fabs(static_cast<double>(want[i])));
    }
    row.rel_err = den > 0 ? num / den : num;
    row.checked_rows = check;
    rows.push_back(row);
    for (void* p : bufs) CK(cudaFree(p));
    CK(cudaFree(ws));
    std::printf("  B=%-4d R=%-2d distinct %.1f  layer %.1f us  ffn %.1f us  err %.2g\n", B, R, row.distinct,
                row.layer_s * 1e6, row.ffn_s * 1e6, row.rel_err);
    std::fflush(stdout);
  }
  CK(cudaFree(weights));

  nlohmann::json peer;
  if (peers) {
    const std::string path = "/tmp/janus_moe_routing_" + std::to_string(::getpid()) + ".json";
    std::ofstream(path) << spec.dump();
    const std::string out =
        bench::capture("python3 " + bench::source_dir() + "/bench/peers/moe_layer_torch.py --routing " + path);
    std::remove(path.c_str());
    try {
      peer = nlohmann::json::parse(out);
    } catch (const std::exception&) {
      peer = {{"error", "no JSON from the torch peer: " + out.substr(0, 300)}};
    }
  }
  auto peer_us = [&](int B, const char* key) {
    if (!peer.contains("cases")) return -1.0;
    for (const auto& c : peer["cases"])
      if (c.value("batch", 0) == B && c.contains(key)) return c[key].get<double>();
    return -1.0;
  };

  std::printf("\nMoE layer, one expert instance: hidden %d, inter %d, %d experts, top-%d, bf16 weights\n", kHidden, kInter,
              kExperts, kTopK);
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_bw / 1e9);
  if (peers && peer.contains("error")) std::printf("torch peer: %s\n", peer["error"].get<std::string>().c_str());
  std::printf("\n%5s %8s %9s %9s %8s %7s %9s %7s %10s %9s %9s %7s  %s\n", "B", "distinct", "MB", "layer us", "GB/s",
              "%copy", "ffn GB/s", "%copy", "grp_mm us", "gmm-only", "loop us", "speedup", "check");
  for (const Row& r : rows) {
    const double gbs = r.bytes / r.layer_s / 1e9, ffn_gbs = r.bytes / r.ffn_s / 1e9;
    const double gmm = peer_us(r.batch, "grouped_mm_us"), gmm_only = peer_us(r.batch, "grouped_mm_only_us"),
                 loop = peer_us(r.batch, "loop_us");
    char speed[16] = "-";
    if (gmm > 0) std::snprintf(speed, sizeof speed, "%.2fx", gmm / (r.layer_s * 1e6));
    char check[64];
    std::snprintf(check, sizeof check, "%s (err %.1e, %d rows)", !r.nan && r.rel_err <= 1e-2 ? "ok" : "MISMATCH",
                  r.rel_err, r.checked_rows);
    std::printf("%5d %8.1f %9.1f %9.1f %8.0f %6.1f%% %9.0f %6.1f%% %10.1f %9.1f %9.1f %7s  %s\n", r.batch, r.distinct,
                r.bytes / 1e6, r.layer_s * 1e6, gbs, 100 * gbs * 1e9 / copy_bw, ffn_gbs, 100 * ffn_gbs * 1e9 / copy_bw,
                gmm, gmm_only, loop, speed, check);
  }
  std::printf("\nlayer = work list + grouped FFN + combine; ffn = work list + grouped FFN; bytes = distinct experts x "
              "3 x %d x %d x 2; speedup = torch grouped_mm layer / ours; -1 = not measured\n",
              kHidden, kInter);
  return 0;
}
