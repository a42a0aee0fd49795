// Deployment: builds the actor graph a GraphSpec describes and is the embedding API's
// implementation (actors/deployment.h).
#include "actors/deployment.h"

#include <algorithm>
#include <caf/all.hpp>
#include <map>
#include <set>
#include <thread>

#include "actors/attention_shard.h"
#include "actors/cluster.h"
#include "actors/expert_instance.h"
#include "actors/frontend.h"
#include "actors/node_protocol.h"
#include "actors/remote_types.h"
#include "actors/router.h"
#include "actors/scaler.h"
#include "actors/scaler_messages.h"
#include "actors/scheduler.h"
#include "runtime/config/lua_config.h"
#include "runtime/model/presets.h"

#ifdef JANUS_HAVE_CUDA
#include "gpu/backend/cuda/backend.h"
#include "gpu/cuda/device.h"
#endif

namespace janus {

using namespace janus::actors;

namespace {

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))]; };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  double s = 0;
  for (double x : v) s += x;
  p.mean = s / static_cast<double>(v.size());
  return p;
}

// Asks `whom` and waits up to `timeout`; on_reply gets the answer. An error, no answer in
// time included, is unavailable(<CAF's rendering of it>). Queries that only read ignore it:
// an actor that does not answer leaves its part of the snapshot empty.
template <class Msg, class OnReply>
Status ask(caf::scoped_actor& self, const caf::actor& whom, caf::timespan timeout, Msg msg, OnReply&& on_reply) {
  Status out = Status::Ok();
  self->request(whom, timeout, std::move(msg))
      .receive(std::forward<OnReply>(on_reply), [&](caf::error& e) { out = unavailable(self->system().render(e)); });
  return out;
}

}  // namespace

struct Deployment::Impl {
  std::map<std::string, double> killed_at;  // kill()'s time per actor name (detection times)
  GraphSpec spec;
  std::shared_ptr<Model> model;
  DeploymentOptions options;
  Trace trace;
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor frontend, scheduler, scaler;
  std::atomic<uint64_t> next_id{1};
  std::mutex mu;
  bool stopped = false;
  // submit() and cancel() take only this lock, never `mu`: `mu` is held while a query waits
  // for the Frontend, and a callback running on the Frontend's thread may submit or cancel.
  // Nothing that waits on an actor is done under it.
  std::mutex send_mu;
  bool accepting = true;
  std::set<uint64_t> live;  // submitted, not ended yet
  std::unique_ptr<ClusterState> cluster;  // multi-node deployments

  // Every actor the deployment ever had, from the Scaler (which spawns and retires them).
  std::vector<RosterEntry> roster(caf::scoped_actor& self) {
    std::vector<RosterEntry> out;
    (void)ask(self, scaler, std::chrono::seconds(10), RosterQuery{}, [&](std::vector<RosterEntry>& r) { out = std::move(r); });
    return out;
  }
  caf::actor find(caf::scoped_actor& self, const std::string& name) {
    if (name == "scaler") return scaler;
    for (const RosterEntry& e : roster(self))
      if (e.name == name) return e.actor;
    return caf::actor{};
  }
};

namespace {

// The Scaler and the first membership: common to one process and many.
Status install_first_membership(caf::actor_system& sys, std::shared_ptr<DeploymentContext> ctx, Membership& m,
                                std::vector<RosterEntry>& roster, SpawnKit kit, caf::actor* scaler) {
  *scaler = sys.spawn<Scaler>(ctx, kit);
  roster.push_back({"scaler", "Scaler", "cpu", *scaler, true, roster.empty() ? "local" : roster.front().node});
  caf::scoped_actor self{sys};
  Status installed = ask(self, *scaler, std::chrono::seconds(30), InstallMembership{m, roster}, [](uint32_t) {});
  return installed.ok() ? installed : internal_error("installing the membership failed: " + installed.message());
}

}  // namespace

