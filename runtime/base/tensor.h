// Activations on one device: a row-major [rows, cols] block of host or device memory,
// shared (not copied) between the actors of one process. Plain C++: no CAF, no CUDA
// headers, so every layer of the runtime may include it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus {

enum class DeviceKind : uint8_t { kCpu = 0, kCuda = 1 };

/// Where an actor computes: "cpu" or "cuda:N".
struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int ordinal = 0;

  /// Parses "cpu", "cuda" (= cuda:0) or "cuda:N".
  static Result<Device> parse(const std::string& text);
  std::string name() const;
  bool is_cpu() const { return kind == DeviceKind::kCpu; }
  bool operator==(const Device& o) const { return kind == o.kind && (kind == DeviceKind::kCpu || ordinal == o.ordinal); }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

struct Tensor {
  Device device;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  void* data = nullptr;            // first element
  std::shared_ptr<void> storage;   // keeps the memory alive (host or device)
  /// Device tensors handed over before the GPU has written them: the producer's
  /// completion marker (a CUDA event of its stream, gpu/backend/cuda/memory.h). A consumer
  /// on another stream waits on it on the device; one reading the bytes on the host waits
  /// for it there (copy_to_host does). Null when the contents are complete already.
  std::shared_ptr<void> ready;

  /// Zero-filled host memory.
  static Tensor host(DType dtype, int64_t rows, int64_t cols);
  size_t bytes() const { return static_cast<size_t>(rows * cols) * dtype_size(dtype); }
  bool empty() const { return rows == 0; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

}  // namespace janus
