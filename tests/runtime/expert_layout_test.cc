// ExpertLayout: validation errors name what is wrong; replica ids are instance-major.
#include <doctest/doctest.h>

#include "runtime/base/expert_layout.h"

using namespace janus;

namespace {

std::string error_of(int E, int C, std::vector<std::vector<int32_t>> placement) {
  auto r = ExpertLayout::create(E, C, std::move(placement));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == ErrorCode::kInvalidArgument);
  return r.status().message();
}

}  // namespace

TEST_CASE("expert layout refuses bad placements with clear messages") {
  // Expert id out of range, negative too.
  CHECK(error_of(4, 2, {{0, 1}, {2, 4}}).find("instance 1 slot 1 names expert 4, outside [0, 4)") != std::string::npos);
  CHECK(error_of(4, 2, {{0, -1}, {2, 3}}).find("names expert -1") != std::string::npos);
  // Over its slots.
  CHECK(error_of(4, 2, {{0, 1, 2}, {3}}).find("instance 0 holds 3 experts but has only 2 slots") != std::string::npos);
  // The same expert twice on one instance.
  CHECK(error_of(4, 3, {{0, 1, 0}, {2, 3}}).find("holds expert 0 twice") != std::string::npos);
  // An expert with no replica.
  CHECK(error_of(5, 3, {{0, 1, 2}, {3, 0}}).find("expert 4 has no replica") != std::string::npos);
  // Degenerate shapes.
  CHECK(error_of(0, 2, {{}}).find("no experts") != std::string::npos);
  CHECK(error_of(2, 0, {{0, 1}}).find("slots") != std::string::npos);
  CHECK(error_of(2, 2, {}).find("no expert instances") != std::string::npos);
}

TEST_CASE("expert layout numbers replicas instance-major") {
  // instance 0: 3 1 0 | instance 1: 2 3 | instance 2: 1 0 4
  auto r = ExpertLayout::create(5, 3, {{3, 1, 0}, {2, 3}, {1, 0, 4}});
  REQUIRE(r.ok());
  const ExpertLayout& l = *r;
  CHECK(l.num_experts() == 5);
  CHECK(l.num_instances() == 3);
  CHECK(l.slots() == 3);
  CHECK(l.num_replicas() == 8);
  const int32_t want_expert[] = {3, 1, 0, 2, 3, 1, 0, 4};
  const int32_t want_instance[] = {0, 0, 0, 1, 1, 2, 2, 2};
  for (int32_t rep = 0; rep < 8; ++rep) {
    CAPTURE(rep);
    CHECK(l.expert_of(rep) == want_expert[rep]);
    CHECK(l.instance_of(rep) == want_instance[rep]);
  }
  CHECK(l.replicas_of(3) == std::vector<int32_t>{0, 4});
  CHECK(l.replicas_of(0) == std::vector<int32_t>{2, 6});
  CHECK(l.replicas_of(4) == std::vector<int32_t>{7});
  CHECK(l.replica_on(1, 2) == 5);
  CHECK(l.replica_on(1, 1) == -1);
  CHECK(l.experts_on(1) == std::vector<int32_t>{2, 3});
  CHECK(l.to_string() == "instance 0: 3 1 0 | instance 1: 2 3 | instance 2: 1 0 4");
}
