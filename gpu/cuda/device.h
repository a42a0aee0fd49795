// The CUDA devices this process can see, and the one error macro every CUDA call goes
// through (NCCL's CUDACHECK: the failing call, file and line, as a Status).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "runtime/base/status.h"

namespace janus::cuda {

/// Number of usable CUDA devices; 0 when there is no driver or no GPU (never an error:
/// callers fall back to the CPU or skip).
int device_count();

/// "NVIDIA H100 80GB HBM3, 132 SMs, 79.1 GiB, cc 9.0" for device `ordinal`.
std::string device_description(int ordinal);

Status cuda_status(cudaError_t e, const char* what, const char* file, int line);

}  // namespace janus::cuda

/// Evaluates a CUDA runtime call; on failure returns its Status from the enclosing function.
#define JANUS_CUDA_TRY(call)                                                            \
  do {                                                                                  \
    cudaError_t janus_cuda_err_ = (call);                                               \
    if (janus_cuda_err_ != cudaSuccess)                                                 \
      return ::janus::cuda::cuda_status(janus_cuda_err_, #call, __FILE__, __LINE__);    \
  } while (0)

/// After a kernel launch: the launch error, if any, as a returned Status.
#define JANUS_CUDA_TRY_LAUNCH() JANUS_CUDA_TRY(cudaGetLastError())
