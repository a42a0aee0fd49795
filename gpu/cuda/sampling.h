// Choosing the next token on the GPU: greedy argmax (lowest id on ties) or temperature
// with top-k and top-p, drawn with the counter-based uniform of runtime/model/sampling.h
// (splitmix64 of (seed, step)). CPU twin: janus::sample_token. Both sort by (logit desc,
// id asc) and walk the same cumulative distribution with the same draw, so they pick the
// same token; only sums of doubles are added in a different order (parallel here), which
// could matter only for a draw within ~1e-15 (relative) of a boundary between tokens.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "runtime/base/status.h"

namespace janus::cuda {

/// One row's sampling parameters (janus::SamplingParams) and the index of the token it
/// draws (0 = the request's first generated token). Lives in device memory.
struct SamplingRow {
  float temperature = 0.f;  // <= 0: greedy
  float top_p = 1.f;
  int32_t top_k = 0;  // 0: no limit
  int32_t reserved = 0;
  uint64_t seed = 0;
  uint64_t step = 0;
};
static_assert(sizeof(SamplingRow) == 32, "SamplingRow is copied to the device as is");

/// tokens[r] = argmax of logits [rows, vocab] (fp32), lowest id on ties.
Status argmax(const float* logits, int rows, int vocab, int32_t* tokens, cudaStream_t stream);

/// Workspace for sample_tokens with any_sampling (sorting and probabilities).
size_t sampling_workspace_bytes(int rows, int vocab);

/// tokens[r] for every row per params[r]. With any_sampling false every row must be
/// greedy and no workspace is needed.
Status sample_tokens(const float* logits, int rows, int vocab, const SamplingRow* params, bool any_sampling,
                     int32_t* tokens, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace janus::cuda
