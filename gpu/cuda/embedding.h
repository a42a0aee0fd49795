// Embedding gather on the GPU. CPU twin: cpu::embedding (gpu/cpu/kernels.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::cuda {

/// out[i, :] = table[ids[i], :] for i < n; table is [vocab, dim]. An id outside [0, vocab)
/// yields a row of NaN (the CPU twin would read out of bounds; here the bug shows).
/// table and out: F32 or BF16.
Status embedding(const int32_t* ids, int64_t n, const void* table, DType table_dtype, int64_t vocab, int64_t dim, void* out,
                 DType out_dtype, cudaStream_t stream);

}  // namespace janus::cuda
