// The exchange limits the frame tests and the wire-codec fuzz seeds
// (tests/fuzz/corpus/fuzz_wire_codec) are written against: 4 nodes, 4 shards, 8 instances.
#pragma once

#include "actors/wire_codec.h"

namespace janus::test {

inline actors::ExchangeLimits exchange_test_limits() {
  actors::ExchangeLimits l;
  l.nodes = 4;
  l.shards = 4;
  l.instances = 8;
  l.hidden = 64;
  l.top_k = 2;
  return l;
}

}  // namespace janus::test
