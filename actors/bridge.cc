#include "actors/bridge.h"

#include <algorithm>
#include <chrono>

#include "actors/bridge_staging.h"
#include "actors/bridge_topology.h"
#include "actors/link_probe.h"
#include "actors/node_link.h"
#include "actors/two_phase_exchange.h"
#include "transport/buffer_pool.h"

namespace janus::actors {

namespace {

using poll_atom = caf::atom_constant<caf::atom("brpoll")>;
using timer_atom = caf::atom_constant<caf::atom("brtimer")>;
using probe_timeout_atom = caf::atom_constant<caf::atom("brprobeto")>;
using link_verdict_atom = caf::atom_constant<caf::atom("brlinkvd")>;

// How long a failed send waits for the coordinator to say whether its node is lost. The
// data plane often sees a killed node before the coordinator's connection to it breaks;
// failing the requests then would lose what recovery is there to save.
constexpr auto kLinkVerdictWait = std::chrono::seconds(10);

/// What every frame is checked against, from the graph (the node count comes with the directory).
ExchangeLimits frame_limits(const DeploymentContext& ctx) {
  ExchangeLimits l;
  l.shards = ctx.spec.attention.shards;
  l.instances = ctx.spec.experts.instances;
  l.hidden = ctx.model->config().hidden_size;
  l.top_k = ctx.model->config().top_k;
  return l;
}

ExchangeSettings exchange_settings(const DeploymentContext& ctx, const BridgeSetup& setup, const std::string& who) {
  ExchangeSettings s;
  s.node = setup.node;
  s.moe = setup.moe;
  s.hidden = ctx.model->config().hidden_size;
  s.top_k = ctx.model->config().top_k;
  s.egate = ctx.spec.egate();
  s.auto_mode = ctx.spec.exchange.mode == "auto";
  if (!s.auto_mode) {
    auto m = transport::parse_exchange_mode(ctx.spec.exchange.mode);
    if (m.ok()) s.pinned = *m;
  }
  s.full_duplex = setup.transport == "verbs";  // an RDMA NIC; tcp and shm copy on the CPU
  s.who = who;
  return s;
}

/// What the bridge holds on its transport: the endpoint, the buffers registered with it,
/// the frames on it and the host staging cut from those buffers. One piece, because the
/// pieces hold references to each other and are replaced together when the endpoint is
/// re-opened (relink, after a peer's loss over shm).
struct Wire {
  std::shared_ptr<transport::Endpoint> ep;
  transport::BufferPool pool;
  NodeLink link;
  BridgeStaging staging;

  Wire(std::shared_ptr<transport::Endpoint> e, const BridgeTopology& topology, uint32_t node, const ExchangeLimits& limits,
       const std::string& who, BridgeStats& stats, NodeLinkEvents& events)
      : ep(std::move(e)), pool(*ep), link(*ep, pool, topology, node, limits, who, stats, events), staging(pool) {}
};

}  // namespace

/// The actor's state: the pieces (topology, link, staging, exchange, probe) and the wiring
/// between them and the node's actors. Polling the endpoint is the actor's: by messages
/// to itself, at once while there is traffic (and spin_us after it), then backing off.
struct Bridge::Impl final : NodeLinkEvents, ExchangeOutlet {
  Bridge* self;
  std::shared_ptr<const DeploymentContext> ctx;
  BridgeSetup setup;
  std::string who;
  double spin_s = 1e-3;
  bool egate = true;
  BridgeStats stats;
  BridgeTopology topology;
  std::unique_ptr<Wire> wire;
  TwoPhaseExchange exchange;
  std::vector<caf::actor> shard_actor;  // by position; valid for this node's shards

  bool poll_now = false, poll_timer = false;
  double last_activity = 0, backoff_s = 20e-6;
  uint64_t polls = 0;
  uint32_t epoch = 0;             // the installed membership's
  bool verdict_pending = false;  // a failed send waits for on_link_verdict

  std::unique_ptr<LinkProbe> probe;
  caf::response_promise probe_rp;

  Impl(Bridge* s, std::shared_ptr<const DeploymentContext> c, BridgeSetup st)
      : self(s),
        ctx(std::move(c)),
        setup(std::move(st)),
        who("bridge@" + setup.node_name),
        spin_s(ctx->spec.exchange.spin_us * 1e-6),
        egate(ctx->spec.egate()),
        topology(ctx->spec.scaler.recover),
        wire(std::make_unique<Wire>(setup.endpoint, topology, setup.node, frame_limits(*ctx), who, stats, *this)),
        exchange(exchange_settings(*ctx, setup, who), topology, wire->link, wire->staging, stats, *this) {
    stats.node = setup.node_name;
    stats.transport = setup.transport;
    if (auto a = wire->ep->address(); a.ok()) stats.address = *a;
  }

