# GraphSpec on the wire: what the coordinator ships to nodes so they build their part of
# the actor graph (runtime/config/graph_spec.h is the in-memory form).
@0xc751adf7978b3e64;

$import "/capnp/c++.capnp".namespace("janus::wire");

struct ModelSpec {
  path @0 :Text;
  preset @1 :Text;
  seed @2 :UInt64;
  dtype @3 :Text;
}

struct AttentionSpec {
  shards @0 :UInt32;
  devices @1 :List(Text);
  microBatches @2 :UInt32;
  maxBatch @3 :UInt32;
  kvBlocks @4 :UInt32;
  blockSize @5 :UInt32;
  maxSeqLen @6 :UInt32;
  nodes @7 :List(Text);         # per shard (or one for all); empty: this process
}

struct ExpertList {
  experts @0 :List(Int32);
}

struct ExpertsSpec {
  instances @0 :UInt32;
  slots @1 :UInt32;
  devices @2 :List(Text);
  autoPlacement @3 :Bool;
  placement @4 :List(ExpertList);
  nodes @5 :List(Text);
}

struct WorkloadSpec {
  prompts @0 :List(List(Int32));
  maxNewTokens @1 :UInt32;
  temperature @2 :Float32;
  topP @3 :Float32;
  topK @4 :UInt32;
  seed @5 :UInt64;
  ignoreEos @6 :Bool;
}

struct NodeSpec {
  name @0 :Text;
  host @1 :Text;
}

struct ExchangeSpec {
  mode @0 :Text;       # "single", "case1", "case2", "auto"
  transport @1 :Text;  # "auto", "tcp", "shm", "verbs"
  spinUs @2 :UInt32;
  probe @3 :Bool;
}

struct GraphSpec {
  source @0 :Text;
  model @1 :ModelSpec;
  attention @2 :AttentionSpec;
  experts @3 :ExpertsSpec;
  routerSide @4 :Text;          # "moe" (EGate) or "attention" (AGate)
  policy @5 :Text;
  policySeed @6 :UInt64;
  workload @7 :WorkloadSpec;
  modelDir @8 :Text;            # resolved
  resolvedPlacement @9 :List(ExpertList);
  nodes @10 :List(NodeSpec);     # empty: one process; the coordinator's secret never travels
  exchange @11 :ExchangeSpec;
}
