#include "gpu/cuda/backend_kernels.h"

#include <algorithm>
#include <string>

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

using detail::bf16;
using detail::from_f32;

struct PartialArgs {
  const void* data[kMaxPartialsPerLaunch];
  int is_f64[kMaxPartialsPerLaunch];
  int count;
};

__global__ void add_partials_kernel(float* x, int64_t n, PartialArgs p) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double s = 0.0;
    for (int j = 0; j < p.count; ++j)
      s += p.is_f64[j] ? static_cast<const double*>(p.data[j])[i] : static_cast<double>(static_cast<const float*>(p.data[j])[i]);
    x[i] += static_cast<float>(s);
  }
}

__global__ void gather_rows_kernel(const float* x, int64_t cols, const int32_t* index, float* out) {
  const float* src = x + static_cast<int64_t>(index[blockIdx.x]) * cols;
  float* dst = out + static_cast<int64_t>(blockIdx.x) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

template <class YT>
__global__ void silu_mul_kernel(const float* g, const float* u, int64_t n, YT* y) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = from_f32<YT>(detail::silu_mul(g[i], u[i]));
}

unsigned grid_for(int64_t n, int threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 4 * 1024)));
}

}  // namespace

Status add_partials(float* x, int64_t rows, int64_t cols, const PartialRef* parts, int count, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0 || count == 0) return Status::Ok();
  for (int first = 0; first < count; first += kMaxPartialsPerLaunch) {
    PartialArgs a{};
    a.count = std::min(kMaxPartialsPerLaunch, count - first);
    for (int j = 0; j < a.count; ++j) {
      const PartialRef& r = parts[first + j];
      if (r.dtype != DType::kF32 && r.dtype != DType::kF64)
        return unsupported(std::string("add_partials: partial sums of dtype ") + dtype_name(r.dtype) + " (F32 or F64)");
      a.data[j] = r.data;
      a.is_f64[j] = r.dtype == DType::kF64 ? 1 : 0;
    }
    add_partials_kernel<<<grid_for(n, 256), 256, 0, stream>>>(x, n, a);
    JANUS_CUDA_TRY_LAUNCH();
  }
  return Status::Ok();
}

Status gather_rows(const float* x, int64_t cols, const int32_t* index, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  gather_rows_kernel<<<static_cast<unsigned>(n), 256, 0, stream>>>(x, cols, index, out);
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

Status silu_mul(const float* g, const float* u, int64_t n, void* y, DType y_dtype, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  return detail::dispatch_float(y_dtype, "silu_mul output", [&](auto tag) {
    using YT = typename decltype(tag)::type;
    silu_mul_kernel<YT><<<grid_for(n, 256), 256, 0, stream>>>(g, u, n, static_cast<YT*>(y));
    JANUS_CUDA_TRY_LAUNCH();
    return Status::Ok();
  });
}

}  // namespace janus::cuda
