#include <doctest/doctest.h>

#include "actors/wire_codec.h"

using namespace janus;
using namespace janus::actors;

TEST_CASE("a GraphSpec survives its wire form") {
  GraphSpec g = default_graph_spec();
  g.experts.auto_placement = false;
  g.experts.placement = {{0, 1}, {2, 3, 0}};
  g.resolved_placement = g.experts.placement;
  g.model_dir = "/models/x";
  g.scheduler.seed = 77;
  g.workload.temperature = 0.7f;
  auto back = decode_graph_spec(encode_graph_spec(g));
  REQUIRE(back.ok());
  CHECK(back->model.preset == g.model.preset);
  CHECK(back->attention.shards == g.attention.shards);
  CHECK(back->attention.devices == g.attention.devices);
  CHECK(back->experts.placement == g.experts.placement);
  CHECK(back->resolved_placement == g.resolved_placement);
  CHECK(back->workload.prompts == g.workload.prompts);
  CHECK(back->workload.temperature == doctest::Approx(0.7));
  CHECK(back->scheduler.seed == 77);
  CHECK(back->model_dir == "/models/x");
  CHECK(back->router.side == "moe");
}

TEST_CASE("activation descriptors round-trip and bad frames are refused with a reason") {
  ShardActivations a;
  a.key = {42, 3, 1, 7};
  a.shard = 1;
  a.h = Tensor::host(DType::kF32, 5, 16);
  a.topk_ids = std::vector<int32_t>(10, 3);
  a.topk_weights = std::vector<float>(10, 0.5f);
  auto bytes = encode_shard_activations(a, 99);
  auto f = decode_shard_activations(bytes, 2, 2);
  REQUIRE(f.ok());
  CHECK(f->key == a.key);
  CHECK(f->shard == 1);
  CHECK(f->activations.rows == 5);
  CHECK(f->activations.bytes == 5 * 16 * 4);
  CHECK(f->activations.transfer_tag == 99);
  CHECK(f->topk_ids == a.topk_ids);

  auto truncated = bytes;
  truncated.resize(truncated.size() - 8);
  auto t = decode_shard_activations(truncated, 2, 2);
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().message().find("malformed ShardActivations frame") != std::string::npos);

  auto odd = bytes;
  odd.resize(odd.size() - 3);
  CHECK(decode_shard_activations(odd, 2, 2).status().message().find("not a whole number of words") != std::string::npos);

  auto garbage = std::vector<char>(64, '\x7f');
  CHECK_FALSE(decode_shard_activations(garbage, 2, 2).ok());

  auto unknown = decode_shard_activations(bytes, 1, 2);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.status().message().find("from shard 1, but the graph has 1 shards") != std::string::npos);

  auto wrong_k = decode_shard_activations(bytes, 2, 4);
  REQUIRE_FALSE(wrong_k.ok());
  CHECK(wrong_k.status().message().find("routing has 10 ids for 5 rows of top-4") != std::string::npos);
}
