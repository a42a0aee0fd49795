// Linear layers of the GPU preset (hidden 2048, q 32 x 128, kv 4 x 128, 128 experts'
// router, vocab 32000), bf16 weights and activations, fp32 out: cuBLAS against the
// weight-streaming kernel (kSkinny) for decode-sized row counts, as weight bytes per
// second against the device's copy bandwidth. Says where kAuto should switch.
//
//   bench_linear [--iters N]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench/cuda/cuda_bench_util.h"
#include "gpu/cuda/device.h"
#include "gpu/cuda/gemm.h"

using namespace janus;

namespace {

__global__ void fill_bf16(__nv_bfloat16* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16_rn((static_cast<float>(h & 0xffff) + 0.5f) / 32768.f - 1.f);
  }
}

struct Shape {
  const char* name;
  int64_t k, n;
};

}  // namespace

int main(int argc, char** argv) {
  int iters = 15;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
  if (cuda::device_count() == 0) {
    std::printf("bench_linear: no CUDA device\n");
    return 0;
  }
  std::printf("device: %s\n", cuda::device_description(0).c_str());
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return 1;
  void* cublas_ws;
  CK(cudaMalloc(&cublas_ws, 32u << 20));
  cublasSetWorkspace(handle, cublas_ws, 32u << 20);
  const double copy_bw = bench::copy_bandwidth(stream);
  const Shape shapes[] = {{"q_proj", 2048, 4096}, {"k_proj", 2048, 512}, {"o_proj", 4096, 2048},
                          {"router", 2048, 128},  {"lm_head", 2048, 32000}};
  const int64_t ms[] = {1, 4, 8, 16, 32, 64};
  std::printf("\ndevice-to-device copy: %.0f GB/s (read + write); weight GB/s (%% of copy)\n", copy_bw / 1e9);
  std::printf("%-8s %6s %6s %5s %11s %15s %15s  %s\n", "layer", "k", "n", "m", "weights MB", "cublas", "skinny", "faster");
  for (const Shape& s : shapes) {
    const size_t wbytes = static_cast<size_t>(s.k * s.n) * 2;
    // Enough copies of the weight that a pass over them all leaves L2 cold.
    const int R = std::clamp(static_cast<int>(std::ceil(200e6 / static_cast<double>(wbytes))), 1, 64);
    __nv_bfloat16 *w, *x;
    float* y;
    CK(cudaMalloc(&w, wbytes * R));
    CK(cudaMalloc(&x, static_cast<size_t>(64 * s.k) * 2));
    CK(cudaMalloc(&y, static_cast<size_t>(64 * s.n) * 4));
    fill_bf16<<<2048, 256, 0, stream>>>(w, wbytes / 2 * R, 1);
    fill_bf16<<<256, 256, 0, stream>>>(x, static_cast<size_t>(64 * s.k), 2);
    for (int64_t m : ms) {
      double t[2] = {-1, -1};
      for (int algo = 0; algo < 2; ++algo) {
        cuda::LinearArgs a;
        a.x = x, a.x_dtype = DType::kBF16, a.m = m, a.k = s.k;
        a.w = w, a.w_dtype = DType::kBF16, a.n = s.n;
        a.y = y, a.y_dtype = DType::kF32;
        a.algo = algo == 0 ? cuda::LinearAlgo::kCublas : cuda::LinearAlgo::kSkinny;
        if (cuda::linear_algo(a) != a.algo) continue;
        if (!cuda::linear(handle, a, stream).ok()) continue;
        CK(cudaStreamSynchronize(stream));
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        for (int r = 0; r < R; ++r) {
          a.w = w + static_cast<size_t>(r) * s.k * s.n;
          (void)cuda::linear(handle, a, stream);
        }
        CK(cudaStreamEndCapture(stream, &graph));
        CK(cudaGraphInstantiate(&exec, graph, 0));
        t[algo] = bench::time_graph(exec, stream, iters, /*warmup=*/1) / R;
        CK(cudaGraphExecDestroy(exec));
        CK(cudaGraphDestroy(graph));
      }
      char c[2][32];
      for (int i = 0; i < 2; ++i) {
        if (t[i] < 0) std::snprintf(c[i], sizeof c[i], "-");
        else {
          const double gbs = static_cast<double>(wbytes) / t[i] / 1e9;
          std::snprintf(c[i], sizeof c[i], "%5.1fus %4.0f(%2.0f%%)", t[i] * 1e6, gbs, 100 * gbs * 1e9 / copy_bw);
        }
      }
      const char* faster = t[1] < 0 ? "cublas" : (t[0] < 0 || t[1] < t[0] ? "skinny" : "cublas");
      std::printf("%-8s %6lld %6lld %5lld %11.1f %15s %15s  %s\n", s.name, static_cast<long long>(s.k),
                  static_cast<long long>(s.n), static_cast<long long>(m), wbytes / 1e6, c[0], c[1], faster);
    }
    CK(cudaFree(w));
    CK(cudaFree(x));
    CK(cudaFree(y));
  }
  std::printf("\nkAuto uses skinny for m <= %lld (gpu/cuda/gemm.h kSkinnyMaxRows)\n",
              static_cast<long long>(cuda::kSkinnyMaxRows));
  cublasDestroy(handle);
  return 0;
}
