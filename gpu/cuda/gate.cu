#include "gpu/cuda/gate.h"

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

constexpr int kGateWarps = 4;

// (p, id) a beats (p, id) b: larger probability, or equal and lower id: cpu::gate_topk's
// order. Removed entries carry p = -1 and never win.
__device__ __forceinline__ bool beats(float pa, int ia, float pb, int ib) { return pa > pb || (pa == pb && ia < ib); }

// One warp per row; lane l holds experts l, l + 32, ... in registers.
template <int kPerLane>
__global__ void __launch_bounds__(kGateWarps * 32) gate_topk_kernel(const float* logits, int64_t rows, int experts,
                                                                    int top_k, bool renormalize, int32_t* ids,
                                                                    float* weights) {
  const int lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kGateWarps + threadIdx.x / 32;
  if (r >= rows) return;
  const float* l = logits + r * experts;
  float p[kPerLane];
  float mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    p[i] = e < experts ? l[e] : -INFINITY;
    mx = fmaxf(mx, p[i]);
  }
  mx = detail::warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    p[i] = e < experts ? expf(p[i] - mx) : 0.f;
    sum += p[i];
  }
  sum = detail::warp_sum(sum);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) p[i] = lane + 32 * i < experts ? p[i] / sum : -1.f;

  float chosen_p = 0.f;  // lane j < top_k keeps the j-th choice
  int chosen_id = 0;
  float ksum = 0.f;
  for (int j = 0; j < top_k; ++j) {
    float bp = -1.f;
    int bi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (beats(p[i], lane + 32 * i, bp, bi)) bp = p[i], bi = lane + 32 * i;
#pragma unroll
    for (int o = 16; o >= 1; o /= 2) {
      const float op = __shfl_xor_sync(0xffffffffu, bp, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (beats(op, oi, bp, bi)) bp = op, bi = oi;
    }
    if (bi % 32 == lane) {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i)
        if (i == bi / 32) p[i] = -1.f;
    }
    if (lane == j) chosen_p = bp, chosen_id = bi;
    ksum += bp;  // in choice order, as the CPU twin sums
  }
  if (lane < top_k) {
    ids[r * top_k + lane] = chosen_id;
    weights[r * top_k + lane] = renormalize ? chosen_p / ksum : chosen_p;
  }
}

}  // namespace

Status gate_topk(const float* logits, int64_t rows, int experts, int top_k, bool renormalize, int32_t* ids, float* weights,
                 cudaStream_t stream) {
  if (experts <= 0 || experts > 1024 || top_k <= 0 || top_k > 32 || top_k > experts)
    return unsupported("gate_topk: " + std::to_string(experts) + " experts, top_k " + std::to_string(top_k) +
                       " (experts <= 1024, top_k <= min(32, experts))");
  if (rows == 0) return Status::Ok();
  const unsigned blocks = static_cast<unsigned>((rows + kGateWarps - 1) / kGateWarps);
  const int per_lane = (experts + 31) / 32;
#define JANUS_GATE_CASE(N)                                                                                        \
  if (per_lane <= N) {                                                                                            \
    gate_topk_kernel<N><<<blocks, kGateWarps * 32, 0, stream>>>(logits, rows, experts, top_k, renormalize, ids, \
                                                                weights);                                         \
    JANUS_CUDA_TRY_LAUNCH();                                                                                      \
    return Status::Ok();                                                                                          \
  }
  JANUS_GATE_CASE(1)
  JANUS_GATE_CASE(2)
  JANUS_GATE_CASE(4)
  JANUS_GATE_CASE(8)
  JANUS_GATE_CASE(16)
  JANUS_GATE_CASE(32)
#undef JANUS_GATE_CASE
  return internal_error("gate_topk: unreachable");
}

}  // namespace janus::cuda
