// Sliding-window activation statistics (runtime/scheduling/activation_stats.h).
#include <doctest/doctest.h>

#include <algorithm>
#include <deque>

#include "runtime/scheduling/activation_stats.h"
#include "runtime/scheduling/aebs_synthetic.h"

using namespace janus;

TEST_CASE("activation stats refuse bad shapes and bad batches, recording nothing") {
  CHECK(ActivationStats::create(0, 8, 4).status().code() == ErrorCode::kInvalidArgument);
  CHECK(ActivationStats::create(2, 0, 4).status().code() == ErrorCode::kInvalidArgument);
  CHECK(ActivationStats::create(2, 8, 0).status().message().find("window") != std::string::npos);
  auto s = ActivationStats::create(2, 8, 4);
  REQUIRE(s.ok());
  const std::vector<int32_t> ids = {0, 1, 2, 8};
  Status st = s->record(0, ids.data(), 2, 2);
  CHECK(st.code() == ErrorCode::kInvalidArgument);
  CHECK(st.message().find("layer 0 token 1 slot 1 names expert 8, outside [0, 8)") != std::string::npos);
  CHECK(s->tokens(0) == 0);
  CHECK(s->batches(0) == 0);
  CHECK(s->record(2, ids.data(), 1, 2).message().find("layer 2 outside [0, 2)") != std::string::npos);
  REQUIRE(s->record(1, ids.data(), 1, 2).ok());
  CHECK(s->record(1, ids.data(), 1, 1).message().find("was recorded with k = 2, now k = 1") != std::string::npos);
  CHECK(s->counts(7).empty());  // out-of-range layers read as empty, never crash
  CHECK(s->coactivation(7, 0, 1) == 0);
}

TEST_CASE("activation counts and co-activation equal a direct count over the window") {
  const int E = 12, k = 3, W = 5;
  auto s = ActivationStats::create(2, E, W);
  REQUIRE(s.ok());
  std::deque<std::vector<int32_t>> window;
  for (int b = 0; b < 13; ++b) {
    const int64_t B = 1 + (b * 7) % 11;
    auto ids = synthetic_routing(E, k, B, 1.2, 3, static_cast<uint64_t>(b));
    REQUIRE(ids.ok());
    if (b == 4) (*ids)[1] = (*ids)[0];  // a token naming one expert twice counts once
    REQUIRE(s->record(0, ids->data(), B, k).ok());
    window.push_back(*ids);
    if (static_cast<int>(window.size()) > W) window.pop_front();
    // Direct count.
    std::vector<int64_t> c(E, 0), a(E * E, 0);
    int64_t tokens = 0;
    std::vector<int32_t> all;
    for (const auto& w : window) {
      all.insert(all.end(), w.begin(), w.end());
      for (size_t t = 0; t < w.size() / k; ++t) {
        std::vector<int32_t> row(w.begin() + static_cast<long>(t * k), w.begin() + static_cast<long>((t + 1) * k));
        std::sort(row.begin(), row.end());
        row.erase(std::unique(row.begin(), row.end()), row.end());
        for (int32_t x : row) ++c[static_cast<size_t>(x)];
        for (int32_t x : row)
          for (int32_t y : row)
            if (x != y) ++a[static_cast<size_t>(x * E + y)];
        ++tokens;
      }
    }
    CAPTURE(b);
    CHECK(s->counts(0) == c);
    CHECK(s->coactivation_matrix(0) == a);
    CHECK(s->tokens(0) == tokens);
    CHECK(s->batches(0) == static_cast<int>(window.size()));
    CHECK(s->routing(0).ids == all);
    CHECK(s->routing(0).k == k);
    auto p = s->activation_probability(0);
    for (int e = 0; e < E; ++e) CHECK(p[static_cast<size_t>(e)] == doctest::Approx(static_cast<double>(c[e]) / tokens));
  }
  CHECK(s->counts(1) == std::vector<int64_t>(E, 0));
  // Totals over layers.
  const std::vector<int32_t> one = {3, 4, 5};
  REQUIRE(s->record(1, one.data(), 1, 3).ok());
  auto tc = s->total_counts();
  CHECK(tc[3] == s->counts(0)[3] + 1);
  CHECK(s->total_coactivation()[3 * E + 5] == s->coactivation(0, 3, 5) + 1);
  s->clear();
  CHECK(s->tokens(0) == 0);
  CHECK(s->total_counts() == std::vector<int64_t>(E, 0));
}
