// A MoE layer's routing left where the gate computed it. A GPU router hands the Scheduler
// the top-k ids and weights as device memory (ready on a completion marker) so that, when
// there is nothing to schedule (every expert has one replica), the expert instances build
// their work straight from it and no host ever waits for the gate. The same bytes travel
// to pinned host memory behind the device work, for what only the host does: scheduling
// policies when there is a choice, activation statistics, a_max, other nodes. Plain C++
// (no CUDA, no CAF): the actors' messages carry it.
#pragma once

#include <cstdint>
#include <functional>

#include "runtime/base/status.h"
#include "runtime/base/tensor.h"

namespace janus {

struct DeviceRouting {
  int64_t rows = 0;
  int top_k = 0;
  /// [2, rows * top_k] on the router's device: row 0 the expert ids (int32 bit patterns),
  /// row 1 their gate weights (fp32). Tensor::ready is the gate's completion marker.
  Tensor device;
  /// The same [2, rows * top_k] in pinned host memory, written once wait_host() returns.
  Tensor host;
  std::function<Status()> wait_host;   // blocks until `host` is written
  std::function<bool()> host_written;  // whether it is, without waiting

  bool present() const { return device.storage != nullptr; }
  int64_t choices() const { return rows * top_k; }
  const int32_t* device_ids() const { return static_cast<const int32_t*>(device.data); }
  const float* device_weights() const { return reinterpret_cast<const float*>(device_ids() + choices()); }
  /// Valid after wait_host().
  const int32_t* host_ids() const { return static_cast<const int32_t*>(host.data); }
  const float* host_weights() const { return reinterpret_cast<const float*>(host_ids() + choices()); }
};

}  // namespace janus