Deployment::Deployment(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Deployment::~Deployment() { shutdown(); }

const GraphSpec& Deployment::spec() const { return impl_->spec; }
const Model& Deployment::model() const { return *impl_->model; }
const Trace& Deployment::trace() const { return impl_->trace; }

int Deployment::cuda_device_count() {
#ifdef JANUS_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

Result<std::shared_ptr<Model>> Deployment::load_model(const GraphSpec& spec, bool progress) {
  std::string dir = spec.model.path;
  // In one process the devices are this machine's: check them before a preset is written.
  if (spec.nodes.empty()) JANUS_TRY(check_graph_devices(spec, cuda_device_count()));
  if (dir.empty()) {
    const ModelPreset* p = find_preset(spec.model.preset);
    if (p == nullptr) {
      std::string names;
      for (const ModelPreset& q : model_presets()) names += (names.empty() ? "" : ", ") + q.name;
      return invalid_argument(spec.model.where + ": model{}: no preset named '" + spec.model.preset + "' (presets: " + names + ")");
    }
    DType dt = p->default_dtype;
    if (spec.model.dtype == "f32") dt = DType::kF32;
    if (spec.model.dtype == "bf16") dt = DType::kBF16;
    if (spec.model.dtype == "f16") dt = DType::kF16;
    JANUS_ASSIGN_OR_RETURN(dir, ensure_preset_model(spec.model.preset, spec.model.seed, dt, progress));
  }
  auto m = Model::load(dir);
  if (!m.ok()) return m.status().with_context(spec.model.where + ": model{}");
  return *m;
}

Result<std::unique_ptr<Deployment>> Deployment::from_config(const std::string& path, const DeploymentOptions& options) {
  JANUS_ASSIGN_OR_RETURN(GraphSpec spec, load_lua_config(path));
  return create(std::move(spec), options);
}

void Deployment::register_backends() {
#ifdef JANUS_HAVE_CUDA
  cuda::register_backends();  // "cuda:N" devices get the CUDA backend (gpu/backend/cuda/backend.h)
#endif
}

Result<std::unique_ptr<Deployment>> Deployment::create(GraphSpec spec, const DeploymentOptions& options) {
  register_backends();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  JANUS_ASSIGN_OR_RETURN(impl->model, load_model(spec, options.progress));
  spec.model_dir = impl->model->dir();
  JANUS_TRY(resolve_graph(spec, impl->model->config(), cuda_device_count()));
  impl->spec = spec;
  impl->trace.enable(options.trace);
  const ModelConfig& c = impl->model->config();
  JANUS_ASSIGN_OR_RETURN(ExpertLayout layout, ExpertLayout::create(c.num_experts, spec.experts.slots, spec.resolved_placement));
  JANUS_ASSIGN_OR_RETURN(auto policy, make_scheduling_policy(spec.scheduler.policy, spec.scheduler.seed));

  auto ctx = std::make_shared<DeploymentContext>();
  ctx->model = impl->model;
  ctx->spec = spec;
  ctx->null_backend = options.null_backend;
  ctx->compare_policies = options.compare_policies;
  ctx->trace = &impl->trace;

  if (spec.multi_node()) {
    // This process is the coordinator: the Frontend and the Scaler; the shards and
    // instances live in `janus node` processes (actors/cluster.h).
    impl->cfg = std::make_unique<caf::actor_system_config>();
    const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    configure_control_plane(*impl->cfg, threads, spec.coordinator.tls,
                            {spec.coordinator.tls_cert, spec.coordinator.tls_key, spec.coordinator.tls_ca});
    impl->sys = std::make_unique<caf::actor_system>(*impl->cfg);
    caf::actor_system& sys = *impl->sys;
    impl->cluster = std::make_unique<ClusterState>();
    Membership m;
    std::vector<RosterEntry> roster;
    m.frontend = impl->frontend = sys.spawn<Frontend>(ctx);
    roster.push_back({"frontend", "Frontend", "cpu", m.frontend, true, "coordinator"});
    Status started = start_cluster(sys, spec, options, &m, &roster, impl->cluster.get());
    if (!started.ok()) {
      stop_cluster(sys, *impl->cluster, "the deployment could not start: " + started.message(), std::chrono::seconds(10));
      caf::anon_send_exit(impl->frontend, caf::exit_reason::user_shutdown);
      return started;
    }
    m.layout = std::make_shared<ExpertLayout>(std::move(layout));
    impl->scheduler = m.scheduler;
    SpawnKit kit;
    kit.nodes = impl->cluster->nodes;
    kit.instance_node = impl->cluster->instance_node;
    kit.shard_node = impl->cluster->shard_node;
    kit.next_instance_id = spec.experts.instances;
    Status installed = install_first_membership(sys, ctx, m, roster, kit, &impl->scaler);
    std::unique_ptr<Deployment> d(new Deployment(std::move(impl)));
    if (!installed.ok()) return installed;
    return d;
  }

  // Backends first: a device that cannot be used is a clear error before anything runs.
  const BackendOptions bo = backend_options(spec, c);
  std::vector<std::shared_ptr<AttentionBackend>> attn;
  std::vector<std::shared_ptr<RouterBackend>> route;
  std::vector<std::shared_ptr<ExpertBackend>> experts;
  for (int i = 0; i < spec.attention.shards; ++i) {
    JANUS_ASSIGN_OR_RETURN(Device d, Device::parse(shard_device(spec, i)));
    JANUS_ASSIGN_OR_RETURN(auto b, make_attention_backend(impl->model, d, bo, options.null_backend));
    attn.push_back(std::move(b));
    if (!spec.egate()) {
      JANUS_ASSIGN_OR_RETURN(auto r, make_router_backend(impl->model, d, options.null_backend));
      route.push_back(std::move(r));
    }
  }
  if (spec.egate()) {
    JANUS_ASSIGN_OR_RETURN(Device d, Device::parse(instance_device(spec, 0)));
    JANUS_ASSIGN_OR_RETURN(auto r, make_router_backend(impl->model, d, options.null_backend));
    route.push_back(std::move(r));
  }
  for (int i = 0; i < spec.experts.instances; ++i) {
    JANUS_ASSIGN_OR_RETURN(Device d, Device::parse(instance_device(spec, i)));
    JANUS_ASSIGN_OR_RETURN(auto b, make_expert_backend(impl->model, d, spec.resolved_placement[static_cast<size_t>(i)],
                                                       options.null_backend));
    experts.push_back(std::move(b));
  }

  impl->cfg = std::make_unique<caf::actor_system_config>();
  const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  impl->cfg->set("scheduler.max-threads", threads);
  impl->cfg->set("logger.console", caf::atom("none"));
  impl->sys = std::make_unique<caf::actor_system>(*impl->cfg);
  caf::actor_system& sys = *impl->sys;

  std::vector<RosterEntry> roster;
  auto enlist = [&roster](const std::string& name, const std::string& kind, const std::string& device, const caf::actor& a) {
    roster.push_back({name, kind, device, a, true});
    return a;
  };
  Membership m;
  m.frontend = impl->frontend = enlist("frontend", "Frontend", "cpu", sys.spawn<Frontend>(ctx));
  for (int i = 0; i < spec.attention.shards; ++i)
    m.shards.push_back(enlist("attention-" + std::to_string(i), "AttentionShard", attn[static_cast<size_t>(i)]->device().name(),
                              sys.spawn<AttentionShard>(ctx, i, attn[static_cast<size_t>(i)])));
  for (size_t i = 0; i < route.size(); ++i) {
    const int shard = spec.egate() ? -1 : static_cast<int>(i);
    m.routers.push_back(enlist(shard < 0 ? "router" : "router-" + std::to_string(shard), "Router", route[i]->device().name(),
                               sys.spawn<Router>(ctx, shard, route[i])));
  }
  m.scheduler = impl->scheduler = enlist("scheduler", "Scheduler", "cpu", sys.spawn<Scheduler>(ctx, std::move(policy)));
  for (int i = 0; i < spec.experts.instances; ++i)
    m.instances.push_back(enlist("expert-" + std::to_string(i), "ExpertInstance", experts[static_cast<size_t>(i)]->device().name(),
                                 sys.spawn<ExpertInstance>(ctx, i, experts[static_cast<size_t>(i)])));
  m.layout = std::make_shared<ExpertLayout>(std::move(layout));
  SpawnKit kit;
  kit.backend = bo;
  kit.shard_devices = spec.attention.devices;
  kit.instance_devices = spec.experts.devices;
  kit.next_shard_id = spec.attention.shards;
  kit.faults = options.rescale_faults;
  kit.join_timeout_s = options.rescale_join_timeout_s;
  kit.next_instance_id = spec.experts.instances;
  if (spec.scaler.policy == "slo") {
    auto pm = PerfModel::load(spec.scaler.profile);
    if (!pm.ok()) return pm.status().with_context(spec.scaler.where + ": scaler{}");
    if (pm->num_experts != c.num_experts)
      return invalid_argument(spec.scaler.where + ": scaler{}: the profile " + spec.scaler.profile + " is for " +
                              std::to_string(pm->num_experts) + " experts, the model has " + std::to_string(c.num_experts));
    kit.perf = std::make_shared<PerfModel>(std::move(*pm));
  }
  Status installed = install_first_membership(sys, ctx, m, roster, kit, &impl->scaler);
  std::unique_ptr<Deployment> d(new Deployment(std::move(impl)));
  if (!installed.ok()) return installed;
  return d;
}

namespace {
// Set while this thread runs one of a deployment's request callbacks (see
// actors/request_events.h): the waiting calls must not be made from there.
thread_local int in_request_callback = 0;
struct CallbackScope {
  CallbackScope() { ++in_request_callback; }
  ~CallbackScope() { --in_request_callback; }
};
}  // namespace

RequestHandle Deployment::submit(GenerateRequest request, std::function<void(int32_t)> on_token) {
  RequestCallbacks cb;
  if (on_token) cb.on_token = [f = std::move(on_token)](const TokenEvent& e) { f(e.token); };
  return submit(std::move(request), std::move(cb));
}

RequestHandle Deployment::submit(GenerateRequest request, RequestCallbacks callbacks) {
  auto promise = std::make_shared<std::promise<Result<GenerateResult>>>();
  RequestHandle h;
  h.id = impl_->next_id.fetch_add(1);
  h.result = promise->get_future().share();
  auto sink = std::make_shared<RequestSink>();
  if (callbacks.on_token)
    sink->on_token = [f = std::move(callbacks.on_token)](const TokenEvent& e) {
      CallbackScope scope;
      f(e);
    };
  Impl* impl = impl_.get();
  const uint64_t id = h.id;
  sink->on_done = [promise, impl, id, f = std::move(callbacks.on_done)](Result<GenerateResult> r) {
    {
      std::lock_guard<std::mutex> lk(impl->send_mu);
      impl->live.erase(id);
    }
    if (f) {
      CallbackScope scope;
      f(r);
    }
    promise->set_value(std::move(r));
  };
  {
    std::lock_guard<std::mutex> lk(impl_->send_mu);
    if (impl_->accepting) {
      impl_->live.insert(h.id);
      caf::anon_send(impl_->frontend, SubmitRequest{h.id, std::move(request), std::move(sink)});
      return h;
    }
  }
  sink->on_done(unavailable("request " + std::to_string(h.id) + ": the deployment is shut down"));
  return h;
}

Status Deployment::cancel(const RequestHandle& handle) {
  const std::string what = "request " + std::to_string(handle.id);
  std::lock_guard<std::mutex> lk(impl_->send_mu);
  if (impl_->live.count(handle.id)) {
    if (!impl_->accepting) return unavailable(what + ": the deployment is shutting down");
    caf::anon_send(impl_->frontend, CancelRequest{handle.id});
    return Status::Ok();
  }
  if (handle.id == 0 || handle.id >= impl_->next_id.load()) return not_found(what + ": no such request was submitted to this deployment");
  return invalid_argument(what + ": cannot cancel, it already finished");
}

std::vector<GenerateRequest> workload_requests(const GraphSpec& spec) {
  std::vector<GenerateRequest> out;
  const WorkloadSpec& w = spec.workload;
  for (size_t i = 0; i < w.prompts.size(); ++i) {
    GenerateRequest r;
    r.prompt = w.prompts[i];
    r.max_new_tokens = w.max_new_tokens;
    r.stop_at_eos = !w.ignore_eos;
    r.sampling.temperature = w.temperature;
    r.sampling.top_p = w.top_p;
    r.sampling.top_k = w.top_k;
    r.sampling.seed = w.seed * 1000003ull + i;
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<Result<GenerateResult>> Deployment::run_workload() {
  std::vector<RequestHandle> handles;
  for (GenerateRequest& r : workload_requests(impl_->spec)) handles.push_back(submit(std::move(r)));
  std::vector<Result<GenerateResult>> out;
  for (RequestHandle& h : handles) out.push_back(h.result.get());
  return out;
}

MetricsSnapshot Deployment::metrics() {
  MetricsSnapshot s;
  s.policy = impl_->spec.scheduler.policy;
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return s;
  caf::scoped_actor self{*impl_->sys};
  const auto timeout = std::chrono::seconds(10);
  (void)ask(self, impl_->frontend, timeout, FrontendStats{}, [&](FrontendStats& f) {
    s.completed = f.completed;
    s.failed = f.failed;
    s.queued = f.queued;
    s.running = f.running;
    s.cancelled = f.cancelled;
    s.kv_blocks_used = f.kv_blocks_used;
    s.kv_blocks_total = f.kv_blocks_total;
    s.tokens = f.tokens;
    s.elapsed_s = f.last_token_s > f.first_submit_s ? f.last_token_s - f.first_submit_s : 0;
    s.tokens_per_s = s.elapsed_s > 0 ? static_cast<double>(f.tokens) / s.elapsed_s : 0;
    std::vector<double> ttft, tpot;
    for (const RequestTiming& t : f.finished) {
      if (t.tokens > 0) ttft.push_back(t.first_token_s - t.submit_s);
      if (t.tokens > 1) tpot.push_back((t.last_token_s - t.first_token_s) / static_cast<double>(t.tokens - 1));
    }
    s.ttft_s = percentiles(ttft);
    s.tpot_s = percentiles(tpot);
  });
  (void)ask(self, impl_->scheduler, timeout, SchedulerStats{}, [&](SchedulerStats& st) {
    s.device_routed_batches = st.device_routed;
    for (size_t l = 0; l < st.layers.size(); ++l) {
      if (!impl_->model->config().is_sparse(static_cast<int>(l))) continue;
      const LayerAmaxStats& a = st.layers[l];
      s.amax.push_back({static_cast<int>(l), a.batches, a.batches ? a.sum / static_cast<double>(a.batches) : 0.0, a.max});
    }
  });
  (void)ask(self, impl_->scaler, timeout, RescaleQuery{}, [&](RescaleStats& r) {
    s.epoch = r.epoch;
    s.rescales = r.installed;
    s.rescales_failed = r.failed;
    s.last_rescale_failure = r.last_failure.message();
  });
  s.actors = actors_locked(&self);
  return s;
}

std::vector<ActorSnapshot> Deployment::actors_locked(void* scoped) {
  auto& self = *static_cast<caf::scoped_actor*>(scoped);
  std::vector<ActorSnapshot> out;
  for (const RosterEntry& e : impl_->roster(self)) {
    ActorSnapshot x;
    x.name = e.name;
    x.kind = e.kind;
    x.device = e.device;
    x.node = e.node;
    x.alive = false;  // unless it answers
    if (!e.alive) {
      out.push_back(x);
      continue;
    }
    (void)ask(self, e.actor, std::chrono::seconds(5), StatsQuery{}, [&](ActorStats& st) {
      x.alive = true;
      x.messages = st.messages;
      x.busy_s = st.busy_s;
      x.busy_fraction = st.alive_s > 0 ? st.busy_s / st.alive_s : 0;
      x.mailbox = st.mailbox;
      x.dropped = st.dropped;
      x.slow_ms = st.slow_ms;
    });
    out.push_back(x);
  }
  return out;
}

std::vector<ActorSnapshot> Deployment::actors() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return {};
  caf::scoped_actor self{*impl_->sys};
  return actors_locked(&self);
}

std::vector<RequestSnapshot> Deployment::requests() {
  std::vector<RequestSnapshot> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return out;
  caf::scoped_actor self{*impl_->sys};
  (void)ask(self, impl_->frontend, std::chrono::seconds(5), RequestsQuery{0}, [&](std::vector<RequestInfo>& v) {
    for (const RequestInfo& i : v)
      out.push_back({i.id, i.state, i.shard, i.prompt_tokens, i.generated, i.max_new_tokens, i.age_s, i.ttft_s});
  });
  return out;
}

Result<RequestTrace> Deployment::trace(uint64_t id) {
  if (!impl_->trace.enabled()) return unavailable("tracing is off (start the deployment with tracing on, e.g. janus run --console)");
  std::vector<RequestStepPlace> places;
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    if (impl_->stopped) return unavailable("the deployment is shut down");
    caf::scoped_actor self{*impl_->sys};
    bool found = false;
    (void)ask(self, impl_->frontend, std::chrono::seconds(5), RequestsQuery{id}, [&](std::vector<RequestInfo>& v) {
      if (!v.empty()) {
        found = true;
        places = v[0].history;
      }
    });
    if (!found) return not_found("no request " + std::to_string(id) + " (live or among the last 256 finished)");
  }
  RequestTrace t;
  t.id = id;
  for (const TraceSpan& s : impl_->trace.spans())
    for (const RequestStepPlace& p : places) {
      if (s.step != p.step || s.micro_batch != p.micro_batch) continue;
      const bool own_shard = s.actor == "attention-" + std::to_string(p.shard) || s.actor == "router-" + std::to_string(p.shard);
      const bool moe_side = s.actor == "router" || s.actor == "scheduler" || s.actor.rfind("expert-", 0) == 0;
      if (own_shard || moe_side) t.spans.push_back(s);
    }
  std::sort(t.spans.begin(), t.spans.end(), [](const TraceSpan& a, const TraceSpan& b) { return a.start_s < b.start_s; });
  return t;
}

Result<ExpertHeatmap> Deployment::experts(int layer) {
  const ModelConfig& c = impl_->model->config();
  if (layer < 0 || layer >= c.num_layers)
    return invalid_argument("layer " + std::to_string(layer) + " does not exist (the model has layers 0.." + std::to_string(c.num_layers - 1) + ")");
  if (!c.is_sparse(layer)) return invalid_argument("layer " + std::to_string(layer) + " is a dense layer: it has no experts");
  ExpertHeatmap h;
  h.layer = layer;
  h.num_experts = c.num_experts;
  h.placement = impl_->spec.resolved_placement;
  h.num_instances = impl_->spec.experts.instances;
  h.per_expert.assign(static_cast<size_t>(c.num_experts), 0);
  h.per_instance_expert.assign(static_cast<size_t>(h.num_instances * c.num_experts), 0);
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return unavailable("the deployment is shut down");
  caf::scoped_actor self{*impl_->sys};
  (void)ask(self, impl_->scheduler, std::chrono::seconds(5), SchedulerStats{}, [&](SchedulerStats& st) {
    if (!st.placement.empty()) h.placement = std::move(st.placement);  // the live layout, after any scale or recovery
    h.num_instances = static_cast<int>(h.placement.size());
    h.per_instance_expert.assign(static_cast<size_t>(h.num_instances * c.num_experts), 0);
    if (static_cast<size_t>(layer) < st.expert_counts.size()) h.per_expert = st.expert_counts[static_cast<size_t>(layer)];
    if (static_cast<size_t>(layer) < st.replica_counts.size()) h.per_instance_expert = st.replica_counts[static_cast<size_t>(layer)];
  });
  return h;
}

std::vector<std::vector<int32_t>> Deployment::placement() const {
  // The Scheduler's layout is the one requests are routed by; the spec's is only where
  // the deployment started (a scale or a recovery replaces it).
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped || !impl_->sys) return impl_->spec.resolved_placement;
  caf::scoped_actor self{*impl_->sys};
  std::vector<std::vector<int32_t>> live;
  (void)ask(self, impl_->scheduler, std::chrono::seconds(5), SchedulerStats{}, [&](SchedulerStats& st) { live = std::move(st.placement); });
  return live.empty() ? impl_->spec.resolved_placement : live;
}

std::vector<PolicyAmax> Deployment::amax_by_policy() {
  std::vector<PolicyAmax> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return out;
  caf::scoped_actor self{*impl_->sys};
  const ModelConfig& c = impl_->model->config();
  auto convert = [&](const std::string& name, bool active, const std::vector<LayerAmaxStats>& layers) {
    PolicyAmax p;
    p.policy = name;
    p.active = active;
    for (size_t l = 0; l < layers.size(); ++l) {
      if (!c.is_sparse(static_cast<int>(l))) continue;
      const LayerAmaxStats& a = layers[l];
      p.layers.push_back({static_cast<int>(l), a.batches, a.batches ? a.sum / static_cast<double>(a.batches) : 0.0, a.max});
    }
    return p;
  };
  (void)ask(self, impl_->scheduler, std::chrono::seconds(5), SchedulerStats{}, [&](SchedulerStats& st) {
    out.push_back(convert(impl_->spec.scheduler.policy, true, st.layers));
    for (const auto& [name, layers] : st.counterfactual) out.push_back(convert(name, false, layers));
  });
  return out;
}

Result<StepClock> Deployment::step_control(int op, int steps) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return unavailable("the deployment is shut down");
  caf::scoped_actor self{*impl_->sys};
  Result<StepClock> out = unavailable("the frontend did not answer");
  (void)ask(self, impl_->frontend, std::chrono::seconds(5), StepControl{static_cast<StepControl::Op>(op), steps},
            [&](StepState& st) { out = StepClock{st.paused, st.budget, st.step, st.in_step}; });
  return out;
}

