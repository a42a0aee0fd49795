#include "actors/scaler.h"

#include <algorithm>

#include "actors/attention_shard.h"
#include "actors/expert_instance.h"
#include "actors/router.h"
#include "runtime/scheduling/expert_placement.h"
#include "runtime/config/scaling_decision.h"

namespace janus::actors {

Scaler::Scaler(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, SpawnKit kit)
    : JanusActor(cfg, std::move(ctx), "scaler", "Scaler", "cpu"), kit_(std::move(kit)), shrink_hold_(ctx_->spec.scaler.shrink_after) {}

RosterEntry* Scaler::entry(const caf::actor_addr& a) {
  for (RosterEntry& e : roster_)
    if (e.actor.address() == a) return &e;
  return nullptr;
}

bool Scaler::take_fault(RescaleFault::At at, const std::string& member) {
  for (auto it = kit_.faults.begin(); it != kit_.faults.end(); ++it)
    if (it->at == at && it->member == member) {
      kit_.faults.erase(it);
      return true;
    }
  return false;
}

namespace {
// What an injected fault looks like to the rescale: the errors a real device gives.
Status refused_spawn(const std::string& name) { return unavailable(name + " could not be spawned (injected fault)"); }
Status out_of_memory(const std::string& name) {
  return resource_exhausted(name + ": out of memory loading its weights (injected fault)");
}
}  // namespace

Result<caf::actor> Scaler::spawn_shard(int* id, bool rescale) {
  *id = kit_.next_shard_id++;
  const std::string name = "attention-" + std::to_string(*id);
  spawn_step_ = "spawn";
  if (rescale && take_fault(RescaleFault::At::kSpawn, name)) return refused_spawn(name);
  const std::string& dev_name = kit_.shard_devices[static_cast<size_t>(*id) % kit_.shard_devices.size()];
  JANUS_ASSIGN_OR_RETURN(Device dev, Device::parse(dev_name));
  spawn_step_ = "load";  // its backend loads the weights
  if (rescale && take_fault(RescaleFault::At::kLoad, name)) return out_of_memory(name);
  JANUS_ASSIGN_OR_RETURN(auto backend, make_attention_backend(ctx_->model, dev, kit_.backend, ctx_->null_backend));
  std::shared_ptr<AttentionBackend> b(std::move(backend));
  caf::actor a = spawn<AttentionShard>(ctx_, *id, b);
  roster_.push_back({name, "AttentionShard", b->device().name(), a, true});
  monitor(a);
  return a;
}

Result<caf::actor> Scaler::spawn_router(int shard_id, bool rescale) {
  const std::string name = "router-" + std::to_string(shard_id);
  spawn_step_ = "spawn";
  if (rescale && take_fault(RescaleFault::At::kSpawn, name)) return refused_spawn(name);
  const std::string& dev_name = kit_.shard_devices[static_cast<size_t>(shard_id) % kit_.shard_devices.size()];
  JANUS_ASSIGN_OR_RETURN(Device dev, Device::parse(dev_name));
  spawn_step_ = "load";  // its backend loads the weights
  if (rescale && take_fault(RescaleFault::At::kLoad, name)) return out_of_memory(name);
  JANUS_ASSIGN_OR_RETURN(auto backend, make_router_backend(ctx_->model, dev, ctx_->null_backend));
  std::shared_ptr<RouterBackend> b(std::move(backend));
  caf::actor a = spawn<Router>(ctx_, shard_id, b);
  roster_.push_back({name, "Router", b->device().name(), a, true});
  monitor(a);
  return a;
}

Result<caf::actor> Scaler::spawn_instance(const std::vector<int32_t>& experts, int* id, bool rescale) {
  *id = kit_.next_instance_id++;
  const std::string name = "expert-" + std::to_string(*id);
  spawn_step_ = "spawn";
  if (rescale && take_fault(RescaleFault::At::kSpawn, name)) return refused_spawn(name);
  const std::string& dev_name = kit_.instance_devices[static_cast<size_t>(*id) % kit_.instance_devices.size()];
  JANUS_ASSIGN_OR_RETURN(Device dev, Device::parse(dev_name));
  spawn_step_ = "load";  // its backend loads the weights
  if (rescale && take_fault(RescaleFault::At::kLoad, name)) return out_of_memory(name);
  JANUS_ASSIGN_OR_RETURN(auto backend, make_expert_backend(ctx_->model, dev, experts, ctx_->null_backend));
  std::shared_ptr<ExpertBackend> b(std::move(backend));
  caf::actor a = spawn<ExpertInstance>(ctx_, *id, b);
  roster_.push_back({name, "ExpertInstance", b->device().name(), a, true});
  monitor(a);
  return a;
}

void Scaler::propose(Membership next, bool abort, std::vector<caf::actor> retire, const std::string& reason, double detected_s) {
  next.epoch = planned_.epoch + 1;
  planned_ = next;
  send(planned_.frontend, Reconfigure{std::move(next), abort, std::move(retire), reason, detected_s});
}

void Scaler::on_down(caf::down_msg& dm) {
  RosterEntry* e = entry(dm.source);
  if (e == nullptr || !e->alive) return;
  e->alive = false;
  const double detected = now_seconds();
  const std::string name = e->name, kind = e->kind;
  const std::string why = name + " died (" + to_string(dm.reason) + ")";
  auto position = [&](const std::vector<caf::actor>& v) {
    for (size_t i = 0; i < v.size(); ++i)
      if (v[i].address() == dm.source) return static_cast<int>(i);
    return -1;
  };
  const int inst = position(planned_.instances), shard = position(planned_.shards), router = position(planned_.routers);
  const bool member = inst >= 0 || shard >= 0 || router >= 0 || planned_.scheduler.address() == dm.source ||
                      planned_.frontend.address() == dm.source;
  // Only Deployment::shutdown ends a member with user_shutdown (kill() uses exit_reason::kill,
  // retired actors are handled below): the deployment is going away, and a replacement
  // spawned now would outlive it (shutdown exits the roster it read before).
  if (member && dm.reason == caf::exit_reason::user_shutdown) return;
  if (ctx_->spec.multi_node()) return on_node_down(e->node, why, detected);
  if (!member) {
    // A retired actor going away, as asked — unless it was killed while it still serves
    // the installed epoch: the step in flight may wait on it, so it is cut short and re-run
    // under the membership handed off (which no longer names it).
    if (dm.reason == caf::exit_reason::user_shutdown || !retiring(dm.source)) return;
    log_warn(stats_.name, why);
    if (!ctx_->spec.scaler.recover) {
      send(planned_.frontend, Unrecoverable{unavailable(why + " while retiring (recovery is off: scaler{recover=false})")});
      return;
    }
    RecoveryRecord rec;
    rec.detected_s = detected;
    rec.what = why + ": it was retiring, the step re-runs without it";
    recoveries_.push_back(rec);
    propose(planned_, /*abort=*/true, {}, rec.what, detected);
    recovery_of_epoch_[planned_.epoch] = recoveries_.size() - 1;
    return;
  }
  log_warn(stats_.name, why);
  if (!ctx_->spec.scaler.recover) {
    send(planned_.frontend, Unrecoverable{unavailable(std::string(kind == "ExpertInstance" ? "expert instance " : "") + why +
                                                      " (recovery is off: scaler{recover=false})")});
    return;
  }
  RecoveryRecord rec;
  rec.detected_s = detected;
  Membership next = planned_;
  std::vector<caf::actor> retire;
  if (inst >= 0) {
    int id = 0;
    auto a = spawn_instance(planned_.layout->experts_on(inst), &id);
    if (!a.ok()) {
      send(planned_.frontend, Unrecoverable{a.status().with_context(why + "; no replacement")});
      return;
    }
    next.instances[static_cast<size_t>(inst)] = *a;
    rec.what = why + ": its experts move to expert-" + std::to_string(id);
  } else if (shard >= 0) {
    next.shards.erase(next.shards.begin() + shard);
    if (!ctx_->spec.egate()) {
      retire.push_back(next.routers[static_cast<size_t>(shard)]);
      next.routers.erase(next.routers.begin() + shard);
    }
    rec.what = why + ": its requests resume on the other shards";
    if (next.shards.empty()) {
      int id = 0;
      auto a = spawn_shard(&id);
      auto r = a.ok() && !ctx_->spec.egate() ? spawn_router(id) : Result<caf::actor>(caf::actor{});
      if (!a.ok() || !r.ok()) {
        send(planned_.frontend, Unrecoverable{(a.ok() ? r.status() : a.status()).with_context(why + "; no replacement shard")});
        return;
      }
      next.shards.push_back(*a);
      if (!ctx_->spec.egate()) next.routers.push_back(*r);
      rec.what = why + ": its requests resume on attention-" + std::to_string(id);
    }
  } else if (router >= 0 && !ctx_->spec.egate()) {
    // A shard's own gate (AGate): give the shard a new one.
    const std::string& shard_name = roster_.empty() ? "" : name;
    int shard_id = std::stoi(shard_name.substr(shard_name.find('-') + 1));
    auto r = spawn_router(shard_id);
    if (!r.ok()) {
      send(planned_.frontend, Unrecoverable{r.status().with_context(why + "; no replacement")});
      return;
    }
    next.routers[static_cast<size_t>(router)] = *r;
    rec.what = why + ": replaced";
  } else {
    // The frontend, the scheduler or the EGate router: no redundancy to fall back on.
    send(planned_.frontend, Unrecoverable{unavailable(why + " (no recovery for a " + kind + ")")});
    return;
  }
  recoveries_.push_back(rec);
  propose(std::move(next), /*abort=*/true, std::move(retire), rec.what, detected);
  recovery_of_epoch_[planned_.epoch] = recoveries_.size() - 1;
}

void Scaler::node_unrecoverable(const std::string& why) {
  if (lost_node_) return;
  lost_node_ = true;
  log_error(stats_.name, why);
  send(planned_.frontend, Unrecoverable{unavailable(why)});
}

void Scaler::on_node_down(const std::string& node, const std::string& why, double detected) {
  uint32_t lost = 0;
  while (lost < kit_.nodes.size() && kit_.nodes[lost].name != node) ++lost;
  if (lost == kit_.nodes.size() || lost_nodes_.count(lost)) return;  // the coordinator's own, or told already
  lost_nodes_.insert(lost);
  const std::string head = "node '" + node + "' lost " + why;
  if (!ctx_->spec.scaler.recover) return node_unrecoverable(head + " (recovery is off: scaler{recover=false})");
  if (moving_) return node_unrecoverable(head + " while another node's members were moving");
  if (!kit_.nodes[lost].moe) {
    // Its shards leave; the Frontend resumes their requests on the others (recomputing
    // their KV from the tokens so far), as for a dead shard in one process.
    Membership next = planned_;
    std::vector<int32_t> shard_node;
    std::vector<caf::actor> shards, routers;
    for (size_t p = 0; p < kit_.shard_node.size(); ++p) {
      if (kit_.shard_node[p] == static_cast<int32_t>(lost)) continue;
      shard_node.push_back(kit_.shard_node[p]);
      shards.push_back(next.shards.at(p));
      if (!ctx_->spec.egate()) routers.push_back(next.routers.at(p));
    }
    if (shards.empty()) return node_unrecoverable(head + " and no attention node is left to take its requests");
    log_warn(stats_.name, head + ": its requests resume on the other attention nodes");
    next.shards = std::move(shards);
    if (!ctx_->spec.egate()) next.routers = std::move(routers);
    kit_.shard_node = std::move(shard_node);
    moving_ = true;
    return finish_node_recovery(lost, std::move(next), head + ": its requests resume on the other attention nodes", detected);
  }
  std::vector<uint32_t> left;
  for (const NodeInfo& n : kit_.nodes)
    if (n.moe && !lost_nodes_.count(n.index)) left.push_back(n.index);
  if (left.empty()) return node_unrecoverable(head + " and no MoE node is left to take its experts");
  log_warn(stats_.name, head + ": moving its expert instances to the other MoE nodes");

  // Its instances, round robin over the MoE nodes left; same positions, same experts.
  std::map<uint32_t, HostInstances> moves;
  size_t next_target = 0;
  for (size_t p = 0; p < kit_.instance_node.size(); ++p) {
    if (kit_.instance_node[p] != static_cast<int32_t>(lost)) continue;
    HostInstances& h = moves[left[next_target++ % left.size()]];
    h.positions.push_back(static_cast<int32_t>(p));
    h.ids.push_back(kit_.next_instance_id++);
    h.experts.push_back(planned_.layout->experts_on(static_cast<int>(p)));
  }
  moving_ = true;
  auto next = std::make_shared<Membership>(planned_);
  auto placed = std::make_shared<std::vector<int32_t>>(kit_.instance_node);
  auto left_to_hear = std::make_shared<size_t>(moves.size());
  auto moved = std::make_shared<std::string>();
  if (moves.empty()) return finish_node_recovery(lost, *next, head + ": it hosted no instances", detected);
  for (auto& [target, h] : moves) {
    const uint32_t t = target;
    const std::string target_name = kit_.nodes[t].name;
    request(kit_.nodes[t].agent, std::chrono::seconds(120), h)
        .then(
            [=, this](std::vector<HostedActor>& got) {
              for (HostedActor& a : got) {
                next->instances.at(static_cast<size_t>(a.position)) = a.actor;
                (*placed)[static_cast<size_t>(a.position)] = static_cast<int32_t>(t);
                roster_.push_back({a.name, a.kind, a.device, a.actor, true, target_name});
                monitor(a.actor);
                *moved += (moved->empty() ? "" : ", ") + a.name + "@" + target_name;
              }
              if (--*left_to_hear > 0) return;
              kit_.instance_node = *placed;
              finish_node_recovery(lost, *next, head + ": its instances moved to " + *moved, detected);
            },
            [=, this](caf::error& err) {
              moving_ = false;
              node_unrecoverable(head + "; node '" + target_name + "' could not take its instances: " + to_string(err));
            });
  }
}

void Scaler::finish_node_recovery(uint32_t lost, Membership next, const std::string& what, double detected) {
  const std::string lost_name = kit_.nodes[lost].name;
  auto on_lost = [&](const caf::actor& a) {
    const RosterEntry* e = entry(a.address());
    return e != nullptr && e->node == lost_name;
  };
  // The MoE side's primary mirrors (the ones the membership names) move with it: the
  // first MoE node that is left takes over.
  if (on_lost(next.scheduler) || (next.routers.size() == 1 && on_lost(next.routers[0]) && ctx_->spec.egate())) {
    std::string heir;
    for (const NodeInfo& n : kit_.nodes)
      if (n.moe && !lost_nodes_.count(n.index)) {
        heir = n.name;
        break;
      }
    for (const RosterEntry& e : roster_) {
      if (e.node != heir) continue;
      if (e.kind == "Scheduler") next.scheduler = e.actor;
      if (e.kind == "Router" && ctx_->spec.egate()) next.routers = {e.actor};
    }
  }
  std::vector<caf::actor> extra;
  for (const caf::actor& a : next.extra)
    if (!on_lost(a) && a != next.scheduler && (next.routers.empty() || a != next.routers[0])) extra.push_back(a);
  next.extra = std::move(extra);

  // Every bridge left learns where the instances live before the membership names them.
  // Bridges that re-open their endpoints (shm: RelinkedAddress) then get each other's
  // new addresses (PeerAddresses) before it as well.
  std::vector<uint32_t> survivors;
  for (const NodeInfo& n : kit_.nodes)
    if (!lost_nodes_.count(n.index) && n.bridge) survivors.push_back(n.index);
  auto shared_next = std::make_shared<Membership>(std::move(next));
  auto go = [=, this]() {
    moving_ = false;
    RecoveryRecord rec;
    rec.detected_s = detected;
    rec.what = what;
    recoveries_.push_back(rec);
    propose(*shared_next, /*abort=*/true, {}, what, detected);
    recovery_of_epoch_[planned_.epoch] = recoveries_.size() - 1;
  };
  auto fail = [=, this](const std::string& why) {
    moving_ = false;
    node_unrecoverable(what + "; " + why);
  };
  auto relinked = std::make_shared<PeerAddresses>();
  relinked->address.resize(kit_.nodes.size());
  auto reconnect = [=, this]() {
    bool any = false;
    for (const auto& a : relinked->address) any = any || !a.empty();
    if (!any) return go();
    for (uint32_t i : survivors) kit_.nodes[i].address = relinked->address[i];
    auto left = std::make_shared<size_t>(survivors.size());
    for (uint32_t i : survivors)
      request(kit_.nodes[i].bridge, std::chrono::seconds(30), *relinked)
          .then(
              [=]() {
                if (--*left == 0) go();
              },
              [=, this](caf::error& err) { fail("node '" + kit_.nodes[i].name + "' could not reconnect: " + to_string(err)); });
  };
  auto pending = std::make_shared<size_t>(survivors.size());
  const DirectoryUpdate update{kit_.instance_node, kit_.shard_node, lost};
  for (uint32_t i : survivors)
    request(kit_.nodes[i].bridge, std::chrono::seconds(30), update)
        .then(
            [=](RelinkedAddress& r) {
              relinked->address[i] = std::move(r.address);
              if (--*pending == 0) reconnect();
            },
            [=](caf::error& err) { fail("a bridge refused the new directory: " + to_string(err)); });
  if (survivors.empty()) go();
}

void Scaler::scale(const ScaleTo& s, caf::response_promise rp, int attempt) {
  const ModelConfig& c = ctx_->model->config();
  if (ctx_->spec.multi_node()) {
    rp.deliver(Scaled{unsupported("rescaling a multi-node deployment is not supported yet")});
    return;
  }
  const int slots = ctx_->spec.experts.slots;
  if (s.attention < 1 || s.moe < 1) {
    rp.deliver(Scaled{invalid_argument("attention and moe must be at least 1")});
    return;
  }
  if (static_cast<int64_t>(s.moe) * slots < c.num_experts) {
    rp.deliver(Scaled{invalid_argument(std::to_string(s.moe) + " instances x " + std::to_string(slots) + " slots cannot hold " +
                                       std::to_string(c.num_experts) + " experts")});
    return;
  }
  if (s.attention == static_cast<int>(planned_.shards.size()) && s.moe == static_cast<int>(planned_.instances.size())) {
    rp.deliver(Scaled{Status::Ok(), planned_.epoch});
    return;
  }
  // The placement for the new instance count follows the experts' recent activations.
  request(planned_.scheduler, std::chrono::seconds(10), SchedulerStats{})
      .then(
          [=, this](SchedulerStats& st) mutable {
            // Replica counts and placement from the recent window (Algorithm 3: hot
            // experts get replicas, co-activated experts go to different instances).
            PlacementInput in;
            in.num_experts = c.num_experts;
            in.num_instances = s.moe;
            in.slots = slots;
            in.load = st.window_load;
            in.coactivation = st.window_coactivation;
            auto layout = place_experts(in);
            if (!layout.ok()) return rp.deliver(Scaled{layout.status()});
            auto r = std::make_shared<Rescale>();
            r->to = s;
            r->rp = rp;
            r->attempt = attempt;
            r->from_epoch = planned_.epoch;
            r->reason = "scale to " + std::to_string(s.attention) + " attention shards and " + std::to_string(s.moe) +
                        " expert instances";
            spawn_members(r, *layout);
          },
          [=](caf::error& e) mutable { rp.deliver(Scaled{unavailable("the scheduler did not answer: " + to_string(e))}); });
}

void Scaler::spawn_members(const RescalePtr& r, const ExpertLayout& layout) {
  const ScaleTo& s = r->to;
  Membership& next = r->next;
  next = planned_;
  // Shards: keep the first ones, add or retire at the end.
  while (static_cast<int>(next.shards.size()) > s.attention) {
    r->retire.push_back(next.shards.back());
    next.shards.pop_back();
    if (!ctx_->spec.egate()) {
      r->retire.push_back(next.routers.back());
      next.routers.pop_back();
    }
  }
  while (static_cast<int>(next.shards.size()) < s.attention) {
    int id = 0;
    auto a = spawn_shard(&id, /*rescale=*/true);
    if (!a.ok()) return roll_back(r, spawn_step_, "attention-" + std::to_string(id), a.status());
    r->joining.emplace_back("attention-" + std::to_string(id), *a);
    next.shards.push_back(*a);
    if (!ctx_->spec.egate()) {
      auto g = spawn_router(id, /*rescale=*/true);
      if (!g.ok()) return roll_back(r, spawn_step_, "router-" + std::to_string(id), g.status());
      r->joining.emplace_back("router-" + std::to_string(id), *g);
      next.routers.push_back(*g);
    }
  }
  // Instances: kept ones first load the experts they gain (still serving the old ones),
  // new ones start with theirs; extra ones retire.
  while (static_cast<int>(next.instances.size()) > s.moe) {
    r->retire.push_back(next.instances.back());
    next.instances.pop_back();
  }
  std::vector<std::pair<caf::actor, std::vector<int32_t>>> loads;
  for (int i = 0; i < s.moe; ++i) {
    const auto& want = layout.experts_on(i);
    if (i < static_cast<int>(next.instances.size())) {
      std::vector<int32_t> both = planned_.layout->experts_on(i);
      r->kept.emplace_back(next.instances[static_cast<size_t>(i)], both);
      for (int32_t e : want)
        if (std::find(both.begin(), both.end(), e) == both.end()) both.push_back(e);
      loads.emplace_back(next.instances[static_cast<size_t>(i)], both);
    } else {
      int id = 0;
      auto a = spawn_instance(want, &id, /*rescale=*/true);
      if (!a.ok()) return roll_back(r, spawn_step_, "expert-" + std::to_string(id), a.status());
      r->joining.emplace_back("expert-" + std::to_string(id), *a);
      next.instances.push_back(*a);
    }
  }
  next.layout = std::make_shared<ExpertLayout>(layout);
  load_experts(r, std::move(loads));
}

void Scaler::load_experts(const RescalePtr& r, std::vector<std::pair<caf::actor, std::vector<int32_t>>> loads) {
  if (loads.empty()) return join(r);
  r->waiting = loads.size();
  for (auto& [a, experts] : loads) {
    const RosterEntry* e = entry(a.address());
    const std::string name = e != nullptr ? e->name : "an expert instance";
    auto loaded = [=, this](const Status& st) {
      if (r->over || overtaken(r)) return;
      if (!st.ok()) return roll_back(r, "load", name, st);
      if (--r->waiting == 0) join(r);
    };
    if (take_fault(RescaleFault::At::kLoad, name)) {
      loaded(out_of_memory(name));
      return;  // rolled back: the others load nothing more
    }
    request(a, std::chrono::seconds(300), LoadExperts{experts})
        .then([=](Status& st) { loaded(st); },
              [=](caf::error& err) { loaded(unavailable(name + " did not load its experts: " + to_string(err))); });
  }
}

void Scaler::join(const RescalePtr& r) {
  // The hook's deaths of current members at this step (a scale-down losing a member
  // midway): the recovery path takes them.
  for (const RosterEntry& e : roster_)
    if (e.alive && take_fault(RescaleFault::At::kJoin, e.name)) send_exit(e.actor, caf::exit_reason::kill);
  if (r->joining.empty()) return hand_off(r);
  // Each new member adopts the membership it joins and says so: one that died after its
  // weights loaded, or hangs, fails the rescale here, before the Frontend switches to it.
  // (The Frontend sends it the same membership again at the switch; adopting is idempotent.)
  Membership next = r->next;
  next.epoch = planned_.epoch + 1;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(kit_.join_timeout_s * 1e3));
  r->waiting = r->joining.size();
  for (const auto& [name, a] : r->joining) {
    // It holds its thread four timeouts long before it answers, as a wedged device would.
    if (take_fault(RescaleFault::At::kStall, name)) send(a, SlowDown{kit_.join_timeout_s * 4e3});
    const std::string who = name;
    request(a, timeout, next)
        .then(
            [=, this]() {
              if (r->over || overtaken(r)) return;
              if (--r->waiting == 0) hand_off(r);
            },
            [=, this](caf::error& err) {
              if (r->over || overtaken(r)) return;
              const bool late = err == caf::sec::request_timeout;
              roll_back(r, "join", who,
                        unavailable(who + (late ? " did not acknowledge epoch " + std::to_string(next.epoch) + " within " +
                                                      std::to_string(timeout.count()) + " ms"
                                                : " died before it joined (" + to_string(err) + ")")));
            });
  }
}

