#include "gpu/cuda/gemm.h"

#include <algorithm>
#include <string>

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

using detail::bf16;
using detail::from_f32;
using detail::to_f32;

Status cublas_try(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return internal_error(std::string("cuBLAS: ") + what + " failed: " + cublasGetStatusName(s) + " (" +
                        cublasGetStatusString(s) + ")");
}

// -- kSkinny: one weight pass on tensor cores ---------------------------------------------
//
// Decode multiplies a few activation rows by a large weight: the time is the weight's
// bytes over memory bandwidth, so the kernel reads every weight byte once, 16 bytes per
// load with several loads in flight per lane, and keeps the activations (at most 16
// rows, L1-resident) as the narrow operand of mma.sync: W rows are the 16-row A tile,
// activation rows the 8-column B tile. A block of 4 warps covers 4/KS tiles of 16 weight
// rows; the KS warps of a tile split k and add their partial sums in a fixed order.

constexpr int kSkinnyThreads = 128;
constexpr int kSkinnyUnroll = 4;  // k-blocks of loads in flight per lane (4 x 4 x 16 bytes)

template <int NT, int KS, class XT, class YT>
__global__ void __launch_bounds__(kSkinnyThreads) skinny_kernel(const XT* __restrict__ x, int64_t m, int64_t k,
                                                                const bf16* __restrict__ w, int64_t n, YT* y,
                                                                bool accumulate) {
  constexpr int kTilesPerBlock = 4 / KS;
  __shared__ float partial[4][NT][4][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int tile = warp / KS, ks = warp % KS;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kTilesPerBlock + tile) * 16;
  const int64_t ra = row0 + g, rb = row0 + g + 8;
  const bool va = ra < n, vb = rb < n;
  const bf16* wa_row = w + (va ? ra : 0) * k;
  const bf16* wb_row = w + (vb ? rb : 0) * k;
  const int nkb = static_cast<int>(k / 64);
  const int kb0 = ks * nkb / KS, kb1 = (ks + 1) * nkb / KS;

  float acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;

  for (int kb = kb0; kb < kb1; kb += kSkinnyUnroll) {
    uint32_t wa[kSkinnyUnroll][8], wb[kSkinnyUnroll][8];
#pragma unroll
    for (int u = 0; u < kSkinnyUnroll; ++u) {
      if (kb + u < kb1) {
        if (va) detail::load_kblock_stream(wa_row + (kb + u) * 64, t, wa[u]);
        else for (int i = 0; i < 8; ++i) wa[u][i] = 0;
        if (vb) detail::load_kblock_stream(wb_row + (kb + u) * 64, t, wb[u]);
        else for (int i = 0; i < 8; ++i) wb[u][i] = 0;
      }
    }
#pragma unroll
    for (int u = 0; u < kSkinnyUnroll; ++u) {
      if (kb + u < kb1) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const int64_t row = nt * 8 + g;
          uint32_t xb[8];
          detail::load_kblock_act(x + (row < m ? row : 0) * k + (kb + u) * 64, t, row < m, xb);
          detail::mma_kblock(acc[nt], wa[u], wb[u], xb);
        }
      }
    }
  }

  if constexpr (KS > 1) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      for (int e = 0; e < 4; ++e) partial[warp][nt][e][lane] = acc[nt][e];
    __syncthreads();
    if (ks != 0) return;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      for (int e = 0; e < 4; ++e) {
        float s = partial[warp][nt][e][lane];
        for (int j = 1; j < KS; ++j) s += partial[warp + j][nt][e][lane];
        acc[nt][e] = s;
      }
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = row0 + g + (e >= 2 ? 8 : 0);
      const int64_t tok = nt * 8 + 2 * t + (e & 1);
      if (row < n && tok < m) {
        YT* dst = y + tok * n + row;
        *dst = from_f32<YT>(accumulate ? to_f32(*dst) + acc[nt][e] : acc[nt][e]);
      }
    }
}

