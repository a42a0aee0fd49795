#include "actors/partial_gather.h"

namespace janus::actors {

void GatherLedger::restart(uint32_t epoch, int32_t implicit_slots) {
  epoch_ = epoch;
  implicit_slots_ = implicit_slots;
  due_.clear();
}

void GatherLedger::expect(const LayerBatchKey& key, const std::vector<int32_t>& from) {
  due_[key] = std::set<int32_t>(from.begin(), from.end());
}

GatherOutcome GatherLedger::take(const LayerBatchKey& key, int32_t from, std::string* why) {
  if (key.epoch != epoch_) {
    *why = "of epoch " + std::to_string(key.epoch) + " (current epoch " + std::to_string(epoch_) + ")";
    return GatherOutcome::kDropped;
  }
  if (implicit_slots_ > 0 && (from < 0 || from >= implicit_slots_)) {
    *why = "for " + key.to_string() + " from unknown " + name(from);
    return GatherOutcome::kDropped;
  }
  auto it = due_.find(key);
  if (it == due_.end() && implicit_slots_ > 0) {
    std::set<int32_t> all;
    for (int32_t s = 0; s < implicit_slots_; ++s) all.insert(s);
    it = due_.emplace(key, std::move(all)).first;
  }
  if (it == due_.end() || !it->second.count(from)) {
    // A slot that answered already is refused too: each slot counts once, so a
    // repeated reply cannot complete a batch that is still short.
    *why = "for " + key.to_string() + " from " + name(from) + ": nothing waits for it";
    return GatherOutcome::kDropped;
  }
  it->second.erase(from);
  if (!it->second.empty()) return GatherOutcome::kWaiting;
  due_.erase(it);
  return GatherOutcome::kComplete;
}

}  // namespace janus::actors