void Scaler::hand_off(const RescalePtr& r) {
  r->over = true;
  propose(r->next, /*abort=*/false, r->retire, r->reason, now_seconds());
  if (!r->retire.empty()) retiring_[planned_.epoch] = r->retire;
  scaling_.emplace(planned_.epoch, r->rp);
}

bool Scaler::overtaken(const RescalePtr& r) {
  if (planned_.epoch == r->from_epoch) return false;
  // Three recoveries in one rescale: the deployment is too unsteady to keep trying.
  if (r->attempt >= 2) {
    roll_back(r, "membership", "the deployment", unavailable("the membership changed under the rescale three times"));
    return true;
  }
  r->over = true;
  retire_joining(r);
  log_info(stats_.name, r->reason + ": the membership changed (epoch " + std::to_string(planned_.epoch) + "), starting over");
  scale(r->to, r->rp, r->attempt + 1);
  return true;
}

void Scaler::retire_joining(const RescalePtr& r) {
  for (const auto& [name, a] : r->joining) send_exit(a, caf::exit_reason::user_shutdown);
}

void Scaler::roll_back(const RescalePtr& r, const std::string& step, const std::string& member, const Status& why) {
  r->over = true;
  retire_joining(r);
  // Kept instances go back to the experts they held — unless another epoch is still being
  // installed, whose switch may need what they loaded (it loads what it needs then).
  if (installed_epoch_ == planned_.epoch)
    for (const auto& [a, experts] : r->kept)
      request(a, std::chrono::seconds(300), LoadExperts{experts}).then([](Status&) {}, [](caf::error&) {});
  const Status failed(why.code(), r->reason + " failed at " + step + " of " + member + ": " + why.message() +
                                      "; still serving epoch " + std::to_string(planned_.epoch));
  ++rescale_stats_.failed;
  rescale_stats_.last_failure = failed;
  log_error(stats_.name, failed.message());
  r->rp.deliver(Scaled{failed, planned_.epoch});
}

