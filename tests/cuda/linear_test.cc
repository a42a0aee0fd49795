// Linear layers on the GPU (cuBLAS, the weight-streaming kernel, the fallback) against
// cpu::matmul, every dtype combination, odd and preset shapes, with and without
// accumulation into y.
#include <cublas_v2.h>
#include <doctest/doctest.h>

#include <random>
#include <tuple>

#include "gpu/cpu/kernels.h"
#include "gpu/cuda/gemm.h"
#include "kernel_test_util.h"

using namespace janus;
using namespace janus::cuda::test;

namespace {

const char* algo_name(cuda::LinearAlgo a) {
  switch (a) {
    case cuda::LinearAlgo::kAuto:
      return "auto";
    case cuda::LinearAlgo::kCublas:
      return "cublas";
    case cuda::LinearAlgo::kSkinny:
      return "skinny";
    case cuda::LinearAlgo::kSimt:
      return "simt";
  }
  return "?";
}

struct Cublas {
  cublasHandle_t h = nullptr;
  Cublas() { REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS); }
  ~Cublas() { cublasDestroy(h); }
};

// One call of linear() against cpu::matmul on the values the GPU sees.
void check_linear(cublasHandle_t handle, std::mt19937& rng, int64_t m, int64_t k, int64_t n, DType xt, DType wt, DType yt,
                  cuda::LinearAlgo algo, bool accumulate) {
  auto x = random_floats(static_cast<size_t>(m * k), rng);
  auto w = random_floats(static_cast<size_t>(n * k), rng, 1.f / std::sqrt(static_cast<float>(k)) * 1.7f);
  auto y0 = random_floats(static_cast<size_t>(m * n), rng);
  auto d_x = upload(x, xt), d_w = upload(w, wt), d_y = upload(y0, yt);
  if (!accumulate) d_y.poison();
  cuda::LinearArgs a;
  a.x = d_x.get(), a.x_dtype = xt, a.m = m, a.k = k;
  a.w = d_w.get(), a.w_dtype = wt, a.n = n;
  a.y = d_y.get(), a.y_dtype = yt;
  a.accumulate = accumulate;
  a.algo = algo;
  DeviceBuffer ws(cuda::linear_workspace_bytes(m, k, xt, wt));
  a.workspace = ws.get(), a.workspace_bytes = ws.bytes();
  const cuda::LinearAlgo ran = cuda::linear_algo(a);
  INFO("x " << name(xt) << " [" << m << ", " << k << "], W " << name(wt) << " [" << n << ", " << k << "], y " << name(yt)
            << ", asked " << algo_name(algo) << ", ran " << algo_name(ran) << ", accumulate " << accumulate);
  if (ran == cuda::LinearAlgo::kAuto) return;  // the requested algorithm does not apply: nothing to test
  JANUS_STATUS_CHECK(cuda::linear(handle, a, nullptr));
  auto got = download(d_y, yt, static_cast<size_t>(m * n));
  auto xr = round_to(x, xt);
  auto wq = to_dtype(w, wt);
  std::vector<float> want(static_cast<size_t>(m * n));
  cpu::matmul(xr.data(), m, k, wq.data(), wt, n, want.data());
  if (accumulate) {
    auto yr = round_to(y0, yt);
    for (size_t i = 0; i < want.size(); ++i) want[i] += yr[i];
  }
  // Exact fp32 only when nothing is rounded to BF16 on the way: all-F32 operands.
  const bool all_f32 = xt == DType::kF32 && wt == DType::kF32 && yt == DType::kF32;
  JANUS_CHECK_CLOSE(got, want, all_f32 ? 1e-5 : 1e-2, std::string("linear ") + algo_name(ran));
}

}  // namespace

TEST_CASE("cuda linear matches cpu::matmul for every algorithm, dtype combination and shape") {
  JANUS_SKIP_WITHOUT_GPU();
  Cublas cublas;
  std::mt19937 rng(51);
  const DType types[] = {DType::kF32, DType::kBF16};
  for (auto algo : {cuda::LinearAlgo::kAuto, cuda::LinearAlgo::kCublas, cuda::LinearAlgo::kSkinny, cuda::LinearAlgo::kSimt})
    for (DType xt : types)
      for (DType wt : types)
        for (DType yt : types)
          for (auto [m, k, n] : {std::tuple{1, 64, 16}, {3, 7, 5}, {5, 128, 33}, {16, 256, 100}, {17, 192, 48},
                                 {40, 130, 70}})
            check_linear(cublas.h, rng, m, k, n, xt, wt, yt, algo, false);
}

TEST_CASE("cuda linear accumulates into y (the residual add) on every path") {
  JANUS_SKIP_WITHOUT_GPU();
  Cublas cublas;
  std::mt19937 rng(52);
  for (auto algo : {cuda::LinearAlgo::kCublas, cuda::LinearAlgo::kSkinny, cuda::LinearAlgo::kSimt})
    for (DType yt : {DType::kF32, DType::kBF16}) check_linear(cublas.h, rng, 9, 256, 80, DType::kBF16, DType::kBF16, yt, algo, true);
  check_linear(cublas.h, rng, 9, 256, 80, DType::kF32, DType::kF32, DType::kF32, cuda::LinearAlgo::kCublas, true);
}

TEST_CASE("cuda linear on the GPU preset's shapes: decode and prefill, q/k/v/o, router and LM head") {
  JANUS_SKIP_WITHOUT_GPU();
  Cublas cublas;
  std::mt19937 rng(53);
  // hidden 2048, q 32 x 128, kv 4 x 128, 128 experts, vocab 32000.
  for (int64_t m : {1, 8, 16, 64})
    for (auto [k, n] : {std::tuple<int64_t, int64_t>{2048, 4096}, {2048, 512}, {4096, 2048}, {2048, 128}, {2048, 32000}}) {
      check_linear(cublas.h, rng, m, k, n, DType::kBF16, DType::kBF16, DType::kF32, cuda::LinearAlgo::kAuto, false);
      check_linear(cublas.h, rng, m, k, n, DType::kF32, DType::kBF16, DType::kBF16, cuda::LinearAlgo::kAuto, false);
    }
  check_linear(cublas.h, rng, 4, 2048, 512, DType::kF32, DType::kF32, DType::kF32, cuda::LinearAlgo::kAuto, false);
}

TEST_CASE("cuda linear refuses an algorithm that does not apply and dtypes it cannot compute") {
  JANUS_SKIP_WITHOUT_GPU();
  Cublas cublas;
  cuda::LinearArgs a;
  DeviceBuffer x(64 * 4), w(64 * 64 * 4), y(64 * 4);
  a.x = x.get(), a.m = 1, a.k = 64, a.w = w.get(), a.n = 64, a.y = y.get();
  a.x_dtype = a.w_dtype = a.y_dtype = DType::kF32;
  a.algo = cuda::LinearAlgo::kSkinny;  // needs BF16 weights
  CHECK(!cuda::linear(cublas.h, a, nullptr).ok());
  a.algo = cuda::LinearAlgo::kAuto;
  a.w_dtype = DType::kF16;
  CHECK(cuda::linear(cublas.h, a, nullptr).code() == ErrorCode::kUnsupported);
}
