// Policies registered at run time (register_scheduling_policy): made by name like the
// built-in ones, listed after them, accepted by configs, and checked answer by answer.
#include <doctest/doctest.h>

#include "runtime/scheduling/scheduling_policy.h"

using namespace janus;

namespace {

// Returns whatever it was told to: a stand-in for a user's policy, right or wrong.
class Scripted final : public SchedulingPolicy {
 public:
  explicit Scripted(std::vector<int32_t> answer) : answer_(std::move(answer)) {}
  std::string name() const override { return "scripted"; }
  Status assign(const ExpertLayout&, const int32_t*, int64_t tokens, int k, uint64_t, int32_t* out) override {
    for (int64_t c = 0; c < tokens * k; ++c) out[c] = answer_[static_cast<size_t>(c) % answer_.size()];
    return Status::Ok();
  }

 private:
  std::vector<int32_t> answer_;
};

SchedulingPolicyFactory scripted(std::vector<int32_t> answer) {
  return [answer](uint64_t) -> Result<std::unique_ptr<SchedulingPolicy>> { return std::unique_ptr<SchedulingPolicy>(new Scripted(answer)); };
}

// 4 experts on 2 instances: instance 0 holds 0 1 2 (replicas 0 1 2), instance 1 holds 2 3 0 (replicas 3 4 5).
ExpertLayout layout() {
  auto l = ExpertLayout::create(4, 3, {{0, 1, 2}, {2, 3, 0}});
  REQUIRE(l.ok());
  return *l;
}

}  // namespace

TEST_CASE("a registered policy is made by name, listed after the built-ins, and its right answers pass") {
  REQUIRE(register_scheduling_policy("test_second_copy", scripted({5, 1, 3, 4})).ok());
  CHECK(is_scheduling_policy_name("test_second_copy"));
  const auto names = known_scheduling_policy_names();
  REQUIRE(names.size() >= 5);
  CHECK(std::vector<std::string>(names.begin(), names.begin() + 4) == scheduling_policy_names());
  CHECK(std::find(names.begin(), names.end(), "test_second_copy") != names.end());
  auto p = make_scheduling_policy("test_second_copy", 3);
  REQUIRE_MESSAGE(p.ok(), p.status().to_string());
  CHECK((*p)->name() == "test_second_copy");
  const ExpertLayout l = layout();
  const std::vector<int32_t> ids = {0, 1, 2, 3};  // one token, k = 4
  std::vector<int32_t> out(4, -1);
  REQUIRE((*p)->assign(l, ids.data(), 1, 4, 0, out.data()).ok());
  CHECK(out == std::vector<int32_t>{5, 1, 3, 4});
  CHECK(max_activated_experts(l, out.data(), 4) == 3);
  CHECK(unregister_scheduling_policy("test_second_copy"));
  CHECK_FALSE(unregister_scheduling_policy("test_second_copy"));
  CHECK_FALSE(is_scheduling_policy_name("test_second_copy"));
  auto gone = make_scheduling_policy("test_second_copy");
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.status().message().find("unknown scheduling policy 'test_second_copy'") != std::string::npos);
}

TEST_CASE("a registered policy's wrong answers fail assign() with the choice, the replica and what it holds") {
  const ExpertLayout l = layout();
  const std::vector<int32_t> ids = {0, 1};
  std::vector<int32_t> out(2, -1);
  REQUIRE(register_scheduling_policy("test_wrong_expert", scripted({0, 3})).ok());  // replica 3 holds expert 2, not 1
  auto p = make_scheduling_policy("test_wrong_expert");
  REQUIRE(p.ok());
  Status s = (*p)->assign(l, ids.data(), 1, 2, 0, out.data());
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == ErrorCode::kInvalidArgument);
  CHECK(s.message() == "scheduling policy 'test_wrong_expert': choice 1 chose expert 1 but got replica 3, which holds expert 2 (on instance 1)");
  REQUIRE(register_scheduling_policy("test_wrong_expert", scripted({0, 6})).ok());  // replacing is allowed; 6 is out of range
  p = make_scheduling_policy("test_wrong_expert");
  REQUIRE(p.ok());
  s = (*p)->assign(l, ids.data(), 1, 2, 0, out.data());
  REQUIRE_FALSE(s.ok());
  CHECK(s.message() == "scheduling policy 'test_wrong_expert': choice 1 (expert 1) got replica 6, outside [0, 6)");
  // Bad input is refused before the policy runs.
  const std::vector<int32_t> bad = {0, 9};
  s = (*p)->assign(l, bad.data(), 1, 2, 0, out.data());
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("chose expert 9, outside [0, 4)") != std::string::npos);
  CHECK(unregister_scheduling_policy("test_wrong_expert"));
}

TEST_CASE("registration refuses built-in names, empty names and null factories; a factory's error comes through") {
  CHECK(register_scheduling_policy("aebs", scripted({0})).message() == "register_scheduling_policy: 'aebs' is a built-in policy");
  CHECK(register_scheduling_policy("", scripted({0})).message() == "register_scheduling_policy: the name is empty");
  CHECK(register_scheduling_policy("test_null", nullptr).message() == "register_scheduling_policy: 'test_null' has no factory");
  CHECK_FALSE(is_scheduling_policy_name("test_null"));
  REQUIRE(register_scheduling_policy("test_refuses", [](uint64_t) -> Result<std::unique_ptr<SchedulingPolicy>> {
            return unavailable("the policy's interpreter is gone");
          }).ok());
  auto p = make_scheduling_policy("test_refuses");
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().message() == "the policy's interpreter is gone");
  CHECK(unregister_scheduling_policy("test_refuses"));
  // The built-in list itself is unchanged by registration.
  CHECK(scheduling_policy_names() == std::vector<std::string>{"aebs", "random_replica", "primary", "token_balanced"});
}
