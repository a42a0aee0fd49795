#include "runtime/model/reference_engine.h"

#include <algorithm>
#include <cmath>

namespace janus {

Status validate_request(const ModelConfig& c, const GenerateRequest& r, const std::string& what) {
  if (r.prompt.empty()) return invalid_argument(what + ": the prompt is empty");
  for (size_t i = 0; i < r.prompt.size(); ++i)
    if (r.prompt[i] < 0 || r.prompt[i] >= c.vocab_size)
      return invalid_argument(what + ": token id " + std::to_string(r.prompt[i]) + " at position " + std::to_string(i) +
                              " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
  if (r.max_new_tokens < 0) return invalid_argument(what + ": max_new_tokens is negative");
  const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens;
  if (total > c.max_position_embeddings)
    return invalid_argument(what + ": prompt (" + std::to_string(r.prompt.size()) + ") plus max_new_tokens (" +
                            std::to_string(r.max_new_tokens) + ") exceeds max_position_embeddings (" +
                            std::to_string(c.max_position_embeddings) + ")");
  // Checked for greedy requests too: a temperature of -1 or a top_p of 2 is a caller's
  // mistake, not a request for greedy decoding, and must not be served as one.
  if (!std::isfinite(r.sampling.temperature) || r.sampling.temperature < 0.f)
    return invalid_argument(what + ": temperature must be a finite number >= 0 (0 is greedy), got " +
                            std::to_string(r.sampling.temperature));
  if (!(r.sampling.top_p > 0.f && r.sampling.top_p <= 1.f))
    return invalid_argument(what + ": top_p must be in (0, 1], got " + std::to_string(r.sampling.top_p));
  if (r.sampling.top_k < 0) return invalid_argument(what + ": top_k must be >= 0 (0 is no limit), got " + std::to_string(r.sampling.top_k));
  if (r.logprobs < -1 || r.logprobs > kMaxLogprobs)
    return invalid_argument(what + ": logprobs must be -1 (none) or 0.." + std::to_string(kMaxLogprobs) + ", got " + std::to_string(r.logprobs));
  return Status::Ok();
}

bool is_stop_token(const ModelConfig& c, const GenerateRequest& r, int32_t token) {
  if (!r.stop_at_eos) return false;
  if (!r.eos_ids.empty()) return std::find(r.eos_ids.begin(), r.eos_ids.end(), token) != r.eos_ids.end();
  return std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), token) != c.eos_token_ids.end();
}

ReferenceEngine::ReferenceEngine(std::shared_ptr<const Model> model, ReferenceEngineOptions options)
    : model_(model), options_(std::move(options)), forward_(model) {}