template <class XT, class YT>
Status launch_skinny(const LinearArgs& a, cudaStream_t stream) {
  const int64_t tiles = (a.n + 15) / 16;
  const int64_t want = 2 * detail::current_sm_count();
  // Fewer k-splits when there are rows enough to fill the GPU: each split costs a
  // partial-sum exchange; too few blocks leave bandwidth unused.
  int ks = 1;
  if ((tiles + 3) / 4 < want) ks = (tiles + 1) / 2 < want ? 4 : 2;
  const int nt = a.m <= 8 ? 1 : 2;
  const unsigned blocks = static_cast<unsigned>((tiles + 4 / ks - 1) / (4 / ks));
  const XT* x = static_cast<const XT*>(a.x);
  const bf16* w = static_cast<const bf16*>(a.w);
  YT* y = static_cast<YT*>(a.y);
#define JANUS_SKINNY_CASE(NT_, KS_)                                                                              \
  if (nt == NT_ && ks == KS_)                                                                                    \
    skinny_kernel<NT_, KS_, XT, YT><<<blocks, kSkinnyThreads, 0, stream>>>(x, a.m, a.k, w, a.n, y, a.accumulate);
  JANUS_SKINNY_CASE(1, 1)
  JANUS_SKINNY_CASE(1, 2)
  JANUS_SKINNY_CASE(1, 4)
  JANUS_SKINNY_CASE(2, 1)
  JANUS_SKINNY_CASE(2, 2)
  JANUS_SKINNY_CASE(2, 4)
#undef JANUS_SKINNY_CASE
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

// -- kSimt: the always-correct fallback ---------------------------------------------------

constexpr int kSimtTile = 16;

template <class XT, class WT, class YT>
__global__ void simt_linear_kernel(const XT* x, int64_t m, int64_t k, const WT* w, int64_t n, YT* y, bool accumulate) {
  __shared__ float xs[kSimtTile][kSimtTile + 1], ws[kSimtTile][kSimtTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kSimtTile + ty;  // of x and y
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kSimtTile + tx;  // of y (row of w)
  const int64_t wrow = static_cast<int64_t>(blockIdx.x) * kSimtTile + ty;
  float acc = 0.f;
  for (int64_t k0 = 0; k0 < k; k0 += kSimtTile) {
    xs[ty][tx] = row < m && k0 + tx < k ? to_f32(x[row * k + k0 + tx]) : 0.f;
    ws[ty][tx] = wrow < n && k0 + tx < k ? to_f32(w[wrow * k + k0 + tx]) : 0.f;
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kSimtTile; ++q) acc += xs[ty][q] * ws[tx][q];
    __syncthreads();
  }
  if (row < m && col < n) {
    YT* dst = y + row * n + col;
    *dst = from_f32<YT>(accumulate ? to_f32(*dst) + acc : acc);
  }
}

template <class ST, class DT>
__global__ void convert_kernel(const ST* src, int64_t count, DT* dst) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = from_f32<DT>(to_f32(src[i]));
}

cudaDataType_t cuda_type(DType t) { return t == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F; }

bool float_dtype(DType t) { return t == DType::kF32 || t == DType::kBF16; }

bool skinny_applies(const LinearArgs& a) {
  return a.w_dtype == DType::kBF16 && float_dtype(a.x_dtype) && float_dtype(a.y_dtype) && a.m <= 16 && a.k % 64 == 0 &&
         detail::aligned16(a.x) && detail::aligned16(a.w);
}

bool cublas_applies(const LinearArgs& a) {
  if (!float_dtype(a.x_dtype) || !float_dtype(a.w_dtype) || !float_dtype(a.y_dtype)) return false;
  if (a.w_dtype == DType::kF32 && a.y_dtype != DType::kF32) return false;  // no such cuBLAS combination
  if (a.x_dtype != a.w_dtype) return a.workspace && a.workspace_bytes >= linear_workspace_bytes(a.m, a.k, a.x_dtype, a.w_dtype);
  return true;
}

}  // namespace

size_t linear_workspace_bytes(int64_t m, int64_t k, DType x_dtype, DType w_dtype) {
  return x_dtype == w_dtype ? 0 : static_cast<size_t>(m * k) * dtype_size(w_dtype);
}

