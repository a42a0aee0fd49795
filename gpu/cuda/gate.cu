#include "gpu/cuda/gate.h"

#include <type_traits>

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

constexpr int kGateWarps = 4;
constexpr int kNoId = 0x7fffffff;
constexpr unsigned kFull = 0xffffffffu;

// (v, id) a beats (v, id) b: larger value, or equal and lower id: the order of the CPU
// twins' partial_sorts, for experts and for groups alike. A strict total order on distinct
// ids, so a butterfly over it leaves every lane with the same winner.
__device__ __forceinline__ bool beats(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

// exp as the twins' std::exp(float) rounds it: in double, rounded once to float. glibc's
// expf is correctly rounded but in rare hard cases, CUDA's expf only within 2 ulp; the
// scores decide near-ties and the choice order, which must not depend on where routing ran.
__device__ __forceinline__ float exp_rn(float x) { return static_cast<float>(exp(static_cast<double>(x))); }

// The best (value, id) over the warp's entries not yet taken (lane l holds experts
// l, l + 32, ...; bit i of `taken` marks its entry i chosen). Entries past `experts` never
// compete; -inf entries still do (ties to the lower id), as in the twins' sorts.
template <int kPerLane>
__device__ __forceinline__ void warp_best(const float (&v)[kPerLane], uint32_t taken, int lane, int experts, float* bv,
                                          int* bi) {
  float b = -INFINITY;
  int id = kNoId;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < experts && !((taken >> i) & 1u) && beats(v[i], e, b, id)) b = v[i], id = e;
  }
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) {
    const float ob = __shfl_xor_sync(kFull, b, o);
    const int oid = __shfl_xor_sync(kFull, id, o);
    if (beats(ob, oid, b, id)) b = ob, id = oid;
  }
  *bv = b;
  *bi = id;
}

// The topk_group best of n_group groups (lane g < n_group holds group g's score; ties to
// the lower group), as a bit mask.
__device__ __forceinline__ uint32_t keep_groups(float score, int lane, int n_group, int topk_group) {
  uint32_t keep = 0;
  for (int t = 0; t < topk_group; ++t) {
    float b = -INFINITY;
    int id = kNoId;
    if (lane < n_group && !((keep >> lane) & 1u)) b = score, id = lane;
#pragma unroll
    for (int o = 16; o >= 1; o /= 2) {
      const float ob = __shfl_xor_sync(kFull, b, o);
      const int oid = __shfl_xor_sync(kFull, id, o);
      if (beats(ob, oid, b, id)) b = ob, id = oid;
    }
    keep |= 1u << id;
  }
  return keep;
}

// Softmax gate, one warp per row; s is the warp's [experts] floats of shared memory.
template <int kPerLane>
__global__ void __launch_bounds__(kGateWarps * 32)
    gate_softmax_kernel(const float* logits, int64_t rows, int experts, int top_k, int n_group, int topk_group,
                        bool renormalize, float scale, int32_t* ids, float* weights) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kGateWarps + warp;
  if (r >= rows) return;  // the whole warp: only __syncwarp below
  float* s = smem + static_cast<size_t>(warp) * experts;
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
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < experts) {
      p[i] = exp_rn(p[i] - mx);
      s[e] = p[i];
    }
  }
  __syncwarp();
  // The twin's sum in the twin's order (expert 0 first), by every lane over the same
  // broadcast reads: the probabilities, and so the choices among near-equal ones and the
  // weights, come out as the CPU's bits, not a tree sum's.
  float sum = 0.f;
  for (int e = 0; e < experts; ++e) sum += s[e];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i)
    if (lane + 32 * i < experts) p[i] = p[i] / sum;

  if (topk_group < n_group) {
    // Groups scored by their best expert; the dropped groups' experts score 0 (as
    // transformers masks them, and still eligible past the kept ones: the twin's order).
    __syncwarp();  // every lane has summed s before it is overwritten
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (lane + 32 * i < experts) s[lane + 32 * i] = p[i];
    __syncwarp();
    const int per = experts / n_group;
    float gs = -INFINITY;
    if (lane < n_group)
      for (int i = 0; i < per; ++i) gs = fmaxf(gs, s[lane * per + i]);
    const uint32_t keep = keep_groups(gs, lane, n_group, topk_group);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < experts && !((keep >> (e / per)) & 1u)) p[i] = 0.f;
    }
  }

  uint32_t taken = 0;
  float chosen = 0.f;  // lane j < top_k keeps the j-th choice
  int chosen_id = 0;
  float ksum = 0.f;
  for (int j = 0; j < top_k; ++j) {
    float bv;
    int bi;
    warp_best<kPerLane>(p, taken, lane, experts, &bv, &bi);
    if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
    if (lane == j) chosen = bv, chosen_id = bi;
    ksum += bv;  // in choice order, as the twin sums
  }
  if (lane < top_k) {
    ids[r * top_k + lane] = chosen_id;
    const float w = renormalize ? chosen / ksum : chosen;
    weights[r * top_k + lane] = w * scale;  // scale 1 is exact: cpu::gate_topk's bits
  }
}

