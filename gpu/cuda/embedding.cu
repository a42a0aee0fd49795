#include "gpu/cuda/embedding.h"

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

using detail::bf16;

template <class TT, class OT>
__global__ void embedding_kernel(const int32_t* ids, const TT* table, int64_t vocab, int64_t dim, OT* out) {
  const int64_t i = blockIdx.x;
  const int32_t id = ids[i];
  const bool ok = id >= 0 && id < vocab;
  const TT* src = table + static_cast<int64_t>(ok ? id : 0) * dim;
  OT* dst = out + i * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    dst[d] = detail::from_f32<OT>(ok ? detail::to_f32(src[d]) : __int_as_float(0x7fc00000));
}

}  // namespace

Status embedding(const int32_t* ids, int64_t n, const void* table, DType table_dtype, int64_t vocab, int64_t dim, void* out,
                 DType out_dtype, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  return detail::dispatch_float(table_dtype, "embedding table", [&](auto tt) {
    using TT = typename decltype(tt)::type;
    return detail::dispatch_float(out_dtype, "embedding output", [&](auto ot) {
      using OT = typename decltype(ot)::type;
      embedding_kernel<TT, OT><<<static_cast<unsigned>(n), 256, 0, stream>>>(ids, static_cast<const TT*>(table), vocab, dim,
                                                                              static_cast<OT*>(out));
      JANUS_CUDA_TRY_LAUNCH();
      return Status::Ok();
    });
  });
}

}  // namespace janus::cuda
