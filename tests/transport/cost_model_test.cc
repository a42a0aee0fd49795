// The exchange cost model (transport/cost_model.h): the fit recovers a link's latency,
// per-message cost and bandwidth; phases serialize per node and overlap latencies; the
// choice between Case 1 and Case 2 follows the links.
#include <doctest/doctest.h>

#include "transport/cost_model.h"

using namespace janus::transport;

TEST_CASE("a link's fit recovers what generated its samples") {
  const double a = 20e-6, o = 3e-6, b = 1.5e9;
  std::vector<double> bytes = {0, 16384, 262144, 1048576}, t;
  for (double s : bytes) t.push_back(a + o + s / b);
  const int burst = 16;
  const double burst_s = 2 * (a + o) + (burst - 1) * o;
  auto f = fit_link(0, 2, bytes, t, burst, burst_s);
  REQUIRE(f.ok());
  CHECK(f->latency_s == doctest::Approx(a).epsilon(1e-6));
  CHECK(f->per_message_s == doctest::Approx(o).epsilon(1e-6));
  CHECK(f->bytes_per_s == doctest::Approx(b).epsilon(1e-6));
  CHECK(f->one(1 << 20) == doctest::Approx(a + o + (1 << 20) / b).epsilon(1e-9));
  CHECK(!fit_link(0, 1, {4096}, {1e-5}, 0, 0).ok());
  CHECK(!fit_link(0, 1, {4096, 4096}, {1e-5, 2e-5}, 0, 0).ok());
}

TEST_CASE("noise at the largest probe cannot lift the fitted latency above the smallest probe's") {
  // A few repeats per size on a loaded machine: the middle sizes run slow and the largest a
  // little fast, which lifts an unconstrained line's intercept to 72 us, 5x the truth.
  const double a = 15e-6, b = 1e9;
  std::vector<double> bytes = {0, 16384, 262144, 1048576}, t;
  for (double s : bytes) t.push_back(a + s / b);
  t[1] *= 1.5;
  t[2] *= 1.6;
  t[3] *= 0.95;
  auto f = fit_link(0, 2, bytes, t, 0, 0);
  REQUIRE(f.ok());
  CHECK(f->latency_s + f->per_message_s <= doctest::Approx(a));
  CHECK(f->latency_s + f->per_message_s > 0);
  // The slope through the smallest point still sees the bandwidth, within the noise.
  CHECK(f->bytes_per_s > 0.9 * b);
  CHECK(f->bytes_per_s < 1.1 * b);
}

TEST_CASE("phases: latencies overlap, each node's link serializes its messages") {
  CostModel m;
  LinkFit f;
  f.from = 0;
  f.to = 2;
  f.latency_s = 10e-6;
  f.per_message_s = 1e-6;
  f.bytes_per_s = 1e9;
  m.add(f);
  f.from = 0;
  f.to = 3;
  m.add(f);
  // Two transfers out of node 0: its link carries both.
  const double t = m.phase_time({{0, 2, 1, 1000000}, {0, 3, 1, 1000000}});
  CHECK(t == doctest::Approx(10e-6 + 2 * (1e-6 + 1e-3)));
  // The reverse direction is found from the probe of the forward one.
  CHECK(m.link(2, 0).bytes_per_s == doctest::Approx(1e9));
  // An unprobed link gets the slowest probed numbers.
  CHECK(m.link(5, 6).latency_s == doctest::Approx(10e-6));
}

TEST_CASE("Case 1 for small layer batches, Case 2 when the MoE nodes' own link is faster") {
  // 2 attention nodes (0, 1), 2 MoE nodes (2, 3). Attention <-> MoE: 10 GB/s, 20 us (a
  // 100 Gb/s NIC); MoE <-> MoE: 100 GB/s, 20 us (the paper's fast intra-MoE fabric).
  // RDMA NICs: full duplex.
  CostModel m;
  m.set_full_duplex(true);
  auto add = [&](uint32_t a, uint32_t b, double bw) {
    LinkFit f;
    f.from = a;
    f.to = b;
    f.latency_s = 20e-6;
    f.per_message_s = 2e-6;
    f.bytes_per_s = bw;
    m.add(f);
  };
  for (uint32_t a : {0u, 1u})
    for (uint32_t b : {2u, 3u}) add(a, b, 10e9);
  add(2, 3, 100e9);
  ExchangeTopology t;
  t.attention_nodes = {0, 1};
  t.moe_nodes = {2, 3};
  t.shards = {2, 2};
  t.instances = {4, 4};
  CHECK(t.designated(0) == 2);
  CHECK(t.designated(1) == 3);
  auto load = [](int64_t rows) {
    ExchangeLoad l;
    l.rows = {{rows, rows}, {rows, rows}};
    l.forward_bytes_per_row = 4096 * 2;
    l.reverse_bytes_per_row = 4096 * 4;
    return l;
  };
  // One row per shard: latency-bound, and Case 2's extra hop costs more than it saves.
  CHECK(m.choose(t, load(1)) == ExchangeMode::kCase1);
  // A slow attention <-> MoE link makes even small batches bandwidth-bound: 2 rows of
  // 8 KiB take 16 us at 1 GB/s, so sending them once instead of twice wins there.
  CostModel slow;
  slow.set_full_duplex(true);
  for (LinkFit f : m.links()) {
    f.bytes_per_s /= 10;
    slow.add(f);
  }
  CHECK(slow.choose(t, load(1)) == ExchangeMode::kCase2);
  // 512 rows: bandwidth-bound, and Case 2 sends each payload over the slow link once.
  CHECK(m.choose(t, load(512)) == ExchangeMode::kCase2);
  // Single-phase moves every shard's rows once per instance: the most bytes, the most messages.
  CHECK(m.predict(ExchangeMode::kSingle, t, load(64)) > m.predict(ExchangeMode::kCase1, t, load(64)));
  CHECK(m.phases(ExchangeMode::kCase2, t, load(8)).size() == 4);
  // Case 2's relay makes each MoE node send and receive at once: a software transport's
  // node pays for both directions, a full-duplex NIC only for the busier one. Case 1 and
  // single-phase never have a node do both in one phase, so they cost the same either way.
  CostModel software = m;
  software.set_full_duplex(false);
  CHECK(!CostModel().full_duplex());  // the default: tcp and shm
  CHECK(m.predict(ExchangeMode::kCase2, t, load(512)) < software.predict(ExchangeMode::kCase2, t, load(512)));
  CHECK(m.predict(ExchangeMode::kCase1, t, load(512)) == doctest::Approx(software.predict(ExchangeMode::kCase1, t, load(512))));
  CHECK(m.predict(ExchangeMode::kSingle, t, load(64)) == doctest::Approx(software.predict(ExchangeMode::kSingle, t, load(64))));
  CHECK(m.phases(ExchangeMode::kCase1, t, load(8)).size() == 2);
}
