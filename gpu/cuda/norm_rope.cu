#include "gpu/cuda/norm_rope.h"

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

using detail::bf16;
using detail::from_f32;
using detail::to_f32;

constexpr int kNormThreads = 256;

// Block-wide sum; every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
  v = detail::warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < warps; ++w) s += scratch[w];
  return s;
}

// One row per block (rows wider than a warp can cover quickly). With `add`, the row is
// residual + delta, written back to the residual first. Each thread re-reads only the
// elements it wrote itself, so no barrier is needed between the passes.
template <class XT, class DT, class WT, class YT, bool kAdd>
__global__ void __launch_bounds__(kNormThreads) rms_norm_rows_kernel(XT* x, const DT* delta, int64_t dim, const WT* w,
                                                                     float eps, YT* y) {
  __shared__ float scratch[kNormThreads / 32];
  XT* xr = x + blockIdx.x * dim;
  YT* yr = y + blockIdx.x * dim;
  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float v = to_f32(xr[d]);
    if constexpr (kAdd) {
      XT stored = from_f32<XT>(v + to_f32(delta[blockIdx.x * dim + d]));
      xr[d] = stored;
      v = to_f32(stored);
    }
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) yr[d] = from_f32<YT>(to_f32(w[d]) * (to_f32(xr[d]) * inv));
}

// One row per warp for narrow rows (per-head norms, small models).
template <class XT, class DT, class WT, class YT, bool kAdd>
__global__ void __launch_bounds__(kNormThreads) rms_norm_warp_kernel(XT* x, const DT* delta, int64_t rows, int64_t dim,
                                                                     const WT* w, float eps, YT* y) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (kNormThreads / 32) + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  XT* xr = x + r * dim;
  YT* yr = y + r * dim;
  float ss = 0.f;
  for (int64_t d = lane; d < dim; d += 32) {
    float v = to_f32(xr[d]);
    if constexpr (kAdd) {
      XT stored = from_f32<XT>(v + to_f32(delta[r * dim + d]));
      xr[d] = stored;
      v = to_f32(stored);
    }
    ss += v * v;
  }
  ss = detail::warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (int64_t d = lane; d < dim; d += 32) yr[d] = from_f32<YT>(to_f32(w[d]) * (to_f32(xr[d]) * inv));
}

template <bool kAdd>
Status launch_norm(void* x, DType xt, const void* delta, DType dt, int64_t rows, int64_t dim, const void* w, DType wt,
                   float eps, void* y, DType yt, cudaStream_t stream) {
  if (rows == 0) return Status::Ok();
  return detail::dispatch_float(xt, "rms_norm input", [&](auto xtag) {
    using XT = typename decltype(xtag)::type;
    return detail::dispatch_float(kAdd ? dt : xt, "rms_norm delta", [&](auto dtag) {
      using DT = typename decltype(dtag)::type;
      return detail::dispatch_float(wt, "rms_norm weight", [&](auto wtag) {
        using WT = typename decltype(wtag)::type;
        return detail::dispatch_float(yt, "rms_norm output", [&](auto ytag) {
          using YT = typename decltype(ytag)::type;
          if (dim <= 256) {
            const unsigned blocks = static_cast<unsigned>((rows + kNormThreads / 32 - 1) / (kNormThreads / 32));
            rms_norm_warp_kernel<XT, DT, WT, YT, kAdd><<<blocks, kNormThreads, 0, stream>>>(
                static_cast<XT*>(x), static_cast<const DT*>(delta), rows, dim, static_cast<const WT*>(w), eps,
                static_cast<YT*>(y));
          } else {
            rms_norm_rows_kernel<XT, DT, WT, YT, kAdd><<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(
                static_cast<XT*>(x), static_cast<const DT*>(delta), dim, static_cast<const WT*>(w), eps,
                static_cast<YT*>(y));
          }
          JANUS_CUDA_TRY_LAUNCH();
          return Status::Ok();
        });
      });
    });
  });
}

constexpr int kMaxHeadDim = 512;
constexpr int kRopeWarps = 8;

