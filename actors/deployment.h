// The embedding API of Janus: build a disaggregated deployment, submit requests, stream
// their tokens, read metrics, shut down.
//
//   auto d = janus::Deployment::from_config("examples/configs/default.lua");
//   if (!d.ok()) { std::cerr << d.status().to_string(); return 1; }
//   janus::GenerateRequest r;
//   r.prompt = {5, 17, 99};
//   r.max_new_tokens = 16;
//   auto h = (*d)->submit(r, [](int32_t token) { std::cout << token << ' '; });
//   janus::Result<janus::GenerateResult> out = h.result.get();   // waits for the end
//   janus::MetricsSnapshot m = (*d)->metrics();
//   (*d)->shutdown();   // also done by the destructor
//
// One Deployment is one actor system in this process: a Frontend, the attention shards
// (with their Routers under AGate), a Router (EGate), a Scheduler, the expert instances
// and a Scaler, wired as the GraphSpec says. A config with nodes{} spans processes: this
// process is the coordinator (Frontend and Scaler), `janus node` processes join it and
// host the shards and instances (actors/cluster.h). The header pulls in no
// actor-framework headers.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "actors/request_events.h"
#include "runtime/config/graph_spec.h"
#include "runtime/model/model.h"
#include "runtime/model/reference_engine.h"
#include "runtime/base/status.h"
#include "runtime/base/trace.h"

