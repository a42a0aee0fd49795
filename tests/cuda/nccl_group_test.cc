// NcclGroup (transport/nccl_group.h): argument checks everywhere (no GPU needed), and on
// GPUs grouped send/recv, all-gather, reduce and all-reduce against the same computation
// on the CPU. The group spans every GPU this process sees, one thread per rank (NCCL's
// per-rank calls block until all ranks take part); with one GPU that is a group of one,
// where every send/recv is to self and every collective is a copy.
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda_test_util.h"
#include "runtime/base/dtype.h"
#include "transport/nccl_group.h"

using janus::DType;
using janus::ErrorCode;
using namespace janus::transport;

namespace {

NcclUniqueId nonzero_id() {
  NcclUniqueId id;
  id.bytes[7] = 1;
  return id;
}

// Fresh per run, so the checks hold for any input rather than one lucky one; each rank
// derives its payloads from (seed, rank, payload) so it can recompute what peers sent.
uint64_t fresh_seed() {
  std::random_device rd;
  uint64_t s = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  MESSAGE("seed " << s);
  return s;
}

std::mt19937_64 rng_for(uint64_t seed, int rank, int payload) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(rank),
                    static_cast<uint32_t>(payload)};
  return std::mt19937_64(seq);
}

std::vector<uint8_t> random_bytes(uint64_t seed, int rank, int payload, size_t n) {
  auto rng = rng_for(seed, rank, payload);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// `count` values uniform in [-1, 1) stored as `t` (rounded as the runtime rounds).
std::vector<uint8_t> random_values(uint64_t seed, int rank, int payload, size_t count, DType t) {
  auto rng = rng_for(seed, rank, payload);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<uint8_t> v(count * janus::dtype_size(t));
  if (t == DType::kF64) {
    for (size_t i = 0; i < count; ++i) {
      double d = u(rng);
      std::memcpy(v.data() + i * 8, &d, 8);
    }
    return v;
  }
  std::vector<float> f(count);
  for (auto& x : f) x = static_cast<float>(u(rng));
  janus::convert_from_f32(f.data(), t, v.data(), count);
  return v;
}

double element(const std::vector<uint8_t>& v, DType t, size_t i) {
  if (t == DType::kF64) {
    double d;
    std::memcpy(&d, v.data() + i * 8, 8);
    return d;
  }
  return janus::load_as_f32(v.data(), t, i);
}

// Device memory that frees itself; poisoned so an element NCCL never wrote shows up.
struct DeviceBuffer {
  void* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t bytes) : n(bytes) {
    if (cudaMalloc(&p, bytes == 0 ? 1 : bytes) != cudaSuccess) p = nullptr;
    else (void)cudaMemset(p, 0xA5, bytes);
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

#define CK(call)                                                                                 \
  do {                                                                                           \
    cudaError_t ck_e_ = (call);                                                                  \
    if (ck_e_ != cudaSuccess) return std::string(#call) + ": " + cudaGetErrorString(ck_e_);      \
  } while (0)
#define ST(call)                                                   \
  do {                                                             \
    janus::Status st_s_ = (call);                                  \
    if (!st_s_.ok()) return std::string(#call) + ": " + st_s_.to_string(); \
  } while (0)

using RankBody = std::function<std::string(NcclGroup& g, cudaStream_t stream)>;

// Runs `body` on a group of every visible GPU, one thread per rank; returns what failed,
// one line per rank ("" when every rank passed).
std::string on_every_gpu(const RankBody& body) {
  int n = janus::cuda::device_count();
  auto id = nccl_unique_id();
  if (!id.ok()) return "nccl_unique_id: " + id.status().to_string();
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r]() {
      errors[r] = [&]() -> std::string {
        auto g = NcclGroup::create(*id, n, r, r);
        if (!g.ok()) return "create: " + g.status().to_string();
        cudaStream_t stream;
        CK(cudaStreamCreate(&stream));
        std::string e = body(**g, stream);
        cudaError_t sync = cudaStreamSynchronize(stream);
        cudaStreamDestroy(stream);
        if (!e.empty()) return e;
        if (sync != cudaSuccess) return std::string("cudaStreamSynchronize: ") + cudaGetErrorString(sync);
        ST((*g)->async_error());
        return "";
      }();
    });
  for (auto& t : threads) t.join();
  std::string all;
  for (int r = 0; r < n; ++r)
    if (!errors[r].empty()) all += "rank " + std::to_string(r) + ": " + errors[r] + "\n";
  return all;
}

#define SKIP_WITHOUT_NCCL()                                                         \
  do {                                                                              \
    JANUS_SKIP_WITHOUT_GPU();                                                       \
    if (!nccl_available()) {                                                        \
      std::printf("SKIPPED: no CUDA device with NCCL (built without NCCL)\n");      \
      return;                                                                       \
    }                                                                               \
  } while (0)

}  // namespace

TEST_CASE("nccl group: bad arguments are refused before NCCL is touched (no GPU needed)") {
  const NcclUniqueId id = nonzero_id();
  auto refused = [](const janus::Status& s, const char* words) {
    CHECK(s.code() == ErrorCode::kInvalidArgument);
    CHECK_MESSAGE(s.message().find(words) != std::string::npos, s.message());
  };
  refused(nccl_check_create(id, 0, 0, 0), "nranks 0");
  refused(nccl_check_create(id, -3, 0, 0), "nranks -3");
  refused(nccl_check_create(id, 2, 2, 0), "rank 2 outside [0, 2)");
  refused(nccl_check_create(id, 2, -1, 0), "rank -1");
  refused(nccl_check_create(id, 1, 0, -1), "device -1");
  refused(nccl_check_create(NcclUniqueId{}, 1, 0, 0), "all zeros");
  CHECK(nccl_check_create(id, 4, 3, 0).ok());
  // create() itself refuses them the same way, in every build, without a GPU.
  refused(NcclGroup::create(id, 0, 0, 0).status(), "nranks 0");
  refused(NcclGroup::create(id, 2, 5, 0).status(), "rank 5");
  refused(NcclGroup::create(NcclUniqueId{}, 1, 0, 0).status(), "all zeros");

  static_assert(sizeof(NcclUniqueId) == 128);
  NcclUniqueId copy = id;  // plain bytes: the control plane copies it as is
  CHECK(std::memcmp(copy.bytes, id.bytes, 128) == 0);

  int a = 0, b = 0;
  CHECK(nccl_check_send_recv(2, 0, {{1, &a, 4}, {0, &a, 4}}, {{1, &b, 4}, {0, &b, 4}}).ok());
  CHECK(nccl_check_send_recv(2, 0, {{1, nullptr, 0}}, {{1, nullptr, 0}}).ok());  // empty entries
  refused(nccl_check_send_recv(2, 0, {{2, &a, 4}}, {}), "send[0] (peer 2, 4 bytes): peer outside [0, 2)");
  refused(nccl_check_send_recv(2, 0, {{1, &a, 4}}, {{-1, &b, 4}}), "recv[0] (peer -1");
  refused(nccl_check_send_recv(2, 0, {{1, &a, 4}, {1, nullptr, 8}}, {}), "send[1] (peer 1, 8 bytes): null buffer");
  refused(nccl_check_send_recv(2, 1, {}, {{0, nullptr, 8}}), "recv[0] (peer 0, 8 bytes): null buffer");
  refused(nccl_check_send_recv(2, 1, {{1, &a, 4}}, {}), "1 sends to self (rank 1) but 0 receives");
  refused(nccl_check_send_recv(1, 0, {{0, &a, 4}, {0, &a, 8}}, {{0, &b, 4}, {0, &b, 4}}),
          "send 1 to self is 8 bytes but receive 1 from self is 4 bytes");

  float x = 0, y = 0;
  refused(nccl_check_reduce(2, 0, &x, &y, 1, static_cast<DType>(9), 0), "unknown dtype 9");
  refused(nccl_check_reduce(2, 0, &x, &y, 1, DType::kF32, 2), "root 2 outside [0, 2)");
  refused(nccl_check_reduce(2, 0, nullptr, &y, 1, DType::kBF16, 0), "null send buffer");
  refused(nccl_check_reduce(2, 0, &x, nullptr, 1, DType::kF64, 0), "null receive buffer for 1 elements on rank 0");
  refused(nccl_check_reduce(2, 1, &x, nullptr, 1, DType::kF16, -1), "null receive buffer");  // all_reduce
  CHECK(nccl_check_reduce(2, 1, &x, nullptr, 1, DType::kF32, 0).ok());  // only the root receives
  CHECK(nccl_check_reduce(2, 1, nullptr, nullptr, 0, DType::kF32, 0).ok());

  if (!nccl_available()) {
    CHECK(nccl_unique_id().status().code() == ErrorCode::kUnavailable);
    CHECK(NcclGroup::create(id, 1, 0, 0).status().code() == ErrorCode::kUnavailable);
  }
}

TEST_CASE("nccl group: grouped send/recv of payloads of several sizes, self included") {
  SKIP_WITHOUT_NCCL();
  const uint64_t seed = fresh_seed();
  const std::vector<size_t> sizes = {1, 4099, 262147, 1u << 20};
  const int kSelf = 100;  // payload index of the extra send to self
  const size_t self_bytes = 12345;
  std::string errors = on_every_gpu([&](NcclGroup& g, cudaStream_t stream) -> std::string {
    const int n = g.nranks(), r = g.rank(), next = (r + 1) % n, prev = (r + n - 1) % n;
    std::vector<std::unique_ptr<DeviceBuffer>> out, in;
    std::vector<NcclSend> sends;
    std::vector<NcclRecv> recvs;
    for (size_t p = 0; p <= sizes.size(); ++p) {
      bool self = p == sizes.size();
      size_t bytes = self ? self_bytes : sizes[p];
      int payload = self ? kSelf : static_cast<int>(p);
      auto host = random_bytes(seed, r, payload, bytes);
      out.push_back(std::make_unique<DeviceBuffer>(bytes));
      in.push_back(std::make_unique<DeviceBuffer>(bytes));
      if (out.back()->p == nullptr || in.back()->p == nullptr) return "cudaMalloc failed";
      CK(cudaMemcpy(out.back()->p, host.data(), bytes, cudaMemcpyHostToDevice));
      sends.push_back({self ? r : next, out.back()->p, bytes});
      recvs.push_back({self ? r : prev, in.back()->p, bytes});
    }
    sends.push_back({next, nullptr, 0});  // empty entries are skipped
    recvs.push_back({prev, nullptr, 0});
    CK(cudaDeviceSynchronize());  // the poison memsets and uploads ran on the legacy stream
    ST(g.send_recv(sends, recvs, stream));
    CK(cudaStreamSynchronize(stream));
    for (size_t p = 0; p <= sizes.size(); ++p) {
      bool self = p == sizes.size();
      size_t bytes = self ? self_bytes : sizes[p];
      auto want = random_bytes(seed, self ? r : prev, self ? kSelf : static_cast<int>(p), bytes);
      std::vector<uint8_t> got(bytes);
      CK(cudaMemcpy(got.data(), in[p]->p, bytes, cudaMemcpyDeviceToHost));
      if (got != want)
        return "payload " + std::to_string(p) + " (" + std::to_string(bytes) + " bytes from rank " +
               std::to_string(self ? r : prev) + ") differs";
    }
    return "";
  });
  CHECK_MESSAGE(errors.empty(), errors);
}

TEST_CASE("nccl group: all-gather, out of place and in place") {
  SKIP_WITHOUT_NCCL();
  const uint64_t seed = fresh_seed();
  const size_t per_rank = 262151;  // odd: no alignment NCCL could rely on
  std::string errors = on_every_gpu([&](NcclGroup& g, cudaStream_t stream) -> std::string {
    const int n = g.nranks(), r = g.rank();
    std::vector<uint8_t> want;
    for (int q = 0; q < n; ++q) {
      auto part = random_bytes(seed, q, 0, per_rank);
      want.insert(want.end(), part.begin(), part.end());
    }
    DeviceBuffer send(per_rank), recv(per_rank * n), inplace(per_rank * n);
    if (send.p == nullptr || recv.p == nullptr || inplace.p == nullptr) return "cudaMalloc failed";
    auto mine = random_bytes(seed, r, 0, per_rank);
    char* own_slice = static_cast<char*>(inplace.p) + r * per_rank;
    CK(cudaMemcpy(send.p, mine.data(), per_rank, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(own_slice, mine.data(), per_rank, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());
    ST(g.all_gather(send.p, recv.p, per_rank, stream));
    ST(g.all_gather(own_slice, inplace.p, per_rank, stream));
    CK(cudaStreamSynchronize(stream));
    std::vector<uint8_t> got(per_rank * n);
    CK(cudaMemcpy(got.data(), recv.p, got.size(), cudaMemcpyDeviceToHost));
    if (got != want) return "out-of-place all-gather differs";
    CK(cudaMemcpy(got.data(), inplace.p, got.size(), cudaMemcpyDeviceToHost));
    if (got != want) return "in-place all-gather differs";
    return "";
  });
  CHECK_MESSAGE(errors.empty(), errors);
}

TEST_CASE("nccl group: reduce (sum) to a root and all-reduce, f32 bf16 f16 f64") {
  SKIP_WITHOUT_NCCL();
  const uint64_t seed = fresh_seed();
  const size_t count = 100003;
  struct Case {
    DType t;
    double tol;  // on ||out - ref|| / ||ref||; ref sums the dtype-rounded inputs exactly
  };
  // f32 / f64: one rounding per step of the sum; bf16 / f16 sums round each partial sum
  // to 8 / 11 bits (with one rank the reduce is a copy and exact).
  const Case cases[] = {{DType::kF32, 1e-6}, {DType::kBF16, 1e-2}, {DType::kF16, 2e-3}, {DType::kF64, 1e-14}};
  for (const Case& c : cases) {
    CAPTURE(janus::dtype_name(c.t));
    std::string errors = on_every_gpu([&](NcclGroup& g, cudaStream_t stream) -> std::string {
      const int n = g.nranks(), r = g.rank(), root = n - 1;
      const size_t bytes = count * janus::dtype_size(c.t);
      std::vector<double> ref(count, 0.0);
      for (int q = 0; q < n; ++q) {
        auto v = random_values(seed, q, static_cast<int>(c.t), count, c.t);
        for (size_t i = 0; i < count; ++i) ref[i] += element(v, c.t, i);
      }
      auto mine = random_values(seed, r, static_cast<int>(c.t), count, c.t);
      DeviceBuffer send(bytes), recv(bytes), all(bytes);
      if (send.p == nullptr || recv.p == nullptr || all.p == nullptr) return "cudaMalloc failed";
      CK(cudaMemset(recv.p, 0xFF, bytes));  // NaN in every float type: unwritten elements fail
      CK(cudaMemset(all.p, 0xFF, bytes));
      CK(cudaMemcpy(send.p, mine.data(), bytes, cudaMemcpyHostToDevice));
      CK(cudaDeviceSynchronize());
      // Ranks other than the root pass no receive buffer: NCCL never writes it there.
      ST(g.reduce(send.p, r == root ? recv.p : nullptr, count, c.t, root, stream));
      ST(g.all_reduce(send.p, all.p, count, c.t, stream));
      CK(cudaStreamSynchronize(stream));
      auto check = [&](void* dev, const char* what) -> std::string {
        std::vector<uint8_t> got(bytes);
        CK(cudaMemcpy(got.data(), dev, bytes, cudaMemcpyDeviceToHost));
        double err = 0, norm = 0;
        for (size_t i = 0; i < count; ++i) {
          double d = element(got, c.t, i) - ref[i];
          err += d * d;
          norm += ref[i] * ref[i];
        }
        double rel = std::sqrt(err / norm);
        if (!(rel <= c.tol))
          return std::string(what) + " " + janus::dtype_name(c.t) + ": relative error " + std::to_string(rel) +
                 " > " + std::to_string(c.tol);
        return "";
      };
      if (r == root)
        if (auto e = check(recv.p, "reduce"); !e.empty()) return e;
      return check(all.p, "all_reduce");
    });
    CHECK_MESSAGE(errors.empty(), errors);
  }
}

TEST_CASE("nccl group: a live group refuses bad arguments and keeps working") {
  SKIP_WITHOUT_NCCL();
  const uint64_t seed = fresh_seed();
  std::string errors = on_every_gpu([&](NcclGroup& g, cudaStream_t stream) -> std::string {
    const int n = g.nranks(), r = g.rank();
    DeviceBuffer buf(64), out(64 * n);
    if (buf.p == nullptr || out.p == nullptr) return "cudaMalloc failed";
    auto expect_invalid = [](const janus::Status& s, const char* what) -> std::string {
      if (s.code() == ErrorCode::kInvalidArgument) return "";
      return std::string(what) + " was not refused as invalid: " + s.to_string();
    };
    std::string e;
    if (e = expect_invalid(g.send_recv({{n, buf.p, 64}}, {}, stream), "send to rank n"); !e.empty()) return e;
    if (e = expect_invalid(g.send_recv({}, {{r, nullptr, 64}}, stream), "null receive"); !e.empty()) return e;
    if (e = expect_invalid(g.all_gather(nullptr, out.p, 64, stream), "null all-gather"); !e.empty()) return e;
    if (e = expect_invalid(g.reduce(buf.p, buf.p, 16, static_cast<DType>(9), 0, stream), "dtype 9"); !e.empty())
      return e;
    if (e = expect_invalid(g.reduce(buf.p, buf.p, 16, DType::kF32, n, stream), "root n"); !e.empty()) return e;
    if (e = expect_invalid(g.reduce(buf.p, buf.p, 16, DType::kF32, -1, stream), "root -1"); !e.empty()) return e;
    // Refusals never reached NCCL: the group still gathers correctly.
    auto mine = random_bytes(seed, r, 7, 64);
    CK(cudaMemcpy(buf.p, mine.data(), 64, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());
    ST(g.all_gather(buf.p, out.p, 64, stream));
    CK(cudaStreamSynchronize(stream));
    std::vector<uint8_t> got(64 * n), want;
    for (int q = 0; q < n; ++q) {
      auto part = random_bytes(seed, q, 7, 64);
      want.insert(want.end(), part.begin(), part.end());
    }
    CK(cudaMemcpy(got.data(), out.p, got.size(), cudaMemcpyDeviceToHost));
    if (got != want) return "all-gather after refusals differs";
    return "";
  });
  CHECK_MESSAGE(errors.empty(), errors);

  // A device this process does not have: CUDA's error, as invalid_argument with the call.
  int devices = janus::cuda::device_count();
  auto id = nccl_unique_id();
  REQUIRE(id.ok());
  auto g = NcclGroup::create(*id, 1, 0, devices);
  CHECK(g.status().code() == ErrorCode::kInvalidArgument);
  CHECK_MESSAGE(g.status().message().find("cudaSetDevice(" + std::to_string(devices) + ")") != std::string::npos,
                g.status().message());
}
