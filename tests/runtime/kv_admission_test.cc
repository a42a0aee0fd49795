// The Frontend's admission rule (runtime/scheduling/kv_admission.h).
#include <doctest/doctest.h>

#include "runtime/scheduling/kv_admission.h"

using namespace janus;

TEST_CASE("a request reserves the blocks of its prompt and all its new tokens") {
  CHECK(kv_blocks_needed(16, 256, 16) == 17);
  CHECK(kv_blocks_needed(1, 15, 16) == 1);
  CHECK(kv_blocks_needed(1, 16, 16) == 2);
}

TEST_CASE("admission picks the shard with the most free blocks that can hold the request") {
  std::vector<ShardOccupancy> s = {{50, 1}, {10, 1}, {10, 1}};
  CHECK(pick_shard(s, 20, 100, 4) == 1);  // 90 free, the first of the tie
  s[1].seqs = 4;                          // no sequence slot left there
  CHECK(pick_shard(s, 20, 100, 4) == 2);
  CHECK(pick_shard(s, 91, 100, 4) == -1);  // fits nowhere now: it waits
  CHECK(pick_shard(s, 50, 100, 4) == 2);
  CHECK(pick_shard({}, 1, 100, 4) == -1);
}
