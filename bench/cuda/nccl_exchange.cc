// bench_nccl_exchange: the expert exchange's data phase through NcclGroup
// (transport/nccl_group.h) on every GPU of this process, one thread per rank, beside:
//   - NCCL's own all-gather of the same bytes (the collective NCCL tunes hardest: what a
//     well-scheduled transfer of this volume costs on these links);
//   - cudaMemcpyAsync device to device of the same bytes on one GPU: the floor (with one
//     GPU every exchange is a copy to self, so NCCL can at best match it).
//
//   bench_nccl_exchange [--iters 20]
//
// A row of size S: each rank sends S/n bytes to each of the n ranks (itself included) as
// one grouped send_recv, and the all-gather gathers S/n bytes from every rank; both move
// S bytes into each rank. GB/s is S over the median time of --iters runs after warm-up
// (payload bytes; a copy also reads them, so the copy engine moves twice that).
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench/cuda/cuda_bench_util.h"
#include "gpu/cuda/device.h"
#include "transport/nccl_group.h"

using namespace janus;
using namespace janus::transport;

namespace {

void check(const Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "bench_nccl_exchange: %s: %s\n", what, s.to_string().c_str());
  std::exit(1);
}

struct Row {
  size_t bytes;
  double exchange_s, gather_s, copy_s;
};

void rank_main(const NcclUniqueId& id, int n, int r, int iters, const std::vector<size_t>& sizes,
               std::vector<Row>* rows) {
  auto g = NcclGroup::create(id, n, r, r);
  check(g.status(), "NcclGroup::create");
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const size_t max_bytes = sizes.back();
  void *src, *dst;
  CK(cudaMalloc(&src, max_bytes));
  CK(cudaMalloc(&dst, max_bytes));
  CK(cudaMemset(src, 0x5A, max_bytes));  // never time on zeros
  CK(cudaMemset(dst, 0xA5, max_bytes));
  CK(cudaDeviceSynchronize());
  for (size_t bytes : sizes) {
    const size_t part = bytes / n;
    std::vector<NcclSend> sends;
    std::vector<NcclRecv> recvs;
    for (int q = 0; q < n; ++q) {
      sends.push_back({q, static_cast<char*>(src) + q * part, part});
      recvs.push_back({q, static_cast<char*>(dst) + q * part, part});
    }
    Row row{part * n, 0, 0, 0};
    // Every op is collective, so all rank threads stay in step; rank 0's clock is reported.
    row.exchange_s = bench::time_stream(stream, 3, iters, [&] { check((*g)->send_recv(sends, recvs, stream), "send_recv"); });
    row.gather_s = bench::time_stream(stream, 3, iters, [&] { check((*g)->all_gather(src, dst, part, stream), "all_gather"); });
    row.copy_s = bench::time_stream(stream, 3, iters, [&] {
      CK(cudaMemcpyAsync(dst, src, part * n, cudaMemcpyDeviceToDevice, stream));
    });
    if (r == 0) rows->push_back(row);
  }
  check((*g)->async_error(), "async_error");
  cudaFree(src);
  cudaFree(dst);
  cudaStreamDestroy(stream);
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_nccl_exchange [--iters 20]\n");
      return 2;
    }
  }
  int n = cuda::device_count();
  if (n == 0) {
    std::printf("bench_nccl_exchange: no CUDA device, nothing to measure\n");
    return 0;
  }
  if (!nccl_available()) {
    std::printf("bench_nccl_exchange: built without NCCL, nothing to measure\n");
    return 0;
  }
  std::vector<size_t> sizes;
  for (size_t s = 4u << 10; s <= (64u << 20); s *= 4) sizes.push_back(s);
  auto id = nccl_unique_id();
  check(id.status(), "nccl_unique_id");
  std::vector<Row> rows;
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(rank_main, std::cref(*id), n, r, iters, std::cref(sizes), &rows);
  for (auto& t : threads) t.join();

  std::printf("%d rank(s); device 0: %s; median of %d\n", n, cuda::device_description(0).c_str(), iters);
  std::printf("%10s  %10s %9s  %10s %9s  %10s %9s  %12s\n", "bytes", "exch us", "GB/s", "gather us", "GB/s",
              "copy us", "GB/s", "exch/copy");
  for (const Row& w : rows) {
    auto gbs = [&](double s) { return static_cast<double>(w.bytes) / s * 1e-9; };
    std::printf("%10zu  %10.1f %9.1f  %10.1f %9.1f  %10.1f %9.1f  %11.2fx\n", w.bytes, w.exchange_s * 1e6,
                gbs(w.exchange_s), w.gather_s * 1e6, gbs(w.gather_s), w.copy_s * 1e6, gbs(w.copy_s),
                w.exchange_s / w.copy_s);
  }
  return 0;
}
