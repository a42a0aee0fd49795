#include "actors/node_agent.h"

#include <mutex>

#include "actors/attention_shard.h"
#include "actors/bridge.h"
#include "actors/expert_instance.h"
#include "actors/router.h"
#include "actors/scheduler.h"
#include "actors/wire_codec.h"
#include "actors/deployment.h"
#include "runtime/scheduling/scheduling_policy.h"

namespace janus::actors {

namespace {

/// How this node's actors see a membership (actors/actor_common.h).
class NodeView final : public MembershipView {
 public:
  // Weak references: the view is shared by the actors it names.
  void set(caf::node_id self, const caf::actor& bridge, const caf::actor& router, const caf::actor& scheduler, bool moe, bool egate) {
    std::lock_guard<std::mutex> lk(mu_);
    self_ = self;
    bridge_ = bridge.address();
    router_ = router ? router.address() : caf::actor_addr{};
    scheduler_ = scheduler ? scheduler.address() : caf::actor_addr{};
    moe_ = moe;
    egate_ = egate;
  }

  void localize(Membership& m) const override {
    std::lock_guard<std::mutex> lk(mu_);
    const caf::actor bridge_ = caf::actor_cast<caf::actor>(this->bridge_);
    const caf::actor router_ = caf::actor_cast<caf::actor>(this->router_);
    const caf::actor scheduler_ = caf::actor_cast<caf::actor>(this->scheduler_);
    auto local = [&](const caf::actor& a) { return a && a.node() == self_; };
    // Shards elsewhere are reached through the bridge (the scheduler's results for them).
    for (caf::actor& s : m.shards)
      if (!local(s)) s = bridge_;
    if (moe_) {
      // This node runs the MoE side's gate and AEBS itself, on the whole layer batch,
      // and gives work only to its own instances.
      if (egate_) m.routers = {router_};
      m.scheduler = scheduler_;
      for (caf::actor& i : m.instances)
        if (!local(i)) i = caf::actor{};
    } else {
      // An attention node reaches the whole MoE side through its bridge.
      if (egate_) m.routers = {bridge_};
      m.scheduler = bridge_;
      for (caf::actor& i : m.instances) i = caf::actor{};
    }
  }

