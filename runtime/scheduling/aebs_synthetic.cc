#include "runtime/scheduling/aebs_synthetic.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace janus {

namespace {

struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
};

}  // namespace

std::vector<double> synthetic_popularity(int E, double s, uint64_t seed) {
  if (E <= 0) return {};
  std::vector<int> perm(static_cast<size_t>(E));
  std::iota(perm.begin(), perm.end(), 0);
  SplitMix rng{seed ^ 0x5eed5eed5eedull};
  for (int i = E - 1; i > 0; --i) std::swap(perm[static_cast<size_t>(i)], perm[rng.next() % static_cast<uint64_t>(i + 1)]);
  std::vector<double> w(static_cast<size_t>(E));
  double sum = 0;
  for (int i = 0; i < E; ++i) sum += w[static_cast<size_t>(perm[static_cast<size_t>(i)])] = 1.0 / std::pow(i + 1.0, s);
  for (double& x : w) x /= sum;
  return w;
}

Result<std::vector<int32_t>> synthetic_routing(int E, int k, int64_t tokens, double s, uint64_t seed, uint64_t stream) {
  if (k <= 0 || k > E) return invalid_argument("synthetic routing: need 0 < k <= experts, got k = " + std::to_string(k));
  if (tokens < 0) return invalid_argument("synthetic routing: negative token count");
  if (!(s >= 0)) return invalid_argument("synthetic routing: the Zipf exponent must be >= 0");
  const std::vector<double> w = synthetic_popularity(E, s, seed);
  std::vector<double> cdf(w.size());
  std::partial_sum(w.begin(), w.end(), cdf.begin());
  SplitMix rng{seed * 0x2545f4914f6cdd1dull + stream * 0x9e3779b97f4a7c15ull + 1};
  std::vector<int32_t> ids(static_cast<size_t>(tokens) * static_cast<size_t>(k));
  std::vector<double> wl;
  for (int64_t t = 0; t < tokens; ++t) {
    int32_t* row = ids.data() + t * k;
    for (int j = 0; j < k; ++j) {
      int32_t e;
      int tries = 0;
      do {
        const double u = rng.uniform() * cdf.back();
        e = static_cast<int32_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
        e = std::min(e, E - 1);
      } while (std::find(row, row + j, e) != row + j && ++tries < 64);
      if (std::find(row, row + j, e) != row + j) {
        // Heavily skewed and k close to E: draw from the remaining experts' weights.
        wl = w;
        for (int q = 0; q < j; ++q) wl[static_cast<size_t>(row[q])] = 0;
        double tot = std::accumulate(wl.begin(), wl.end(), 0.0), u = rng.uniform() * tot;
        e = 0;
        for (int x = 0; x < E; ++x) {
          if (wl[static_cast<size_t>(x)] <= 0) continue;
          e = x;
          if ((u -= wl[static_cast<size_t>(x)]) < 0) break;
        }
      }
      row[j] = e;
    }
  }
  return ids;
}

}  // namespace janus
