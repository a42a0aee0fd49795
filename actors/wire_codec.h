// Cap'n Proto wire forms of the GraphSpec and of the data-plane descriptors
// (schemas/graph_spec.capnp, schemas/descriptors.capnp): what crosses a process boundary.
// Decoding validates: a truncated or malformed frame, a tensor size that disagrees with
// its shape, a key outside the graph is an error that says so, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "actors/protocol/layer_exchange.h"
#include "runtime/config/graph_spec.h"
#include "transport/cost_model.h"

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

// -- the node-to-node exchange (schemas/descriptors.capnp ExchangeFrame) ----------------

enum class ExchangeKind : uint8_t { kDispatch = 0, kCombine = 1, kProbe = 2, kProbeReply = 3 };
using transport::ExchangeMode;

/// A byte range of a frame's payload.
struct PayloadSection {
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

/// One shard's rows in a dispatch (activations, with routing under AGate) or a combine
/// (partial sums).
struct ExchangePart {
  int32_t shard = 0;
  uint32_t rows = 0;
  DType dtype = DType::kF32;
  bool has_h = false;
  PayloadSection h, topk_ids, topk_weights;
  int32_t instance = -1;     // single-phase: the copy's instance (dispatch) / the partial's (combine)
  uint32_t part = 0;         // single-phase combine: this frame's index among parts_total
  uint32_t parts_total = 0;
};

struct ExchangeFrame {
  LayerBatchKey key;
  ExchangeKind kind = ExchangeKind::kDispatch;
  ExchangeMode mode = ExchangeMode::kCase1;
  uint32_t sender = 0, origin = 0, designated = 0;  // node indices
  std::vector<ExchangePart> parts;
  uint64_t payload_bytes = 0;
  uint64_t transfer_tag = 0;       // the payload's transport tag; 0 when inline or absent
  const char* inline_data = nullptr;  // inline payload (encode: copied from; decode: points into the bytes)
  size_t inline_bytes = 0;
  std::string error;
  uint64_t moe_busy_ns = 0;
  uint64_t probe_seq = 0;
};

/// Why a frame was refused: each is counted apart (and the transport counts its own).
enum class FrameFault { kTruncated, kMalformed, kWrongEpoch, kSizeMismatch, kUnknownSender };
const char* frame_fault_name(FrameFault f);

/// What a receiver checks a frame against.
struct ExchangeLimits {
  int nodes = 0, shards = 0, instances = 0;
  int64_t hidden = 0;
  int top_k = 0;
  uint64_t max_payload = uint64_t{1} << 30;
};

/// The frame as a flat Cap'n Proto message (a whole number of 8-byte words).
std::vector<char> encode_exchange_frame(const ExchangeFrame& f);

/// Decodes `bytes` (8-byte aligned; the result's inline_data points into them) and checks
/// everything a frame can be checked for on its own: integrity (truncated / malformed),
/// enumerations and node indices, every section inside the payload and of the size its
/// rows, columns and dtype say, inline size = payload size. The epoch and whether the
/// sender may send it are the receiver's to check. On failure *fault says why.
Result<ExchangeFrame> decode_exchange_frame(const void* bytes, size_t len, const ExchangeLimits& limits, FrameFault* fault);

}  // namespace janus::actors
