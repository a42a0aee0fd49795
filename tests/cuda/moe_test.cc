// The expert instance on the GPU (work list, grouped SwiGLU FFN, weighted combine)
// against cpu::moe_grouped_ffn: tensor-core and fp32 paths, odd and preset shapes, rows
// routed elsewhere, slots without work, accumulation into the residual, determinism, and
// capture into a CUDA graph.
#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <tuple>

#include "gpu/cpu/kernels.h"
#include "gpu/cpu/moe.h"
#include "gpu/cuda/moe.h"
#include "kernel_test_util.h"

using namespace janus;
using namespace janus::cuda::test;

namespace {

// An instance's slots on the device and on the host (the same rounded values).
struct Instance {
  int slots;
  int64_t hidden, inter;
  DType dtype;
  std::vector<std::vector<char>> host;  // per slot: gate, up, down
  std::vector<DeviceBuffer> dev;
  DeviceBuffer gate_ptrs, up_ptrs, down_ptrs;

  Instance(int s, int64_t h, int64_t i, DType t, std::mt19937& rng) : slots(s), hidden(h), inter(i), dtype(t) {
    std::vector<const void*> g, u, d;
    for (int k = 0; k < s; ++k) {
      for (int m = 0; m < 3; ++m) {
        const int64_t fan_in = m == 2 ? i : h;
        auto w = random_floats(static_cast<size_t>(h * i), rng, 1.7f / std::sqrt(static_cast<float>(fan_in)));
        host.push_back(to_dtype(w, t));
        dev.push_back(upload(w, t));
      }
      g.push_back(dev[dev.size() - 3].get());
      u.push_back(dev[dev.size() - 2].get());
      d.push_back(dev[dev.size() - 1].get());
    }
    gate_ptrs = upload_raw(g);
    up_ptrs = upload_raw(u);
    down_ptrs = upload_raw(d);
  }

  cuda::MoeExperts experts() const {
    cuda::MoeExperts e;
    e.gate = gate_ptrs.as<const void* const>();
    e.up = up_ptrs.as<const void* const>();
    e.down = down_ptrs.as<const void* const>();
    e.dtype = dtype;
    e.num_slots = slots;
    e.hidden = hidden;
    e.inter = inter;
    return e;
  }

  std::vector<cpu::ExpertSlotWeights> cpu_slots() const {
    std::vector<cpu::ExpertSlotWeights> w(static_cast<size_t>(slots));
    for (int k = 0; k < slots; ++k) w[k] = {host[3 * k].data(), host[3 * k + 1].data(), host[3 * k + 2].data()};
    return w;
  }
};

// Routing like a gate's: top_k distinct slots per row (or -1, "on another instance",
// with probability `elsewhere`), weights in (0, 1].
void random_routing(int64_t rows, int top_k, int slots, double elsewhere, std::mt19937& rng, std::vector<int32_t>& slot,
                    std::vector<float>& weight) {
  slot.resize(static_cast<size_t>(rows * top_k));
  weight.resize(slot.size());
  std::vector<int32_t> all(static_cast<size_t>(slots));
  std::iota(all.begin(), all.end(), 0);
  std::uniform_real_distribution<float> w(0.05f, 1.f);
  std::bernoulli_distribution away(elsewhere);
  for (int64_t r = 0; r < rows; ++r) {
    std::shuffle(all.begin(), all.end(), rng);
    for (int j = 0; j < top_k; ++j) {
      slot[static_cast<size_t>(r * top_k + j)] = j < slots && !away(rng) ? all[static_cast<size_t>(j % slots)] : -1;
      weight[static_cast<size_t>(r * top_k + j)] = w(rng);
    }
  }
}

struct Run {
  std::vector<float> out;
  bool tensor_cores;
};

Run run_gpu(const Instance& inst, const std::vector<float>& x, DType xt, int64_t rows, int top_k,
            const std::vector<int32_t>& slot, const std::vector<float>& weight, DType ot, const std::vector<float>* residual) {
  auto d_x = upload(x, xt);
  auto d_slot = upload_raw(slot);
  auto d_w = upload_raw(weight);
  DeviceBuffer d_out = residual ? upload(*residual, ot) : DeviceBuffer(static_cast<size_t>(rows * inst.hidden) * dtype_size(ot));
  if (!residual) d_out.poison();
  DeviceBuffer ws(cuda::moe_workspace_bytes(rows, top_k, inst.slots, inst.hidden, inst.inter));
  ws.poison();
  cuda::MoeArgs a;
  a.x = d_x.get(), a.x_dtype = xt, a.rows = rows;
  a.choice_slot = d_slot.as<int32_t>(), a.choice_weight = d_w.as<float>(), a.top_k = top_k;
  a.experts = inst.experts();
  a.out = d_out.get(), a.out_dtype = ot, a.accumulate = residual != nullptr;
  a.workspace = ws.get(), a.workspace_bytes = ws.bytes();
  JANUS_STATUS_CHECK(cuda::moe_expert_layer(a, nullptr));
  return {download(d_out, ot, static_cast<size_t>(rows * inst.hidden)), cuda::moe_uses_tensor_cores(a)};
}

void check_moe(const Instance& inst, int64_t rows, int top_k, DType xt, DType ot, bool accumulate, double elsewhere,
               std::mt19937& rng, const char* what) {
  std::vector<int32_t> slot;
  std::vector<float> weight;
  random_routing(rows, top_k, inst.slots, elsewhere, rng, slot, weight);
  auto x = random_floats(static_cast<size_t>(rows * inst.hidden), rng, 2.f);
  auto residual = random_floats(static_cast<size_t>(rows * inst.hidden), rng);
  Run got = run_gpu(inst, x, xt, rows, top_k, slot, weight, ot, accumulate ? &residual : nullptr);
  auto xr = round_to(x, xt);
  std::vector<float> want = round_to(residual, ot);
  auto slots = inst.cpu_slots();
  cpu::moe_grouped_ffn(xr.data(), rows, top_k, slot.data(), weight.data(), slots.data(), inst.dtype, inst.slots,
                       inst.hidden, inst.inter, accumulate, want.data());
  INFO(what << ": slots " << inst.slots << ", hidden " << inst.hidden << ", inter " << inst.inter << ", weights "
            << name(inst.dtype) << ", x " << name(xt) << ", out " << name(ot) << ", rows " << rows << ", top_k " << top_k
            << ", accumulate " << accumulate << ", tensor cores " << got.tensor_cores);
  const bool exact = inst.dtype == DType::kF32 && xt == DType::kF32 && ot == DType::kF32;
  JANUS_CHECK_CLOSE(got.out, want, exact ? 1e-5 : 1e-2,
                    std::string(what) + (got.tensor_cores ? " (tensor cores)" : " (fp32 path)"));
}

}  // namespace

