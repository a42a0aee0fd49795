#include "runtime/base/tensor.h"

#include <cstdlib>
#include <cstring>

namespace janus {

Result<Device> Device::parse(const std::string& text) {
  if (text == "cpu") return Device{DeviceKind::kCpu, 0};
  if (text == "cuda") return Device{DeviceKind::kCuda, 0};
  if (text.rfind("cuda:", 0) == 0) {
    const std::string n = text.substr(5);
    char* end = nullptr;
    long v = std::strtol(n.c_str(), &end, 10);
    if (!n.empty() && *end == '\0' && v >= 0 && v < 1024) return Device{DeviceKind::kCuda, static_cast<int>(v)};
  }
  return invalid_argument("device '" + text + "' is not \"cpu\" or \"cuda:N\"");
}

std::string Device::name() const { return kind == DeviceKind::kCpu ? "cpu" : "cuda:" + std::to_string(ordinal); }

Tensor Tensor::host(DType dtype, int64_t rows, int64_t cols) {
  Tensor t;
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  const size_t n = std::max<size_t>(t.bytes(), 1);
  void* p = std::calloc(1, n);
  t.storage = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data = p;
  return t;
}

}  // namespace janus
