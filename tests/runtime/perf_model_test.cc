// The performance model (Eq. 1-3), Algorithm 2 and the Scaler's decision rule.
#include <doctest/doctest.h>

#include <random>

#include "runtime/scheduling/amax_estimator.h"
#include "runtime/scheduling/perf_model.h"
#include "runtime/config/scaling_decision.h"

using namespace janus;

namespace {

PerfModel model(int layers, double c_a, double alpha, double c_kv, double beta, double c_e) {
  PerfModel m;
  m.num_experts = 16;
  m.top_k = 2;
  m.slots = 8;
  for (int l = 0; l < layers; ++l) m.layers.push_back({c_a, alpha, c_kv, beta, c_e, 1e-5, 1e-6, 1e-7, 1e-7});
  return m;
}

}  // namespace

TEST_CASE("moe_time interpolates the measured curve and extrapolates its last segment") {
  PerfModel m = model(1, 1e-4, 0, 0, 1e-5, 3e-4);
  CHECK(m.moe_time(0, 4) == doctest::Approx(3.4e-4));  // no curve: beta * a + c_e
  m.moe_curve = {{1, 4e-4}, {4, 5e-4}, {8, 7e-4}};
  CHECK(m.moe_time(0, 1) == doctest::Approx(4e-4));
  CHECK(m.moe_time(0, 2.5) == doctest::Approx(4.5e-4));
  CHECK(m.moe_time(0, 6) == doctest::Approx(6e-4));
  CHECK(m.moe_time(0, 12) == doctest::Approx(9e-4));   // beyond: the last slope, 5e-5 per expert
  CHECK(m.moe_time(0, 0.5) == doctest::Approx(4e-4));  // below the first point: not less than it
  PerfModel dense = model(1, 1e-4, 0, 0, 0, 0);
  CHECK(dense.moe_time(0, 5) == 0);
}

TEST_CASE("layer_time adds the attention roofline, the expert time and the exchange terms") {
  PerfModel m = model(2, 1e-4, 2e-6, 1e-8, 1e-5, 5e-5);
  PerfModel::AmaxFn amax = [](int, int, double) { return 3.0; };
  // B = 400 over 2 shards: b = 200; attention max(1e-4, 2e-6*200 + 1e-8*200*100) = 6e-4.
  const double expect = 6e-4 + (3 * 1e-5 + 5e-5) + (1e-5 + 1e-6 * 6 + 1e-7 * 400 + 1e-7 * 200);
  CHECK(m.layer_time(0, 400, 2, 4, 100, amax) == doctest::Approx(expect));
  CHECK(m.tpot(400, 2, 4, 100, amax) == doctest::Approx(2 * expect));
}

TEST_CASE("steady_batch finds the smallest batch that keeps up with the demand") {
  auto tp = [](double b) { return 0.01 + 0.001 * b; };  // B = lambda * (0.01 + 0.001 B)
  // lambda = 500: B >= 5 + 0.5 B  =>  B >= 10.
  CHECK(steady_batch(tp, 500, 1000) == 10);
  CHECK(steady_batch(tp, 50, 1000) == 1);
  CHECK(steady_batch(tp, 1000, 1000) == -1);  // B >= 10 + B never holds
  CHECK(steady_batch(tp, 500, 9) == -1);      // memory caps the batch below what is needed
}

TEST_CASE("solve_scaling picks the fewest devices that meet the SLO, as exhaustive search does") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(0.5, 2.0);
  for (int trial = 0; trial < 20; ++trial) {
    CAPTURE(trial);
    PerfModel m = model(4, 2e-4 * u(rng), 5e-6 * u(rng), 1e-8 * u(rng), 2e-5 * u(rng), 1e-4 * u(rng));
    // a_max falls with more instances and rises with the batch, as Appendix A's bound does.
    PerfModel::AmaxFn amax = [](int, int n_e, double b) { return std::min(16.0 / n_e, 1 + b * 2 / n_e); };
    const double lambda = 2000 * u(rng), slo = 0.01 * u(rng);
    ScalingBounds bounds{1, 6, 1, 8, 12};
    const ScalingDecision d = solve_scaling(m, lambda, slo, 256, amax, bounds);
    // Exhaustive: the fewest devices with a steady batch meeting the SLO.
    int best = 1 << 30;
    for (int a = 1; a <= 6; ++a)
      for (int e = 2; e <= 8; ++e) {  // 16 experts over 8 slots: at least 2 instances
        if (a + e > 12) continue;
        auto tp = [&](double b) { return m.tpot(b, a, e, 256, amax); };
        const double b = steady_batch(tp, lambda, m.max_batch(a, 256));
        if (b > 0 && tp(b) <= slo) best = std::min(best, a + e);
      }
    if (best == 1 << 30) {
      CHECK_FALSE(d.feasible);
      CHECK(!d.why.empty());
      continue;
    }
    REQUIRE(d.feasible);
    CHECK(d.attention + d.moe == best);
    CHECK(d.tpot <= slo);
    CHECK(d.moe >= 2);
    CHECK(d.batch >= lambda * d.tpot - 1e-9);
  }
}