  /// This actor, for messages to itself (a handle made when needed: one kept would keep
  /// the actor alive forever).
  caf::actor me_handle() const { return caf::actor_cast<caf::actor>(self); }

  // -- polling ----------------------------------------------------------------------------------

  /// Something happened: poll again at once, and keep spinning for a while.
  void kick() {
    last_activity = now_seconds();
    backoff_s = 20e-6;
    if (!poll_now) {
      poll_now = true;
      self->send(me_handle(), poll_atom::value);
    }
  }

  void on_poll(bool timer) {
    (timer ? poll_timer : poll_now) = false;
    ++polls;
    const int n = wire->link.progress();
    if (n > 0) {
      last_activity = now_seconds();
      backoff_s = 20e-6;
    }
    if (now_seconds() - last_activity < spin_s) {
      if (!poll_now) {
        poll_now = true;
        self->send(me_handle(), poll_atom::value);
      }
    } else if (!poll_timer && !poll_now) {
      // Idle: back off (20 us, doubling to 1 ms), so that idle nodes leave the cores to
      // the ones computing.
      poll_timer = true;
      self->delayed_send(me_handle(), std::chrono::microseconds(static_cast<int64_t>(backoff_s * 1e6)), timer_atom::value);
      backoff_s = std::min(backoff_s * 2, 1e-3);
    }
  }

  // -- what the link and the exchange report ----------------------------------------------------

  std::string admit(const ExchangeFrame& f, uint32_t from, FrameFault* fault) override { return exchange.admit(f, from, fault); }

  void on_frame(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base, uint32_t from) override {
    switch (f.kind) {
      case ExchangeKind::kProbe: return;  // answered by the link
      case ExchangeKind::kProbeReply: return on_probe_reply(f, from);
      case ExchangeKind::kDispatch: return exchange.on_dispatch(f, hold, base);
      case ExchangeKind::kCombine: return exchange.on_combine(f, hold, base);
    }
  }

  void on_link_failed(const std::string& why) override {
    if (!ctx->spec.scaler.recover) return exchange.fail_all(why);
    // With recovery on, the coordinator decides: if the node is lost, the Scaler moves its
    // members and the step re-runs under the next epoch (on_node_lost drops what is in
    // flight); if nothing is declared lost in time, the layer batches fail as they would
    // without recovery.
    if (verdict_pending) return;
    verdict_pending = true;
    log_warn(who, why + ": waiting up to " + std::to_string(kLinkVerdictWait.count()) + " s for the coordinator's verdict");
    self->delayed_send(me_handle(), kLinkVerdictWait, link_verdict_atom::value, epoch, why);
  }

  void on_link_verdict(uint32_t epoch_then, const std::string& why) {
    verdict_pending = false;
    if (epoch != epoch_then || !exchange.waiting()) return;  // recovered (or nothing left to fail)
    log_error(who, why + ", and no node was declared lost in " + std::to_string(kLinkVerdictWait.count()) + " s");
    exchange.fail_all(why);
  }
  void on_activity() override { kick(); }
  void on_dropped() override { ++self->stats_.dropped; }

  void to_shard(MoeResult r) override {
    const auto s = static_cast<size_t>(r.shard);
    if (s < shard_actor.size() && shard_actor[s]) self->send(shard_actor[s], std::move(r));
  }

  void to_moe_side(ShardActivations a) override { self->send(egate ? setup.router : setup.scheduler, std::move(a)); }

  // -- membership, directory, failures ----------------------------------------------------------

  void on_membership(const Membership& m) {
    epoch = m.epoch;
    exchange.enter_epoch(m.epoch);
    if (Status s = wire->ep->set_epoch(m.epoch); !s.ok()) log_error(who, s.to_string());
    shard_actor.assign(m.shards.size(), caf::actor{});
    for (size_t s = 0; s < m.shards.size(); ++s)
      if (m.shards[s] && m.shards[s].node() == self->node()) shard_actor[s] = m.shards[s];
  }

  Status on_directory(const NodeDirectory& d) {
    if (wire->link.connected()) return Status::Ok();
    std::vector<BridgeTopology::Node> nodes;
    for (const NodeInfo& x : d.nodes) nodes.push_back({x.index, x.name, x.moe});
    wire->link.reset_peers(d.nodes.size());
    JANUS_TRY(topology.reset(std::move(nodes), d.shard_node, d.instance_node));
    for (const NodeInfo& x : d.nodes) {
      if (x.index == setup.node) continue;
      if (Status s = wire->link.connect(x.index, x.address); !s.ok()) return s.with_context("connecting to node '" + x.name + "'");
    }
    JANUS_TRY(wire->link.open());
    kick();
    return Status::Ok();
  }

