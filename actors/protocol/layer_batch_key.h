// The key of one layer batch — (step, layer, micro-batch) under a membership epoch — that
// every data-plane message carries. The epoch fences membership changes: a message from
// another epoch is dropped, logged and counted, never applied.
#pragma once

#include <caf/meta/type_name.hpp>
#include <cstdint>
#include <string>

namespace janus::actors {

using step_t = uint64_t;

struct LayerBatchKey {
  step_t step = 0;
  int32_t layer = 0;
  int32_t micro_batch = 0;
  uint32_t epoch = 0;

  bool operator==(const LayerBatchKey& o) const {
    return step == o.step && layer == o.layer && micro_batch == o.micro_batch && epoch == o.epoch;
  }
  // Without the epoch: one epoch's batches are in flight at a time (a new membership
  // drops the old ones), so maps keyed by it never hold two epochs.
  bool operator<(const LayerBatchKey& o) const {
    if (step != o.step) return step < o.step;
    if (layer != o.layer) return layer < o.layer;
    return micro_batch < o.micro_batch;
  }
  std::string to_string() const;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, LayerBatchKey& x) {
  return f(caf::meta::type_name("janus.LayerBatchKey"), x.step, x.layer, x.micro_batch, x.epoch);
}

}  // namespace janus::actors