TEST_CASE("cuda moe work list: CSR by slot, rows ascending, entry_of inverts it, -1 for choices elsewhere") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(71);
  const int64_t rows = 37;
  const int top_k = 4, slots = 10;
  std::vector<int32_t> slot;
  std::vector<float> weight;
  random_routing(rows, top_k, slots, 0.3, rng, slot, weight);
  slot[5] = 99;  // out of range: elsewhere too
  auto d_slot = upload_raw(slot);
  DeviceBuffer ws(cuda::moe_workspace_bytes(rows, top_k, slots, 64, 64));
  ws.poison();
  cuda::MoeArgs a;
  a.rows = rows, a.top_k = top_k, a.choice_slot = d_slot.as<int32_t>();
  a.experts.num_slots = slots, a.experts.hidden = 64, a.experts.inter = 64;
  a.workspace = ws.get(), a.workspace_bytes = ws.bytes();
  JANUS_STATUS_CHECK(cuda::moe_build_work_list(a, nullptr));
  JANUS_CUDA_SYNC();
  cuda::MoeWorkList wl = cuda::moe_work_list(ws.get(), rows, top_k, slots, 64, 64);
  auto fetch = [](const int32_t* p, size_t n) {
    std::vector<int32_t> v(n);
    REQUIRE(cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
    return v;
  };
  auto offsets = fetch(wl.slot_offsets, slots + 1);
  auto num_active = fetch(wl.num_active, 1)[0];
  auto active = fetch(wl.active_slots, static_cast<size_t>(std::max(num_active, 0)));
  auto entry_row = fetch(wl.entry_row, static_cast<size_t>(rows * top_k));
  auto entry_of = fetch(wl.entry_of, static_cast<size_t>(rows * top_k));
  // Expected, built the obvious way.
  std::vector<std::vector<int32_t>> by_slot(slots);
  for (int64_t i = 0; i < rows * top_k; ++i)
    if (slot[i] >= 0 && slot[i] < slots) by_slot[slot[i]].push_back(static_cast<int32_t>(i));
  int e = 0;
  std::vector<int32_t> want_active;
  for (int s = 0; s < slots; ++s) {
    CHECK(offsets[s] == e);
    if (!by_slot[s].empty()) want_active.push_back(s);
    for (int32_t i : by_slot[s]) {
      CHECK(entry_row[e] == i / top_k);
      CHECK(entry_of[i] == e);
      ++e;
    }
  }
  CHECK(offsets[slots] == e);
  CHECK(active == want_active);
  for (int64_t i = 0; i < rows * top_k; ++i)
    if (slot[i] < 0 || slot[i] >= slots) CHECK(entry_of[i] == -1);
}

