// Deployment: builds the actor graph a GraphSpec describes and is the embedding API's
// implementation (runtime/deployment.h).
#include "runtime/deployment.h"

#include <algorithm>
#include <caf/all.hpp>
#include <map>
#include <thread>

#include "actors/attention_shard.h"
#include "actors/expert_instance.h"
#include "actors/frontend.h"
#include "actors/router.h"
#include "actors/scaler.h"
#include "actors/scheduler.h"
#include "runtime/lua_config.h"
#include "runtime/presets.h"

#ifdef JANUS_HAVE_CUDA
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

}  // namespace

struct Deployment::Impl {
  GraphSpec spec;
  std::shared_ptr<Model> model;
  DeploymentOptions options;
  Trace trace;
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor frontend, scheduler, scaler;
  std::vector<caf::actor> shards, routers, instances;
  std::map<std::string, caf::actor> by_name;
  std::atomic<uint64_t> next_id{1};
  std::mutex mu;
  bool stopped = false;

  std::vector<caf::actor> all_actors() const {
    std::vector<caf::actor> v = {frontend, scheduler, scaler};
    v.insert(v.end(), shards.begin(), shards.end());
    v.insert(v.end(), routers.begin(), routers.end());
    v.insert(v.end(), instances.begin(), instances.end());
    return v;
  }
};

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

Result<std::unique_ptr<Deployment>> Deployment::create(GraphSpec spec, const DeploymentOptions& options) {
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
  ctx->trace = &impl->trace;

  // Backends first: a device that cannot be used is a clear error before anything runs.
  BackendOptions bo;
  bo.kv.layers = c.num_layers;
  bo.kv.kv_heads = c.num_kv_heads;
  bo.kv.head_dim = c.head_dim;
  bo.kv.block_size = spec.attention.block_size;
  bo.kv.num_blocks = spec.attention.kv_blocks;
  bo.kv.max_seqs = spec.attention.max_batch;
  bo.kv.max_seq_len = spec.attention.max_seq_len;
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
    JANUS_ASSIGN_OR_RETURN(auto b, make_expert_backend(impl->model, d, options.null_backend));
    experts.push_back(std::move(b));
  }

  impl->cfg = std::make_unique<caf::actor_system_config>();
  const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  impl->cfg->set("scheduler.max-threads", threads);
  impl->cfg->set("logger.console", caf::atom("none"));
  impl->sys = std::make_unique<caf::actor_system>(*impl->cfg);
  caf::actor_system& sys = *impl->sys;

  impl->frontend = sys.spawn<Frontend>(ctx);
  impl->by_name["frontend"] = impl->frontend;
  for (int i = 0; i < spec.attention.shards; ++i) {
    impl->shards.push_back(sys.spawn<AttentionShard>(ctx, i, attn[static_cast<size_t>(i)]));
    impl->by_name["attention-" + std::to_string(i)] = impl->shards.back();
  }
  for (size_t i = 0; i < route.size(); ++i) {
    const int shard = spec.egate() ? -1 : static_cast<int>(i);
    impl->routers.push_back(sys.spawn<Router>(ctx, shard, route[i]));
    impl->by_name[shard < 0 ? "router" : "router-" + std::to_string(shard)] = impl->routers.back();
  }
  impl->scheduler = sys.spawn<Scheduler>(ctx, std::move(policy));
  impl->by_name["scheduler"] = impl->scheduler;
  for (int i = 0; i < spec.experts.instances; ++i) {
    impl->instances.push_back(sys.spawn<ExpertInstance>(ctx, i, experts[static_cast<size_t>(i)]));
    impl->by_name["expert-" + std::to_string(i)] = impl->instances.back();
  }
  impl->scaler = sys.spawn<Scaler>(ctx);
  impl->by_name["scaler"] = impl->scaler;

  Membership m;
  m.epoch = 1;
  m.frontend = impl->frontend;
  m.shards = impl->shards;
  m.routers = impl->routers;
  m.scheduler = impl->scheduler;
  m.instances = impl->instances;
  m.layout = std::make_shared<ExpertLayout>(std::move(layout));
  Status installed = internal_error("membership was not installed");
  {
    caf::scoped_actor self{sys};
    self->request(impl->scaler, std::chrono::seconds(30), InstallMembership{m})
        .receive([&](uint32_t) { installed = Status::Ok(); },
                 [&](caf::error& e) { installed = internal_error("installing the membership failed: " + sys.render(e)); });
  }
  std::unique_ptr<Deployment> d(new Deployment(std::move(impl)));
  if (!installed.ok()) return installed;
  return d;
}

RequestHandle Deployment::submit(GenerateRequest request, std::function<void(int32_t)> on_token) {
  auto promise = std::make_shared<std::promise<Result<GenerateResult>>>();
  RequestHandle h;
  h.id = impl_->next_id.fetch_add(1);
  h.result = promise->get_future().share();
  auto sink = std::make_shared<RequestSink>();
  sink->on_token = std::move(on_token);
  sink->on_done = [promise](Result<GenerateResult> r) { promise->set_value(std::move(r)); };
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped) {
    sink->on_done(unavailable("request " + std::to_string(h.id) + ": the deployment is shut down"));
    return h;
  }
  caf::anon_send(impl_->frontend, SubmitRequest{h.id, std::move(request), std::move(sink)});
  return h;
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
  self->request(impl_->frontend, timeout, FrontendStats{})
      .receive(
          [&](FrontendStats& f) {
            s.completed = f.completed;
            s.failed = f.failed;
            s.queued = f.queued;
            s.running = f.running;
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
          },
          [&](caf::error&) {});
  self->request(impl_->scheduler, timeout, SchedulerStats{})
      .receive(
          [&](SchedulerStats& st) {
            for (size_t l = 0; l < st.layers.size(); ++l) {
              if (!impl_->model->config().is_sparse(static_cast<int>(l))) continue;
              const LayerAmaxStats& a = st.layers[l];
              s.amax.push_back({static_cast<int>(l), a.batches, a.batches ? a.sum / static_cast<double>(a.batches) : 0.0, a.max});
            }
          },
          [&](caf::error&) {});
  for (const caf::actor& a : impl_->all_actors())
    self->request(a, timeout, StatsQuery{})
        .receive([&](ActorStats& st) { s.actors.push_back({st.name, st.kind, st.device, st.messages, st.busy_s, st.dropped}); },
                 [&](caf::error&) {});
  return s;
}

Status Deployment::kill(const std::string& name) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  auto it = impl_->by_name.find(name);
  if (it == impl_->by_name.end()) return not_found("no actor named '" + name + "'");
  if (impl_->stopped) return unavailable("the deployment is shut down");
  caf::anon_send_exit(it->second, caf::exit_reason::kill);
  return Status::Ok();
}

void Deployment::shutdown() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->stopped || !impl_->sys) return;
  impl_->stopped = true;
  {
    caf::scoped_actor self{*impl_->sys};
    self->request(impl_->frontend, std::chrono::seconds(10), ShutdownRequest{"request failed: the deployment shut down"})
        .receive([&]() {}, [&](caf::error&) {});
  }
  for (const caf::actor& a : impl_->all_actors()) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  impl_->sys->await_all_actors_done();
  impl_->frontend = impl_->scheduler = impl_->scaler = caf::actor{};
  impl_->shards.clear();
  impl_->routers.clear();
  impl_->instances.clear();
  impl_->by_name.clear();
  impl_->sys.reset();
}

}  // namespace janus
