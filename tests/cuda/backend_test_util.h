// Helpers for the CUDA backend's tests (backend_test.cc: op by op against the CPU
// backend; decode_test.cc: the whole actor graph on the GPU): models that exercise the
// fast paths, and tensors moved between host and device for comparisons.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gpu/backend/backend.h"
#include "gpu/backend/cuda/backend.h"
#include "kernel_test_util.h"
#include "runtime/model/model.h"
#include "runtime/model/presets.h"
#include "test_util.h"

namespace janus::cuda::test {

/// A small Qwen3-MoE in BF16 whose shapes take the GPU's fast paths: hidden and expert
/// widths multiples of 64 (tensor-core MoE, kSkinny), head_dim 64 or 128 with up to 16
/// query heads per kv head (tensor-core attention), layer 1 dense. Made once per process
/// in a temporary directory.
struct SyntheticShape {
  const char* name;
  int vocab, hidden, layers, heads, kv_heads, head_dim, experts, top_k, moe_inter, inter;
  bool dense_layer_1;
};

inline const SyntheticShape kSyntheticShapes[] = {
    // head_dim 64, group 4, 16 experts top-4, a dense layer
    {"bf16-hd64", 1024, 256, 3, 8, 2, 64, 16, 4, 128, 384, true},
    // the GPU preset's attention shape (32/4 heads of 128 would be 4096 wide; here 16/2: group 8, head_dim 128),
    // 32 experts top-8 of width 256
    {"bf16-hd128", 2048, 512, 2, 16, 2, 128, 32, 8, 256, 512, false},
};

inline std::shared_ptr<const Model> synthetic_model(const SyntheticShape& s) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Model>> made;
  static janus::test::TempDir dir;  // removed at exit
  std::lock_guard<std::mutex> lk(mu);
  auto it = made.find(s.name);
  if (it != made.end()) return it->second;
  const ModelPreset* base = find_preset("tiny-qwen3-moe");
  REQUIRE(base != nullptr);
  ModelPreset p = *base;
  p.name = s.name;
  ModelConfig& c = p.config;
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.num_layers = s.layers;
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  c.num_experts = s.experts;
  c.top_k = s.top_k;
  c.moe_intermediate_size = s.moe_inter;
  c.intermediate_size = s.inter;
  c.sparse_layer.assign(static_cast<size_t>(s.layers), true);
  if (s.dense_layer_1 && s.layers > 1) c.sparse_layer[1] = false;
  const std::string d = dir / s.name;
  Status st = make_model(p, d, 7, DType::kBF16, false);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  auto m = Model::load(d);
  REQUIRE_MESSAGE(m.ok(), m.status().to_string());
  made[s.name] = *m;
  return *m;
}

inline std::shared_ptr<const Model> fixture_model(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Model>> loaded;
  std::lock_guard<std::mutex> lk(mu);
  auto it = loaded.find(name);
  if (it != loaded.end()) return it->second;
  auto m = Model::load(janus::test::fixture(name));
  REQUIRE_MESSAGE(m.ok(), m.status().to_string());
  loaded[name] = *m;
  return *m;
}

inline Device cuda0() { return Device{DeviceKind::kCuda, 0}; }

/// A host float copy of a tensor on any device (F32, F64 or BF16).
inline std::vector<float> to_floats(const Tensor& t) {
  Tensor h;
  Status s = copy_to_host(t, &h);
  REQUIRE_MESSAGE(s.ok(), s.to_string());
  const size_t n = static_cast<size_t>(h.rows * h.cols);
  std::vector<float> out(n);
  if (h.dtype == DType::kF64)
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(h.as<double>()[i]);
  else
    convert_to_f32(h.data, h.dtype, out.data(), n);
  return out;
}

/// A host F32 tensor holding `v` as [rows, cols].
inline Tensor host_tensor(const std::vector<float>& v, int64_t rows, int64_t cols) {
  REQUIRE(v.size() == static_cast<size_t>(rows * cols));
  Tensor t = Tensor::host(DType::kF32, rows, cols);
  std::copy(v.begin(), v.end(), t.as<float>());
  return t;
}

/// A device copy of a tensor (on cuda:0).
inline Tensor on_gpu(const Tensor& t) {
  Tensor d;
  Status s = host_to_device(t, cuda0(), &d);
  REQUIRE_MESSAGE(s.ok(), s.to_string());
  return d;
}

inline double tolerance_for(const Model& m) {
  // F32 models: the GPU adds in other orders than the CPU, nothing else (1e-6 typical);
  // BF16 models: the GPU also rounds matmul inputs and the KV cache to BF16.
  return m.weights().layers[0].q.dtype == DType::kF32 ? 1e-4 : 1e-2;
}

}  // namespace janus::cuda::test
