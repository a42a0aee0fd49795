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
