// Synthetic top-k routing for AEBS and placement tests and benchmarks: tokens that each
// pick k distinct experts, with a Zipf(s) popularity over a seeded random permutation of
// the experts (s = 0 is uniform; the hottest expert is not expert 0). Deterministic for a
// seed on every platform (own generator, no std distributions).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/base/status.h"

namespace janus {

/// Per-expert pick weights (sum 1): weight of the expert at popularity rank i is
/// proportional to 1 / (i + 1)^s.
std::vector<double> synthetic_popularity(int num_experts, double zipf_s, uint64_t seed);

/// tokens x k ids (row-major), k distinct experts per token drawn without replacement
/// from synthetic_popularity(num_experts, zipf_s, seed); `stream` varies the tokens for
/// one popularity. invalid_argument unless 0 < k <= E, tokens >= 0, s >= 0.
Result<std::vector<int32_t>> synthetic_routing(int num_experts, int k, int64_t tokens, double zipf_s, uint64_t seed,
                                               uint64_t stream = 0);

}  // namespace janus
