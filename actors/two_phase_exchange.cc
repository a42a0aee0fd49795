#include "actors/two_phase_exchange.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "actors/actor_common.h"
#include "runtime/base/log.h"

namespace janus::actors {

namespace {

constexpr size_t kMaxRecords = 4096;

double seconds_since(double t0) { return now_seconds() - t0; }

}  // namespace

TwoPhaseExchange::TwoPhaseExchange(ExchangeSettings settings, const BridgeTopology& topology, NodeLink& link,
                                   BridgeStaging& staging, BridgeStats& stats, ExchangeOutlet& outlet)
    : settings_(std::move(settings)),
      topology_(topology),
      link_(&link),
      staging_(&staging),
      stats_(stats),
      outlet_(outlet) {
  cost_.set_full_duplex(settings_.full_duplex);
}

void TwoPhaseExchange::enter_epoch(uint32_t epoch) {
  const bool changed = !member_ || epoch != epoch_;
  member_ = true;
  epoch_ = epoch;
  if (changed) drop_all();
}

void TwoPhaseExchange::drop_all() {
  gathers_.clear();
  awaits_.clear();
  ingress_.clear();
  egress_.clear();
}

void TwoPhaseExchange::relink(NodeLink& link, BridgeStaging& staging) {
  drop_all();
  link_ = &link;
  staging_ = &staging;
}

std::string TwoPhaseExchange::admit(const ExchangeFrame& f, uint32_t from, FrameFault* fault) const {
  auto refuse = [&](FrameFault x, const std::string& m) {
    *fault = x;
    return m;
  };
  const BridgeTopology& t = topology_;
  if (!member_ || f.key.epoch != epoch_)
    return refuse(FrameFault::kWrongEpoch, f.key.to_string() + ": this node is in epoch " + std::to_string(epoch_));
  if (t.rank(f.origin) < 0) return refuse(FrameFault::kMalformed, "origin node '" + t.name_of(f.origin) + "' is not an attention node");
  const std::vector<int32_t>& origin_shards = t.shards_of(f.origin);
  const uint32_t d = t.designated_for(f.origin);
  auto same_shards = [&](const std::vector<int32_t>& want) {
    if (f.parts.size() != want.size()) return false;
    for (size_t i = 0; i < want.size(); ++i)
      if (f.parts[i].shard != want[i]) return false;
    return true;
  };
  if (f.kind == ExchangeKind::kDispatch) {
    if (!settings_.moe) return refuse(FrameFault::kUnknownSender, "a dispatch for an attention node");
    const bool direct = f.sender == f.origin && (f.mode != ExchangeMode::kCase2 || d == me());
    const bool relayed = f.mode == ExchangeMode::kCase2 && f.sender == d && d != me();
    if (!direct && !relayed)
      return refuse(FrameFault::kUnknownSender, "node '" + t.name_of(from) + "' may not send " + exchange_mode_name(f.mode) +
                                                    " dispatches of node '" + t.name_of(f.origin) + "' here");
    if (f.mode == ExchangeMode::kSingle) {
      if (f.parts.size() != 1) return refuse(FrameFault::kMalformed, "a single-phase dispatch carries one shard");
      const ExchangePart& p = f.parts[0];
      if (!t.hosts_shard(f.origin, p.shard))
        return refuse(FrameFault::kUnknownSender, "shard " + std::to_string(p.shard) + " is not on node '" + t.name_of(f.origin) + "'");
      if (p.instance < 0 || t.instance_node()[static_cast<size_t>(p.instance)] != static_cast<int32_t>(me()))
        return refuse(FrameFault::kMalformed, "instance " + std::to_string(p.instance) + " is not on this node");
    } else if (!same_shards(origin_shards)) {
      return refuse(FrameFault::kUnknownSender, "the parts are not the shards of node '" + t.name_of(f.origin) + "'");
    }
    return "";
  }
  if (f.kind == ExchangeKind::kCombine) {
    if (!t.is_moe(f.sender)) return refuse(FrameFault::kUnknownSender, "a combine from attention node '" + t.name_of(f.sender) + "'");
    if (!settings_.moe) {
      if (f.origin != me()) return refuse(FrameFault::kMalformed, "a combine for node '" + t.name_of(f.origin) + "' came here");
      if (f.mode == ExchangeMode::kCase2 && f.sender != d)
        return refuse(FrameFault::kUnknownSender, "a Case 2 combine from '" + t.name_of(f.sender) + "', not the designated node");
      for (const ExchangePart& p : f.parts)
        if (!t.hosts_shard(f.origin, p.shard))
          return refuse(FrameFault::kUnknownSender, "shard " + std::to_string(p.shard) + " is not on this node");
      return "";
    }
    if (f.mode != ExchangeMode::kCase2 || d != me() || f.sender == me())
      return refuse(FrameFault::kUnknownSender, "a MoE node's combine that this node does not gather");
    if (!f.error.empty()) return "";
    if (!same_shards(origin_shards))
      return refuse(FrameFault::kUnknownSender, "the parts are not the shards of node '" + t.name_of(f.origin) + "'");
    return "";
  }
  return refuse(FrameFault::kMalformed, "unknown frame kind");
}

// -- attention side: phase 1 and dispatch --------------------------------------------------------

void TwoPhaseExchange::on_activations(ShardActivations& a) {
  if (!member_ || a.key.epoch != epoch_) {
    ++stats_.dropped_stale;
    return;
  }
  const std::vector<int32_t>& mine = topology_.shards_of(me());
  if (std::find(mine.begin(), mine.end(), a.shard) == mine.end()) {
    log_error(settings_.who, "activations of shard " + std::to_string(a.shard) + ", which is not on this node");
    return;
  }
  const LayerBatchKey key = a.key;
  auto& g = gathers_[key];
  g[a.shard] = std::move(a);
  if (g.size() < mine.size()) return;
  auto parts = std::move(g);
  gathers_.erase(key);
  dispatch(key, parts);
}

transport::ExchangeLoad TwoPhaseExchange::load_of(int64_t rows_here) const {
  transport::ExchangeLoad l;
  const auto& mine = topology_.shards_of(me());
  const int64_t per_shard = mine.empty() ? 0 : (rows_here + static_cast<int64_t>(mine.size()) - 1) / static_cast<int64_t>(mine.size());
  // Every attention node is assumed to carry what this one does: a node knows only
  // its own rows when it decides, and shards run in lockstep on similar batches.
  for (int shards : topology_.exchange().shards) l.rows.push_back(std::vector<int64_t>(static_cast<size_t>(shards), per_shard));
  l.forward_bytes_per_row = static_cast<uint64_t>(settings_.hidden) * 4 + (settings_.egate ? 0 : static_cast<uint64_t>(settings_.top_k) * 8);
  l.reverse_bytes_per_row = static_cast<uint64_t>(settings_.hidden) * 8;
  return l;
}

void TwoPhaseExchange::dispatch(const LayerBatchKey& key, std::map<int32_t, ShardActivations>& parts) {
  if (auto gone = topology_.absent()) {
    // A lost node the Scaler is replacing: this step is about to be aborted and re-run.
    if (gone->moving) {
      ++stats_.dropped_stale;
      return;
    }
    return fail_shards(key, "node '" + topology_.name_of(gone->node) + "' went away (" + gone->reason + ")");
  }
  const transport::ExchangeTopology& topo = topology_.exchange();
  Await a;
  a.t0 = now_seconds();
  for (const auto& [s, x] : parts) a.rows += x.h.rows;
  const transport::ExchangeLoad load = load_of(a.rows);
  for (int m = 0; m < 3; ++m) a.predicted[m] = cost_.predict(static_cast<ExchangeMode>(m), topo, load);
  a.mode = settings_.auto_mode ? cost_.choose(topo, load) : settings_.pinned;
  a.designated = topology_.designated_for(me());
  ExchangeFrame f;
  f.key = key;
  f.kind = ExchangeKind::kDispatch;
  f.mode = a.mode;
  f.origin = me();
  if (a.mode == ExchangeMode::kSingle) {
    // The baseline: each shard's rows, unaggregated, to every instance.
    const std::vector<int32_t>& instance_node = topology_.instance_node();
    for (const auto& [s, x] : parts) {
      auto c = staging_->pack({&x});
      if (!c.ok()) return fail_shards(key, c.status().message());
      for (size_t i = 0; i < instance_node.size(); ++i) {
        ExchangeFrame g = f;
        g.parts = c->parts;
        g.parts[0].instance = static_cast<int32_t>(i);
        link_->send_frame(static_cast<uint32_t>(instance_node[i]), g, c->hold, c->base, c->bytes);
      }
    }
  } else {
    std::vector<const ShardActivations*> all;
    for (const auto& [s, x] : parts) all.push_back(&x);
    auto c = staging_->pack(all);
    if (!c.ok()) return fail_shards(key, c.status().message());
    f.parts = c->parts;
    if (a.mode == ExchangeMode::kCase1) {
      for (uint32_t m : topo.moe_nodes) link_->send_frame(m, f, c->hold, c->base, c->bytes);
    } else {
      f.designated = a.designated;
      link_->send_frame(a.designated, f, c->hold, c->base, c->bytes);
    }
  }
  awaits_[key] = std::move(a);
}

// -- attention side: the way back -------------------------------------------------------------

void TwoPhaseExchange::on_combine(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base) {
  if (settings_.moe) return on_peer_sums(f, hold, base);
  auto it = awaits_.find(f.key);
  if (it == awaits_.end()) {
    ++stats_.dropped_stale;
    log_warn(settings_.who, "a combine for " + f.key.to_string() + " from node '" + topology_.name_of(f.sender) + "' that nothing waits for");
    return;
  }
  Await& a = it->second;
  if (!f.error.empty()) return fail_await(f.key, "MoE node '" + topology_.name_of(f.sender) + "': " + f.error);
  if (f.mode != a.mode) return fail_await(f.key, "node '" + topology_.name_of(f.sender) + "' answered in " + exchange_mode_name(f.mode));
  a.moe_ns = std::max(a.moe_ns, f.moe_busy_ns);
  if (a.mode == ExchangeMode::kSingle) {
    for (const ExchangePart& p : f.parts) {
      SingleSlot& slot = a.single[{f.sender, p.shard}];
      slot.total = std::max<uint32_t>(1, p.parts_total);
      slot.parts[p.part] = p.has_h ? payload_view(hold, base, p.h, p.dtype, p.rows, settings_.hidden) : Tensor{};
    }
  } else {
    Contribution c;
    c.hold = hold;
    c.base = base;
    c.parts = f.parts;
    a.from[f.sender] = std::move(c);
  }
  if (complete(a)) deliver(f.key);
}

bool TwoPhaseExchange::complete(const Await& a) const {
  const std::vector<uint32_t>& moe_nodes = topology_.exchange().moe_nodes;
  switch (a.mode) {
    case ExchangeMode::kCase1: return a.from.size() == moe_nodes.size();
    case ExchangeMode::kCase2: return a.from.count(a.designated) != 0;
    case ExchangeMode::kSingle:
      for (uint32_t m : moe_nodes)
        for (int32_t s : topology_.shards_of(me())) {
          auto it = a.single.find({m, s});
          if (it == a.single.end() || it->second.parts.size() < it->second.total) return false;
        }
      return true;
  }
  return false;
}

void TwoPhaseExchange::deliver(const LayerBatchKey& key) {
  Await& a = awaits_.at(key);
  for (int32_t s : topology_.shards_of(me())) {
    MoeResult r;
    r.key = key;
    r.shard = s;
    // MoE node order (then part order): the same sums in the same order every time.
    for (uint32_t m : topology_.exchange().moe_nodes) {
      if (a.mode == ExchangeMode::kSingle) {
        for (auto& [i, t] : a.single.at({m, s}).parts)
          if (t.rows > 0) r.partials.push_back(t);
        continue;
      }
      auto it = a.from.find(m);
      if (it == a.from.end()) continue;
      const ExchangePart* p = it->second.part(s);
      if (p != nullptr && p->has_h)
        r.partials.push_back(payload_view(it->second.hold, it->second.base, p->h, p->dtype, p->rows, settings_.hidden));
    }
    outlet_.to_shard(std::move(r));
  }
  ExchangeRecord rec;
  rec.key = key;
  rec.mode = static_cast<int32_t>(a.mode);
  rec.rows = a.rows;
  rec.round_s = seconds_since(a.t0);
  rec.moe_s = static_cast<double>(a.moe_ns) * 1e-9;
  for (int m = 0; m < 3; ++m) rec.predicted_s[m] = a.predicted[m];
  records_.push_back(rec);
  while (records_.size() > kMaxRecords) records_.pop_front();
  awaits_.erase(key);
}

std::vector<std::string> TwoPhaseExchange::pending(size_t limit) const {
  std::vector<std::string> out;
  auto names = [&](const auto& m) {
    std::string s;
    for (const auto& [n, v] : m) s += (s.empty() ? "" : ",") + topology_.name_of(n);
    return s.empty() ? std::string("none") : s;
  };
  for (const auto& [k, a] : awaits_) {
    if (out.size() >= limit) return out;
    std::string s = "awaits " + k.to_string() + " (" + exchange_mode_name(a.mode) + ", " + std::to_string(a.rows) + " rows, " +
                    std::to_string(seconds_since(a.t0)) + " s): ";
    if (a.mode == ExchangeMode::kSingle) s += std::to_string(a.single.size()) + " (node, shard) slots in";
    else if (a.mode == ExchangeMode::kCase2) s += "the sums of designated node '" + topology_.name_of(a.designated) + "'";
    else s += "sums in from " + names(a.from);
    out.push_back(s);
  }
  for (const auto& [k, in] : ingress_) {
    if (out.size() >= limit) return out;
    std::string s = "ingress " + k.to_string() + ": dispatched by " + names(in.routes) + ", " + std::to_string(in.origins_done) +
                    " origin(s) answered";
    for (const auto& [shard, n] : in.copies) s += ", shard " + std::to_string(shard) + " copies " + std::to_string(n);
    out.push_back(s);
  }
  for (const auto& [k, e] : egress_) {
    if (out.size() >= limit) return out;
    out.push_back("egress " + k.first.to_string() + " for '" + topology_.name_of(k.second) + "': " + std::to_string(e.results.size()) + " of " +
                  std::to_string(topology_.shards_of(k.second).size()) + " shard results, sums from " + names(e.contributions));
  }
  return out;
}

void TwoPhaseExchange::fail_shards(const LayerBatchKey& key, const std::string& why) {
  ++stats_.failed_batches;
  log_error(settings_.who, "layer batch " + key.to_string() + " failed: " + why);
  for (int32_t s : topology_.shards_of(me())) {
    MoeResult r;
    r.key = key;
    r.shard = s;
    r.error = unavailable(why);
    outlet_.to_shard(std::move(r));
  }
}

void TwoPhaseExchange::fail_await(const LayerBatchKey& key, const std::string& why) {
  awaits_.erase(key);
  fail_shards(key, why);
}

void TwoPhaseExchange::fail_all(const std::string& why) {
  std::vector<LayerBatchKey> keys;
  for (const auto& [k, a] : awaits_) keys.push_back(k);
  for (const auto& [k, g] : gathers_) keys.push_back(k);
  awaits_.clear();
  gathers_.clear();
  for (const LayerBatchKey& k : keys) fail_shards(k, why);
}

// -- MoE side ------------------------------------------------------------------------------------

void TwoPhaseExchange::on_dispatch(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base) {
  Ingress& in = ingress_[f.key];
  const uint32_t d = topology_.designated_for(f.origin);
  if (f.mode == ExchangeMode::kCase2 && d == me() && f.sender == f.origin) {
    // Case 2: this node received for all; pass the payload on as it arrived.
    for (uint32_t m : topology_.exchange().moe_nodes)
      if (m != me() && link_->send_frame(m, f, hold, base, f.payload_bytes)) ++stats_.relayed;
  }
  in.routes[f.origin] = {f.mode, d};
  if (f.mode == ExchangeMode::kSingle) {
    // Every local instance gets its own copy; the gate runs once all are here, as it
    // would on the last instance to receive.
    if (++in.copies[f.parts[0].shard] < topology_.instances_on(me())) return;
  }
  for (const ExchangePart& p : f.parts) {
    ShardActivations a;
    a.key = f.key;
    a.shard = p.shard;
    if (p.has_h && p.rows > 0) {
      a.h = payload_view(hold, base, p.h, p.dtype, p.rows, settings_.hidden);
    } else {
      a.h.dtype = p.dtype;
      a.h.rows = 0;
      a.h.cols = settings_.hidden;
    }
    if (p.topk_ids.bytes > 0) {
      a.topk_ids.resize(p.topk_ids.bytes / 4);
      a.topk_weights.resize(p.topk_weights.bytes / 4);
      std::memcpy(a.topk_ids.data(), base + p.topk_ids.offset, p.topk_ids.bytes);
      std::memcpy(a.topk_weights.data(), base + p.topk_weights.offset, p.topk_weights.bytes);
    }
    outlet_.to_moe_side(std::move(a));
  }
  in.last_in = now_seconds();
}

void TwoPhaseExchange::on_result(MoeResult& r) {
  if (!member_ || r.key.epoch != epoch_) {
    ++stats_.dropped_stale;
    return;
  }
  if (r.shard < 0 || static_cast<size_t>(r.shard) >= topology_.shard_node().size())
    return log_error(settings_.who, "a result for shard " + std::to_string(r.shard) + ", which does not exist");
  const uint32_t origin = static_cast<uint32_t>(topology_.shard_node()[static_cast<size_t>(r.shard)]);
  Route route{settings_.auto_mode ? ExchangeMode::kCase1 : settings_.pinned, topology_.designated_for(origin)};
  auto in = ingress_.find(r.key);
  uint64_t moe_ns = 0;
  if (in != ingress_.end()) {
    if (auto it = in->second.routes.find(origin); it != in->second.routes.end()) route = it->second;
    moe_ns = static_cast<uint64_t>(seconds_since(in->second.last_in) * 1e9);
  }
  outlet_.on_activity();
  const LayerBatchKey key = r.key;
  if (route.mode == ExchangeMode::kSingle) {
    send_single(r, origin, moe_ns);
    return origin_part_done(key, origin, r.shard);
  }
  Egress& e = egress_[{key, origin}];
  e.results[r.shard] = std::move(r);
  if (e.results.size() < topology_.shards_of(origin).size()) return;
  Contribution own = staging_->reduce(e.results, topology_.shards_of(origin), moe_ns);
  e.results.clear();
  if (route.mode == ExchangeMode::kCase1 || route.designated != me()) {
    const uint32_t to = route.mode == ExchangeMode::kCase1 ? origin : route.designated;
    send_sums(to, key, route.mode, origin, own);
    egress_.erase({key, origin});
  } else {
    e.contributions[me()] = std::move(own);
    finish_designated(key, origin);
  }
  origin_done(key);
}

void TwoPhaseExchange::origin_part_done(const LayerBatchKey& key, uint32_t origin, int32_t shard) {
  // Single-phase: an origin is done when all its shards' results went out.
  Egress& e = egress_[{key, origin}];
  e.results[shard];  // marks the shard
  if (e.results.size() < topology_.shards_of(origin).size()) return;
  egress_.erase({key, origin});
  origin_done(key);
}

void TwoPhaseExchange::origin_done(const LayerBatchKey& key) {
  auto in = ingress_.find(key);
  if (in != ingress_.end() && ++in->second.origins_done >= topology_.exchange().attention_nodes.size()) ingress_.erase(in);
}

void TwoPhaseExchange::send_sums(uint32_t to, const LayerBatchKey& key, ExchangeMode mode, uint32_t origin, const Contribution& c) {
  ExchangeFrame f;
  f.key = key;
  f.kind = ExchangeKind::kCombine;
  f.mode = mode;
  f.origin = origin;
  f.designated = mode == ExchangeMode::kCase2 ? topology_.designated_for(origin) : 0;
  f.parts = c.parts;
  f.error = c.error;
  f.moe_busy_ns = c.moe_ns;
  if (!c.error.empty()) {
    f.parts.clear();
    link_->send_frame(to, f, nullptr, nullptr, 0);
    return;
  }
  link_->send_frame(to, f, c.hold, c.base, c.bytes);
}

/// Single-phase: every instance's partial sums for the shard go to it on their own.
void TwoPhaseExchange::send_single(const MoeResult& r, uint32_t origin, uint64_t moe_ns) {
  ExchangeFrame f;
  f.key = r.key;
  f.kind = ExchangeKind::kCombine;
  f.mode = ExchangeMode::kSingle;
  f.origin = origin;
  f.moe_busy_ns = moe_ns;
  f.error = r.error.message();
  std::vector<const Tensor*> ps;
  for (const Tensor& t : r.partials)
    if (t.rows > 0) ps.push_back(&t);
  if (!r.error.ok() || ps.empty()) {
    ExchangePart p;
    p.shard = r.shard;
    p.dtype = DType::kF64;
    p.parts_total = 0;
    f.parts = {p};
    link_->send_frame(origin, f, nullptr, nullptr, 0);
    return;
  }
  for (size_t j = 0; j < ps.size(); ++j) {
    auto c = staging_->stage(r.shard, *ps[j]);
    if (!c.ok()) {
      log_error(settings_.who, c.status().to_string());
      continue;
    }
    f.parts = c->parts;
    f.parts[0].part = static_cast<uint32_t>(j);
    f.parts[0].parts_total = static_cast<uint32_t>(ps.size());
    link_->send_frame(origin, f, c->hold, c->base, c->bytes);
  }
}

/// Case 2, the designated node: another MoE node's sums for an origin it relays for.
void TwoPhaseExchange::on_peer_sums(ExchangeFrame& f, const std::shared_ptr<void>& hold, const char* base) {
  Egress& e = egress_[{f.key, f.origin}];
  Contribution c;
  c.hold = hold;
  c.base = base;
  c.parts = f.parts;
  c.error = f.error;
  c.moe_ns = f.moe_busy_ns;
  e.contributions[f.sender] = std::move(c);
  finish_designated(f.key, f.origin);
}

void TwoPhaseExchange::finish_designated(const LayerBatchKey& key, uint32_t origin) {
  auto it = egress_.find({key, origin});
  const std::vector<uint32_t>& moe_nodes = topology_.exchange().moe_nodes;
  if (it == egress_.end() || it->second.contributions.size() < moe_nodes.size()) return;
  std::map<uint32_t, Contribution>& cs = it->second.contributions;
  Contribution out;
  for (auto& [m, c] : cs) {
    out.moe_ns = std::max(out.moe_ns, c.moe_ns);
    if (!c.error.empty() && out.error.empty()) out.error = "node '" + topology_.name_of(m) + "': " + c.error;
  }
  if (out.error.empty()) staging_->sum_nodes(cs, topology_.shards_of(origin), moe_nodes, &out);
  egress_.erase(it);
  send_sums(origin, key, ExchangeMode::kCase2, origin, out);
}

}  // namespace janus::actors
