#include "runtime/base/expert_layout.h"

#include <algorithm>

namespace janus {

Result<ExpertLayout> ExpertLayout::create(int num_experts, int slots, std::vector<std::vector<int32_t>> placement) {
  if (num_experts <= 0) return invalid_argument("expert layout: the model has no experts");
  if (slots <= 0) return invalid_argument("expert layout: slots must be positive");
  if (placement.empty()) return invalid_argument("expert layout: no expert instances");
  ExpertLayout l;
  l.num_experts_ = num_experts;
  l.slots_ = slots;
  l.replicas_of_.resize(static_cast<size_t>(num_experts));
  for (size_t i = 0; i < placement.size(); ++i) {
    const auto& experts = placement[i];
    if (static_cast<int>(experts.size()) > slots)
      return invalid_argument("expert layout: instance " + std::to_string(i) + " holds " + std::to_string(experts.size()) +
                              " experts but has only " + std::to_string(slots) + " slots");
    for (size_t s = 0; s < experts.size(); ++s) {
      const int32_t e = experts[s];
      if (e < 0 || e >= num_experts)
        return invalid_argument("expert layout: instance " + std::to_string(i) + " slot " + std::to_string(s) + " names expert " +
                                std::to_string(e) + ", outside [0, " + std::to_string(num_experts) + ")");
      if (std::find(experts.begin(), experts.begin() + static_cast<long>(s), e) != experts.begin() + static_cast<long>(s))
        return invalid_argument("expert layout: instance " + std::to_string(i) + " holds expert " + std::to_string(e) +
                                " twice (replicas of one expert must be on different instances)");
      const int32_t r = static_cast<int32_t>(l.replica_expert_.size());
      l.replica_expert_.push_back(e);
      l.replica_instance_.push_back(static_cast<int32_t>(i));
      l.replicas_of_[static_cast<size_t>(e)].push_back(r);
    }
  }
  for (int e = 0; e < num_experts; ++e)
    if (l.replicas_of_[static_cast<size_t>(e)].empty())
      return invalid_argument("expert layout: expert " + std::to_string(e) + " has no replica on any instance");
  l.placement_ = std::move(placement);
  return l;
}

int32_t ExpertLayout::replica_on(int expert, int instance) const {
  for (int32_t r : replicas_of(expert))
    if (replica_instance_[static_cast<size_t>(r)] == instance) return r;
  return -1;
}

std::string ExpertLayout::to_string() const {
  std::string s;
  for (size_t i = 0; i < placement_.size(); ++i) {
    if (i) s += " | ";
    s += "instance " + std::to_string(i) + ":";
    for (int32_t e : placement_[i]) s += " " + std::to_string(e);
  }
  return s;
}

}  // namespace janus
