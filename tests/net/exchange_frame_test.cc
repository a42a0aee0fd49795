// The exchange frame codec (actors/wire_codec.h): round trips, and every way a frame can
// be bad is refused with its reason, never a crash.
#include <doctest/doctest.h>

#include <cstring>
#include <optional>
#include <random>

#include "actors/wire_codec.h"
#include "tests/exchange_test_limits.h"

using namespace janus;
using namespace janus::actors;

namespace {

ExchangeLimits limits() { return test::exchange_test_limits(); }

ExchangeFrame dispatch() {
  ExchangeFrame f;
  f.key = {7, 2, 1, 3};
  f.kind = ExchangeKind::kDispatch;
  f.mode = ExchangeMode::kCase2;
  f.sender = 0;
  f.origin = 0;
  f.designated = 2;
  for (int s : {0, 1}) {
    ExchangePart p;
    p.shard = s;
    p.rows = 3;
    p.dtype = DType::kF32;
    p.has_h = true;
    p.h = {static_cast<uint64_t>(s) * 3 * 64 * 4, 3 * 64 * 4};
    f.parts.push_back(p);
  }
  f.payload_bytes = 2 * 3 * 64 * 4;
  f.transfer_tag = 42;
  return f;
}

// Decodes from an aligned copy; returns the fault, or nothing when it decoded.
std::optional<FrameFault> fault_of(const std::vector<char>& bytes, ExchangeFrame* out = nullptr) {
  // Static: a decoded frame's inline_data points into these words after we return.
  static std::vector<uint64_t> words;
  words.assign((bytes.size() + 7) / 8 + 1, 0);
  if (!bytes.empty()) std::memcpy(words.data(), bytes.data(), bytes.size());
  FrameFault fault = FrameFault::kMalformed;
  auto f = decode_exchange_frame(words.data(), bytes.size(), limits(), &fault);
  if (f.ok()) {
    if (out) *out = *f;
    return std::nullopt;
  }
  return fault;
}

bool fault_is(std::optional<FrameFault> got, FrameFault want) { return got.has_value() && *got == want; }

}  // namespace

TEST_CASE("exchange frames round-trip") {
  ExchangeFrame f = dispatch();
  ExchangeFrame g;
  REQUIRE(!fault_of(encode_exchange_frame(f), &g).has_value());
  CHECK(g.key == f.key);
  CHECK(g.kind == f.kind);
  CHECK(g.mode == f.mode);
  CHECK(g.designated == 2);
  REQUIRE(g.parts.size() == 2);
  CHECK(g.parts[1].shard == 1);
  CHECK(g.parts[1].h.offset == f.parts[1].h.offset);
  CHECK(g.transfer_tag == 42);
  // Inline payloads and error text.
  ExchangeFrame c;
  c.kind = ExchangeKind::kCombine;
  c.mode = ExchangeMode::kCase1;
  c.sender = 3;
  c.error = "expert-2 failed";
  const char bytes[16] = "0123456789abcde";
  ExchangePart p;
  p.shard = 2;
  p.rows = 0;
  p.dtype = DType::kF64;
  c.parts = {p};
  c.inline_data = bytes;
  c.inline_bytes = 16;
  c.payload_bytes = 16;
  ExchangeFrame d;
  REQUIRE(!fault_of(encode_exchange_frame(c), &d).has_value());
  CHECK(d.error == "expert-2 failed");
  REQUIRE(d.inline_bytes == 16);
  CHECK(std::memcmp(d.inline_data, bytes, 16) == 0);
}

