// PartialGather on its own: what it takes, what it drops and why, and that a batch
// completes or fails exactly once.
#include <doctest/doctest.h>

#include "actors/partial_gather.h"

using namespace janus;
using namespace janus::actors;

namespace {

struct Rows {
  int64_t rows = 0;
};

}  // namespace

TEST_CASE("an implicit gather expects every slot once, in any order, and hands the replies out in slot order") {
  PartialGather<int> g("shard ");
  g.restart(1, 3);
  const LayerBatchKey key{4, 0, 1, 1};
  PartialGather<int>::Batch done;
  std::string why;
  CHECK(g.offer(key, 2, 20, &done, &why) == GatherOutcome::kWaiting);
  CHECK(g.offer(key, 0, 0, &done, &why) == GatherOutcome::kWaiting);
  CHECK(g.offer(key, 0, 99, &done, &why) == GatherOutcome::kDropped);  // it answered already
  CHECK(why == "for " + key.to_string() + " from shard 0: nothing waits for it");
  CHECK(g.offer(key, 5, 50, &done, &why) == GatherOutcome::kDropped);
  CHECK(why == "for " + key.to_string() + " from unknown shard 5");
  CHECK(g.offer({4, 0, 1, 0}, 1, 10, &done, &why) == GatherOutcome::kDropped);
  CHECK(why == "of epoch 0 (current epoch 1)");
  CHECK(g.open_batches() == 1);
  REQUIRE(g.offer(key, 1, 10, &done, &why) == GatherOutcome::kComplete);
  CHECK(done.key == key);
  CHECK(done.error.ok());
  std::vector<std::pair<int32_t, int>> got(done.replies.begin(), done.replies.end());
  CHECK(got == std::vector<std::pair<int32_t, int>>{{0, 0}, {1, 10}, {2, 20}});
  CHECK(g.open_batches() == 0);
}

TEST_CASE("an explicit gather takes only what expect() named; an error fails the batch once, naming the slot") {
  PartialGather<int, Rows> g("expert-");
  g.restart(2, 0);
  const LayerBatchKey key{9, 2, 0, 2};
  PartialGather<int, Rows>::Batch done;
  std::string why;
  CHECK(g.offer(key, 0, 1, &done, &why) == GatherOutcome::kDropped);  // nobody expects the batch
  CHECK(why == "for " + key.to_string() + " from expert-0: nothing waits for it");
  g.expect(key, {0, 2}, Rows{7});
  CHECK(g.offer(key, 1, 1, &done, &why) == GatherOutcome::kDropped);  // not asked
  CHECK(g.offer(key, 2, 2, &done, &why) == GatherOutcome::kWaiting);
  REQUIRE(g.offer(key, 0, Status(ErrorCode::kResourceExhausted, "out of device memory"), &done, &why) == GatherOutcome::kFailed);
  CHECK(done.error.code() == ErrorCode::kResourceExhausted);
  CHECK(done.error.message() == "expert-0: out of device memory");
  CHECK(done.context.rows == 7);
  // Failed is final: the reply still due is dropped, and nothing is left open.
  CHECK(g.offer(key, 2, 2, &done, &why) == GatherOutcome::kDropped);
  CHECK(g.open_batches() == 0);
}

TEST_CASE("a gather's check refuses a reply that is wrong for its batch, and a restart forgets what was in flight") {
  PartialGather<int, Rows> g("expert-");
  g.restart(3, 0);
  const LayerBatchKey key{1, 0, 0, 3};
  auto whole = [](const Rows& r, const int& rows) {
    return rows == r.rows ? Status::Ok() : internal_error("returned " + std::to_string(rows) + " rows");
  };
  PartialGather<int, Rows>::Batch done;
  std::string why;
  g.expect(key, {1, 3}, Rows{4});
  CHECK(g.offer(key, 3, 4, &done, &why, whole) == GatherOutcome::kWaiting);
  REQUIRE(g.offer(key, 1, 3, &done, &why, whole) == GatherOutcome::kFailed);
  CHECK(done.error.code() == ErrorCode::kInternal);
  CHECK(done.error.message() == "expert-1: returned 3 rows");

  g.expect(key, {0}, Rows{4});
  g.restart(4, 0);
  CHECK(g.open_batches() == 0);
  CHECK(g.offer({1, 0, 0, 4}, 0, 4, &done, &why, whole) == GatherOutcome::kDropped);
  CHECK(g.offer(key, 0, 4, &done, &why, whole) == GatherOutcome::kDropped);
  CHECK(why == "of epoch 3 (current epoch 4)");
}
