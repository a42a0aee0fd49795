#include "runtime/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/base/splitmix64.h"

namespace janus {

double counter_uniform(uint64_t seed, uint64_t counter) {
  uint64_t h = splitmix64(splitmix64(seed) ^ counter);
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);  // 53 random bits
}

int32_t sample_token(const float* logits, int vocab, const SamplingParams& sp, uint64_t step) {
  if (sp.greedy()) {
    int32_t best = 0;
    for (int i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  // Probabilities in double from temperature-scaled logits, sorted by (prob desc, id asc).
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t keep = order.size();
  if (sp.top_k > 0) keep = std::min<size_t>(keep, static_cast<size_t>(sp.top_k));
  const double mx = logits[order[0]];
  std::vector<double> p(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    p[i] = std::exp((static_cast<double>(logits[order[i]]) - mx) / sp.temperature);
    sum += p[i];
  }
  if (sp.top_p < 1.f) {
    double cum = 0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      cum += p[i] / sum;
      if (cum >= sp.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += p[i];
  }
  const double u = counter_uniform(sp.seed, step) * sum;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return order[i];
  }
  return order[keep - 1];
}

TokenLogprobs token_logprobs(const float* logits, int vocab, int32_t chosen, int top_n) {
  double mx = logits[0];
  for (int i = 1; i < vocab; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  TokenLogprobs out;
  out.logprob = static_cast<float>(logits[chosen] - lse);
  const int n = std::max(0, std::min(top_n, vocab));
  if (n == 0) return out;
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  out.top.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out.top.push_back({order[static_cast<size_t>(i)], static_cast<float>(logits[order[static_cast<size_t>(i)]] - lse)});
  return out;
}

}  // namespace janus
