#include "gpu/cuda/sampling.h"

#include <climits>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "gpu/cuda/common.cuh"

namespace janus::cuda {
namespace {

constexpr int kArgmaxThreads = 512;
constexpr int kSampleThreads = 1024;

struct MinInt {
  __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};

// The same bits as runtime/model/sampling.cc.
__device__ uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__device__ double counter_uniform(uint64_t seed, uint64_t counter) {
  const uint64_t h = splitmix64(splitmix64(seed) ^ counter);
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

struct Best {
  float v;
  int i;
};

struct BestOp {
  __device__ Best operator()(const Best& a, const Best& b) const {
    if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
    return a;
  }
};

__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(const float* logits, int vocab, int32_t* tokens) {
  using Reduce = cub::BlockReduce<Best, kArgmaxThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const float* l = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  Best b{-INFINITY, INT_MAX};
  for (int i = threadIdx.x; i < vocab; i += kArgmaxThreads) {
    const float v = l[i];
    if (b.i == INT_MAX || v > b.v) b = Best{v, i};  // ascending i: strictly larger only
  }
  b = Reduce(tmp).Reduce(b, BestOp());
  if (threadIdx.x == 0) tokens[blockIdx.x] = b.i;
}

// Sort keys with -0.0 folded into +0.0 (the CPU's comparison treats them as equal), ids,
// and the segment offsets.
__global__ void prepare_sort_kernel(const float* logits, int rows, int vocab, float* keys, int32_t* ids, int32_t* offsets) {
  const int64_t n = static_cast<int64_t>(rows) * vocab;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keys[i] = logits[i] + 0.0f;
    ids[i] = static_cast<int32_t>(i % vocab);
    if (i % vocab == 0) offsets[i / vocab] = static_cast<int32_t>(i);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) offsets[rows] = static_cast<int32_t>(n);
}

// One block per sampled row over its sorted logits. Each thread owns a contiguous
// segment of the kept prefix; the cumulative probability at i is the exclusive scan of
// the segments' sums plus the running sum inside the segment, recomputed identically in
// each pass, so the top-p cut and the draw see one consistent distribution.
__global__ void __launch_bounds__(kSampleThreads) sample_kernel(const float* sorted, const int32_t* sorted_ids, int vocab,
                                                                const SamplingRow* params, double* probs,
                                                                int32_t* tokens) {
  using Scan = cub::BlockScan<double, kSampleThreads>;
  using Reduce = cub::BlockReduce<int, kSampleThreads>;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } tmp;
  __shared__ int s_int;
  __shared__ double s_double;
  const int r = blockIdx.x;
  const SamplingRow sp = params[r];
  if (!(sp.temperature > 0.f)) return;  // greedy: argmax_kernel has answered
  const float* l = sorted + static_cast<int64_t>(r) * vocab;
  const int32_t* ids = sorted_ids + static_cast<int64_t>(r) * vocab;
  double* p = probs + static_cast<int64_t>(r) * vocab;

  int keep = vocab;
  if (sp.top_k > 0 && sp.top_k < keep) keep = sp.top_k;
  const double mx = l[0];
  const double temperature = sp.temperature;
  const int seg = (keep + kSampleThreads - 1) / kSampleThreads;
  const int b = min(keep, static_cast<int>(threadIdx.x) * seg), e = min(keep, b + seg);
  double local = 0;
  for (int i = b; i < e; ++i) {
    p[i] = exp((static_cast<double>(l[i]) - mx) / temperature);
    local += p[i];
  }
  double before, sum;
  Scan(tmp.scan).ExclusiveSum(local, before, sum);
  __syncthreads();

  if (sp.top_p < 1.f) {
    int cand = INT_MAX;
    double c = before;
    for (int i = b; i < e; ++i) {
      c += p[i];
      if (c / sum >= static_cast<double>(sp.top_p)) {
        cand = i + 1;
        break;
      }
    }
    const int cut = Reduce(tmp.reduce).Reduce(cand, MinInt());
    if (threadIdx.x == 0) s_int = cut;
    __syncthreads();
    if (s_int != INT_MAX) keep = s_int;
    // The kept mass: the cumulative sum at keep - 1, from the thread that owns it.
    if (b < keep && keep <= e) {
      double c2 = before;
      for (int i = b; i < keep; ++i) c2 += p[i];
      s_double = c2;
    }
    __syncthreads();
    sum = s_double;
  }