namespace janus {

/// Test hook: one step of a later rescale fails for one new (or kept) member, so tests can
/// check that the deployment rolls back to its previous membership (actors/scaler.h,
/// "Rollback"). Each fault fires once, on the first rescale that reaches it.
struct RescaleFault {
  enum class At {
    kSpawn,  // the member is not spawned (its device refuses it)
    kLoad,   // its weights do not load: out of memory (a kept instance: its LoadExperts fails)
    kJoin,   // it dies after its weights loaded, before it acknowledges the new membership
    kStall,  // it does not acknowledge the new membership within rescale_join_timeout_s
  };
  At at = At::kSpawn;
  std::string member;  // "expert-3", "attention-2", "router-2"
};

struct DeploymentOptions {
  /// Worker threads of the actor system; 0 = the number of cores.
  int threads = 0;
  /// Replace every compute backend with the null backend (no math): for measuring the
  /// runtime's own cost.
  bool null_backend = false;
  /// Record a trace of every actor's work (Deployment::trace()).
  bool trace = false;
  /// Show a progress bar while making a preset model on first use.
  bool progress = false;
  /// The Scheduler also records the a_max other policies would give (console's amax()).
  bool compare_policies = false;
  /// Multi-node configs: called (on the creating thread) once the coordinator listens,
  /// with its port, before create() waits for the nodes to join — where a test or a
  /// launcher starts the `janus node` processes.
  std::function<void(uint16_t port)> on_listening;
  /// Test hook: rescale steps that fail (see RescaleFault).
  std::vector<RescaleFault> rescale_faults;
  /// How long a rescale waits for its new members to acknowledge the membership they join
  /// before it gives up and rolls back.
  double rescale_join_timeout_s = 30;
};

/// A submitted request: its id and the future of its result.
struct RequestHandle {
  uint64_t id = 0;
  std::shared_future<Result<GenerateResult>> result;
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};

/// Per layer, the most distinct experts any instance ran in a layer batch (a_max).
struct LayerAmax {
  int layer = 0;
  uint64_t batches = 0;
  double mean = 0;
  int max = 0;
};

struct ActorSnapshot {
  std::string name, kind, device;
  std::string node = "local";  // the process it runs in
  bool alive = true;           // answered just now
  uint64_t messages = 0;       // handled so far
  double busy_s = 0;           // time spent working
  double busy_fraction = 0;    // busy_s over its lifetime
  uint64_t mailbox = 0;        // messages waiting now
  uint64_t dropped = 0;        // refused (wrong epoch, unknown key)
  double slow_ms = 0;          // injected delay per message
};

struct RequestSnapshot {
  uint64_t id = 0;
  std::string state;  // queued, running, finished
  int shard = -1;
  int prompt_tokens = 0, generated = 0, max_new_tokens = 0;
  double age_s = 0;
  double ttft_s = -1;  // -1: no token yet
};

/// Where one request's micro-batches were, layer by layer, and how long each stage took.
struct RequestTrace {
  uint64_t id = 0;
  std::vector<TraceSpan> spans;  // in time order: attention, route, schedule, experts, combine, sample
};

/// Activations (token choices) of one layer: per expert, and per (instance, expert).
struct ExpertHeatmap {
  int layer = 0;
  int num_experts = 0, num_instances = 0;
  std::vector<uint64_t> per_expert;            // [E]
  std::vector<uint64_t> per_instance_expert;   // [instances * E]
  std::vector<std::vector<int32_t>> placement; // experts held per instance
};

/// a_max per MoE layer under one policy: the active one, or what another would have done
/// on the same layer batches.
struct PolicyAmax {
  std::string policy;
  bool active = false;
  std::vector<LayerAmax> layers;
};

/// A member that died and how long the deployment took to replace it.
struct RecoveryInfo {
  std::string what;
  double detected_s = 0;   // steady-clock seconds when the Scaler saw it go down
  double installed_s = 0;  // when the replacement membership was in place (0: not yet)
  double died_s = 0;       // when kill() killed it (fault injection; 0: not known)
};

/// One decision of the SLO-aware autoscaler (scaler{policy="slo"}).
struct ScalingInfo {
  double t_s = 0;       // steady-clock seconds
  double lambda = 0;    // measured demand, output tokens/s
  int attention = 0, moe = 0;
  double batch = 0, tpot_s = 0;  // the model's steady batch and TPOT for that choice
  bool feasible = false;
  bool changed = false;  // it rescaled
  std::string note;
};

struct StepClock {
  bool paused = false;
  int budget = 0;  // steps still allowed while paused
  uint64_t step = 0;
  bool in_step = false;
};

/// One layer batch's exchange as an attention node saw it (multi-node deployments).
struct ExchangeSample {
  uint64_t step = 0;
  int layer = 0, micro_batch = 0;
  std::string mode;         // "single", "case1", "case2"
  int64_t rows = 0;         // rows of the node's shards
  double round_s = 0;       // dispatch posted -> every shard's partial sums in
  double moe_s = 0;         // of that, compute on the MoE side (the slowest MoE node)
  double exchange_s = 0;    // round_s - moe_s: moving the layer batch there and back
  double predicted_s[3] = {0, 0, 0};  // the cost model: single, case1, case2
};

/// A process of a multi-node deployment and its data plane.
struct NodeSnapshot {
  std::string name, host;
  std::string role;          // "attention" or "moe"
  std::string transport;     // "tcp", "shm", "verbs"
  std::vector<char> transport_address;
  bool alive = true;         // its bridge answered just now
  uint64_t frames_sent = 0, frames_received = 0, payload_bytes_sent = 0, payload_bytes_received = 0, relayed = 0;
  // Frames dropped on arrival, by reason (each also logged): the descriptor layer's ...
  uint64_t dropped_truncated = 0, dropped_malformed = 0, dropped_wrong_epoch = 0, dropped_size_mismatch = 0,
           dropped_unknown_sender = 0, dropped_stale = 0;
  uint64_t transport_dropped = 0;  // ... and the transport's own (its header frames)
  uint64_t failed_batches = 0;
  uint64_t pool_slabs = 0, pool_acquired = 0, pool_reused = 0, registrations = 0;
  uint64_t relinks = 0;  // endpoints re-opened after another node's loss (shm; the address changes)
  std::vector<ExchangeSample> exchanges;  // attention nodes: the most recent layer batches
  std::vector<std::string> pending;       // layer batches still held here, and what each waits for
};

/// A probed link and the cost model's fit of it: T(bytes) = a + o + bytes / b.
struct LinkSnapshot {
  std::string from, to;
  double latency_s = 0, per_message_s = 0, bytes_per_s = 0, rtt_small_s = 0;
};

struct MetricsSnapshot {
  uint64_t completed = 0, failed = 0, queued = 0, running = 0;
  uint64_t cancelled = 0;  // ended by cancel(); also counted in completed
  // KV blocks reserved by admitted requests and the cache's size, over every shard.
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t tokens = 0;
  double elapsed_s = 0;       // first submission to last token
  double tokens_per_s = 0;
  Percentiles ttft_s, tpot_s;
  std::string policy;
  std::vector<LayerAmax> amax;  // MoE layers only
  // Layer batches the Scheduler passed to the instances with the routing still on the GPU
  // (a GPU router, one replica per expert: nothing to schedule, the host never waited).
  uint64_t device_routed_batches = 0;
  std::vector<ActorSnapshot> actors;
  // The newest membership's epoch; rescales installed, and rescales that failed a step and
  // rolled back to the membership they started from (the last one's Status message in
  // last_rescale_failure).
  uint32_t epoch = 0;
  uint64_t rescales = 0, rescales_failed = 0;
  std::string last_rescale_failure;
};

class Deployment {
 public:
  /// Loads a Lua graph config, resolves it against its model, builds the actor graph.
  static Result<std::unique_ptr<Deployment>> from_config(const std::string& path, const DeploymentOptions& options = {});
  /// Builds from a GraphSpec (resolved here).
  static Result<std::unique_ptr<Deployment>> create(GraphSpec spec, const DeploymentOptions& options = {});
  /// Loads the model a spec names (making a preset on first use), without building anything.
  static Result<std::shared_ptr<Model>> load_model(const GraphSpec& spec, bool progress);
  /// CUDA devices usable by this build (0 without CUDA or without a GPU).
  static int cuda_device_count();
  /// Makes the backends of every device kind this build has available to
  /// make_*_backend (gpu/backend/backend.h); create() does it, tools that make backends directly
  /// call it first.
  static void register_backends();