Result<StepClock> Deployment::pause() { return step_control(static_cast<int>(StepControl::Op::kPause), 0); }
Result<StepClock> Deployment::resume() { return step_control(static_cast<int>(StepControl::Op::kResume), 0); }
Result<StepClock> Deployment::step_clock() { return step_control(static_cast<int>(StepControl::Op::kState), 0); }
Result<StepClock> Deployment::step(int n) {
  if (n < 1) return invalid_argument("step(n): n must be at least 1, got " + std::to_string(n));
  return step_control(static_cast<int>(StepControl::Op::kStep), n);
}

Status Deployment::slow(const std::string& name, double ms) {
  if (!(ms >= 0) || ms > 60000) return invalid_argument("slow: the delay must be between 0 and 60000 ms, got " + std::to_string(ms));
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return unavailable("the deployment is shut down");
  caf::scoped_actor self{*impl_->sys};
  caf::actor a = impl_->find(self, name);
  if (!a) return not_found("no actor named '" + name + "'");
  caf::anon_send(a, SlowDown{ms});
  return Status::Ok();
}

Status Deployment::scale(int attention, int moe) {
  if (attention < 1 || moe < 1) return invalid_argument("scale: attention and moe must be at least 1");
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return unavailable("the deployment is shut down");
  caf::scoped_actor self{*impl_->sys};
  Status refused = Status::Ok();
  Status asked = ask(self, impl_->scaler, std::chrono::seconds(600), ScaleTo{attention, moe}, [&](Scaled& r) {
    if (!r.status.ok()) refused = unavailable(r.status.message());
  });
  return (asked.ok() ? refused : asked).with_context("scale");
}

