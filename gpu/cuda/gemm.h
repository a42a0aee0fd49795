// Linear layers y = x · Wᵀ on the GPU (W in PyTorch's [out, in] layout): cuBLAS for
// prefill-sized batches, a weight-streaming tensor-core kernel for decode-sized ones.
// CPU twin: cpu::matmul (gpu/cpu/kernels.h).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::cuda {

enum class LinearAlgo {
  kAuto,     // kSkinny when it applies and m is at most kSkinnyMaxRows, else cuBLAS
  kCublas,   // cublasGemmEx, fp32 accumulation (never TF32: the fp32 path is exact fp32)
  kSkinny,   // streams W once through mma.sync: BF16 W, m <= 16, k a multiple of 64
  kSimt,     // plain fp32 FMA, any dtypes and sizes: the fallback, slow
};

/// Rows up to which kAuto streams the weights itself (bench_linear measures the crossover).
constexpr int64_t kSkinnyMaxRows = 16;

struct LinearArgs {
  const void* x = nullptr;  // [m, k]
  DType x_dtype = DType::kF32;
  int64_t m = 0, k = 0;
  const void* w = nullptr;  // [n, k]
  DType w_dtype = DType::kF32;
  int64_t n = 0;
  void* y = nullptr;  // [m, n]
  DType y_dtype = DType::kF32;
  bool accumulate = false;  // y += x · Wᵀ instead of y = x · Wᵀ
  // Scratch for converting x to W's dtype when cuBLAS needs matching operand types (F32
  // x over BF16 W: x is rounded to BF16); see linear_workspace_bytes. May be null, in
  // which case such calls fall back to kSimt.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  LinearAlgo algo = LinearAlgo::kAuto;
};

/// Workspace that lets every dtype combination of linear() use cuBLAS or kSkinny.
size_t linear_workspace_bytes(int64_t m, int64_t k, DType x_dtype, DType w_dtype);

/// The algorithm linear() would run for these arguments (after kAuto and fallbacks).
LinearAlgo linear_algo(const LinearArgs& a);

/// y = x · Wᵀ (or y += with accumulate). F32 or BF16 operands, fp32 accumulation. The
/// cuBLAS handle is the caller's: linear() sets its stream; give it a workspace
/// (cublasSetWorkspace) before capturing CUDA graphs.
Status linear(cublasHandle_t handle, const LinearArgs& a, cudaStream_t stream);

}  // namespace janus::cuda