LinearAlgo linear_algo(const LinearArgs& a) {
  switch (a.algo) {
    case LinearAlgo::kSimt:
      return LinearAlgo::kSimt;
    case LinearAlgo::kSkinny:
      return skinny_applies(a) ? LinearAlgo::kSkinny : LinearAlgo::kAuto;  // kAuto here: refused by linear()
    case LinearAlgo::kCublas:
      return cublas_applies(a) ? LinearAlgo::kCublas : LinearAlgo::kAuto;
    case LinearAlgo::kAuto:
      break;
  }
  if (skinny_applies(a) && a.m <= kSkinnyMaxRows) return LinearAlgo::kSkinny;
  if (cublas_applies(a)) return LinearAlgo::kCublas;
  return LinearAlgo::kSimt;
}

Status linear(cublasHandle_t handle, const LinearArgs& a, cudaStream_t stream) {
  if (a.m == 0 || a.n == 0) return Status::Ok();
  const LinearAlgo algo = linear_algo(a);
  if (algo == LinearAlgo::kAuto)
    return unsupported("linear: the requested algorithm does not apply to x " + std::string(dtype_name(a.x_dtype)) + " [" +
                       std::to_string(a.m) + ", " + std::to_string(a.k) + "], W " + dtype_name(a.w_dtype) + ", y " +
                       dtype_name(a.y_dtype));
  if (algo == LinearAlgo::kSkinny) {
    return detail::dispatch_float(a.x_dtype, "linear x", [&](auto xt) {
      using XT = typename decltype(xt)::type;
      return detail::dispatch_float(a.y_dtype, "linear y", [&](auto yt) {
        using YT = typename decltype(yt)::type;
        return launch_skinny<XT, YT>(a, stream);
      });
    });
  }
  if (algo == LinearAlgo::kSimt) {
    return detail::dispatch_float(a.x_dtype, "linear x", [&](auto xt) {
      using XT = typename decltype(xt)::type;
      return detail::dispatch_float(a.w_dtype, "linear W", [&](auto wt) {
        using WT = typename decltype(wt)::type;
        return detail::dispatch_float(a.y_dtype, "linear y", [&](auto yt) {
          using YT = typename decltype(yt)::type;
          dim3 grid(static_cast<unsigned>((a.n + kSimtTile - 1) / kSimtTile),
                    static_cast<unsigned>((a.m + kSimtTile - 1) / kSimtTile));
          simt_linear_kernel<XT, WT, YT><<<grid, dim3(kSimtTile, kSimtTile), 0, stream>>>(
              static_cast<const XT*>(a.x), a.m, a.k, static_cast<const WT*>(a.w), a.n, static_cast<YT*>(a.y), a.accumulate);
          JANUS_CUDA_TRY_LAUNCH();
          return Status::Ok();
        });
      });
    });
  }
  // cuBLAS is column-major: y [m, n] row-major is yᵀ [n, m] column-major = W (k x n
  // column-major, transposed) times xᵀ (k x m column-major).
  const void* x = a.x;
  if (a.x_dtype != a.w_dtype) {
    const int64_t count = a.m * a.k;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((count + 255) / 256, 4096));
    if (a.w_dtype == DType::kBF16)
      convert_kernel<float, bf16><<<blocks, 256, 0, stream>>>(static_cast<const float*>(a.x), count,
                                                              static_cast<bf16*>(a.workspace));
    else
      convert_kernel<bf16, float><<<blocks, 256, 0, stream>>>(static_cast<const bf16*>(a.x), count,
                                                              static_cast<float*>(a.workspace));
    JANUS_CUDA_TRY_LAUNCH();
    x = a.workspace;
  }
  JANUS_TRY(cublas_try(cublasSetStream(handle, stream), "cublasSetStream"));
  const float alpha = 1.f, beta = a.accumulate ? 1.f : 0.f;
  return cublas_try(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(a.n), static_cast<int>(a.m),
                                 static_cast<int>(a.k), &alpha, a.w, cuda_type(a.w_dtype), static_cast<int>(a.k), x,
                                 cuda_type(a.w_dtype), static_cast<int>(a.k), &beta, a.y, cuda_type(a.y_dtype),
                                 static_cast<int>(a.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    "cublasGemmEx");
}

}  // namespace janus::cuda