std::vector<RecoveryInfo> Deployment::recoveries() {
  std::vector<RecoveryInfo> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return out;
  caf::scoped_actor self{*impl_->sys};
  (void)ask(self, impl_->scaler, std::chrono::seconds(10), RecoveryQuery{}, [&](std::vector<RecoveryRecord>& v) {
    for (const RecoveryRecord& r : v) {
      double died = r.died_s;
      const std::string name = r.what.substr(0, r.what.find(' '));  // "expert-1 died ..."
      if (auto it = impl_->killed_at.find(name); died == 0 && it != impl_->killed_at.end()) died = it->second;
      out.push_back({r.what, r.detected_s, r.installed_s, died});
    }
  });
  return out;
}

std::vector<ScalingInfo> Deployment::scaling_decisions() {
  std::vector<ScalingInfo> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return out;
  caf::scoped_actor self{*impl_->sys};
  (void)ask(self, impl_->scaler, std::chrono::seconds(10), ScalingQuery{}, [&](std::vector<ScalingRecord>& v) {
    for (const ScalingRecord& r : v)
      out.push_back({r.t_s, r.lambda, r.attention, r.moe, r.batch, r.tpot, r.feasible, r.changed, r.note});
  });
  return out;
}

std::vector<std::string> Deployment::actor_names() const {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return out;
  caf::scoped_actor self{*impl_->sys};
  for (const RosterEntry& e : impl_->roster(self))
    if (e.alive) out.push_back(e.name);
  return out;
}

