// Cap'n Proto wire forms of the GraphSpec and of the data-plane descriptors
// (schemas/graph_spec.capnp, schemas/descriptors.capnp): what crosses a process boundary.
// Decoding validates: a truncated or malformed frame, a tensor size that disagrees with
// its shape, a key outside the graph is an error that says so, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "actors/messages.h"
#include "runtime/graph_spec.h"

namespace janus::actors {

/// Bytes (a flat Cap'n Proto message, 8-byte words) of a GraphSpec.
std::vector<char> encode_graph_spec(const GraphSpec& spec);
Result<GraphSpec> decode_graph_spec(const std::vector<char>& bytes);

/// The descriptor of a tensor payload: dtype, shape, byte count, transfer tag.
struct TensorDescriptor {
  DType dtype = DType::kF32;
  uint32_t rows = 0, cols = 0;
  uint64_t bytes = 0;
  uint64_t transfer_tag = 0;
};

TensorDescriptor describe(const Tensor& t, uint64_t transfer_tag);

/// ShardActivations as a descriptor frame (the payload travels apart, under `tag`).
std::vector<char> encode_shard_activations(const ShardActivations& a, uint64_t tag);
struct ShardActivationsFrame {
  LayerBatchKey key;
  int32_t shard = 0;
  TensorDescriptor activations;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_weights;
};
/// Checks the frame's integrity and its consistency: bytes == rows * cols * size, the
/// routing (when present) covers rows * top_k choices, the shard is below `shards`.
Result<ShardActivationsFrame> decode_shard_activations(const std::vector<char>& bytes, int shards, int top_k);

}  // namespace janus::actors
