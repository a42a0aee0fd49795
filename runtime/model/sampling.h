// Choosing the next token from logits: greedy, or temperature with top-k and top-p.
//
// Randomness is counter-based: the draw for a request's n-th token depends only on
// (seed, n), never on which other requests share the batch or which device or actor
// samples it. So the actor graph, the reference engine and a GPU sampler that uses the
// same draw all pick the same token.
#pragma once

#include <cstdint>
#include <vector>

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

/// The most alternatives a request may ask log-probabilities for (vLLM's max_logprobs).
constexpr int kMaxLogprobs = 20;

/// A token and its log-probability.
struct TopLogprob {
  int32_t token = 0;
  float logprob = 0;
};

/// What a request that asked for log-probabilities (GenerateRequest::logprobs >= 0) gets per
/// generated token: the chosen token's log-probability and the `logprobs` most likely
/// tokens, most likely first (equal logits: the lower id first). They are of the model's raw
/// distribution, log_softmax of the logits, before temperature, top-k and top-p (what vLLM
/// returns by default), so a sampled token may be one the top list does not hold.
struct TokenLogprobs {
  float logprob = 0;
  std::vector<TopLogprob> top;
};

/// log_softmax of `logits` (computed in double) at `chosen`, and its `top_n` largest entries.
TokenLogprobs token_logprobs(const float* logits, int vocab, int32_t chosen, int top_n);

}  // namespace janus