  /// A lost node's members are elsewhere now (the Scaler moved a MoE node's instances,
  /// or dropped an attention node's shards): exchange with the nodes that are left. Comes
  /// before the membership that names them.
  ///
  /// Over shm the endpoint is re-opened here: libfabric 1.17's shm provider completes a
  /// process's sends in the order they were posted, and the sends that were in flight to
  /// the dead process stay busy forever (only their receiver could finish them), so every
  /// later send of this node would wait behind them and the deployment would stop some
  /// tens of steps later. A new endpoint (new shm region, new address) starts with an
  /// empty queue; the Scaler hands every survivor's new address round (PeerAddresses)
  /// before the next membership. tcp and verbs report a dead peer's sends as failed, and
  /// keep their endpoints.
  Result<RelinkedAddress> on_directory_update(const DirectoryUpdate& u) {
    if (!wire->link.connected()) return invalid_argument("no directory yet");
    JANUS_TRY(topology.update(u.instance_node, u.shard_node, u.lost));
    if (setup.transport != "shm") return RelinkedAddress{};
    if (probe) end_probe(caf::make_error(caf::sec::runtime_error, "a node was lost while links were probed"));
    transport::EndpointConfig ec = setup.endpoint_config;
    ec.epoch = epoch;
    JANUS_ASSIGN_OR_RETURN(std::unique_ptr<transport::Endpoint> e, transport::Endpoint::open(setup.transport, ec));
    auto next = std::make_unique<Wire>(std::shared_ptr<transport::Endpoint>(std::move(e)), topology, setup.node,
                                       frame_limits(*ctx), who, stats, *this);
    JANUS_ASSIGN_OR_RETURN(std::vector<char> address, next->ep->address());
    exchange.relink(next->link, next->staging);
    // Closing the old endpoint cancels what it still had posted (fabric.cc); the blocks
    // that those operations held stay allocated (their holders are not tracked).
    wire = std::move(next);
    stats.address = address;
    ++stats.relinks;
    log_warn(who, "re-opened the " + setup.transport + " endpoint after node '" + topology.name_of(u.lost) +
                      "' went away (its sends in flight can never complete)");
    return RelinkedAddress{std::move(address)};
  }

  /// Every survivor's re-opened endpoint (PeerAddresses): connect to each anew.
  Status on_peer_addresses(const PeerAddresses& p) {
    if (wire->link.connected()) return Status::Ok();  // kept its endpoint: nothing changed
    wire->link.reset_peers(p.address.size());
    for (size_t i = 0; i < p.address.size(); ++i) {
      if (i == setup.node || p.address[i].empty()) continue;
      if (Status s = wire->link.connect(static_cast<uint32_t>(i), p.address[i]); !s.ok())
        return s.with_context("reconnecting to node '" + topology.name_of(static_cast<uint32_t>(i)) + "'");
    }
    JANUS_TRY(wire->link.open());
    kick();
    return Status::Ok();
  }

  void on_node_lost(const NodeLost& l) {
    const BridgeTopology::Loss loss = topology.lose(l.index, l.reason);
    if (loss == BridgeTopology::Loss::kIgnored) return;
    const std::string why = "node '" + topology.name_of(l.index) + "' went away (" + l.reason + ")";
    if (loss == BridgeTopology::Loss::kRecovering) {
      // The Scaler moves its members elsewhere and the Frontend re-runs the step under
      // the next epoch: what is in flight here is dropped, not failed.
      log_warn(who, why + ": dropping " + std::to_string(exchange.in_flight()) +
                        " layer batch(es) in flight; the step re-runs once its members have moved");
      exchange.drop_all();
      return;
    }
    if (!exchange.waiting()) log_info(who, why);
    else log_error(who, why);
    exchange.fail_all(why);
    if (probe) end_probe(caf::make_error(caf::sec::runtime_error, why + " while links were probed"));
  }

  // -- link probing -----------------------------------------------------------------------------

  void start_probe(caf::response_promise rp, int reps) {
    if (!wire->link.connected()) {
      rp.deliver(caf::make_error(caf::sec::runtime_error, "probe: no directory yet"));
      return;
    }
    probe = std::make_unique<LinkProbe>(wire->link, wire->pool, topology, setup.node, setup.moe, reps, who);
    probe_rp = rp;
    if (Status s = probe->start(); !s.ok()) return end_probe(caf::make_error(caf::sec::runtime_error, s.message()));
    next_probe();
  }

  void next_probe() {
    if (probe->finished()) return end_probe(probe->fits());
    self->delayed_send(me_handle(), std::chrono::seconds(5), probe_timeout_atom::value, probe->send_round());
  }

  void on_probe_reply(const ExchangeFrame& f, uint32_t from) {
    if (probe && probe->on_reply(f, from)) next_probe();
  }