bool Scaler::retiring(const caf::actor_addr& a) const {
  for (const auto& [epoch, actors] : retiring_)
    for (const caf::actor& x : actors)
      if (x.address() == a) return true;
  return false;
}

void Scaler::autoscale() {
  request(planned_.frontend, std::chrono::seconds(10), FrontendStats{})
      .then(
          [=, this](FrontendStats& f) {
            const double now = now_seconds();
            const bool first = last_requested_ < 0;
            const double lambda = first ? 0 : static_cast<double>(f.requested_tokens - last_requested_) / (now - last_tick_s_);
            last_requested_ = f.requested_tokens;
            last_tick_s_ = now;
            if (first) return;
            request(planned_.scheduler, std::chrono::seconds(10), SchedulerStats{})
                .then([=, this](SchedulerStats& st) { decide(lambda, st); }, [](caf::error&) {});
          },
          [](caf::error&) {});
  delayed_send(caf::actor_cast<caf::actor>(this),
               std::chrono::milliseconds(static_cast<int64_t>(ctx_->spec.scaler.interval_s * 1e3)), ScaleTick{});
}

void Scaler::decide(double lambda, const SchedulerStats& st) {
  const ScalerSpec& sp = ctx_->spec.scaler;
  const ScalingDecision d =
      decide_scaling(*kit_.perf, sp, ctx_->spec.experts.slots, lambda, ActivationWindow{st.window_load, st.window_probability});
  ScalingRecord rec;
  rec.t_s = now_seconds();
  rec.lambda = lambda;
  rec.feasible = d.feasible;
  if (d.feasible) {
    rec.attention = d.attention;
    rec.moe = d.moe;
    rec.batch = d.batch;
    rec.tpot = d.tpot;
  } else {
    // The SLO cannot be met within the bounds: give it everything allowed.
    rec.attention = sp.max_attention;
    rec.moe = sp.max_moe;
    rec.note = d.why;
  }
  const int now_attention = static_cast<int>(planned_.shards.size()), now_moe = static_cast<int>(planned_.instances.size());
  const ShrinkHold::Target to = shrink_hold_.next(now_attention, now_moe, rec.attention, rec.moe);
  if (to.held)
    rec.note = "held: Algorithm 2 asks for " + std::to_string(rec.attention) + "A" + std::to_string(rec.moe) + "E (shrinks after " +
               std::to_string(sp.shrink_after) + " such decisions in a row)";
  rec.attention = to.attention;
  rec.moe = to.moe;
  rec.changed = rec.attention != now_attention || rec.moe != now_moe;
  decisions_.push_back(rec);
  log_info(stats_.name, "demand " + std::to_string(lambda) + " tokens/s: " + std::to_string(rec.attention) + " shards, " +
                            std::to_string(rec.moe) + " instances" + (rec.changed ? " (rescaling)" : ""));
  if (rec.changed) {
    auto rp = make_response_promise<Scaled>();  // nobody waits: the answer is dropped
    scale(ScaleTo{rec.attention, rec.moe}, rp);
  }
}

