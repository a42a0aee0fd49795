// The small kernels the CUDA backend (gpu/backend/cuda/backend.h) needs between the kernel
// families: adding the expert instances' partial sums to the residual, gathering rows,
// and SwiGLU's activation for dense layers. Launchers of plain types, as the others in
// this folder: no allocation, no host synchronisation.
//
// CPU twins: add_partials is the CPU backend's add_moe_output (partials summed in
// double in instance order, the sum rounded to float once and added: CpuForward::
// add_moe_output); silu_mul is cpu::silu_mul; gather_rows is a row copy. The backend
// tests (tests/cuda/backend_test.cc) hold them to the CPU backend.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::cuda {

/// One partial-sum tensor [rows, cols] in device memory, F32 or F64.
struct PartialRef {
  const void* data = nullptr;
  DType dtype = DType::kF32;
};

/// Partials one add_partials launch takes; more are added in further launches (each
/// group's double sum is rounded and added to x in turn).
constexpr int kMaxPartialsPerLaunch = 16;

/// x[r, c] += float(sum over i of double(parts[i][r, c])), for x [rows, cols] F32.
Status add_partials(float* x, int64_t rows, int64_t cols, const PartialRef* parts, int count, cudaStream_t stream);

/// out[i, :] = x[index[i], :] for i < n; x and out F32 [*, cols]; index in device memory.
Status gather_rows(const float* x, int64_t cols, const int32_t* index, int64_t n, float* out, cudaStream_t stream);

/// y[i] = silu(g[i]) * u[i] for i < n; g, u F32; y F32 or BF16.
Status silu_mul(const float* g, const float* u, int64_t n, void* y, DType y_dtype, cudaStream_t stream);

}  // namespace janus::cuda