Status Deployment::kill(const std::string& name) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return unavailable("the deployment is shut down");
  caf::scoped_actor self{*impl_->sys};
  caf::actor a = impl_->find(self, name);
  if (!a) return not_found("no actor named '" + name + "'");
  impl_->killed_at[name] = now_seconds();
  caf::anon_send_exit(a, caf::exit_reason::kill);
  return Status::Ok();
}

std::vector<NodeSnapshot> Deployment::nodes() {
  std::vector<NodeSnapshot> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped || !impl_->cluster) return out;
  caf::scoped_actor self{*impl_->sys};
  const ClusterState& c = *impl_->cluster;
  for (size_t i = 0; i < c.nodes.size(); ++i) {
    const NodeInfo& x = c.nodes[i];
    NodeSnapshot n;
    n.name = x.name;
    n.host = x.host;
    n.role = x.moe ? "moe" : "attention";
    n.transport = i < c.transport.size() ? c.transport[i] : "";
    n.transport_address = x.address;
    n.alive = false;
    (void)ask(self, x.bridge, std::chrono::seconds(5), BridgeStatsQuery{true}, [&](BridgeStats& st) {
      n.alive = true;
      n.frames_sent = st.frames_sent;
      n.frames_received = st.frames_received;
      n.payload_bytes_sent = st.payload_bytes_sent;
      n.payload_bytes_received = st.payload_bytes_received;
      n.relayed = st.relayed;
      n.dropped_truncated = st.dropped_truncated;
      n.dropped_malformed = st.dropped_malformed;
      n.dropped_wrong_epoch = st.dropped_wrong_epoch;
      n.dropped_size_mismatch = st.dropped_size_mismatch;
      n.dropped_unknown_sender = st.dropped_unknown_sender;
      n.dropped_stale = st.dropped_stale;
      n.transport_dropped = st.transport_dropped;
      n.failed_batches = st.failed_batches;
      n.pool_slabs = st.pool_slabs;
      n.pool_acquired = st.pool_acquired;
      n.pool_reused = st.pool_reused;
      n.registrations = st.registrations;
      n.relinks = st.relinks;
      if (!st.address.empty()) n.transport_address = st.address;
      n.pending = st.pending;
      for (const ExchangeRecord& r : st.records) {
        ExchangeSample e;
        e.step = r.key.step;
        e.layer = r.key.layer;
        e.micro_batch = r.key.micro_batch;
        e.mode = transport::exchange_mode_name(static_cast<transport::ExchangeMode>(r.mode));
        e.rows = r.rows;
        e.round_s = r.round_s;
        e.moe_s = r.moe_s;
        e.exchange_s = std::max(0.0, r.round_s - r.moe_s);
        for (int k = 0; k < 3; ++k) e.predicted_s[k] = r.predicted_s[k];
        n.exchanges.push_back(e);
      }
    });
    out.push_back(std::move(n));
  }
  return out;
}

