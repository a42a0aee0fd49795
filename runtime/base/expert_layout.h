// Where the expert replicas live: n_e expert instances with C slots each, every logical
// expert replicated on one or more instances, never twice on one instance.
//
// Physical replica ids number the filled slots instance-major: instance 0's slots in
// order, then instance 1's, ... so a replica id says where the weights are without a
// lookup table on the device side.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/status.h"

namespace janus {

class ExpertLayout {
 public:
  ExpertLayout() = default;

  /// `placement[i]` lists the logical experts held by instance i, in slot order.
  /// Refused (invalid_argument, naming the instance and expert): an expert id out of
  /// [0, num_experts), an instance over its `slots`, an expert twice on one instance,
  /// an expert with no replica anywhere.
  static Result<ExpertLayout> create(int num_experts, int slots, std::vector<std::vector<int32_t>> placement);

  int num_experts() const { return num_experts_; }
  int num_instances() const { return static_cast<int>(placement_.size()); }
  int slots() const { return slots_; }
  int num_replicas() const { return static_cast<int>(replica_expert_.size()); }

  /// Physical replica ids of a logical expert, in ascending instance order.
  const std::vector<int32_t>& replicas_of(int expert) const { return replicas_of_[static_cast<size_t>(expert)]; }
  int32_t expert_of(int32_t replica) const { return replica_expert_[static_cast<size_t>(replica)]; }
  int32_t instance_of(int32_t replica) const { return replica_instance_[static_cast<size_t>(replica)]; }
  /// The logical experts on an instance, in slot order.
  const std::vector<int32_t>& experts_on(int instance) const { return placement_[static_cast<size_t>(instance)]; }
  /// The replica id of `expert` on `instance`, or -1.
  int32_t replica_on(int expert, int instance) const;
  const std::vector<std::vector<int32_t>>& placement() const { return placement_; }

  /// "instance 0: 0 1 2 | instance 1: 3 4 0 | ..."
  std::string to_string() const;

 private:
  int num_experts_ = 0;
  int slots_ = 0;
  std::vector<std::vector<int32_t>> placement_;
  std::vector<std::vector<int32_t>> replicas_of_;
  std::vector<int32_t> replica_expert_, replica_instance_;
};

}  // namespace janus
