#include "actors/link_probe.h"

#include <algorithm>
#include <cstring>

#include "actors/actor_common.h"
#include "actors/messages.h"
#include "runtime/base/log.h"

namespace janus::actors {

namespace {

constexpr int kBurst = 16;  // probes in the burst that measures the per-message cost

}  // namespace

LinkProbe::LinkProbe(NodeLink& link, transport::BufferPool& pool, const BridgeTopology& topology, uint32_t me, bool moe,
                     int reps, std::string who)
    : link_(link), pool_(pool), topology_(topology), me_(me), who_(std::move(who)) {
  if (reps > 0)
    for (int& r : reps_) r = std::max(2, r * reps / 24);
  for (uint32_t m : topology_.exchange().moe_nodes)
    if (m != me_ && (!moe || m > me_)) peers_.push_back(m);
}

Status LinkProbe::start() {
  JANUS_ASSIGN_OR_RETURN(payload_, pool_.acquire(sizes_.back()));
  std::memset(payload_.data, 0x5a, payload_.capacity);
  payload_hold_ = pool_.hold(payload_);
  return Status::Ok();
}

void LinkProbe::send_probe() {
  ExchangeFrame f;
  f.kind = ExchangeKind::kProbe;
  f.origin = me_;
  f.probe_seq = ++seq_;
  const size_t bytes = burst_ ? 0 : sizes_[size_i_];
  link_.send_frame(peers_[peer_i_], f, payload_hold_, payload_.data, bytes);
}

uint64_t LinkProbe::send_round() {
  ++gen_;
  if (burst_) {
    burst_left_ = kBurst;
    t0_ = now_seconds();
    for (int i = 0; i < kBurst; ++i) send_probe();
    return gen_;
  }
  t0_ = now_seconds();
  send_probe();
  return gen_;
}

bool LinkProbe::on_reply(const ExchangeFrame& f, uint32_t from) {
  if (finished() || from != peers_[peer_i_]) return false;
  const double t = now_seconds() - t0_;
  if (burst_) {
    if (--burst_left_ > 0) return false;
    auto fit = transport::fit_link(me_, from, sizes_done_, medians_, kBurst, t);
    if (fit.ok()) fits_.push_back(*fit);
    else log_warn(who_, "link to '" + topology_.name_of(from) + "': " + fit.status().message());
    burst_ = false;
    size_i_ = 0;
    rep_ = 0;
    medians_.clear();
    sizes_done_.clear();
    ++peer_i_;
    return true;
  }
  if (f.probe_seq != seq_) return false;
  samples_.push_back(t / 2);
  if (++rep_ >= reps_[size_i_]) {
    std::sort(samples_.begin(), samples_.end());
    medians_.push_back(samples_[samples_.size() / 2]);
    sizes_done_.push_back(static_cast<double>(sizes_[size_i_]));
    samples_.clear();
    rep_ = 0;
    if (++size_i_ >= sizes_.size()) burst_ = true;
  }
  return true;
}

}  // namespace janus::actors
