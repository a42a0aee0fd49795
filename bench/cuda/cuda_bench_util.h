// Shared by the CUDA benchmark programs: one error macro, event timing of work on a
// stream (and of CUDA graph replays), and the device-to-device copy bandwidth that is
// their floor.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench/bench_util.h"

// A benchmark cannot go on after a failed CUDA call: say which, where, and stop.
#define CK(call)                                                                                            \
  do {                                                                                                      \
    cudaError_t e_ = (call);                                                                                \
    if (e_ != cudaSuccess) {                                                                                \
      std::fprintf(stderr, "%s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                         \
    }                                                                                                       \
  } while (0)

namespace janus::bench {

/// Median seconds of `iters` runs of `op` (which enqueues its work on `stream`), each timed
/// alone between two events, after `warmup` untimed runs.
template <class Op>
double time_stream(cudaStream_t stream, int warmup, int iters, Op&& op) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < warmup; ++i) op();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(e0, stream));
    op();
    CK(cudaEventRecord(e1, stream));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1e-3);
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return median(t);
}

/// Median seconds per replay of a CUDA graph.
inline double time_graph(cudaGraphExec_t exec, cudaStream_t stream, int iters, int warmup = 2) {
  return time_stream(stream, warmup, iters, [&] { CK(cudaGraphLaunch(exec, stream)); });
}

/// Device-to-device copy bandwidth, bytes read + written per second (1 GiB buffers,
/// median of 10 copies after 2).
inline double copy_bandwidth(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  void *a, *b;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemsetAsync(a, 1, bytes, stream));
  const double s = time_stream(stream, 2, 10, [&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream)); });
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * static_cast<double>(bytes) / s;
}

}  // namespace janus::bench