 private:
  mutable std::mutex mu_;
  caf::node_id self_;
  caf::actor_addr bridge_, router_, scheduler_;
  bool moe_ = false, egate_ = true;
};

}  // namespace

struct NodeAgent::Impl {
  NodeAgentSetup setup;
  std::shared_ptr<NodeView> view = std::make_shared<NodeView>();
  std::vector<caf::actor> hosted;  // every actor this node spawned, the bridge included
  caf::actor bridge;
  bool planned = false;
  std::shared_ptr<const DeploymentContext> ctx;  // once planned
  std::string instance_device;                   // where this node's expert instances run
};

NodeAgent::NodeAgent(caf::actor_config& cfg, NodeAgentSetup setup)
    : caf::event_based_actor(cfg), name_("agent@" + setup.name), impl_(std::make_unique<Impl>()) {
  impl_->setup = std::move(setup);
}

NodeAgent::~NodeAgent() = default;

namespace {

Result<NodeReady> build(NodeAgent* self, NodeAgent::Impl& impl, const NodePlan& plan) {
  JANUS_ASSIGN_OR_RETURN(GraphSpec spec, decode_graph_spec(plan.graph));
  if (plan.index >= spec.nodes.size()) return invalid_argument("the plan names node " + std::to_string(plan.index));
  const NodeSpec& me = spec.nodes[plan.index];
  if (me.name != impl.setup.name)
    return invalid_argument("the plan is for node '" + me.name + "', this is node '" + impl.setup.name + "'");
  Deployment::register_backends();
  JANUS_ASSIGN_OR_RETURN(std::shared_ptr<Model> model, Deployment::load_model(spec, false));
  const ModelConfig& c = model->config();

  auto ctx = std::make_shared<DeploymentContext>();
  ctx->model = model;
  ctx->spec = spec;
  ctx->null_backend = plan.null_backend;
  ctx->compare_policies = plan.compare_policies;
  ctx->view = impl.view;
  impl.ctx = ctx;
  impl.instance_device = plan.instances.empty() ? "cpu" : instance_device(spec, plan.instances[0]);

  // Backends and the endpoint first: a device or a transport that cannot be used is a
  // clear error before anything is spawned.
  const BackendOptions bo = backend_options(spec, c);
  struct Shard {
    int position;
    std::shared_ptr<AttentionBackend> attention;
    std::shared_ptr<RouterBackend> router;  // AGate
  };
  std::vector<Shard> shards;
  for (int32_t s : plan.shards) {
    JANUS_ASSIGN_OR_RETURN(Device d, Device::parse(shard_device(spec, s)));
    Shard x{s, nullptr, nullptr};
    JANUS_ASSIGN_OR_RETURN(x.attention, make_attention_backend(model, d, bo, plan.null_backend));
    if (!spec.egate()) {
      JANUS_ASSIGN_OR_RETURN(x.router, make_router_backend(model, d, plan.null_backend));
    }
    shards.push_back(std::move(x));
  }
  std::vector<std::pair<int, std::shared_ptr<ExpertBackend>>> experts;
  for (int32_t i : plan.instances) {
    JANUS_ASSIGN_OR_RETURN(Device d, Device::parse(instance_device(spec, i)));
    JANUS_ASSIGN_OR_RETURN(auto b, make_expert_backend(model, d, spec.resolved_placement.at(static_cast<size_t>(i)), plan.null_backend));
    experts.emplace_back(i, std::move(b));
  }
  std::shared_ptr<RouterBackend> moe_router;
  std::unique_ptr<SchedulingPolicy> policy;
  if (plan.moe) {
    JANUS_ASSIGN_OR_RETURN(Device d, Device::parse(instance_device(spec, plan.instances.empty() ? 0 : plan.instances[0])));
    if (spec.egate()) {
      JANUS_ASSIGN_OR_RETURN(moe_router, make_router_backend(model, d, plan.null_backend));
    }
    JANUS_ASSIGN_OR_RETURN(policy, make_scheduling_policy(spec.scheduler.policy, spec.scheduler.seed));
  }
  transport::EndpointConfig ec;
  ec.self_id = plan.index;
  if (plan.transport != "shm") ec.bind_host = me.host;
  JANUS_ASSIGN_OR_RETURN(std::unique_ptr<transport::Endpoint> endpoint, transport::Endpoint::open(plan.transport, ec));

  NodeReady ready;
  ready.transport = plan.transport;
  JANUS_ASSIGN_OR_RETURN(ready.address, endpoint->address());
  auto keep = [&](const std::string& name, const std::string& kind, const std::string& device, caf::actor a, int position) {
    impl.hosted.push_back(a);
    ready.actors.push_back({name, kind, device, std::move(a), position});
  };
  for (Shard& x : shards) {
    keep("attention-" + std::to_string(x.position), "AttentionShard", x.attention->device().name(),
         self->spawn<AttentionShard>(ctx, x.position, x.attention), x.position);
    if (x.router)
      keep("router-" + std::to_string(x.position), "Router", x.router->device().name(), self->spawn<Router>(ctx, x.position, x.router),
           x.position);
  }
  caf::actor router, scheduler;
  if (plan.moe) {
    const std::string at = "@" + me.name;
    if (moe_router) {
      router = self->spawn<Router>(ctx, -1, moe_router);
      keep("router" + at, "Router", moe_router->device().name(), router, -1);
    }
    scheduler = self->spawn<Scheduler>(ctx, std::move(policy));
    keep("scheduler" + at, "Scheduler", "cpu", scheduler, -1);
  }
  for (auto& [i, b] : experts)
    keep("expert-" + std::to_string(i), "ExpertInstance", b->device().name(), self->spawn<ExpertInstance>(ctx, i, b), i);
  BridgeSetup bs;
  bs.node = plan.index;
  bs.node_name = me.name;
  bs.transport = plan.transport;
  bs.endpoint = std::shared_ptr<transport::Endpoint>(std::move(endpoint));
  bs.endpoint_config = ec;
  bs.moe = plan.moe;
  bs.router = router;
  bs.scheduler = scheduler;
  // On the scheduler's threads, not detached: its members' memberships reference it, and
  // CAF waits at exit for every detached actor's object to be destroyed.
  impl.bridge = self->spawn<Bridge>(ctx, std::move(bs));
  impl.hosted.push_back(impl.bridge);
  ready.bridge = impl.bridge;
  impl.view->set(self->node(), impl.bridge, router, scheduler, plan.moe, spec.egate());
  log_info(self->name(), "hosting " + std::to_string(ready.actors.size()) + " actors, data plane over " + plan.transport);
  return ready;
}

/// Expert instances that move here from a lost MoE node: same positions, same experts,
/// on this node's instance device. They are local actors, so this node's view gives them
/// this node's share of the work as soon as the membership naming them arrives.
Result<std::vector<HostedActor>> host_instances(NodeAgent* self, NodeAgent::Impl& impl, const HostInstances& h) {
  if (!impl.ctx) return invalid_argument("this node has no plan yet");
  if (h.ids.size() != h.positions.size() || h.experts.size() != h.positions.size())
    return invalid_argument("HostInstances: positions, ids and experts differ in length");
  JANUS_ASSIGN_OR_RETURN(Device d, Device::parse(impl.instance_device));
  std::vector<std::shared_ptr<ExpertBackend>> backends;
  for (size_t i = 0; i < h.positions.size(); ++i) {
    JANUS_ASSIGN_OR_RETURN(auto b, make_expert_backend(impl.ctx->model, d, h.experts[i], impl.ctx->null_backend));
    backends.emplace_back(std::move(b));
  }
  std::vector<HostedActor> out;
  for (size_t i = 0; i < h.positions.size(); ++i) {
    caf::actor a = self->spawn<ExpertInstance>(impl.ctx, h.ids[i], backends[i]);
    impl.hosted.push_back(a);
    out.push_back({"expert-" + std::to_string(h.ids[i]), "ExpertInstance", backends[i]->device().name(), a, h.positions[i]});
  }
  log_info(self->name(), "now hosting expert instance(s) of a lost node: " + std::to_string(out.size()));
  return out;
}

}  // namespace

caf::behavior NodeAgent::make_behavior() {
  monitor(impl_->setup.coordinator);
  auto stop = [=, this](int code, const std::string& why) {
    if (code != 0) log_error(name_, why);
    else log_info(name_, why);
    impl_->setup.exit_code->store(code);
    for (const caf::actor& a : impl_->hosted) send_exit(a, caf::exit_reason::user_shutdown);
    impl_->hosted.clear();
    impl_->bridge = caf::actor{};
    quit();
  };
  set_down_handler([=, this](caf::down_msg& dm) {
    if (dm.source == impl_->setup.coordinator.address())
      stop(1, "the coordinator went away (" + to_string(dm.reason) + "): this node stops");
  });
  return {
      [=, this](const NodePlan& p) -> caf::result<NodeReady> {
        if (impl_->planned) return caf::make_error(caf::sec::runtime_error, "node '" + impl_->setup.name + "' already has a plan");
        impl_->planned = true;
        auto r = build(this, *impl_, p);
        if (!r.ok()) return caf::make_error(caf::sec::runtime_error, "node '" + impl_->setup.name + "': " + r.status().message());
        return std::move(*r);
      },
      [=, this](const HostInstances& h) -> caf::result<std::vector<HostedActor>> {
        auto r = host_instances(this, *impl_, h);
        if (!r.ok()) return caf::make_error(caf::sec::runtime_error, "node '" + impl_->setup.name + "': " + r.status().message());
        return std::move(*r);
      },
      [=, this](NodeShutdown& s) { stop(0, "shutting down: " + s.reason); },
  };
}

}  // namespace janus::actors