TEST_CASE("cuda moe phase by phase: each entry's silu(gate x) * up x and its FFN output, before the combine") {
  JANUS_SKIP_WITHOUT_GPU();
  // Localises a failure of the full-layer tests: activations wrong = gate/up phase,
  // outputs wrong with right activations = down phase, both right = combine.
  std::mt19937 rng(77);
  for (DType wt : {DType::kBF16, DType::kF32})
    for (auto [rows, top_k, slots, hidden, inter] : {std::tuple{5, 2, 4, 128, 64}, {40, 8, 128, 2048, 768}}) {
      if (wt == DType::kF32 && hidden > 128) continue;
      Instance inst(slots, hidden, inter, wt, rng);
      std::vector<int32_t> slot;
      std::vector<float> weight;
      random_routing(rows, top_k, slots, 0.1, rng, slot, weight);
      auto x = random_floats(static_cast<size_t>(rows * hidden), rng, 2.f);
      auto d_x = upload(x, DType::kBF16);
      auto d_slot = upload_raw(slot);
      auto d_w = upload_raw(weight);
      DeviceBuffer ws(cuda::moe_workspace_bytes(rows, top_k, slots, hidden, inter));
      ws.poison();
      cuda::MoeArgs a;
      a.x = d_x.get(), a.x_dtype = DType::kBF16, a.rows = rows;
      a.choice_slot = d_slot.as<int32_t>(), a.choice_weight = d_w.as<float>(), a.top_k = top_k;
      a.experts = inst.experts();
      a.workspace = ws.get(), a.workspace_bytes = ws.bytes();
      JANUS_STATUS_CHECK(cuda::moe_build_work_list(a, nullptr));
      JANUS_STATUS_CHECK(cuda::moe_grouped_ffn(a, nullptr));
      JANUS_CUDA_SYNC();
      const bool tc = cuda::moe_uses_tensor_cores(a);
      const DType act_t = tc ? DType::kBF16 : DType::kF32;
      cuda::MoeWorkList wl = cuda::moe_work_list(ws.get(), rows, top_k, slots, hidden, inter);
      std::vector<int32_t> entry_of(static_cast<size_t>(rows * top_k));
      JANUS_CUDA_CHECK(cudaMemcpy(entry_of.data(), wl.entry_of, entry_of.size() * 4, cudaMemcpyDeviceToHost));
      const int64_t entries = std::count_if(entry_of.begin(), entry_of.end(), [](int32_t e) { return e >= 0; });
      std::vector<char> act_bytes(static_cast<size_t>(entries * inter) * dtype_size(act_t));
      std::vector<float> act(static_cast<size_t>(entries * inter)), out(static_cast<size_t>(entries * hidden));
      JANUS_CUDA_CHECK(cudaMemcpy(act_bytes.data(), wl.entry_act, act_bytes.size(), cudaMemcpyDeviceToHost));
      convert_to_f32(act_bytes.data(), act_t, act.data(), act.size());
      JANUS_CUDA_CHECK(cudaMemcpy(out.data(), wl.entry_out, out.size() * 4, cudaMemcpyDeviceToHost));
      std::vector<float> want_act(act.size()), want_out(out.size());
      auto xr = round_to(x, DType::kBF16);
      auto cs = inst.cpu_slots();
      std::vector<float> g(static_cast<size_t>(inter)), u(g.size());
      for (int64_t i = 0; i < rows * top_k; ++i) {
        const int32_t e = entry_of[static_cast<size_t>(i)];
        if (e < 0) continue;
        const float* xrow = xr.data() + (i / top_k) * hidden;
        const auto& w = cs[static_cast<size_t>(slot[static_cast<size_t>(i)])];
        cpu::matmul(xrow, 1, hidden, w.gate, wt, inter, g.data());
        cpu::matmul(xrow, 1, hidden, w.up, wt, inter, u.data());
        cpu::silu_mul(g.data(), u.data(), inter, want_act.data() + e * inter);
        // The down phase from the GPU's own activations, so its check is independent.
        cpu::matmul(act.data() + e * inter, 1, inter, w.down, wt, hidden, want_out.data() + e * hidden);
      }
      INFO("rows " << rows << ", top_k " << top_k << ", slots " << slots << ", hidden " << hidden << ", inter " << inter
                   << ", weights " << name(wt) << ", tensor cores " << tc << ", entries " << entries);
      JANUS_CHECK_CLOSE(act, want_act, tc ? 1e-2 : 1e-5, "moe gate/up phase: per-entry activations");
      JANUS_CHECK_CLOSE(out, want_out, tc ? 1e-2 : 1e-5, "moe down phase: per-entry outputs");
    }
}

