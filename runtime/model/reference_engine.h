// The single-process reference engine: no actors, no devices, one loop. It prefills and
// decodes a batch of requests of different lengths over a paged KV cache and is the
// oracle every other path (actor graph, CUDA, multi-node) must match token for token;
// it is itself held to Hugging Face transformers by the fixture tests.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model/cpu_forward.h"
#include "runtime/model/model.h"
#include "runtime/model/sampling.h"
#include "runtime/base/status.h"

namespace janus {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int max_new_tokens = 16;
  SamplingParams sampling;       // greedy by default
  bool stop_at_eos = true;       // stop after emitting an EOS id
  std::vector<int32_t> eos_ids;  // overrides the config's EOS ids when not empty
  bool want_prompt_logits = false;  // keep the logits at the last prompt position
  /// -1: no log-probabilities. 0..kMaxLogprobs: each generated token comes with its own
  /// log-probability and those of the `logprobs` most likely tokens (TokenLogprobs,
  /// runtime/model/sampling.h): in GenerateResult::logprobs and in each TokenEvent.
  int logprobs = -1;
};

struct GenerateResult {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;
  std::vector<float> last_logits;  // [vocab] when asked for
  std::string finish_reason;       // "length" or "eos"
  std::vector<TokenLogprobs> logprobs;  // one per token, when the request asked (logprobs >= 0)
};

/// Checks a request against a model: non-empty prompt, ids inside the vocabulary,
/// prompt plus new tokens within max_position_embeddings. `what` names it ("prompt 2").
Status validate_request(const ModelConfig& c, const GenerateRequest& r, const std::string& what);

/// True when `token` ends the request (an EOS id and stop_at_eos).
bool is_stop_token(const ModelConfig& c, const GenerateRequest& r, int32_t token);

struct ReferenceEngineOptions {
  int kv_block_size = 16;
  /// Called after every decode step with the number of tokens produced so far.
  std::function<void(int64_t tokens)> on_step;
  /// Called after the router of every sparse layer with its top-k ids [rows, k] (the
  /// routing of one layer batch: activation statistics, a_max studies).
  std::function<void(int layer, const int32_t* ids, int64_t rows, int k)> on_route;
};

class ReferenceEngine {
 public:
  explicit ReferenceEngine(std::shared_ptr<const Model> model, ReferenceEngineOptions options = {});

  /// Runs all requests as one batch (prefill together, then decode until each is done).
  Result<std::vector<GenerateResult>> generate(const std::vector<GenerateRequest>& requests);

  const CpuForward& forward() const { return forward_; }

 private:
  std::shared_ptr<const Model> model_;
  ReferenceEngineOptions options_;
  CpuForward forward_;
};

}  // namespace janus
