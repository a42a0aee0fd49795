// Helpers for holding each CUDA kernel to its CPU twin: RAII device buffers, uploads and
// downloads in any dtype, NaN poisoning (so that unwritten outputs show), random inputs
// (never zeros) and a max-norm comparison that explains itself when it fails.
#pragma once

#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::cuda::test {

/// Fails the test with the call, its error string, and where.
#define JANUS_CUDA_CHECK(call)                                                                              \
  do {                                                                                                      \
    cudaError_t e_ = (call);                                                                                \
    REQUIRE_MESSAGE(e_ == cudaSuccess, #call << " -> " << cudaGetErrorName(e_) << ": " << cudaGetErrorString(e_)); \
  } while (0)

#define JANUS_STATUS_CHECK(expr)                                   \
  do {                                                             \
    ::janus::Status s_ = (expr);                                   \
    REQUIRE_MESSAGE(s_.ok(), #expr << " -> " << s_.to_string());   \
  } while (0)

/// Synchronises and fails on any asynchronous error (a faulting kernel shows here).
#define JANUS_CUDA_SYNC() JANUS_CUDA_CHECK(cudaDeviceSynchronize())

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) {
      cudaError_t e = cudaMalloc(&ptr_, bytes);
      REQUIRE_MESSAGE(e == cudaSuccess, "cudaMalloc(" << bytes << ") -> " << cudaGetErrorString(e));
    }
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

  /// All bytes 0xff: NaN in F32 and BF16, -1 in int32.
  void poison() {
    if (ptr_) JANUS_CUDA_CHECK(cudaMemset(ptr_, 0xff, bytes_));
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

inline std::vector<char> to_dtype(const std::vector<float>& v, DType t) {
  std::vector<char> out(v.size() * dtype_size(t));
  convert_from_f32(v.data(), t, out.data(), v.size());
  return out;
}

/// The values as a kernel reading them in dtype t sees them.
inline std::vector<float> round_to(const std::vector<float>& v, DType t) {
  std::vector<float> out(v.size());
  auto q = to_dtype(v, t);
  convert_to_f32(q.data(), t, out.data(), v.size());
  return out;
}

inline DeviceBuffer upload(const std::vector<float>& v, DType t) {
  auto bytes = to_dtype(v, t);
  DeviceBuffer b(bytes.size());
  JANUS_CUDA_CHECK(cudaMemcpy(b.get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  return b;
}

template <class T>
DeviceBuffer upload_raw(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  if (!v.empty()) JANUS_CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}

inline std::vector<float> download(const DeviceBuffer& b, DType t, size_t n) {
  std::vector<char> bytes(n * dtype_size(t));
  JANUS_CUDA_CHECK(cudaDeviceSynchronize());
  JANUS_CUDA_CHECK(cudaMemcpy(bytes.data(), b.get(), bytes.size(), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  convert_to_f32(bytes.data(), t, out.data(), n);
  return out;
}

template <class T>
std::vector<T> download_raw(const DeviceBuffer& b, size_t n) {
  std::vector<T> out(n);
  JANUS_CUDA_CHECK(cudaDeviceSynchronize());
  if (n) JANUS_CUDA_CHECK(cudaMemcpy(out.data(), b.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

/// Uniform in [-scale, scale), redrawn when exactly 0.
inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) {
    do x = d(rng);
    while (x == 0.f);
  }
  return v;
}

/// What differs between got and want, in max-norm, and where.
struct Diff {
  double rel = 0;       // max |got - want| / max |want|
  double max_abs = 0;   // max |want|
  size_t worst = 0;     // index of the largest |got - want|
  size_t nans = 0;      // NaN or inf in got where want is finite
  size_t first_nan = 0;
  std::string detail;   // a few of the worst elements
};

inline Diff diff(const std::vector<float>& got, const std::vector<float>& want, double tol) {
  Diff d;
  double num = 0;
  for (size_t i = 0; i < want.size(); ++i) d.max_abs = std::max(d.max_abs, std::fabs(static_cast<double>(want[i])));
  std::vector<std::pair<double, size_t>> bad;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      if (d.nans++ == 0) d.first_nan = i;
      continue;
    }
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (e > num) num = e, d.worst = i;
    if (e > tol * d.max_abs) bad.emplace_back(e, i);
  }
  d.rel = d.max_abs > 0 ? num / d.max_abs : num;
  std::sort(bad.rbegin(), bad.rend());
  std::ostringstream os;
  os << bad.size() << " elements beyond tolerance";
  for (size_t k = 0; k < std::min<size_t>(bad.size(), 6); ++k)
    os << "; [" << bad[k].second << "] got " << got[bad[k].second] << " want " << want[bad[k].second];
  if (d.nans) os << "; " << d.nans << " non-finite, first at [" << d.first_nan << "] = " << got[d.first_nan];
  d.detail = os.str();
  return d;
}

/// Checks got against want: relative max-norm error within tol and no NaN where the
/// twin has a number. On failure prints what, the error, and the worst elements.
#define JANUS_CHECK_CLOSE(got, want, tol, what)                                                               \
  do {                                                                                                        \
    const auto d_ = ::janus::cuda::test::diff((got), (want), (tol));                                          \
    INFO((what) << ": rel err " << d_.rel << " (tol " << (tol) << "), max |want| " << d_.max_abs << "; "         \
              << d_.detail);                                                                                  \
    CHECK(d_.nans == 0);                                                                                      \
    CHECK(d_.rel <= (tol));                                                                                   \
    if (d_.nans != 0 || !(d_.rel <= (tol)))                                                                   \
      std::printf("FAILED %s: rel err %.3g (tol %.1g), %s\n", std::string(what).c_str(), d_.rel, double(tol), \
                  d_.detail.c_str());                                                                         \
  } while (0)

inline double tolerance(DType t) { return t == DType::kF32 ? 1e-5 : 1e-2; }

/// "F32" / "BF16" for messages.
inline std::string name(DType t) { return dtype_name(t); }

}  // namespace janus::cuda::test
