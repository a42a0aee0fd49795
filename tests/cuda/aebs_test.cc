// The AEBS kernel (gpu/cuda/aebs.h) against the CPU reference (gpu/cpu/aebs.h): every
// output array identical, bit for bit, on uniform and Zipf-skewed routing, from B = 1 to
// beyond what fits in shared memory, and from a replayed CUDA graph.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "gpu/cpu/aebs.h"
#include "gpu/cuda/aebs.h"
#include "runtime/aebs_synthetic.h"
#include "runtime/expert_placement.h"

using namespace janus;

namespace {

#define REQUIRE_OK(expr)                                 \
  do {                                                   \
    ::janus::Status s_ = (expr);                         \
    REQUIRE_MESSAGE(s_.ok(), s_.to_string());            \
  } while (0)
#define REQUIRE_CUDA(expr) REQUIRE((expr) == cudaSuccess)

// Copies the device outputs back and compares them with the CPU's; "" when identical.
std::string compare(const AebsTableView& t, const AebsOutputs& dev, AebsHostOutputs& cpu, int64_t n) {
  AebsHostOutputs g;
  g.resize(t, n);
  auto back = [&](std::vector<int32_t>& dst, const int32_t* src, size_t count) {
    REQUIRE_CUDA(cudaMemcpy(dst.data(), src, count * sizeof(int32_t), cudaMemcpyDeviceToHost));
  };
  const size_t E = static_cast<size_t>(t.num_experts), R = static_cast<size_t>(t.num_replicas),
               G = static_cast<size_t>(t.num_instances);
  back(g.summary, dev.summary, kAebsSummarySize);
  back(g.choice_replica, dev.choice_replica, static_cast<size_t>(n));
  back(g.expert_replica, dev.expert_replica, E);
  back(g.replica_offsets, dev.replica_offsets, R + 1);
  back(g.instance_item_offsets, dev.instance_item_offsets, G + 1);
  back(g.activated, dev.activated, G);
  back(g.active_offsets, dev.active_offsets, G + 1);
  const size_t valid = static_cast<size_t>(cpu.summary[kAebsValidChoices]);
  const size_t active = static_cast<size_t>(cpu.summary[kAebsActivatedExperts]);
  back(g.items, dev.items, valid);
  back(g.active_replicas, dev.active_replicas, active);
  auto diff = [](const char* name, const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t count) -> std::string {
    for (size_t i = 0; i < count; ++i)
      if (a[i] != b[i])
        return std::string(name) + "[" + std::to_string(i) + "]: gpu " + std::to_string(a[i]) + " cpu " + std::to_string(b[i]);
    return "";
  };
  for (auto s : {diff("summary", g.summary, cpu.summary, kAebsSummarySize),
                 diff("choice_replica", g.choice_replica, cpu.choice_replica, static_cast<size_t>(n)),
                 diff("expert_replica", g.expert_replica, cpu.expert_replica, E),
                 diff("replica_offsets", g.replica_offsets, cpu.replica_offsets, R + 1),
                 diff("instance_item_offsets", g.instance_item_offsets, cpu.instance_item_offsets, G + 1),
                 diff("activated", g.activated, cpu.activated, G),
                 diff("active_offsets", g.active_offsets, cpu.active_offsets, G + 1), diff("items", g.items, cpu.items, valid),
                 diff("active_replicas", g.active_replicas, cpu.active_replicas, active)})
    if (!s.empty()) return s;
  return "";
}

struct Setup {
  int E, k, G, C;
  bool stats;  // statistics-based placement (uneven replica counts) or round-robin
};

ExpertLayout layout_for(const Setup& s, double zipf) {
  auto l = s.stats ? place_experts({s.E, s.G, s.C, synthetic_popularity(s.E, zipf, 1), {}, {}}) : auto_placement(s.E, s.G, s.C);
  REQUIRE_MESSAGE(l.ok(), l.status().to_string());
  return *l;
}

}  // namespace