std::vector<LinkSnapshot> Deployment::links() {
  std::vector<LinkSnapshot> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (!impl_->cluster) return out;
  const ClusterState& c = *impl_->cluster;
  auto name = [&](uint32_t i) { return i < c.nodes.size() ? c.nodes[i].name : std::to_string(i); };
  for (const transport::LinkFit& f : c.links)
    out.push_back({name(f.from), name(f.to), f.latency_s, f.per_message_s, f.bytes_per_s, f.rtt_small_s});
  return out;
}

uint16_t Deployment::coordinator_port() const { return impl_->cluster ? impl_->cluster->port : 0; }

Status Deployment::inject_frame_fault(const std::string& node, const std::string& peer, const std::string& kind) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) return unavailable("the deployment is shut down");
  if (!impl_->cluster) return unsupported("inject_frame_fault: a deployment in one process has no frames between nodes");
  const ClusterState& c = *impl_->cluster;
  const NodeInfo* from = nullptr;
  int to = -1;
  for (const NodeInfo& x : c.nodes) {
    if (x.name == node) from = &x;
    if (x.name == peer) to = static_cast<int>(x.index);
  }
  if (from == nullptr) return not_found("no node named '" + node + "'");
  if (to < 0) return not_found("no node named '" + peer + "'");
  caf::scoped_actor self{*impl_->sys};
  Status out = ask(self, from->bridge, std::chrono::seconds(5), BridgeFault{kind, static_cast<uint32_t>(to)}, [] {});
  return out.ok() ? out : invalid_argument("inject_frame_fault: " + out.message());
}