// noaux_tc gate, one warp per row; s holds the row's bias-corrected scores for the groups.
template <int kPerLane>
__global__ void __launch_bounds__(kGateWarps * 32)
    gate_sigmoid_kernel(const float* logits, const float* bias, int64_t rows, int experts, int top_k, int n_group,
                        int topk_group, bool renormalize, float scale, int32_t* ids, float* weights) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kGateWarps + warp;
  if (r >= rows) return;
  float* s = smem + static_cast<size_t>(warp) * experts;
  const float* l = logits + r * experts;
  float score[kPerLane], choice[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    score[i] = choice[i] = 0.f;
    if (e < experts) {
      score[i] = 1.0f / (1.0f + exp_rn(-l[e]));  // the twin's operations, each rounded as there
      choice[i] = score[i] + bias[e];
      s[e] = choice[i];
    }
  }

  if (topk_group < n_group) {
    // Groups scored by the sum of their two best corrected scores, with the twin's scan
    // (an equal second best counts twice); the dropped groups' experts never win ahead of
    // a kept one (-inf, as transformers masks them).
    __syncwarp();
    const int per = experts / n_group;
    float gs = -INFINITY;
    if (lane < n_group) {
      float a = -INFINITY, b = -INFINITY;
      for (int i = 0; i < per; ++i) {
        const float c = s[lane * per + i];
        if (c > a) {
          b = a;
          a = c;
        } else if (c > b) {
          b = c;
        }
      }
      gs = a + b;
    }
    const uint32_t keep = keep_groups(gs, lane, n_group, topk_group);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < experts && !((keep >> (e / per)) & 1u)) choice[i] = -INFINITY;
    }
  }

  uint32_t taken = 0;
  float chosen = 0.f;  // lane j < top_k keeps the j-th choice's plain score
  int chosen_id = 0;
  float sum = 0.f;
  for (int j = 0; j < top_k; ++j) {
    float bv;
    int bi;
    warp_best<kPerLane>(choice, taken, lane, experts, &bv, &bi);
    // The weight is the chosen expert's uncorrected score, held by lane bi % 32.
    float mine = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (i == (bi >> 5)) mine = score[i];
    const float sw = __shfl_sync(kFull, mine, bi & 31);
    if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
    if (lane == j) chosen = sw, chosen_id = bi;
    sum += sw;  // in choice order, as the twin sums
  }
  if (lane < top_k) {
    ids[r * top_k + lane] = chosen_id;
    const float w = renormalize ? chosen / (sum + 1e-20f) : chosen;
    weights[r * top_k + lane] = w * scale;
  }
}

Status check_shape(const char* what, int experts, int top_k, int n_group, int topk_group) {
  if (experts <= 0 || experts > 1024 || top_k <= 0 || top_k > 32 || top_k > experts)
    return unsupported(std::string(what) + ": " + std::to_string(experts) + " experts, top_k " + std::to_string(top_k) +
                       " (experts <= 1024, top_k <= min(32, experts))");
  if (n_group < 1 || n_group > 32 || experts % n_group != 0 || topk_group < 1 || topk_group > n_group)
    return unsupported(std::string(what) + ": " + std::to_string(experts) + " experts in " + std::to_string(n_group) +
                       " groups keeping " + std::to_string(topk_group) +
                       " (1 <= topk_group <= n_group <= 32, n_group dividing the experts)");
  return Status::Ok();
}

// The template instance for the experts per lane; `launch` takes the kernel pointer.
template <class Launch>
Status dispatch(int experts, Launch&& launch) {
  const int per_lane = (experts + 31) / 32;
  if (per_lane <= 1) return launch(std::integral_constant<int, 1>{});
  if (per_lane <= 2) return launch(std::integral_constant<int, 2>{});
  if (per_lane <= 4) return launch(std::integral_constant<int, 4>{});
  if (per_lane <= 8) return launch(std::integral_constant<int, 8>{});
  if (per_lane <= 16) return launch(std::integral_constant<int, 16>{});
  return launch(std::integral_constant<int, 32>{});
}

}  // namespace

Status gate_topk_grouped(const float* logits, int64_t rows, int experts, int top_k, int n_group, int topk_group,
                         bool renormalize, float scale, int32_t* ids, float* weights, cudaStream_t stream) {
  JANUS_TRY(check_shape("gate_topk", experts, top_k, n_group, topk_group));
  if (rows == 0) return Status::Ok();
  const unsigned blocks = static_cast<unsigned>((rows + kGateWarps - 1) / kGateWarps);
  const size_t smem = static_cast<size_t>(kGateWarps) * experts * sizeof(float);  // <= 16 KiB
  return dispatch(experts, [&](auto n) -> Status {
    gate_softmax_kernel<decltype(n)::value><<<blocks, kGateWarps * 32, smem, stream>>>(
        logits, rows, experts, top_k, n_group, topk_group, renormalize, scale, ids, weights);
    JANUS_CUDA_TRY_LAUNCH();
    return Status::Ok();
  });
}

Status gate_topk(const float* logits, int64_t rows, int experts, int top_k, bool renormalize, int32_t* ids, float* weights,
                 cudaStream_t stream) {
  return gate_topk_grouped(logits, rows, experts, top_k, 1, 1, renormalize, 1.0f, ids, weights, stream);
}

Status gate_topk_sigmoid_grouped(const float* logits, const float* bias, int64_t rows, int experts, int top_k, int n_group,
                                 int topk_group, bool renormalize, float scale, int32_t* ids, float* weights,
                                 cudaStream_t stream) {
  JANUS_TRY(check_shape("gate_topk_sigmoid_grouped", experts, top_k, n_group, topk_group));
  if (bias == nullptr) return invalid_argument("gate_topk_sigmoid_grouped: no e_score_correction_bias");
  if (rows == 0) return Status::Ok();
  const unsigned blocks = static_cast<unsigned>((rows + kGateWarps - 1) / kGateWarps);
  const size_t smem = static_cast<size_t>(kGateWarps) * experts * sizeof(float);
  return dispatch(experts, [&](auto n) -> Status {
    gate_sigmoid_kernel<decltype(n)::value><<<blocks, kGateWarps * 32, smem, stream>>>(
        logits, bias, rows, experts, top_k, n_group, topk_group, renormalize, scale, ids, weights);
    JANUS_CUDA_TRY_LAUNCH();
    return Status::Ok();
  });
}

}  // namespace janus::cuda
