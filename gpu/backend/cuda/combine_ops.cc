// The combine on an attention shard: x += the expert instances' partial sums (add_partials).
#include <string>

#include "gpu/backend/cuda/ops.h"
#include "gpu/cuda/backend_kernels.h"

namespace janus::cuda {

Status combine_moe_output(AttentionState& shard, const std::vector<Tensor>& partials, Tensor& x) {
  JANUS_TRY(check_residual(shard, x, "add_moe_output"));
  if (partials.empty() || x.rows == 0) return Status::Ok();
  std::vector<PartialRef> refs;
  refs.reserve(partials.size());
  for (const Tensor& p : partials) {
    if (p.rows != x.rows || p.cols != x.cols)
      return internal_error("add_moe_output: partial sums " + shape(p) + " do not match the activations " + shape(x));
    if (p.dtype != kF32 && p.dtype != DType::kF64)
      return invalid_argument("add_moe_output: partial sums " + shape(p) + " (F32 or F64)");
    Tensor d;
    JANUS_TRY(shard.engine.input(p, &d));  // a device wait on the instance's marker; kept until the kernel ran
    refs.push_back({d.data, d.dtype});
  }
  JANUS_TRY(add_partials(static_cast<float*>(x.data), x.rows, x.cols, refs.data(), static_cast<int>(refs.size()), shard.engine.stream));
  shard.engine.touch(x);
  return shard.engine.finish({&x});
}

}  // namespace janus::cuda
