// Expert placements and checks on a running Deployment shared by the CPU actor tests and
// their GPU twins, so that both hold the backends to exactly the same scenario.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <mutex>
#include <utility>
#include <vector>

#include "actors/deployment.h"
#include "transformers_fixture.h"

namespace janus::test {

/// Places `experts` over g.experts.instances: with `spare`, auto placement with one slot more
/// per instance than needed (filled with replicas); otherwise exactly one replica per
/// expert, expert e on instance e % instances.
inline void place_experts(GraphSpec& g, int experts, bool spare) {
  const int instances = g.experts.instances;
  if (spare) {
    g.experts.slots = (experts + instances - 1) / instances + 1;
  } else {
    g.experts.auto_placement = false;
    g.experts.slots = (experts + instances - 1) / instances;
    g.experts.placement.assign(static_cast<size_t>(instances), {});
    for (int e = 0; e < experts; ++e) g.experts.placement[static_cast<size_t>(e % instances)].push_back(e);
  }
}

/// Continuous batching under a small KV cache: requests `first` are submitted at once,
/// `later` join once 4 tokens have streamed (while the first ones decode), and every one
/// must produce `expected[i]` greedily (16 tokens, no EOS stop). With few KV blocks some
/// of them wait at the Frontend; none may be dropped.
inline void check_requests_joining_while_others_decode(Deployment& d, const std::vector<std::vector<int32_t>>& prompts,
                                                       const std::vector<std::vector<int32_t>>& expected,
                                                       const std::vector<size_t>& first, const std::vector<size_t>& later,
                                                       std::chrono::seconds first_tokens_within) {
  std::mutex mu;
  std::condition_variable cv;
  int streamed = 0;
  auto make = [&](size_t i) { return greedy_request(prompts[i], 16); };
  std::vector<std::pair<size_t, RequestHandle>> handles;
  for (size_t i : first)
    handles.emplace_back(i, d.submit(make(i), [&](int32_t) {
      std::lock_guard<std::mutex> lk(mu);
      ++streamed;
      cv.notify_all();
    }));
  {
    std::unique_lock<std::mutex> lk(mu);
    REQUIRE(cv.wait_for(lk, first_tokens_within, [&] { return streamed >= 4; }));
  }
  for (size_t i : later) handles.emplace_back(i, d.submit(make(i)));
  for (auto& entry : handles) {
    const size_t i = entry.first;  // not a structured binding: CAPTURE's lambda takes it, which clang 14 refuses
    auto& h = entry.second;
    CAPTURE(i);
    REQUIRE(h.result.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
    auto r = h.result.get();
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    CHECK(r->tokens == expected[i]);
  }
}

}  // namespace janus::test
