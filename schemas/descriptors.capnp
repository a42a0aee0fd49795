# Data-plane descriptors: what one actor tells another about a layer batch. Payload bytes
# never ride in these: a TensorDesc names the bytes a transport moves under transferTag.
# Every descriptor carries the layer batch key, whose epoch fences membership changes.
@0xfd7454a989d28db3;

$import "/capnp/c++.capnp".namespace("janus::wire");

enum DType {
  f32 @0;
  bf16 @1;
  f16 @2;
  f64 @3;
}

struct LayerBatchKey {
  step @0 :UInt64;
  layer @1 :UInt16;
  microBatch @2 :UInt16;
  epoch @3 :UInt32;
}

struct TensorDesc {
  dtype @0 :DType;
  rows @1 :UInt32;
  cols @2 :UInt32;
  bytes @3 :UInt64;        # must equal rows * cols * size(dtype)
  transferTag @4 :UInt64;  # names the payload on the transport
}

struct ExpertWork {
  row @0 :Int32;
  expert @1 :Int32;
  weight @2 :Float32;
}

# AttentionShard -> Router (EGate) or Scheduler (AGate, with routing).
struct ShardActivations {
  key @0 :LayerBatchKey;
  shard @1 :UInt16;
  activations @2 :TensorDesc;
  topkIds @3 :List(Int32);         # AGate only: [rows * k]
  topkWeights @4 :List(Float32);
}

# Scheduler -> ExpertInstance.
struct ExpertTask {
  key @0 :LayerBatchKey;
  instance @1 :UInt16;
  activations @2 :TensorDesc;
  work @3 :List(ExpertWork);
}

# ExpertInstance -> Scheduler.
struct ExpertPartial {
  key @0 :LayerBatchKey;
  instance @1 :UInt16;
  sums @2 :TensorDesc;
}

# Scheduler -> AttentionShard: the combined MoE output for the shard's rows.
struct MoeResult {
  key @0 :LayerBatchKey;
  shard @1 :UInt16;
  sums @2 :TensorDesc;
  error @3 :Text;                  # non-empty: the layer batch failed (e.g. an instance died)
}

# -- the node-to-node exchange (actors/bridge.h) ----------------------------------------
# What one node's bridge sends another for a layer batch. The descriptor travels as one
# transport message (tag 1); the payload, when it is not inline, follows as a second
# message under transferTag, holding the sections the parts point at.

enum ExchangeKind {
  dispatch @0;    # attention node -> MoE node: activations of the origin node's shards
  combine @1;     # MoE node -> attention node (or -> the designated MoE node, Case 2)
  probe @2;       # link probing at start-up: answered with probeReply of the same size
  probeReply @3;
}

enum ExchangeMode {
  single @0;      # every shard to every instance, every instance back to every shard
  case1 @1;       # one payload per (attention node, MoE node) pair, both ways
  case2 @2;       # one payload per attention node to its designated MoE node, which relays
}

struct PayloadSection {
  offset @0 :UInt64;   # byte offset in the payload, 8-byte aligned
  bytes @1 :UInt64;
}

struct ExchangePart {
  shard @0 :UInt16;
  rows @1 :UInt32;
  dtype @2 :DType;             # of the rows: activations f32, partial sums f64
  h @3 :PayloadSection;        # [rows, hidden]; combine: absent when the part is empty
  topkIds @4 :PayloadSection;  # AGate dispatch: Int32 [rows, top_k]
  topkWeights @5 :PayloadSection;  # Float32 [rows, top_k]
  instance @6 :Int32 = -1;     # single-phase: the instance this copy is for (dispatch) / from (combine)
  part @7 :UInt32;             # single-phase combine: index of this frame among partsTotal
  partsTotal @8 :UInt32;       # single-phase combine: frames the sender sends for this shard
  hasH @9 :Bool;
}

struct ExchangeFrame {
  key @0 :LayerBatchKey;
  kind @1 :ExchangeKind;
  mode @2 :ExchangeMode;
  sender @3 :UInt16;           # node index of the sending node (must be the transport peer)
  origin @4 :UInt16;           # the attention node whose shards' rows these are
  designated @5 :UInt16;       # Case 2: the MoE node that relays for origin
  parts @6 :List(ExchangePart);
  payloadBytes @7 :UInt64;     # bytes of the payload (inline or following)
  transferTag @8 :UInt64;      # the payload's transport tag (0: inline or none)
  inline @9 :Data;             # small payloads ride here
  error @10 :Text;             # combine: the layer batch failed on the MoE side
  moeBusyNs @11 :UInt64;       # combine: time the MoE side spent on it (benchmarks)
  probeSeq @12 :UInt64;
}
