#include <doctest/doctest.h>

#include "cuda_test_util.h"

TEST_CASE("a visible CUDA device answers and describes itself") {
  JANUS_SKIP_WITHOUT_GPU();
  CHECK(janus::cuda::device_count() >= 1);
  CHECK(janus::cuda::device_description(0).find("SMs") != std::string::npos);
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, 1024) == cudaSuccess);
  CHECK(cudaMemset(p, 0x5a, 1024) == cudaSuccess);
  unsigned char back[4] = {0, 0, 0, 0};
  CHECK(cudaMemcpy(back, p, 4, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(back[3] == 0x5a);
  cudaFree(p);
}
