// GraphSpec: a whole deployment described as data — which model, how many attention
// shards and expert instances on which devices, where the gate runs, which scheduler,
// where the replicas go, and an optional workload. A Lua config (runtime/lua_config.h)
// resolves to one; `janus graph` prints it; the Deployment builds the actor graph from it;
// schemas/graph_spec.capnp is its wire form for shipping to nodes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model_config.h"
#include "runtime/status.h"
#include "runtime/workload.h"

namespace janus {

struct ModelSpec {
  std::string path;    // a checkpoint directory, or
  std::string preset;  // a built-in preset made on first use
  uint64_t seed = 0;   // preset seed
  std::string dtype;   // preset dtype ("f32", "bf16", "f16"); empty: the preset's default
  std::string where;   // "config.lua:3", for error messages
};

struct AttentionSpec {
  int shards = 1;
  std::vector<std::string> devices = {"cpu"};  // one per shard, or one for all
  int micro_batches = 1;                       // m: 1 = Janus, >= 2 = ping-pong pipeline
  int max_batch = 64;                          // requests decoding at once per shard
  int kv_blocks = 0;                           // physical KV blocks per shard; 0 = enough for max_batch full-length requests
  int block_size = 16;                         // tokens per KV block
  int max_seq_len = 0;                         // 0 = min(model max, 4096)
  std::string where;
};

struct ExpertsSpec {
  int instances = 1;
  int slots = 0;                               // C; 0 = ceil(E / instances)
  std::vector<std::string> devices = {"cpu"};  // one per instance, or one for all
  bool auto_placement = true;                  // placement = "auto"
  std::vector<std::vector<int32_t>> placement; // explicit: experts per instance
  std::string where;
};

struct RouterSpec {
  std::string side = "moe";  // "moe" (EGate: gate on the MoE side) or "attention" (AGate)
  std::string where;
};

struct SchedulerSpec {
  std::string policy = "aebs";
  uint64_t seed = 0;
  std::string where;
};

struct ScalerSpec {
  bool recover = true;          // replace dead members and re-run the interrupted step
  std::string policy = "none";  // "slo": Algorithm 2 every interval
  std::string profile;          // the performance model (janus profile's JSON)
  double tpot_slo_ms = 100;
  double interval_s = 5;
  double context = 512;         // S_ctx: mean context length assumed by the model
  int min_attention = 1, max_attention = 4;
  int min_moe = 1, max_moe = 8;
  std::string where;
};

struct WorkloadSpec {
  std::vector<std::vector<int32_t>> prompts;
  int max_new_tokens = 16;
  float temperature = 0.f;
  float top_p = 1.f;
  int top_k = 0;
  uint64_t seed = 0;
  bool ignore_eos = false;
  // Generated arrivals (janus bench-serve): arrivals.kind other than "all", or a trace.
  ArrivalSpec arrivals;
  double slo_ttft_ms = 2000, slo_tpot_ms = 200;
  std::string where;
};

/// A scripted event: at `at_s` seconds into a run, do `op` ("kill", "slow", "scale").
struct ScenarioEvent {
  double at_s = 0;
  std::string op;
  std::string actor;     // kill, slow
  double ms = 0;         // slow
  int attention = 0, moe = 0;  // scale
  std::string where;
};

struct GraphSpec {
  std::string source;  // the config file, or "<api>"
  ModelSpec model;
  AttentionSpec attention;
  ExpertsSpec experts;
  RouterSpec router;
  SchedulerSpec scheduler;
  ScalerSpec scaler;
  WorkloadSpec workload;
  std::vector<ScenarioEvent> scenario;

  // Filled by resolve_graph():
  std::string model_dir;                                  // the checkpoint actually loaded
  std::vector<std::vector<int32_t>> resolved_placement;   // experts per instance

  bool egate() const { return router.side == "moe"; }
};

/// The default config of `janus run`: examples/configs/default.lua's graph.
GraphSpec default_graph_spec();

/// Checks a spec against the model it will run and fills the resolved fields: counts and
/// devices ("cuda:N" needs N < cuda_devices), micro-batches, the router side, the policy
/// name, the placement (computed for "auto"; explicit ones checked: an expert repeated on
/// an instance, an instance over its slots, an expert nowhere, fewer slots than experts),
/// the workload's token ids. Errors name the config line of the offending section.
Status resolve_graph(GraphSpec& spec, const ModelConfig& model, int cuda_devices);

/// Human-readable description of a resolved graph: actors, devices, placement.
std::string graph_to_text(const GraphSpec& spec, const ModelConfig& model);
/// The same as JSON.
std::string graph_to_json(const GraphSpec& spec, const ModelConfig& model);

/// Device of shard i / instance i, from the devices list (one per actor or one for all).
const std::string& shard_device(const GraphSpec& spec, int shard);
const std::string& instance_device(const GraphSpec& spec, int instance);

}  // namespace janus
