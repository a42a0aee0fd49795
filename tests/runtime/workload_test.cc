// Arrival plans: what fits the context is planned as asked, what cannot is refused or
// marked, never silently cut.
#include <doctest/doctest.h>

#include <algorithm>

#include "runtime/config/workload.h"
#include "test_util.h"

using namespace janus;

TEST_CASE("a fixed length that cannot fit max_seq_len is refused, naming both numbers") {
  ArrivalSpec a;
  a.kind = "poisson";
  a.requests = 5;
  a.prompt = LengthDist{"fixed", 5000};
  auto p = plan_workload(a, 256, 4096);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().message().find("a prompt of 5000 tokens does not fit max_seq_len 4096") != std::string::npos);
  CHECK(p.status().message().find("the longest prompt it takes is 4095") != std::string::npos);
  a.prompt = LengthDist{"fixed", 4000};
  a.output = LengthDist{"fixed", 200};
  auto q = plan_workload(a, 256, 4096);
  REQUIRE_FALSE(q.ok());
  CHECK(q.status().message().find("prompt 4000 + output 200 tokens exceed max_seq_len 4096") != std::string::npos);
  a.output = LengthDist{"fixed", 96};  // exactly fits
  auto ok = plan_workload(a, 256, 4096);
  REQUIRE(ok.ok());
  REQUIRE(ok->size() == 5);
  for (const PlannedRequest& r : *ok) {
    CHECK(r.prompt.size() == 4000);
    CHECK(r.max_new_tokens == 96);
    CHECK_FALSE(r.clamped);
  }
}

TEST_CASE("drawn lengths past the context are cut to fit and marked, the rest planned as drawn") {
  ArrivalSpec a;
  a.kind = "gamma";
  a.requests = 400;
  a.prompt = LengthDist{"lognormal", 100, 1, 0, 1.5};  // a long tail past 512
  a.output = LengthDist{"fixed", 64};
  auto p = plan_workload(a, 256, 512);
  REQUIRE(p.ok());
  const auto clamped = std::count_if(p->begin(), p->end(), [](const PlannedRequest& r) { return r.clamped; });
  CHECK(clamped > 0);
  CHECK(clamped < 200);
  for (const PlannedRequest& r : *p) {
    CHECK(r.prompt.size() + static_cast<size_t>(r.max_new_tokens) <= 512);
    CHECK(r.prompt.size() >= 1);
    // Unmarked requests kept the fixed output length they asked for.
    if (!r.clamped) CHECK(r.max_new_tokens == 64);
  }
  auto again = plan_workload(a, 256, 512);  // seeded: the same plan
  REQUIRE(again.ok());
  CHECK(again->front().prompt == p->front().prompt);
}

TEST_CASE("a trace row longer than the context is cut to fit and marked") {
  janus::test::TempDir d;
  janus::test::write_file(d / "t.csv", "arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n0.5,9000,20\n");
  ArrivalSpec a;
  a.kind = "trace";
  a.trace = d / "t.csv";
  auto p = plan_workload(a, 256, 1024);
  REQUIRE(p.ok());
  REQUIRE(p->size() == 2);
  CHECK_FALSE((*p)[0].clamped);
  CHECK((*p)[0].prompt.size() == 10);
  CHECK((*p)[1].clamped);
  CHECK((*p)[1].prompt.size() == 1023);
  CHECK((*p)[1].max_new_tokens == 1);
}
