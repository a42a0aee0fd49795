// The header frame: round trip, and no bytes whatsoever make the decoder crash or accept.
#include <doctest/doctest.h>

#include <random>

#include "transport/frame.h"
#include "transport/reg_cache.h"
#include "transport_test_util.h"

using namespace janus::transport;

TEST_CASE("frame: encode then decode gives the header back") {
  FrameHeader h;
  h.sender = 7;
  h.epoch = 3;
  h.tag = (1ull << 61) + 12345;
  h.bytes = 64ull << 20;
  h.seq = 99;
  h.flags = kFrameFlagSplit;
  alignas(8) unsigned char f[kFrameHeaderBytes];
  encode_frame(h, f);
  FrameHeader out;
  std::string why;
  REQUIRE(decode_frame(f, sizeof f, &out, &why) == FrameCheck::kOk);
  CHECK(out.sender == 7);
  CHECK(out.epoch == 3);
  CHECK(out.tag == h.tag);
  CHECK(out.bytes == h.bytes);
  CHECK(out.seq == 99);
  CHECK(out.flags == kFrameFlagSplit);
  CHECK(decode_frame(f, kFrameHeaderBytes - 1, &out, &why) == FrameCheck::kTruncated);
  CHECK(why.find("bytes") != std::string::npos);
}

TEST_CASE("frame: random and mutated bytes are refused or parsed, never crash") {
  std::mt19937_64 rng(1);
  alignas(8) unsigned char f[kFrameHeaderBytes];
  FrameHeader good;
  good.sender = 1;
  good.tag = 5;
  int accepted_mutants = 0;
  for (int i = 0; i < 20000; ++i) {
    if (i % 2 == 0) {
      janus::test::fill_bytes(f, sizeof f, rng());
    } else {
      encode_frame(good, f);
      f[rng() % sizeof f] ^= static_cast<unsigned char>(1u << (rng() % 8));
    }
    FrameHeader out;
    std::string why;
    const FrameCheck c = decode_frame(f, sizeof f, &out, &why);
    if (c != FrameCheck::kOk) CHECK(!why.empty());
    if (i % 2 == 0) CHECK(c != FrameCheck::kOk);  // random bytes are not our frame
    else if (c == FrameCheck::kOk) ++accepted_mutants;  // a flipped field bit: caught by the field checks
  }
  CHECK(accepted_mutants > 0);
}

TEST_CASE("registration cache: found by covering range, overlaps, erase") {
  RegistrationCache c;
  std::vector<char> a(1000), b(100);
  MemoryRegion ra;
  ra.begin = reinterpret_cast<uintptr_t>(a.data());
  ra.end = ra.begin + a.size();
  MemoryRegion* pa = c.insert(ra);
  CHECK(c.find(a.data(), 1000) == pa);
  CHECK(c.find(a.data() + 500, 500) == pa);
  CHECK(c.find(a.data() + 500, 501) == nullptr);
  CHECK(c.find(b.data(), 10) == nullptr);
  // A smaller region inside a larger one: a range only the larger covers still finds it.
  MemoryRegion inner;
  inner.begin = ra.begin + 100;
  inner.end = ra.begin + 200;
  MemoryRegion* pi = c.insert(inner);
  CHECK(c.find(a.data() + 150, 10) != nullptr);
  CHECK(c.find(a.data() + 150, 800) == pa);
  CHECK(c.erase(pi));
  CHECK(!c.contains(pi));
  CHECK(c.size() == 1);
}