  void on_probe_timeout(uint64_t gen) {
    if (!probe || !probe->in_round(gen)) return;
    const std::string peer_name = topology.name_of(probe->peer());
    end_probe(caf::make_error(caf::sec::request_timeout, "node '" + peer_name + "' did not answer link probes in 5 s"));
  }

  template <class T>
  void end_probe(T&& answer) {
    probe_rp.deliver(std::forward<T>(answer));
    probe.reset();
  }

  BridgeStats snapshot(bool with_records) {
    BridgeStats s = stats;
    const transport::Counters c = wire->ep->counters();
    s.transport_dropped = c.dropped_truncated + c.dropped_malformed + c.dropped_size_mismatch + c.dropped_unknown_sender +
                          c.dropped_wrong_epoch;
    s.registrations = c.registrations;
    const transport::PoolStats p = wire->pool.stats();
    s.pool_slabs = p.slabs;
    s.pool_acquired = p.acquired;
    s.pool_reused = p.reused;
    if (with_records) s.records.assign(exchange.records().begin(), exchange.records().end());
    s.pending = exchange.pending();
    // The polling loop's own state: a loop that stopped would strand every frame after it.
    std::string by_node;
    for (const auto& [node, n] : wire->link.sends_in_flight())
      if (n > 0) by_node += " " + topology.name_of(node) + ":" + std::to_string(n);
    s.pending.push_back("link: sends in flight " + std::to_string(c.sends_posted - c.sends_completed) + (by_node.empty() ? "" : " (" + by_node.substr(1) + ")") + ", receives in flight " +
                        std::to_string(c.recvs_posted - c.recvs_completed) + ", backlog " + std::to_string(wire->link.backlog()) + ", last activity " + std::to_string(now_seconds() - last_activity) +
                        " s ago, polls " + std::to_string(polls) + (poll_now ? ", poll queued" : "") + (poll_timer ? ", timer set" : ""));
    return s;
  }
};

Bridge::Bridge(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, BridgeSetup setup)
    : JanusActor(cfg, ctx, "bridge@" + setup.node_name, "Bridge", setup.transport),
      impl_(std::make_unique<Impl>(this, ctx, std::move(setup))) {}

Bridge::~Bridge() = default;

void Bridge::on_exit() { impl_.reset(); }

caf::behavior Bridge::make_behavior() {
  impl_->kick();
  return with_stats({
      [=, this](poll_atom) { impl_->on_poll(false); },
      [=, this](timer_atom) { impl_->on_poll(true); },
      [=, this](probe_timeout_atom, uint64_t gen) { impl_->on_probe_timeout(gen); },
      [=, this](link_verdict_atom, uint32_t epoch, const std::string& why) { impl_->on_link_verdict(epoch, why); },
      [=, this](ShardActivations& a) {
        count();
        impl_->exchange.on_activations(a);
      },
      [=, this](MoeResult& r) {
        count();
        impl_->exchange.on_result(r);
      },
      [=, this](Membership& m) -> caf::result<void> {
        count();
        impl_->on_membership(m);
        epoch_ = m.epoch;
        return caf::unit;
      },
      [=, this](const NodeDirectory& d) -> caf::result<void> {
        count();
        Status s = impl_->on_directory(d);
        if (!s.ok()) return caf::make_error(caf::sec::runtime_error, impl_->who + ": " + s.message());
        return caf::unit;
      },
      [=, this](const ProbeLinks& p) -> caf::result<std::vector<transport::LinkFit>> {
        count();
        auto rp = make_response_promise<std::vector<transport::LinkFit>>();
        impl_->start_probe(rp, p.reps);
        return rp;
      },
      [=, this](const NodeLost& l) {
        count();
        impl_->on_node_lost(l);
      },
      [=, this](const DirectoryUpdate& u) -> caf::result<RelinkedAddress> {
        count();
        auto r = impl_->on_directory_update(u);
        if (!r.ok()) return caf::make_error(caf::sec::runtime_error, impl_->who + ": " + r.status().message());
        return std::move(*r);
      },
      [=, this](const PeerAddresses& p) -> caf::result<void> {
        count();
        Status s = impl_->on_peer_addresses(p);
        if (!s.ok()) return caf::make_error(caf::sec::runtime_error, impl_->who + ": " + s.message());
        return caf::unit;
      },
      [=, this](const LinkTable& t) {
        count();
        for (const transport::LinkFit& f : t.links) impl_->exchange.add_link(f);
      },
      [=, this](const BridgeStatsQuery& q) -> BridgeStats { return impl_->snapshot(q.records); },
      [=, this](const BridgeFault& x) -> caf::result<void> {
        Status s = impl_->wire->link.inject(x.kind, x.peer, impl_->setup.moe, impl_->exchange.epoch());
        if (!s.ok()) return caf::make_error(caf::sec::invalid_argument, s.message());
        return caf::unit;
      },
  });
}

}  // namespace janus::actors
