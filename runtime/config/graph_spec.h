// GraphSpec: a whole deployment described as data — which model, how many attention
// shards and expert instances on which devices, where the gate runs, which scheduler,
// where the replicas go, and an optional workload. A Lua config (runtime/config/lua_config.h)
// resolves to one; `janus graph` prints it; the Deployment builds the actor graph from it;
// schemas/graph_spec.capnp is its wire form for shipping to nodes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/model_config.h"
#include "runtime/base/status.h"
#include "runtime/config/workload.h"

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
  std::vector<std::string> nodes;              // multi-node: the node of each shard (or one for all)
  std::string where;
};

struct ExpertsSpec {
  int instances = 1;
  int slots = 0;                               // C; 0 = ceil(E / instances)
  std::vector<std::string> devices = {"cpu"};  // one per instance, or one for all
  bool auto_placement = true;                  // placement = "auto"
  std::vector<std::vector<int32_t>> placement; // explicit: experts per instance
  std::vector<std::string> nodes;              // multi-node: the node of each instance (or one for all)
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
  int shrink_after = 3;         // decisions in a row that ask for fewer devices before shrinking (1: at once)
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

/// A process of a multi-node deployment (`janus node --name NAME`): its name and the
/// address its data-plane transport binds to (the host peers reach it at).
struct NodeSpec {
  std::string name;
  std::string host = "127.0.0.1";
  std::string where;
};

/// Where `janus node` processes join, and how (the secret stays in this process).
struct CoordinatorSpec {
  std::string listen = "127.0.0.1:0";  // HOST:PORT of the control endpoint; loopback unless told
  std::string secret;                  // empty: $JANUS_SECRET
  bool tls = false;                    // control connections over TLS (CAF's openssl module)
  std::string tls_cert, tls_key, tls_ca;  // PEM files; without cert/key, anonymous DH
  double join_timeout_s = 60;          // how long to wait for every node
  std::string port_file;               // write the bound port here (tests, scripts)
  std::string where;
};

/// How layer batches move between nodes (docs/architecture.md §5.3-5.5).
struct ExchangeSpec {
  std::string mode = "auto";        // "single", "case1", "case2", or "auto" (cost model per layer batch)
  std::string transport = "auto";   // "auto" (shm when every node is on one host, else tcp), "tcp", "shm", "verbs"
  int spin_us = 1000;               // the bridge busy-polls this long after activity, then backs off
  bool probe = true;                // measure links at start-up (the cost model's input)
  std::string where;
};

/// `janus simulate`: a deployment in virtual time (runtime/serving/simulator.h).
struct SimulateSpec {
  std::string profile;           // janus profile's JSON (relative to the config file)
  std::string shape = "model";   // "model": the model{} section's shape; or "deepseek-v2"
  std::string system = "janus";  // janus, megascale, monolithic
  double duration_s = 0;         // stop admitting arrivals after this much virtual time (0: all)
  double device_gb = 85.04;      // memory of one device (an H100 reports 79.2 GiB usable)
  double memory_fraction = 0.92; // of it for weights and KV
  int gpus_per_node = 8;
  double nic_gbps = 400, nic_latency_us = 10;      // per GPU, across nodes
  double nvlink_gbps = 3600, nvlink_latency_us = 3; // per GPU and direction, inside a node
  double weight_load_gbps = 200;  // how fast a new instance loads its experts
  double zipf = 0.3;              // popularity skew of the sampled routing
  int sampled_layers = 8;
  uint64_t seed = 1;
  int micro_batches = 2;          // megascale's ping-pong
  double balance = 2.0;           // megascale's attention/MoE time ratio bound
  std::vector<int> study_batches = {64, 256, 512};
  std::vector<double> study_slos_ms = {150, 200};
  int study_prompt = 16, study_output = 256, max_devices = 64;
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
  std::vector<NodeSpec> nodes;  // empty: the whole graph runs in this process
  CoordinatorSpec coordinator;
  ExchangeSpec exchange;
  SimulateSpec simulate;

  // Filled by resolve_graph():
  std::string model_dir;                                  // the checkpoint actually loaded
  std::vector<std::vector<int32_t>> resolved_placement;   // experts per instance

  bool egate() const { return router.side == "moe"; }
  bool multi_node() const { return !nodes.empty(); }
};

/// The default config of `janus run`: examples/configs/default.lua's graph.
GraphSpec default_graph_spec();

/// The device part of resolve_graph(), which needs no model: every "cuda:N" names a GPU
/// this process sees. Run first, so a GPU config on a machine without one fails before a
/// preset's checkpoint of many gigabytes is written.
Status check_graph_devices(const GraphSpec& spec, int cuda_devices);

/// Checks a spec against the model it will run and fills the resolved fields: counts and
/// devices ("cuda:N" needs N < cuda_devices), micro-batches, the router side, the policy
/// name, the placement (computed for "auto"; explicit ones checked: an expert repeated on
/// an instance, an instance over its slots, an expert nowhere, fewer slots than experts),
/// the workload's token ids. Errors name the config line of the offending section.
Status resolve_graph(GraphSpec& spec, const ModelConfig& model, int cuda_devices);

/// Human-readable description of a resolved graph: actors, devices, placement.
/// What the paged KV cache keeps per token (values per layer, bytes in F32 and BF16) and,
/// for MLA, how much more an MHA cache of the same heads would keep: one line.
std::string kv_cache_summary(const ModelConfig& model);
std::string graph_to_text(const GraphSpec& spec, const ModelConfig& model);
/// The same as JSON.
std::string graph_to_json(const GraphSpec& spec, const ModelConfig& model);

/// Device of shard i / instance i, from the devices list (one per actor or one for all).
const std::string& shard_device(const GraphSpec& spec, int shard);
const std::string& instance_device(const GraphSpec& spec, int instance);
/// Node name of shard i / instance i (multi-node specs; "" otherwise).
std::string shard_node(const GraphSpec& spec, int shard);
std::string instance_node(const GraphSpec& spec, int instance);
/// Index in spec.nodes of the node named `name`, or -1.
int node_index(const GraphSpec& spec, const std::string& name);

}  // namespace janus
