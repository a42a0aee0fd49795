#include "gpu/cuda/device.h"

#include <cstdio>

namespace janus::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string device_description(int ordinal) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, ordinal) != cudaSuccess) return "unknown device";
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.256s, %d SMs, %.1f GiB, cc %d.%d", p.name, p.multiProcessorCount,
                static_cast<double>(p.totalGlobalMem) / (1ull << 30), p.major, p.minor);
  return buf;
}

Status cuda_status(cudaError_t e, const char* what, const char* file, int line) {
  return internal_error(std::string("CUDA: ") + what + " failed at " + file + ":" + std::to_string(line) + ": " +
                        cudaGetErrorString(e));
}

}  // namespace janus::cuda