TEST_CASE("truncated and malformed frames are refused") {
  const std::vector<char> good = encode_exchange_frame(dispatch());
  CHECK(fault_is(fault_of({}), FrameFault::kTruncated));
  CHECK(fault_is(fault_of(std::vector<char>(good.begin(), good.begin() + 4)), FrameFault::kTruncated));
  for (size_t cut = 8; cut < good.size(); cut += 8) {
    CAPTURE(cut);
    CHECK(fault_is(fault_of(std::vector<char>(good.begin(), good.begin() + static_cast<long>(cut))), FrameFault::kTruncated));
  }
  CHECK(fault_is(fault_of(std::vector<char>(good.begin(), good.end() - 3)), FrameFault::kMalformed));  // not whole words
  // A well-framed message whose root pointer leaves the segment.
  std::vector<char> bad(24, 0);
  const uint32_t seg[2] = {0, 2};
  std::memcpy(bad.data(), seg, 8);
  const uint64_t root = (uint64_t{1000} << 2) | (uint64_t{1} << 32);
  std::memcpy(bad.data() + 8, &root, 8);
  CHECK(fault_is(fault_of(bad), FrameFault::kMalformed));
  // Random garbage never crashes; whatever decodes is consistent.
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    std::vector<char> junk(8 * (1 + rng() % 32));
    for (char& x : junk) x = static_cast<char>(rng());
    ExchangeFrame f;
    if (!fault_of(junk, &f).has_value())
      for (const ExchangePart& p : f.parts) CHECK(p.h.offset + p.h.bytes <= f.payload_bytes);
  }
  // Flipping single bytes of a good frame: refused or still a consistent frame.
  for (size_t i = 0; i < good.size(); ++i) {
    std::vector<char> b = good;
    b[i] = static_cast<char>(b[i] ^ 0x5a);
    ExchangeFrame f;
    if (!fault_of(b, &f).has_value())
      for (const ExchangePart& p : f.parts) CHECK(p.h.offset + p.h.bytes <= f.payload_bytes);
  }
}

TEST_CASE("sizes that disagree with the descriptor are refused") {
  {
    ExchangeFrame f = dispatch();
    f.parts[1].h.bytes -= 4;  // not rows x hidden x 4
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kSizeMismatch));
  }
  {
    ExchangeFrame f = dispatch();
    f.payload_bytes -= 8;  // the last section runs past the payload
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kSizeMismatch));
  }
  {
    ExchangeFrame f = dispatch();
    f.parts[0].topk_ids = {0, 3 * 2 * 4};
    f.parts[0].topk_weights = {0, 4};  // routing of the wrong size
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kSizeMismatch));
  }
  {
    ExchangeFrame f = dispatch();
    const char b[8] = {};
    f.inline_data = b;
    f.inline_bytes = 8;
    f.transfer_tag = 0;  // inline, but the descriptor says otherwise
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kSizeMismatch));
  }
  {
    ExchangeFrame f = dispatch();
    f.transfer_tag = 0;  // a payload with no tag to find it by
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kMalformed));
  }
}

TEST_CASE("frames naming nodes, shards or instances outside the deployment are refused") {
  {
    ExchangeFrame f = dispatch();
    f.sender = 9;
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kUnknownSender));
  }
  {
    ExchangeFrame f = dispatch();
    f.parts[0].shard = 11;
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kMalformed));
  }
  {
    ExchangeFrame f = dispatch();
    f.parts[0].instance = 8;
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kMalformed));
  }
  {
    ExchangeFrame f = dispatch();
    f.parts[0].dtype = DType::kF64;  // activations are never F64; partial sums are
    CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kMalformed));
  }
}

TEST_CASE("a frame with more parts than the graph can have is refused before they are read") {
  // Found by tests/fuzz/fuzz_wire_codec: a list of empty structs made 120 bytes 819,202 parts.
  ExchangeFrame f = dispatch();
  const ExchangeLimits l = limits();
  ExchangePart empty;
  f.parts.assign(static_cast<size_t>(l.shards * (l.instances + 1)), empty);
  CHECK(!fault_of(encode_exchange_frame(f)).has_value());
  f.parts.push_back(empty);
  CHECK(fault_is(fault_of(encode_exchange_frame(f)), FrameFault::kMalformed));
}
