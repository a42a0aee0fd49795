#include <doctest/doctest.h>

#include <set>

#include "runtime/model/kv_cache.h"

using namespace janus;

namespace {
KvCacheShape small_shape() {
  KvCacheShape s;
  s.layers = 2;
  s.kv_heads = 2;
  s.head_dim = 4;
  s.block_size = 4;
  s.num_blocks = 6;
  s.max_seqs = 3;
  s.max_seq_len = 16;
  return s;
}
}  // namespace

TEST_CASE("blocks are handed out on demand and returned on release") {
  PagedKvCache kv(small_shape());
  CHECK(kv.free_blocks() == 6);
  auto a = kv.add_sequence();
  REQUIRE(a.ok());
  REQUIRE(kv.reserve(*a, 5).ok());  // 2 blocks
  CHECK(kv.free_blocks() == 4);
  REQUIRE(kv.reserve(*a, 8).ok());  // still 2 blocks
  CHECK(kv.free_blocks() == 4);
  REQUIRE(kv.reserve(*a, 9).ok());  // 3 blocks
  CHECK(kv.free_blocks() == 3);
  CHECK(kv.reserved_tokens(*a) == 12);
  // Distinct physical blocks in the table row.
  auto L = kv.layout();
  std::set<int32_t> blocks;
  for (int i = 0; i < 3; ++i) blocks.insert(L.block_tables[*a * L.max_blocks + i]);
  CHECK(blocks.size() == 3);
  kv.release(*a);
  CHECK(kv.free_blocks() == 6);
  CHECK(kv.free_seqs() == 3);
}

TEST_CASE("a full cache refuses without changing anything, and admits again after release") {
  PagedKvCache kv(small_shape());
  auto a = kv.add_sequence();
  auto b = kv.add_sequence();
  REQUIRE(kv.reserve(*a, 16).ok());  // 4 blocks
  CHECK_FALSE(kv.can_admit(12));     // needs 3, 2 free
  Status s = kv.reserve(*b, 12);
  CHECK(s.code() == ErrorCode::kResourceExhausted);
  CHECK(s.message().find("need 3 more blocks, 2 free") != std::string::npos);
  CHECK(kv.free_blocks() == 2);
  CHECK(kv.reserve(*a, 17).code() == ErrorCode::kResourceExhausted);  // over the per-sequence limit
  kv.release(*a);
  CHECK(kv.can_admit(12));
  CHECK(kv.reserve(*b, 12).ok());
  auto c = kv.add_sequence();
  auto d = kv.add_sequence();
  REQUIRE(c.ok());
  REQUIRE(d.ok());
  CHECK(kv.add_sequence().status().code() == ErrorCode::kResourceExhausted);
}
