// The actors' Cap'n Proto wire codec (actors/wire_codec.h): exchange frames from other
// nodes and shard-activation descriptors. The first byte picks the decoder; the rest is
// the message, as a receiver would hold it (8-byte aligned).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "actors/wire_codec.h"
#include "tests/exchange_test_limits.h"
#include "tests/fuzz/fuzz_require.h"

using namespace janus;
using namespace janus::actors;

namespace {

ExchangeLimits limits() { return test::exchange_test_limits(); }

bool inside(const PayloadSection& s, uint64_t payload) { return s.offset <= payload && s.bytes <= payload - s.offset; }

bool same_part(const ExchangePart& a, const ExchangePart& b) {
  auto eq = [](const PayloadSection& x, const PayloadSection& y) { return x.offset == y.offset && x.bytes == y.bytes; };
  return a.shard == b.shard && a.rows == b.rows && a.dtype == b.dtype && a.has_h == b.has_h && eq(a.h, b.h) &&
         eq(a.topk_ids, b.topk_ids) && eq(a.topk_weights, b.topk_weights) && a.instance == b.instance && a.part == b.part &&
         a.parts_total == b.parts_total;
}

// What decode_exchange_frame promises of a frame it accepts.
void check_accepted(const ExchangeFrame& f, const ExchangeLimits& lim) {
  const auto nodes = static_cast<uint32_t>(lim.nodes);
  JANUS_FUZZ_REQUIRE(f.sender < nodes && f.origin < nodes && f.designated < nodes);
  JANUS_FUZZ_REQUIRE(f.payload_bytes <= lim.max_payload);
  JANUS_FUZZ_REQUIRE(f.inline_bytes == 0 || (f.inline_bytes == f.payload_bytes && f.transfer_tag == 0));
  for (const ExchangePart& p : f.parts) {
    JANUS_FUZZ_REQUIRE(p.shard >= 0 && p.shard < lim.shards);
    JANUS_FUZZ_REQUIRE(p.instance >= -1 && p.instance < lim.instances);
    JANUS_FUZZ_REQUIRE(inside(p.h, f.payload_bytes) && inside(p.topk_ids, f.payload_bytes) && inside(p.topk_weights, f.payload_bytes));
  }
}

void exchange_frame(const uint64_t* words, size_t len) {
  FrameFault fault = FrameFault::kMalformed;
  auto f = decode_exchange_frame(words, len, limits(), &fault);
  if (!f.ok()) {
    JANUS_FUZZ_REQUIRE(!f.status().message().empty());
    JANUS_FUZZ_REQUIRE(frame_fault_name(fault) != nullptr);
    return;
  }
  check_accepted(*f, limits());
  // Encoding what was accepted gives a frame that decodes to the same thing.
  const std::vector<char> bytes = encode_exchange_frame(*f);
  std::vector<uint64_t> again(bytes.size() / 8 + 1);
  std::memcpy(again.data(), bytes.data(), bytes.size());
  auto g = decode_exchange_frame(again.data(), bytes.size(), limits(), &fault);
  if (!g.ok()) std::fprintf(stderr, "the re-encoded frame (%zu parts, %zu bytes) is refused: %s\n", f->parts.size(), bytes.size(), g.status().message().c_str());
  JANUS_FUZZ_REQUIRE(g.ok());
  JANUS_FUZZ_REQUIRE(g->key == f->key && g->kind == f->kind && g->mode == f->mode && g->sender == f->sender && g->origin == f->origin &&
          g->designated == f->designated && g->payload_bytes == f->payload_bytes && g->transfer_tag == f->transfer_tag &&
          g->error == f->error && g->moe_busy_ns == f->moe_busy_ns && g->probe_seq == f->probe_seq);
  JANUS_FUZZ_REQUIRE(g->inline_bytes == f->inline_bytes);
  if (f->inline_bytes > 0) JANUS_FUZZ_REQUIRE(std::memcmp(g->inline_data, f->inline_data, f->inline_bytes) == 0);
  JANUS_FUZZ_REQUIRE(g->parts.size() == f->parts.size());
  for (size_t i = 0; i < f->parts.size(); ++i) JANUS_FUZZ_REQUIRE(same_part(g->parts[i], f->parts[i]));
}

void shard_activations(const uint8_t* data, size_t len) {
  const std::vector<char> bytes(data, data + len);
  auto f = decode_shard_activations(bytes, limits().shards, limits().top_k);
  if (!f.ok()) {
    JANUS_FUZZ_REQUIRE(!f.status().message().empty());
    return;
  }
  JANUS_FUZZ_REQUIRE(f->shard >= 0 && f->shard < limits().shards);
  JANUS_FUZZ_REQUIRE(f->activations.bytes == uint64_t{f->activations.rows} * f->activations.cols * dtype_size(f->activations.dtype));
  JANUS_FUZZ_REQUIRE(f->topk_ids.empty() || (f->topk_ids.size() == size_t{f->activations.rows} * limits().top_k &&
                                  f->topk_weights.size() == f->topk_ids.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t which = data[0];
  ++data;
  --size;
  if (which % 2 == 0) {
    uint64_t* words = new uint64_t[size / 8 + 1];
    std::memcpy(words, data, size);
    exchange_frame(words, size);
    delete[] words;
  } else {
    shard_activations(data, size);
  }
  return 0;
}