// One (row, head) per warp: the head's vector goes through shared memory so that the
// pairs (i, i + half) can be rotated by any lane whatever head_dim is.
template <class T, class WT>
__global__ void __launch_bounds__(kRopeWarps * 32) qk_norm_rope_kernel(T* q, T* k, int64_t rows, int heads, int kv_heads,
                                                                       int head_dim, const WT* q_norm, const WT* k_norm,
                                                                       float eps, const cpu::KvRow* row,
                                                                       const float* inv_freq) {
  __shared__ float buf[kRopeWarps][kMaxHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int per_row = heads + (k ? kv_heads : 0);
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kRopeWarps + warp;
  if (item >= rows * per_row) return;
  const int64_t r = item / per_row;
  const int h = static_cast<int>(item % per_row);
  const bool is_q = h < heads;
  T* v = is_q ? q + (r * heads + h) * head_dim : k + (r * kv_heads + (h - heads)) * head_dim;
  const WT* w = is_q ? q_norm : k_norm;
  float* b = buf[warp];
  float ss = 0.f;
  for (int d = lane; d < head_dim; d += 32) {
    float x = to_f32(v[d]);
    b[d] = x;
    ss += x * x;
  }
  if (w) {
    ss = detail::warp_sum(ss);
    const float inv = 1.0f / sqrtf(ss / static_cast<float>(head_dim) + eps);
    for (int d = lane; d < head_dim; d += 32) b[d] = to_f32(w[d]) * (b[d] * inv);
  }
  __syncwarp();
  const int half = head_dim / 2;
  const float p = static_cast<float>(row[r].pos);
  for (int i = lane; i < half; i += 32) {
    const float angle = p * inv_freq[i];  // fp32 product, as transformers forms freqs
    float s, c;
    sincosf(angle, &s, &c);
    const float a = b[i], bb = b[i + half];
    v[i] = from_f32<T>(a * c - bb * s);
    v[i + half] = from_f32<T>(bb * c + a * s);
  }
}

}  // namespace

Status rms_norm(const void* x, DType x_dtype, int64_t rows, int64_t dim, const void* w, DType w_dtype, float eps, void* y,
                DType y_dtype, cudaStream_t stream) {
  return launch_norm<false>(const_cast<void*>(x), x_dtype, nullptr, x_dtype, rows, dim, w, w_dtype, eps, y, y_dtype, stream);
}

Status add_rms_norm(void* residual, DType residual_dtype, const void* delta, DType delta_dtype, int64_t rows, int64_t dim,
                    const void* w, DType w_dtype, float eps, void* y, DType y_dtype, cudaStream_t stream) {
  return launch_norm<true>(residual, residual_dtype, delta, delta_dtype, rows, dim, w, w_dtype, eps, y, y_dtype, stream);
}

Status qk_norm_rope(void* q, void* k, DType dtype, int64_t rows, int heads, int kv_heads, int head_dim, const void* q_norm,
                    const void* k_norm, DType norm_dtype, float eps, const cpu::KvRow* row, const float* inv_freq,
                    cudaStream_t stream) {
  if (head_dim % 2 != 0 || head_dim > kMaxHeadDim)
    return unsupported("qk_norm_rope: head_dim " + std::to_string(head_dim) + " (even, at most 512)");
  if (rows == 0) return Status::Ok();
  return detail::dispatch_float(dtype, "qk_norm_rope q/k", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return detail::dispatch_float(norm_dtype, "qk_norm_rope norm weight", [&](auto wtag) {
      using WT = typename decltype(wtag)::type;
      const int64_t items = rows * (heads + (k ? kv_heads : 0));
      const unsigned blocks = static_cast<unsigned>((items + kRopeWarps - 1) / kRopeWarps);
      qk_norm_rope_kernel<T, WT><<<blocks, kRopeWarps * 32, 0, stream>>>(
          static_cast<T*>(q), static_cast<T*>(k), rows, heads, kv_heads, head_dim, static_cast<const WT*>(q_norm),
          static_cast<const WT*>(k_norm), eps, row, inv_freq);
      JANUS_CUDA_TRY_LAUNCH();
      return Status::Ok();
    });
  });
}

}  // namespace janus::cuda
