// Choosing the next token from logits: greedy, or temperature with top-k and top-p.
//
// Randomness is counter-based: the draw for a request's n-th token depends only on
// (seed, n), never on which other requests share the batch or which device or actor
// samples it. So the actor graph, the reference engine and a GPU sampler that uses the
// same draw all pick the same token.
#pragma once

#include <cstdint>

namespace janus {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy (argmax, lowest id on ties)
  float top_p = 1.f;        // keep the smallest set of tokens whose probability reaches top_p
  int top_k = 0;            // 0: no limit
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.f; }
};

/// A uniform double in [0, 1) from (seed, counter): splitmix64 of the two.
double counter_uniform(uint64_t seed, uint64_t counter);

/// The token for step `step` (0 = first generated token) of a request.
int32_t sample_token(const float* logits, int vocab, const SamplingParams& params, uint64_t step);

}  // namespace janus