TEST_CASE("cuda moe fp32 path matches cpu::moe_grouped_ffn to 1e-5 on odd shapes") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(72);
  for (auto [slots, hidden, inter] : {std::tuple{3, 24, 10}, {8, 128, 96}, {5, 100, 64}}) {
    Instance inst(slots, hidden, inter, DType::kF32, rng);
    for (int64_t rows : {1, 7, 40}) {
      check_moe(inst, rows, std::min(2, slots), DType::kF32, DType::kF32, false, 0.2, rng, "fp32");
      check_moe(inst, rows, std::min(2, slots), DType::kF32, DType::kF32, true, 0.0, rng, "fp32 accumulate");
    }
  }
  // BF16 weights whose shape the tensor-core path does not take.
  Instance odd(4, 96, 40, DType::kBF16, rng);
  check_moe(odd, 9, 2, DType::kBF16, DType::kF32, false, 0.0, rng, "bf16 weights, odd shape");
}

TEST_CASE("cuda moe tensor-core path matches cpu::moe_grouped_ffn to 1e-2 for every row count class") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(73);
  Instance small(6, 128, 64, DType::kBF16, rng);
  for (int64_t rows : {1, 3, 8, 9, 16, 17, 33, 70})  // one, two and four 8-row column tiles; several chunks
    for (DType xt : {DType::kBF16, DType::kF32}) {
      check_moe(small, rows, 3, xt, DType::kF32, false, 0.1, rng, "small");
      check_moe(small, rows, 3, xt, DType::kBF16, true, 0.0, rng, "small accumulate");
    }
  Instance wide(3, 320, 1088, DType::kBF16, rng);  // inter beyond one staged k-chunk of the down phase
  check_moe(wide, 20, 2, DType::kBF16, DType::kF32, false, 0.0, rng, "inter 1088");
}

TEST_CASE("cuda moe on the GPU preset: hidden 2048, inter 768, 128 slots, top-8, decode batches") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(74);
  Instance inst(128, 2048, 768, DType::kBF16, rng);
  for (int64_t rows : {1, 8, 32, 256}) check_moe(inst, rows, 8, DType::kBF16, DType::kF32, false, 0.0, rng, "preset");
  check_moe(inst, 64, 8, DType::kF32, DType::kBF16, true, 0.5, rng, "preset, half elsewhere, into the residual");
}

TEST_CASE("cuda moe is deterministic: two runs give the same bits") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(75);
  Instance inst(16, 256, 128, DType::kBF16, rng);
  std::vector<int32_t> slot;
  std::vector<float> weight;
  random_routing(48, 4, inst.slots, 0.0, rng, slot, weight);
  auto x = random_floats(48 * 256, rng);
  Run a = run_gpu(inst, x, DType::kBF16, 48, 4, slot, weight, DType::kF32, nullptr);
  Run b = run_gpu(inst, x, DType::kBF16, 48, 4, slot, weight, DType::kF32, nullptr);
  CHECK(std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4) == 0);
}