TEST_CASE("GPU AEBS equals the CPU reference bit for bit") {
  JANUS_SKIP_WITHOUT_GPU();
  const std::vector<Setup> setups = {{8, 2, 4, 3, false},    {64, 6, 8, 10, true},   {160, 8, 16, 12, true},
                                     {160, 8, 16, 12, false}, {256, 8, 32, 10, true}, {64, 8, 32, 4, true},
                                     {128, 4, 64, 4, true},   {160, 8, 8, 22, true}};
  const std::vector<int64_t> batches = {0, 1, 2, 16, 64, 256, 1024, 4096, 8192, 20000};
  int runs = 0, mismatches = 0, repaired = 0;
  std::printf("%-24s %-6s %-6s %6s %6s %7s %7s %s\n", "setup", "zipf", "repair", "B", "a_max", "moves", "staged", "result");
  for (const Setup& s : setups)
    for (double zipf : {0.0, 1.2})
      for (int max_repairs : {-1, 0}) {
      ExpertLayout layout = layout_for(s, zipf);
      AebsReplicaTable table = AebsReplicaTable::build(layout, AebsVisitOrder::kFewestReplicasFirst, max_repairs);
      cuda::AebsDeviceTable dt;
      REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
      cuda::AebsDeviceOutputs dout;
      REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), 20000 * s.k, &dout));
      int32_t* d_ids = nullptr;
      REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_ids), sizeof(int32_t) * 20000 * static_cast<size_t>(s.k)));
      for (int64_t B : batches) {
        auto ids = synthetic_routing(s.E, s.k, B, zipf, 5, static_cast<uint64_t>(B));
        REQUIRE(ids.ok());
        if (B > 0) REQUIRE_CUDA(cudaMemcpy(d_ids, ids->data(), ids->size() * sizeof(int32_t), cudaMemcpyHostToDevice));
        // Poison the outputs: a value the kernel fails to write shows up.
        REQUIRE_CUDA(cudaMemset(dout.storage, 0x7b, dout.bytes));
        REQUIRE_OK(cuda::aebs_launch(dt, d_ids, B, s.k, dout.out, nullptr));
        REQUIRE_CUDA(cudaDeviceSynchronize());
        AebsHostOutputs cpu;
        cpu.resize(table.view(), B * s.k);
        REQUIRE_OK(cpu::aebs(table.view(), ids->data(), B, s.k, cpu.outputs()));
        const std::string d = compare(table.view(), dout.out, cpu, B * s.k);
        char name[64];
        std::snprintf(name, sizeof name, "E%d k%d ne%d C%d %s", s.E, s.k, s.G, s.C, s.stats ? "stats" : "rr");
        if ((max_repairs != 0 && (B == 1 || B == 4096 || B == 20000)) || !d.empty())
          std::printf("%-24s %-6.1f %-6s %6lld %6d %7d %7s %s\n", name, zipf, max_repairs ? "yes" : "no",
                      static_cast<long long>(B), cpu.summary[kAebsMaxActivated], cpu.summary[kAebsRepairs],
                      cuda::aebs_launch_shape(dt, B * s.k).staged ? "yes" : "no", d.empty() ? "ok" : d.c_str());
        ++runs;
        repaired += cpu.summary[kAebsRepairs] > 0;
        mismatches += !d.empty();
        CHECK_MESSAGE(d.empty(), name << " zipf " << zipf << " B " << B << ": " << d);
      }
      cudaFree(d_ids);
      cuda::aebs_free_outputs(&dout);
      cuda::aebs_free_table(&dt);
      }
  std::printf("GPU AEBS vs CPU: %d runs (%d with repair moves), %d mismatches\n", runs, repaired, mismatches);
  CHECK(runs == static_cast<int>(setups.size() * 4 * batches.size()));
  CHECK(repaired > 0);
}

TEST_CASE("GPU AEBS repairs the greedy along an augmenting path like the CPU") {
  JANUS_SKIP_WITHOUT_GPU();
  // The case of tests/gpu/aebs_test.cc: the greedy gives loads 3 2 1, one move 2 2 2.
  auto layout = ExpertLayout::create(9, 4, {{2, 7, 4, 8}, {2, 6, 1, 8}, {5, 0, 1, 3}});
  REQUIRE(layout.ok());
  const std::vector<int32_t> ids = {4, 8, 8, 3, 2, 1, 7, 8, 3, 1};
  for (int max_repairs : {-1, 0}) {
    AebsReplicaTable table = AebsReplicaTable::build(*layout, AebsVisitOrder::kFewestReplicasFirst, max_repairs);
    cuda::AebsDeviceTable dt;
    REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
    cuda::AebsDeviceOutputs dout;
    REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), 10, &dout));
    int32_t* d_ids = nullptr;
    REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_ids), sizeof(int32_t) * 10));
    REQUIRE_CUDA(cudaMemcpy(d_ids, ids.data(), sizeof(int32_t) * 10, cudaMemcpyHostToDevice));
    REQUIRE_OK(cuda::aebs_launch(dt, d_ids, 5, 2, dout.out, nullptr));
    REQUIRE_CUDA(cudaDeviceSynchronize());
    AebsHostOutputs cpu;
    cpu.resize(table.view(), 10);
    REQUIRE_OK(cpu::aebs(table.view(), ids.data(), 5, 2, cpu.outputs()));
    CHECK(cpu.summary[kAebsMaxActivated] == (max_repairs ? 2 : 3));
    const std::string d = compare(table.view(), dout.out, cpu, 10);
    CHECK_MESSAGE(d.empty(), "max_repairs " << max_repairs << ": " << d);
    cudaFree(d_ids);
    cuda::aebs_free_outputs(&dout);
    cuda::aebs_free_table(&dt);
  }
}

