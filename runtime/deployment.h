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
// and a Scaler, wired as the GraphSpec says. The header pulls in no actor-framework
// headers.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "runtime/graph_spec.h"
#include "runtime/model.h"
#include "runtime/reference_engine.h"
#include "runtime/status.h"
#include "runtime/trace.h"

namespace janus {

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
  uint64_t messages = 0;
  double busy_s = 0;
  uint64_t dropped = 0;
};

struct MetricsSnapshot {
  uint64_t completed = 0, failed = 0, queued = 0, running = 0;
  int64_t tokens = 0;
  double elapsed_s = 0;       // first submission to last token
  double tokens_per_s = 0;
  Percentiles ttft_s, tpot_s;
  std::string policy;
  std::vector<LayerAmax> amax;  // MoE layers only
  std::vector<ActorSnapshot> actors;
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

  ~Deployment();
  Deployment(const Deployment&) = delete;
  Deployment& operator=(const Deployment&) = delete;

  const GraphSpec& spec() const;
  const Model& model() const;

  /// Submits a request. `on_token` (optional) is called with each token as it is made,
  /// from a runtime thread; the handle's future resolves with the whole result, or with
  /// the error that ended the request (invalid request, a dead actor, shutdown).
  RequestHandle submit(GenerateRequest request, std::function<void(int32_t)> on_token = {});

  /// Submits the spec's workload (all prompts at once) and waits for every result.
  std::vector<Result<GenerateResult>> run_workload();

  MetricsSnapshot metrics();

  /// The trace recorded so far (empty unless DeploymentOptions::trace).
  const Trace& trace() const;

  /// Kills one actor by name ("expert-2", "attention-0", ...): fault injection.
  Status kill(const std::string& actor_name);

  /// Fails whatever is queued or running with "shut down", stops every actor. Idempotent.
  void shutdown();

 private:
  struct Impl;
  explicit Deployment(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The workload's prompts as requests (sampling, EOS and seeds as the spec says; request i
/// draws from seed * 1000003 + i, as `janus generate` does).
std::vector<GenerateRequest> workload_requests(const GraphSpec& spec);

}  // namespace janus