TEST_CASE("cuda moe layer can be captured in a CUDA graph and replayed") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(76);
  Instance inst(32, 256, 192, DType::kBF16, rng);
  const int64_t rows = 24;
  const int top_k = 4;
  std::vector<int32_t> slot;
  std::vector<float> weight;
  random_routing(rows, top_k, inst.slots, 0.0, rng, slot, weight);
  auto x = random_floats(static_cast<size_t>(rows * 256), rng);
  auto d_x = upload(x, DType::kBF16);
  auto d_slot = upload_raw(slot);
  auto d_w = upload_raw(weight);
  DeviceBuffer d_out(static_cast<size_t>(rows * 256) * 4);
  DeviceBuffer ws(cuda::moe_workspace_bytes(rows, top_k, inst.slots, 256, 192));
  cuda::MoeArgs a;
  a.x = d_x.get(), a.x_dtype = DType::kBF16, a.rows = rows;
  a.choice_slot = d_slot.as<int32_t>(), a.choice_weight = d_w.as<float>(), a.top_k = top_k;
  a.experts = inst.experts();
  a.out = d_out.get(), a.out_dtype = DType::kF32;
  a.workspace = ws.get(), a.workspace_bytes = ws.bytes();
  cudaStream_t stream;
  JANUS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  JANUS_STATUS_CHECK(cuda::moe_expert_layer(a, stream));  // one-time setup outside the capture
  JANUS_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  JANUS_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  Status st = cuda::moe_expert_layer(a, stream);
  JANUS_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  JANUS_STATUS_CHECK(st);
  JANUS_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  d_out.poison();
  for (int i = 0; i < 3; ++i) JANUS_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  JANUS_CUDA_CHECK(cudaStreamSynchronize(stream));
  auto got = download(d_out, DType::kF32, static_cast<size_t>(rows * 256));
  auto xr = round_to(x, DType::kBF16);
  std::vector<float> want(got.size());
  auto slots = inst.cpu_slots();
  cpu::moe_grouped_ffn(xr.data(), rows, top_k, slot.data(), weight.data(), slots.data(), DType::kBF16, inst.slots, 256, 192,
                       false, want.data());
  JANUS_CHECK_CLOSE(got, want, 1e-2, "moe graph replay");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_CASE("cuda moe choices from device routing equal cpu::moe_choices_from_routing, and feed the same layer") {
  JANUS_SKIP_WITHOUT_GPU();
  std::mt19937 rng(77);
  const int E = 48, slots = 20, top_k = 6;
  const int64_t rows = 53, n = rows * top_k;
  // This instance holds `slots` of the E experts, in a shuffled slot order.
  std::vector<int32_t> experts(E), slot_of(E, -1);
  std::iota(experts.begin(), experts.end(), 0);
  std::shuffle(experts.begin(), experts.end(), rng);
  for (int s = 0; s < slots; ++s) slot_of[static_cast<size_t>(experts[static_cast<size_t>(s)])] = s;
  std::uniform_int_distribution<int32_t> id(0, E - 1);
  std::uniform_real_distribution<float> w(0.05f, 1.f);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::vector<float> weights(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = id(rng), weights[i] = w(rng);
  ids[3] = -1, ids[17] = E, ids[40] = 1 << 30;  // a gate never gives these: held nowhere
  auto d_ids = upload_raw(ids);
  auto d_w = upload_raw(weights);
  auto d_slot_of = upload_raw(slot_of);
  DeviceBuffer d_slot(ids.size() * 4), d_cw(ids.size() * 4);
  d_slot.poison(), d_cw.poison();
  JANUS_STATUS_CHECK(cuda::moe_choices_from_routing(d_ids.as<int32_t>(), d_w.as<float>(), n, d_slot_of.as<int32_t>(), E,
                                                    d_slot.as<int32_t>(), d_cw.as<float>(), nullptr));
  JANUS_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<int32_t> want_slot(ids.size());
  std::vector<float> want_w(ids.size());
  cpu::moe_choices_from_routing(ids.data(), weights.data(), n, slot_of.data(), E, want_slot.data(), want_w.data());
  CHECK(download_raw<int32_t>(d_slot, ids.size()) == want_slot);
  CHECK(download_raw<float>(d_cw, ids.size()) == want_w);
  // The twin itself: held ids keep their slot and weight, the rest are -1 and 0.
  int held = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const bool in = ids[i] >= 0 && ids[i] < E && slot_of[static_cast<size_t>(ids[i])] >= 0;
    held += in;
    CHECK(want_slot[i] == (in ? slot_of[static_cast<size_t>(ids[i])] : -1));
    CHECK(want_w[i] == (in ? weights[i] : 0.f));
  }
  CHECK(held > 0);
  CHECK(held < static_cast<int>(n));
  // The expert layer over these choices equals the CPU layer over the twin's choices.
  Instance inst(slots, 128, 64, DType::kF32, rng);
  auto x = random_floats(static_cast<size_t>(rows * inst.hidden), rng, 2.f);
  Run got = run_gpu(inst, x, DType::kF32, rows, top_k, download_raw<int32_t>(d_slot, ids.size()),
                    download_raw<float>(d_cw, ids.size()), DType::kF32, nullptr);
  std::vector<float> want(static_cast<size_t>(rows * inst.hidden));
  auto cs = inst.cpu_slots();
  cpu::moe_grouped_ffn(x.data(), rows, top_k, want_slot.data(), want_w.data(), cs.data(), DType::kF32, slots, inst.hidden,
                       inst.inter, false, want.data());
  JANUS_CHECK_CLOSE(got.out, want, 1e-5, "layer over routed choices");
}