TEST_CASE("GPU AEBS counts invalid ids in the summary and leaves them out, like the CPU") {
  JANUS_SKIP_WITHOUT_GPU();
  ExpertLayout layout = layout_for({64, 6, 8, 10, true}, 1.0);
  AebsReplicaTable table = AebsReplicaTable::build(layout);
  cuda::AebsDeviceTable dt;
  REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
  for (int64_t B : {3, 300, 20000}) {
    auto ids = synthetic_routing(64, 6, B, 1.0, 9, 0);
    REQUIRE(ids.ok());
    for (size_t i = 0; i < ids->size(); i += 97) (*ids)[i] = (i % 2) ? 64 + static_cast<int32_t>(i) : -1 - static_cast<int32_t>(i);
    cuda::AebsDeviceOutputs dout;
    REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), B * 6, &dout));
    int32_t* d_ids = nullptr;
    REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_ids), ids->size() * sizeof(int32_t)));
    REQUIRE_CUDA(cudaMemcpy(d_ids, ids->data(), ids->size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    REQUIRE_OK(cuda::aebs_launch(dt, d_ids, B, 6, dout.out, nullptr));
    REQUIRE_CUDA(cudaDeviceSynchronize());
    AebsHostOutputs cpu;
    cpu.resize(table.view(), B * 6);
    CHECK(cpu::aebs(table.view(), ids->data(), B, 6, cpu.outputs()).code() == ErrorCode::kInvalidArgument);
    CHECK(cpu.summary[kAebsInvalidChoices] == static_cast<int32_t>((ids->size() + 96) / 97));
    const std::string d = compare(table.view(), dout.out, cpu, B * 6);
    CHECK_MESSAGE(d.empty(), "B " << B << ": " << d);
    cudaFree(d_ids);
    cuda::aebs_free_outputs(&dout);
  }
  cuda::aebs_free_table(&dt);
}

TEST_CASE("GPU AEBS runs from a captured CUDA graph and reads fresh ids on every replay") {
  JANUS_SKIP_WITHOUT_GPU();
  const Setup s{160, 8, 16, 12, true};
  ExpertLayout layout = layout_for(s, 1.0);
  AebsReplicaTable table = AebsReplicaTable::build(layout);
  cuda::AebsDeviceTable dt;
  REQUIRE_OK(cuda::aebs_upload_table(table.view(), &dt));
  for (int64_t B : {1, 256, 4096}) {
    cuda::AebsDeviceOutputs dout;
    REQUIRE_OK(cuda::aebs_alloc_outputs(table.view(), B * s.k, &dout));
    int32_t* d_ids = nullptr;
    REQUIRE_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_ids), sizeof(int32_t) * static_cast<size_t>(B * s.k)));
    cudaStream_t stream;
    REQUIRE_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    REQUIRE_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    REQUIRE_OK(cuda::aebs_launch(dt, d_ids, B, s.k, dout.out, stream));
    REQUIRE_CUDA(cudaStreamEndCapture(stream, &graph));
    REQUIRE_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (uint64_t rep = 0; rep < 4; ++rep) {
      auto ids = synthetic_routing(s.E, s.k, B, rep % 2 ? 1.0 : 0.0, 3, rep);
      REQUIRE(ids.ok());
      REQUIRE_CUDA(cudaMemcpyAsync(d_ids, ids->data(), ids->size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
      REQUIRE_CUDA(cudaGraphLaunch(exec, stream));
      REQUIRE_CUDA(cudaStreamSynchronize(stream));
      AebsHostOutputs cpu;
      cpu.resize(table.view(), B * s.k);
      REQUIRE_OK(cpu::aebs(table.view(), ids->data(), B, s.k, cpu.outputs()));
      const std::string d = compare(table.view(), dout.out, cpu, B * s.k);
      CHECK_MESSAGE(d.empty(), "graph replay " << rep << " B " << B << ": " << d);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
    cudaFree(d_ids);
    cuda::aebs_free_outputs(&dout);
  }
  cuda::aebs_free_table(&dt);
}

TEST_CASE("GPU AEBS refuses tables outside its limits") {
  JANUS_SKIP_WITHOUT_GPU();
  auto layout = auto_placement(130, 65, 2);  // 65 instances: more than one warp's two registers hold
  REQUIRE(layout.ok());
  AebsReplicaTable table = AebsReplicaTable::build(*layout);
  cuda::AebsDeviceTable dt;
  Status st = cuda::aebs_upload_table(table.view(), &dt);
  CHECK(st.code() == ErrorCode::kUnsupported);
  CHECK(st.message().find("65 expert instances, at most 64") != std::string::npos);
  CHECK(cuda::aebs_launch(dt, nullptr, 1, 1, AebsOutputs{}, nullptr).code() == ErrorCode::kInvalidArgument);
}