Result<std::vector<GenerateResult>> ReferenceEngine::generate(const std::vector<GenerateRequest>& requests) {
  const ModelConfig& c = model_->config();
  const int64_t H = c.hidden_size, V = c.vocab_size;
  int max_len = 1;
  int blocks = 0;
  KvCacheShape shape;
  shape.block_size = options_.kv_block_size;
  for (size_t i = 0; i < requests.size(); ++i) {
    JANUS_TRY(validate_request(c, requests[i], "request " + std::to_string(i)));
    int len = static_cast<int>(requests[i].prompt.size()) + requests[i].max_new_tokens;
    max_len = std::max(max_len, len);
    blocks += (len + shape.block_size - 1) / shape.block_size;
  }
  shape.layers = c.num_layers;
  shape.kv_heads = c.kv_cache_heads();
  shape.head_dim = c.kv_cache_head_dim();
  shape.values = c.kv_cache_values();
  shape.num_blocks = std::max(blocks, 1);
  shape.max_seqs = static_cast<int>(std::max<size_t>(requests.size(), 1));
  shape.max_seq_len = max_len;
  PagedKvCache kv(shape);

  std::vector<GenerateResult> out(requests.size());
  std::vector<int> seq(requests.size());
  std::vector<bool> done(requests.size(), false);
  std::vector<int32_t> next(requests.size(), 0);  // token to feed in the next step
  for (size_t i = 0; i < requests.size(); ++i) {
    out[i].prompt = requests[i].prompt;
    JANUS_ASSIGN_OR_RETURN(seq[i], kv.add_sequence());
    const int len = static_cast<int>(requests[i].prompt.size()) + requests[i].max_new_tokens;
    JANUS_TRY(kv.reserve(seq[i], len));
    if (requests[i].max_new_tokens == 0) {
      done[i] = true;
      out[i].finish_reason = "length";
    }
  }

  // One forward over a ragged batch of rows; returns logits of the rows in `sample_rows`.
  std::vector<float> x, h, logits;
  std::vector<int32_t> ids;
  std::vector<float> gw;
  std::vector<ExpertWork> work;
  std::vector<double> acc;
  auto forward = [&](const std::vector<int32_t>& tokens, const std::vector<cpu::KvRow>& rows,
                     const std::vector<int64_t>& sample_rows) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    x.resize(static_cast<size_t>(n * H));
    h.resize(static_cast<size_t>(n * H));
    forward_.embed(tokens.data(), n, x.data());
    for (int l = 0; l < c.num_layers; ++l) {
      forward_.attention(l, x.data(), n, rows.data(), kv, h.data());
      if (!c.is_sparse(l)) {
        forward_.dense_mlp(l, h.data(), n, x.data());
        continue;
      }
      ids.resize(static_cast<size_t>(n * c.top_k));
      gw.resize(ids.size());
      forward_.route(l, h.data(), n, ids.data(), gw.data());
      if (options_.on_route) options_.on_route(l, ids.data(), n, c.top_k);
      work.resize(ids.size());
      for (int64_t r = 0; r < n; ++r)
        for (int j = 0; j < c.top_k; ++j) {
          const int64_t s = r * c.top_k + j;
          work[s] = {static_cast<int32_t>(r), ids[s], gw[s]};
        }
      acc.assign(static_cast<size_t>(n * H), 0.0);
      forward_.experts(l, h.data(), n, work.data(), static_cast<int64_t>(work.size()), acc.data());
      forward_.shared_expert(l, h.data(), n, acc.data());
      forward_.add_moe_output(acc.data(), n, x.data());
    }
    std::vector<float> xs(sample_rows.size() * static_cast<size_t>(H));
    for (size_t i = 0; i < sample_rows.size(); ++i) std::copy_n(x.data() + sample_rows[i] * H, H, xs.data() + i * H);
    logits.resize(sample_rows.size() * static_cast<size_t>(V));
    forward_.logits(xs.data(), static_cast<int64_t>(sample_rows.size()), logits.data());
  };

  auto emit = [&](size_t i, const float* lg) {
    const int32_t t = sample_token(lg, static_cast<int>(V), requests[i].sampling, out[i].tokens.size());
    if (requests[i].logprobs >= 0) out[i].logprobs.push_back(token_logprobs(lg, static_cast<int>(V), t, requests[i].logprobs));
    out[i].tokens.push_back(t);
    next[i] = t;
    if (is_stop_token(c, requests[i], t)) {
      done[i] = true;
      out[i].finish_reason = "eos";
    } else if (static_cast<int>(out[i].tokens.size()) >= requests[i].max_new_tokens) {
      done[i] = true;
      out[i].finish_reason = "length";
    }
  };

  // Prefill: every prompt token of every request in one batch.
  {
    std::vector<int32_t> tokens;
    std::vector<cpu::KvRow> rows;
    std::vector<int64_t> sample_rows;
    std::vector<size_t> sample_req;
    for (size_t i = 0; i < requests.size(); ++i) {
      const auto& p = requests[i].prompt;
      for (size_t t = 0; t < p.size(); ++t) {
        tokens.push_back(p[t]);
        rows.push_back({seq[i], static_cast<int32_t>(t)});
      }
      if (!done[i]) {
        sample_rows.push_back(static_cast<int64_t>(tokens.size()) - 1);
        sample_req.push_back(i);
      } else if (requests[i].want_prompt_logits) {
        sample_rows.push_back(static_cast<int64_t>(tokens.size()) - 1);
        sample_req.push_back(i);
      }
    }
    if (!tokens.empty()) forward(tokens, rows, sample_rows);
    for (size_t s = 0; s < sample_req.size(); ++s) {
      const size_t i = sample_req[s];
      const float* lg = logits.data() + s * static_cast<size_t>(V);
      if (requests[i].want_prompt_logits) out[i].last_logits.assign(lg, lg + V);
      if (!done[i]) emit(i, lg);
    }
  }
  int64_t produced = 0;
  for (auto& r : out) produced += static_cast<int64_t>(r.tokens.size());
  if (options_.on_step) options_.on_step(produced);

  // Decode: one row per unfinished request until all are done.
  for (;;) {
    std::vector<int32_t> tokens;
    std::vector<cpu::KvRow> rows;
    std::vector<int64_t> sample_rows;
    std::vector<size_t> active;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (done[i]) continue;
      const int32_t pos = static_cast<int32_t>(requests[i].prompt.size() + out[i].tokens.size()) - 1;
      tokens.push_back(next[i]);
      rows.push_back({seq[i], pos});
      sample_rows.push_back(static_cast<int64_t>(active.size()));
      active.push_back(i);
    }
    if (active.empty()) break;
    forward(tokens, rows, sample_rows);
    for (size_t s = 0; s < active.size(); ++s) emit(active[s], logits.data() + s * static_cast<size_t>(V));
    produced += static_cast<int64_t>(active.size());
    if (options_.on_step) options_.on_step(produced);
  }
  for (size_t i = 0; i < requests.size(); ++i) kv.release(seq[i]);
  return out;
}

}  // namespace janus