  ~Deployment();
  Deployment(const Deployment&) = delete;
  Deployment& operator=(const Deployment&) = delete;

  const GraphSpec& spec() const;
  const Model& model() const;

  /// Submits a request. `on_token` (optional) is called with each token as it is made,
  /// from a runtime thread; the handle's future resolves with the whole result, or with
  /// the error that ended the request (invalid request, a dead actor, shutdown).
  /// Callbacks follow the contract in actors/request_events.h.
  RequestHandle submit(GenerateRequest request, std::function<void(int32_t)> on_token = {});
  /// The same with the richer callbacks: each token with its index, finish reason (on the
  /// last) and timing, and the end of the request.
  RequestHandle submit(GenerateRequest request, RequestCallbacks callbacks);

  /// Ends a queued or running request now: its KV blocks are freed and its slot goes to
  /// the next request. Its result is ok with finish_reason "cancelled" and the tokens made
  /// so far (unless it made its last token in the step that was running, then it keeps
  /// its own result). Never waits: callbacks may call it. Cancelling a request that already
  /// ended is invalid_argument ("already finished"); a handle this deployment never gave
  /// out is not_found.
  Status cancel(const RequestHandle& handle);

  /// Submits the spec's workload (all prompts at once) and waits for every result.
  std::vector<Result<GenerateResult>> run_workload();

  MetricsSnapshot metrics();

  /// The trace recorded so far (empty unless DeploymentOptions::trace).
  const Trace& trace() const;

  // -- introspection and control (the console's commands, as C++ calls) --------------

  std::vector<ActorSnapshot> actors();
  std::vector<RequestSnapshot> requests();
  /// The spans of one request's micro-batches (needs DeploymentOptions::trace).
  Result<RequestTrace> trace(uint64_t request_id);
  /// The heat map of a MoE layer's expert activations so far.
  Result<ExpertHeatmap> experts(int layer);
  /// Experts held by each instance.
  std::vector<std::vector<int32_t>> placement() const;
  /// a_max per layer for the active policy and (with DeploymentOptions::compare_policies)
  /// for the others on the same layer batches.
  std::vector<PolicyAmax> amax_by_policy();
  /// Stop starting steps at the next step boundary; run n more steps then stop; go on.
  Result<StepClock> pause();
  Result<StepClock> step(int n);
  Result<StepClock> resume();
  Result<StepClock> step_clock();

  /// Kills one actor by name ("expert-2", "attention-0", ...): fault injection.
  Status kill(const std::string& actor_name);
  /// Makes an actor wait `ms` before each message it handles (0 undoes it).
  Status slow(const std::string& actor_name, double ms);
  /// Rescales the deployment to `attention` shards and `moe` expert instances while it
  /// serves: new actors get their weights first, the switch happens at a step boundary
  /// under a new epoch, retiring shards' requests resume elsewhere. Returns once in place.
  /// When a step fails (a new member does not spawn, load, or acknowledge in time) the new
  /// members are retired and the deployment keeps serving on its previous membership and
  /// epoch; the Status names the step and the member, and metrics().rescales_failed counts it.
  Status scale(int attention, int moe);
  /// Failures the deployment recovered from (detection and recovery times).
  std::vector<RecoveryInfo> recoveries();
  /// The autoscaler's decisions so far.
  std::vector<ScalingInfo> scaling_decisions();
  /// Actor names, for completion.
  std::vector<std::string> actor_names() const;

  // -- multi-node deployments (empty / 0 / an error in one process) ----------------------

  /// The nodes and their data-plane counters and recent exchanges.
  std::vector<NodeSnapshot> nodes();
  /// The links probed at start-up, as the cost model uses them.
  std::vector<LinkSnapshot> links();
  /// The port the coordinator listens on for nodes.
  uint16_t coordinator_port() const;
  /// Fault injection: node `node`'s bridge sends node `peer` a bad frame of `kind`
  /// ("truncated", "malformed", "wrong_epoch", "size_mismatch", "unknown_sender", or "raw",
  /// garbage under the transport's own header). The peer drops, logs and counts it.
  Status inject_frame_fault(const std::string& node, const std::string& peer, const std::string& kind);

  /// Fails whatever is queued or running with "shut down", stops every actor. Idempotent.
  void shutdown();

 private:
  struct Impl;
  explicit Deployment(std::unique_ptr<Impl> impl);
  std::vector<ActorSnapshot> actors_locked(void* scoped_actor);
  Result<StepClock> step_control(int op, int steps);
  std::unique_ptr<Impl> impl_;
};

/// The workload's prompts as requests (sampling, EOS and seeds as the spec says; request i
/// draws from seed * 1000003 + i, as `janus generate` does).
std::vector<GenerateRequest> workload_requests(const GraphSpec& spec);

}  // namespace janus
