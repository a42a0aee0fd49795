// splitmix64's finalizer: a cheap, well-mixed 64-bit hash. The sampler and the seeded
// scheduling policies derive their per-(seed, step, row) randomness from it, so that a
// draw depends only on its inputs, never on thread timing.
#pragma once

#include <cstdint>

namespace janus {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace janus