void Deployment::shutdown() {
  if (in_request_callback > 0) {
    log_error("deployment", "shutdown() called from a request callback: refused (it would wait for the thread running the callback)");
    return;
  }
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped || !impl_->sys) return;
  impl_->stopped = true;
  {
    std::lock_guard<std::mutex> send_lk(impl_->send_mu);
    impl_->accepting = false;
  }
  {
    caf::scoped_actor self{*impl_->sys};
    (void)ask(self, impl_->frontend, std::chrono::seconds(10), ShutdownRequest{"request failed: the deployment shut down"}, [] {});
  }
  std::vector<RosterEntry> roster;
  {
    caf::scoped_actor self{*impl_->sys};
    roster = impl_->roster(self);
    // The Scaler first: members and nodes going away now is no failure to react to.
    caf::anon_send_exit(impl_->scaler, caf::exit_reason::user_shutdown);
    if (impl_->cluster) {
      stop_cluster(*impl_->sys, *impl_->cluster, "the deployment shut down", std::chrono::seconds(10));
    }
    for (const RosterEntry& e : roster) caf::anon_send_exit(e.actor, caf::exit_reason::user_shutdown);
  }
  // Every actor has been told to exit. Wait for them, but not forever: an actor that never
  // goes (a bug) must not hang the embedding program; it is reported and left behind.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (impl_->sys->registry().running() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (const size_t left = impl_->sys->registry().running(); left > 0) {
    std::string names;
    for (const RosterEntry& e : roster) {
      auto* a = caf::actor_cast<caf::abstract_actor*>(e.actor);
      if (a != nullptr && a->getf(caf::abstract_actor::is_registered_flag)) names += (names.empty() ? " (" : ", ") + e.name;
    }
    if (!names.empty()) names += ")";
    log_error("deployment", std::to_string(left) + " actor(s) did not exit within 30 s of shutdown" + names + "; leaving them behind");
    impl_->sys->await_actors_before_shutdown(false);
  }
  impl_->frontend = impl_->scheduler = impl_->scaler = caf::actor{};
  impl_->sys.reset();
}

}  // namespace janus