  const double u = counter_uniform(sp.seed, sp.step) * sum;
  int cand = INT_MAX;
  double c = before;
  for (int i = b; i < min(e, keep); ++i) {
    c += p[i];
    if (u < c) {
      cand = i;
      break;
    }
  }
  __syncthreads();  // tmp.reduce may still be in use above
  const int pick = Reduce(tmp.reduce).Reduce(cand, MinInt());
  if (threadIdx.x == 0) tokens[r] = ids[pick == INT_MAX ? keep - 1 : pick];
}

struct SampleLayout {
  size_t keys_in, ids_in, keys_out, ids_out, offsets, temp, temp_bytes, total;
};

SampleLayout sample_layout(int rows, int vocab) {
  const size_t n = static_cast<size_t>(rows) * vocab;
  SampleLayout L{};
  size_t o = 0;
  auto take = [&](size_t bytes) {
    const size_t at = o;
    o += detail::align_up(std::max<size_t>(bytes, 1), 256);
    return at;
  };
  // keys_in and ids_in are adjacent: after the sort they hold the probabilities (doubles).
  L.keys_in = take(8 * n);
  L.ids_in = L.keys_in + 4 * n;
  L.keys_out = take(4 * n);
  L.ids_out = take(4 * n);
  L.offsets = take(4 * (static_cast<size_t>(rows) + 1));
  // The size query reads no pointer; it only needs their types.
  static const int32_t no_offsets[2] = {0, 0};
  size_t temp = 0;
  cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, temp, static_cast<const float*>(nullptr),
                                                     static_cast<float*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                     static_cast<int32_t*>(nullptr), static_cast<int>(n), rows, no_offsets,
                                                     no_offsets + 1);
  L.temp_bytes = temp;
  L.temp = take(temp);
  L.total = o;
  return L;
}

}  // namespace

Status argmax(const float* logits, int rows, int vocab, int32_t* tokens, cudaStream_t stream) {
  if (rows == 0) return Status::Ok();
  if (vocab <= 0) return invalid_argument("argmax: empty vocabulary");
  argmax_kernel<<<rows, kArgmaxThreads, 0, stream>>>(logits, vocab, tokens);
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

size_t sampling_workspace_bytes(int rows, int vocab) { return sample_layout(rows, vocab).total; }

Status sample_tokens(const float* logits, int rows, int vocab, const SamplingRow* params, bool any_sampling,
                     int32_t* tokens, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  JANUS_TRY(argmax(logits, rows, vocab, tokens, stream));
  if (!any_sampling || rows == 0) return Status::Ok();
  if (static_cast<int64_t>(rows) * vocab > INT_MAX) return unsupported("sample_tokens: rows * vocab beyond 2^31");
  const SampleLayout L = sample_layout(rows, vocab);
  if (!workspace || workspace_bytes < L.total)
    return invalid_argument("sample_tokens: workspace of " + std::to_string(workspace_bytes) + " bytes, " +
                            std::to_string(L.total) + " needed");
  char* ws = static_cast<char*>(workspace);
  auto* keys_in = reinterpret_cast<float*>(ws + L.keys_in);
  auto* ids_in = reinterpret_cast<int32_t*>(ws + L.ids_in);
  auto* keys_out = reinterpret_cast<float*>(ws + L.keys_out);
  auto* ids_out = reinterpret_cast<int32_t*>(ws + L.ids_out);
  auto* offsets = reinterpret_cast<int32_t*>(ws + L.offsets);
  const int64_t n = static_cast<int64_t>(rows) * vocab;
  prepare_sort_kernel<<<static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 8192)), 256, 0, stream>>>(
      logits, rows, vocab, keys_in, ids_in, offsets);
  JANUS_CUDA_TRY_LAUNCH();
  size_t temp = L.temp_bytes;
  JANUS_CUDA_TRY(cub::DeviceSegmentedRadixSort::SortPairsDescending(ws + L.temp, temp, keys_in, keys_out, ids_in, ids_out,
                                                                   static_cast<int>(n), rows, offsets, offsets + 1, 0,
                                                                   32, stream));
  sample_kernel<<<rows, kSampleThreads, 0, stream>>>(keys_out, ids_out, vocab, params,
                                                     reinterpret_cast<double*>(ws + L.keys_in), tokens);
  JANUS_CUDA_TRY_LAUNCH();
  return Status::Ok();
}

}  // namespace janus::cuda
