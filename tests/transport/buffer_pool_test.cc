// The registered buffer pool (transport/buffer_pool.h): blocks are registered once and
// reused; views keep them alive from any thread.
#include <doctest/doctest.h>

#include <thread>

#include "transport/buffer_pool.h"

using namespace janus;
using namespace janus::transport;

TEST_CASE("the buffer pool registers slabs once and reuses blocks") {
  auto ep = Endpoint::open("inproc", {});
  REQUIRE(ep.ok());
  BufferPool pool(**ep, 1 << 20);
  const uint64_t regs0 = (*ep)->counters().registrations;
  std::vector<PoolBlock> out;
  for (int i = 0; i < 100; ++i) {
    auto b = pool.acquire(4096 + static_cast<size_t>(i));
    REQUIRE(b.ok());
    CHECK(b->capacity >= 4096u + static_cast<size_t>(i));
    CHECK(reinterpret_cast<uintptr_t>(b->data) % 4096 == 0);
    out.push_back(*b);
  }
  for (const PoolBlock& b : out) pool.release(b);
  const uint64_t regs1 = (*ep)->counters().registrations;
  CHECK(regs1 - regs0 <= 2);  // 100 blocks of 8 KiB: one 1 MiB slab
  for (int i = 0; i < 1000; ++i) {
    auto b = pool.acquire(5000);
    REQUIRE(b.ok());
    pool.release(*b);
  }
  CHECK((*ep)->counters().registrations == regs1);
  CHECK(pool.stats().reused >= 1000);
  // A block bigger than a slab gets its own region, reused afterwards too.
  auto big = pool.acquire(3 << 20);
  REQUIRE(big.ok());
  pool.release(*big);
  auto again = pool.acquire(3 << 20);
  REQUIRE(again.ok());
  CHECK(again->data == big->data);
  // A holder returns its block from another thread.
  {
    std::shared_ptr<void> h = pool.hold(*again);
    std::thread([h]() mutable { h.reset(); }).join();
  }
  CHECK(pool.stats().in_use == 0);
}