TEST_CASE("a performance model survives JSON and malformed ones are refused by name") {
  PerfModel m = model(3, 1e-4, 2e-6, 1e-8, 1e-5, 5e-5);
  m.moe_curve = {{1, 1e-4}, {2, 1.5e-4}};
  m.attention_layer_bytes = 123;
  m.expert_bytes = 456;
  m.layers[1].comm_per_shard_row = 3e-7;
  auto back = PerfModel::from_json(m.to_json(), "<test>");
  REQUIRE(back.ok());
  CHECK(back->layers.size() == 3);
  CHECK(back->layers[1].comm_per_shard_row == doctest::Approx(3e-7));
  CHECK(back->moe_curve == m.moe_curve);
  CHECK(back->attention_layer_bytes == 123);
  CHECK(back->expert_bytes == 456);
  CHECK(PerfModel::from_json("{nope", "p.json").status().message().find("p.json: malformed JSON") != std::string::npos);
  CHECK(PerfModel::from_json(R"({"top_k":2,"slots":4,"layers":[]})", "p.json").status().message().find("num_experts") !=
        std::string::npos);
  std::string bad = m.to_json();
  bad.replace(bad.find("\"moe_curve\""), 11, "\"moe_curve\": [[2, 1e-4], [1, 2e-4]], \"x\"");
  CHECK(PerfModel::from_json(bad, "p.json").status().message().find("moe_curve") != std::string::npos);
  CHECK(PerfModel::load("/nonexistent/p.json").status().code() == ErrorCode::kNotFound);
}

TEST_CASE("the Scaler's rule asks for more devices as demand grows and meets the SLO it reports") {
  PerfModel m = model(4, 2e-4, 2e-5, 1e-8, 3e-5, 1e-4);
  m.num_experts = 32;
  m.top_k = 4;
  ScalerSpec sp;
  sp.tpot_slo_ms = 20;
  sp.context = 128;
  sp.min_attention = 1;
  sp.max_attention = 8;
  sp.min_moe = 1;
  sp.max_moe = 8;
  ActivationWindow none;  // no traffic yet: uniform activation
  int last = 0;
  for (double lambda : {100.0, 2000.0, 8000.0, 16000.0}) {
    CAPTURE(lambda);
    const ScalingDecision d = decide_scaling(m, sp, 8, lambda, none);
    REQUIRE(d.feasible);
    CHECK(d.tpot <= 0.020);
    CHECK(d.moe * 8 >= 32);  // the experts fit
    CHECK(d.attention + d.moe >= last);
    last = d.attention + d.moe;
  }
  CHECK(last > 5);
  sp.tpot_slo_ms = 0.1;  // below any layer's fixed cost
  const ScalingDecision d = decide_scaling(m, sp, 8, 100, none);
  CHECK_FALSE(d.feasible);
}

TEST_CASE("the scaler's hold: grow at once, shrink only after demand stays low, to the most it asked for") {
  ShrinkHold h(3);
  // Growing is never held, nor is staying.
  auto t = h.next(1, 4, 2, 4);
  CHECK((t.attention == 2 && t.moe == 4 && !t.held));
  t = h.next(2, 4, 2, 4);
  CHECK((t.attention == 2 && t.moe == 4 && !t.held));
  // A burst that comes and goes every interval (the flapping the hold is for): no shrink.
  for (int i = 0; i < 6; ++i) {
    t = h.next(2, 4, i % 2 == 0 ? 1 : 2, 4);
    CHECK((t.attention == 2 && t.moe == 4));
  }
  // Low three times in a row: shrink, to the largest of the three asks.
  t = h.next(2, 6, 1, 4);
  CHECK((t.attention == 2 && t.moe == 6 && t.held));
  t = h.next(2, 6, 1, 5);
  CHECK((t.attention == 2 && t.moe == 6 && t.held));
  t = h.next(2, 6, 1, 4);
  CHECK((t.attention == 1 && t.moe == 5 && !t.held));
  // One pool grows while the other would shrink: grow it, keep the other.
  t = h.next(1, 5, 2, 3);
  CHECK((t.attention == 2 && t.moe == 5 && !t.held));
  // shrink_after = 1: no hold at all.
  ShrinkHold now(1);
  t = now.next(3, 6, 1, 4);
  CHECK((t.attention == 1 && t.moe == 4 && !t.held));
}
