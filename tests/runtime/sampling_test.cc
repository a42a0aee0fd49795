#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <vector>

#include "runtime/model/sampling.h"

using namespace janus;

TEST_CASE("greedy takes the argmax, lowest id on ties") {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  SamplingParams g;
  CHECK(sample_token(l.data(), 4, g, 0) == 1);
}

TEST_CASE("seeded sampling is reproducible per (seed, step) and follows the distribution") {
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams s;
  s.temperature = 1.0f;
  s.seed = 42;
  std::map<int, int> count;
  for (uint64_t step = 0; step < 20000; ++step) {
    int t = sample_token(l.data(), 3, s, step);
    CHECK(t == sample_token(l.data(), 3, s, step));
    ++count[t];
  }
  CHECK(count[0] / 20000.0 == doctest::Approx(0.5).epsilon(0.05));
  CHECK(count[1] / 20000.0 == doctest::Approx(0.3).epsilon(0.05));
  CHECK(count[2] / 20000.0 == doctest::Approx(0.2).epsilon(0.07));
  SamplingParams other = s;
  other.seed = 43;
  int differ = 0;
  for (uint64_t step = 0; step < 200; ++step) differ += sample_token(l.data(), 3, s, step) != sample_token(l.data(), 3, other, step);
  CHECK(differ > 20);
}

TEST_CASE("top-p and top-k cut the tail") {
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.75f;  // keeps {0, 1}
  SamplingParams k = p;
  k.top_p = 1.0f;
  k.top_k = 1;
  for (uint64_t step = 0; step < 2000; ++step) {
    CHECK(sample_token(l.data(), 4, p, step) <= 1);
    CHECK(sample_token(l.data(), 4, k, step) == 0);
  }
}

TEST_CASE("counter_uniform stays within 0 inclusive and 1 exclusive") {
  for (uint64_t i = 0; i < 1000; ++i) {
    double u = counter_uniform(7, i);
    CHECK(u >= 0.0);
    CHECK(u < 1.0);
  }
}
