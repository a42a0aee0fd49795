// Device-side helpers shared by the kernels of gpu/cuda: element conversion by type,
// 16-byte streaming loads, warp reductions, the bf16 tensor-core instruction
// (mma.sync m16n8k16) with the operand layout the weight-streaming kernels use, and the
// host-side dtype dispatch of the launchers. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "gpu/cuda/device.h"
#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::cuda::detail {

using bf16 = __nv_bfloat16;

// -- element conversion ----------------------------------------------------------------

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
// Round to nearest even, as janus::f32_to_bf16 and torch's .to(bfloat16).
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  uint32_t r;
  memcpy(&r, &v, 4);
  return r;
}

// -- loads -----------------------------------------------------------------------------

// Weights are read exactly once per launch: bypass L1 so it keeps the activations that
// every warp of the block re-reads, and let L2 fetch the row's next 256 bytes early.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

__device__ __forceinline__ int ld_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// -- warp reductions (butterflies: every lane ends with the same, order-fixed value) ---

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// -- tensor cores ----------------------------------------------------------------------
//
// D += A * B with A 16x16 (row), B 16x8 (col), bf16 in, fp32 accumulate. Lane l holds
// g = l / 4 and t = l % 4; registers: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1],
// a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9]; b0 = B[2t..2t+1][g],
// b1 = B[2t+8..2t+9][g]; d0,d1 = D[g][2t..2t+1], d2,d3 = D[g+8][2t..2t+1].
//
// A dot product does not care in which order its k terms come, only that both operands
// use the same order. The streaming kernels exploit that: within a 64-element k-block a
// lane loads elements [8t, 8t+8) and [32+8t, 32+8t+8) of its row (two 16-byte loads; a
// quad of lanes covers 64 contiguous bytes per load, so every sector is used), and k-step
// s of the block feeds it lane-local words 2s and 2s+1 (elements 4s..4s+3). B uses the
// same lane-local order, so no shuffles or shared-memory transposes are needed.
__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/// The lane's 8 words (16 bf16) of a 64-element k-block starting at `p` (a row of bf16).
__device__ __forceinline__ void load_kblock_stream(const bf16* p, int t, uint32_t (&w)[8]) {
  uint4 lo = ld_stream(p + 8 * t), hi = ld_stream(p + 32 + 8 * t);
  w[0] = lo.x, w[1] = lo.y, w[2] = lo.z, w[3] = lo.w, w[4] = hi.x, w[5] = hi.y, w[6] = hi.z, w[7] = hi.w;
}

/// Same from read-only activations (cached in L1: the block's warps share them),
/// converting fp32 to bf16; zeros when !valid.
__device__ __forceinline__ void load_kblock_act(const bf16* p, int t, bool valid, uint32_t (&w)[8]) {
  uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
  if (valid) {
    lo = __ldg(reinterpret_cast<const uint4*>(p + 8 * t));
    hi = __ldg(reinterpret_cast<const uint4*>(p + 32 + 8 * t));
  }
  w[0] = lo.x, w[1] = lo.y, w[2] = lo.z, w[3] = lo.w, w[4] = hi.x, w[5] = hi.y, w[6] = hi.z, w[7] = hi.w;
}
__device__ __forceinline__ void load_kblock_act(const float* p, int t, bool valid, uint32_t (&w)[8]) {
  float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a, c = a, d = a;
  if (valid) {
    a = __ldg(reinterpret_cast<const float4*>(p + 8 * t));
    b = __ldg(reinterpret_cast<const float4*>(p + 8 * t + 4));
    c = __ldg(reinterpret_cast<const float4*>(p + 32 + 8 * t));
    d = __ldg(reinterpret_cast<const float4*>(p + 32 + 8 * t + 4));
  }
  w[0] = pack_bf16x2(a.x, a.y), w[1] = pack_bf16x2(a.z, a.w), w[2] = pack_bf16x2(b.x, b.y), w[3] = pack_bf16x2(b.z, b.w);
  w[4] = pack_bf16x2(c.x, c.y), w[5] = pack_bf16x2(c.z, c.w), w[6] = pack_bf16x2(d.x, d.y), w[7] = pack_bf16x2(d.z, d.w);
}

/// One 64-element k-block of D (16 rows x 8 columns) += A (rows `ra` = row g, `rb` =
/// row g+8, lane words as loaded above) * B (lane words `b` of column g).
__device__ __forceinline__ void mma_kblock(float (&d)[4], const uint32_t (&ra)[8], const uint32_t (&rb)[8],
                                           const uint32_t (&b)[8]) {
#pragma unroll
  for (int s = 0; s < 4; ++s) mma_bf16(d, ra[2 * s], rb[2 * s], ra[2 * s + 1], rb[2 * s + 1], b[2 * s], b[2 * s + 1]);
}

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// -- host side -------------------------------------------------------------------------

template <class T>
struct TypeTag {
  using type = T;
};

/// Calls f(TypeTag<float>) or f(TypeTag<bf16>) for a runtime dtype; other dtypes are
/// refused with a message naming the operand.
template <class F>
Status dispatch_float(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::kF32:
      return f(TypeTag<float>{});
    case DType::kBF16:
      return f(TypeTag<bf16>{});
    default:
      return unsupported(std::string(what) + " has dtype " + dtype_name(dt) + "; the CUDA kernels take F32 or BF16");
  }
}

inline int current_sm_count() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 132;
  return n;
}

/// Lets `kernel` use `bytes` of dynamic shared memory (beyond the 48 KB default) on the
/// current device; done once per device. Not a stream operation, so it is also fine
/// while a stream is being captured into a graph.
template <class Kernel>
cudaError_t allow_dynamic_smem(Kernel kernel, int bytes) {
  static std::mutex mu;
  static std::vector<std::pair<const void*, int>> done;  // (kernel, device)
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const std::pair<const void*, int> key(reinterpret_cast<const void*>(kernel), dev);
  std::lock_guard<std::mutex> lock(mu);
  if (std::find(done.begin(), done.end(), key) != done.end()) return cudaSuccess;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) done.push_back(key);
  return e;
}

/// Resident blocks per SM of `kernel` at this block size and dynamic shared memory on the
/// current device, asked once per (kernel, device, smem) and then remembered.
template <class Kernel>
cudaError_t resident_blocks_per_sm(Kernel kernel, int threads, size_t smem, int* blocks) {
  struct Entry {
    const void* kernel;
    int device, threads;
    size_t smem;
    int blocks;
  };
  static std::mutex mu;
  static std::vector<Entry> known;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const void* k = reinterpret_cast<const void*>(kernel);
  std::lock_guard<std::mutex> lock(mu);
  for (const Entry& x : known)
    if (x.kernel == k && x.device == dev && x.threads == threads && x.smem == smem) {
      *blocks = x.blocks;
      return cudaSuccess;
    }
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kernel, threads, smem);
  if (e == cudaSuccess) known.push_back({k, dev, threads, smem, *blocks});
  return e;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

}  // namespace janus::cuda::detail