caf::behavior Scaler::make_behavior() {
  set_down_handler([=, this](caf::down_msg& dm) { on_down(dm); });
  return with_stats({
      [=, this](InstallMembership& in) -> caf::result<uint32_t> {
        count();
        roster_ = in.roster;
        for (const RosterEntry& e : roster_)
          if (e.actor != caf::actor_cast<caf::actor>(this)) monitor(e.actor);
        in.membership.epoch = 0;
        planned_ = in.membership;
        auto rp = make_response_promise<uint32_t>();
        propose(in.membership, false, {}, "the first membership", now_seconds());
        installing_.emplace(planned_.epoch, rp);
        if (ctx_->spec.scaler.policy == "slo" && kit_.perf) send(caf::actor_cast<caf::actor>(this), ScaleTick{});
        return rp;
      },
      [=, this](ScaleTick) {
        count();
        autoscale();
      },
      [=, this](ScalingQuery) { return decisions_; },
      [=, this](Reconfigured& r) {
        count();
        installed_epoch_ = r.epoch;
        retiring_.erase(retiring_.begin(), retiring_.upper_bound(r.epoch));
        if (auto w = installing_.find(r.epoch); w != installing_.end()) {
          w->second.deliver(r.epoch);
          installing_.erase(w);
        }
        if (auto w = scaling_.find(r.epoch); w != scaling_.end()) {
          w->second.deliver(Scaled{Status::Ok(), r.epoch});
          scaling_.erase(w);
          ++rescale_stats_.installed;
        }
        auto rec = recovery_of_epoch_.find(r.epoch);
        if (rec != recovery_of_epoch_.end()) {
          RecoveryRecord& x = recoveries_[rec->second];
          x.installed_s = r.applied_s;
          log_warn(stats_.name, "recovered in " + std::to_string((x.installed_s - x.detected_s) * 1e3) + " ms: " + x.what);
        }
      },
      [=, this](const ScaleTo& s) -> caf::result<Scaled> {
        count();
        auto rp = make_response_promise<Scaled>();
        scale(s, rp);
        return rp;
      },
      [=, this](RosterQuery) { return roster_; },
      [=, this](RecoveryQuery) { return recoveries_; },
      [=, this](RescaleQuery) {
        RescaleStats st = rescale_stats_;
        st.epoch = planned_.epoch;
        return st;
      },
  });
}

}  // namespace janus::actors
