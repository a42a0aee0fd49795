#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "runtime/model/model.h"
#include "runtime/model/presets.h"
#include "runtime/model/reference_engine.h"
#include "test_util.h"

using namespace janus;
using janus::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Makes the tiny Mixtral preset in `dir` (small and quick).
void make_tiny(const std::string& dir, uint64_t seed = 3) {
  REQUIRE(make_model(*find_preset("tiny-mixtral"), dir, seed, DType::kF32, false).ok());
}

// Rewrites model.safetensors of `dir` keeping all tensors but letting `edit` change the list.
void rewrite(const std::string& dir, const std::function<void(std::vector<TensorSpec>&)>& edit) {
  std::vector<TensorSpec> specs;
  std::map<std::string, std::vector<char>> bytes;
  {
    auto f = SafetensorsFile::open(dir + "/model.safetensors");
    REQUIRE(f.ok());
    for (const auto& [name, t] : f->tensors()) {
      specs.push_back({name, t.dtype, t.shape});
      bytes[name].assign(static_cast<const char*>(t.data), static_cast<const char*>(t.data) + t.nbytes);
    }
  }
  edit(specs);
  REQUIRE(write_safetensors(dir + "/model.safetensors", specs, [&](size_t i, void* dst) {
            auto it = bytes.find(specs[i].name);
            size_t n = dtype_size(specs[i].dtype);
            for (int64_t d : specs[i].shape) n *= static_cast<size_t>(d);
            if (it != bytes.end() && it->second.size() == n) std::memcpy(dst, it->second.data(), n);
            else std::memset(dst, 0, n);
          }).ok());
}

// Rewrites model.safetensors of `dir` without the tensor `name`.
void drop_tensor(const std::string& dir, const std::string& name) {
  rewrite(dir, [&](std::vector<TensorSpec>& s) {
    s.erase(std::remove_if(s.begin(), s.end(), [&](const TensorSpec& t) { return t.name == name; }), s.end());
  });
}

// The tokens greedy decoding makes from a short prompt past EOS (4 of them unless it fails).
size_t generated_tokens(const std::shared_ptr<Model>& m) {
  ReferenceEngine engine(m);
  GenerateRequest r;
  r.prompt = {3, 1, 4, 1, 5};
  r.max_new_tokens = 4;
  r.stop_at_eos = false;
  auto out = engine.generate({r});
  REQUIRE(out.ok());
  return (*out)[0].tokens.size();
}

std::string load_error(const std::string& dir) {
  auto m = Model::load(dir);
  REQUIRE_FALSE(m.ok());
  return m.status().to_string();
}

}  // namespace

TEST_CASE("make-model writes a checkpoint that loads, deterministically per seed") {
  TempDir a, b, c;
  make_tiny(a.path(), 3);
  make_tiny(b.path(), 3);
  make_tiny(c.path(), 4);
  CHECK(janus::test::read_file(a / "model.safetensors") == janus::test::read_file(b / "model.safetensors"));
  CHECK(janus::test::read_file(a / "model.safetensors") != janus::test::read_file(c / "model.safetensors"));
  auto m = Model::load(a.path());
  REQUIRE(m.ok());
  const ModelConfig& cfg = (*m)->config();
  CHECK(cfg.family == ModelFamily::kMixtral);
  CHECK((*m)->weights().layers.size() == static_cast<size_t>(cfg.num_layers));
  CHECK((*m)->weights().layers[0].experts.size() == static_cast<size_t>(cfg.num_experts));
  CHECK((*m)->weights().layers[0].experts[3].down.rows == cfg.hidden_size);
  CHECK((*m)->expert_bytes() > 0);
  CHECK((*m)->expert_bytes() < (*m)->weight_bytes());
}

TEST_CASE("every preset has a valid config and bf16 make-model loads as BF16") {
  for (const ModelPreset& p : model_presets()) {
    CAPTURE(p.name);
    CHECK(p.config.validate(p.name).ok());
  }
  TempDir d;
  REQUIRE(make_model(*find_preset("tiny-qwen3-moe"), d.path(), 0, DType::kBF16, false).ok());
  auto m = Model::load(d.path());
  REQUIRE(m.ok());
  CHECK((*m)->weights().layers[1].q.dtype == DType::kBF16);
  CHECK((*m)->weights().layers[1].q_norm.cols == 32);
}

TEST_CASE("a missing tensor is named") {
  TempDir d;
  make_tiny(d.path());
  rewrite(d.path(), [](std::vector<TensorSpec>& s) {
    s.erase(std::remove_if(s.begin(), s.end(), [](const TensorSpec& t) { return t.name == "model.layers.1.self_attn.k_proj.weight"; }),
            s.end());
  });
  std::string e = load_error(d.path());
  CHECK(e.find("missing tensor 'model.layers.1.self_attn.k_proj.weight'") != std::string::npos);
}

TEST_CASE("an extra tensor is named") {
  TempDir d;
  make_tiny(d.path());
  rewrite(d.path(), [](std::vector<TensorSpec>& s) { s.push_back({"model.layers.0.rotary_emb.inv_freq", DType::kF32, {16}}); });
  std::string e = load_error(d.path());
  CHECK(e.find("unexpected tensor 'model.layers.0.rotary_emb.inv_freq'") != std::string::npos);
}

TEST_CASE("a wrong shape is named with both shapes") {
  TempDir d;
  make_tiny(d.path());
  rewrite(d.path(), [](std::vector<TensorSpec>& s) {
    for (TensorSpec& t : s)
      if (t.name == "model.layers.2.block_sparse_moe.experts.5.w2.weight") t.shape = {128, 191};
  });
  std::string e = load_error(d.path());
  CHECK(e.find("'model.layers.2.block_sparse_moe.experts.5.w2.weight' has shape [128, 191], expected [128, 192]") !=
        std::string::npos);
}

TEST_CASE("unsupported architecture and malformed config.json are refused at load") {
  TempDir d;
  make_tiny(d.path());
  std::string cfg = janus::test::read_file(d / "config.json");
  janus::test::write_file(d / "config.json", cfg.substr(0, cfg.size() / 2));
  CHECK(load_error(d.path()).find("config.json: malformed JSON") != std::string::npos);
  auto j = nlohmann::json::parse(cfg);
  j["model_type"] = "dbrx";
  janus::test::write_file(d / "config.json", j.dump());
  CHECK(load_error(d.path()).find("model_type 'dbrx'") != std::string::npos);
  fs::remove(d / "config.json");
  CHECK(load_error(d.path()).find("config.json: no such file") != std::string::npos);
}

TEST_CASE("fused transformers-5 expert tensors load as the same per-expert weights") {
  TempDir d, fused;
  make_tiny(d.path());
  auto orig = Model::load(d.path());
  REQUIRE(orig.ok());
  const ModelConfig& c = (*orig)->config();
  const int64_t E = c.num_experts, I = c.moe_intermediate_size, H = c.hidden_size;
  // Rebuild the checkpoint with mlp.experts.gate_up_proj / down_proj / mlp.gate per layer.
  auto src = SafetensorsFile::open(d / "model.safetensors");
  REQUIRE(src.ok());
  std::vector<TensorSpec> specs;
  for (const auto& [name, t] : src->tensors())
    if (name.find("block_sparse_moe") == std::string::npos) specs.push_back({name, t.dtype, t.shape});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
    specs.push_back({p + "gate.weight", DType::kF32, {E, H}});
    specs.push_back({p + "experts.gate_up_proj", DType::kF32, {E, 2 * I, H}});
    specs.push_back({p + "experts.down_proj", DType::kF32, {E, H, I}});
  }
  janus::test::copy_dir(d.path(), fused.path());
  REQUIRE(write_safetensors(fused / "model.safetensors", specs, [&](size_t i, void* dst) {
            const std::string& n = specs[i].name;
            auto it = src->tensors().find(n);
            if (it != src->tensors().end()) {
              std::memcpy(dst, it->second.data, it->second.nbytes);
              return;
            }
            const int l = std::stoi(n.substr(13));
            const LayerWeights& lw = (*orig)->weights().layers[static_cast<size_t>(l)];
            char* out = static_cast<char*>(dst);
            if (n.find("gate.weight") != std::string::npos) {
              std::memcpy(out, lw.router.data, lw.router.nbytes());
            } else if (n.find("gate_up_proj") != std::string::npos) {
              for (int64_t e = 0; e < E; ++e) {
                std::memcpy(out, lw.experts[e].gate.data, lw.experts[e].gate.nbytes());
                out += lw.experts[e].gate.nbytes();
                std::memcpy(out, lw.experts[e].up.data, lw.experts[e].up.nbytes());
                out += lw.experts[e].up.nbytes();
              }
            } else {
              for (int64_t e = 0; e < E; ++e) {
                std::memcpy(out, lw.experts[e].down.data, lw.experts[e].down.nbytes());
                out += lw.experts[e].down.nbytes();
              }
            }
          }).ok());
  auto m = Model::load(fused.path());
  REQUIRE(m.ok());
  for (int l = 0; l < c.num_layers; ++l)
    for (int64_t e = 0; e < E; ++e) {
      const ExpertWeights& a = (*orig)->weights().layers[l].experts[e];
      const ExpertWeights& b = (*m)->weights().layers[l].experts[e];
      REQUIRE(std::memcmp(a.gate.data, b.gate.data, a.gate.nbytes()) == 0);
      REQUIRE(std::memcmp(a.up.data, b.up.data, a.up.nbytes()) == 0);
      REQUIRE(std::memcmp(a.down.data, b.down.data, a.down.nbytes()) == 0);
    }
}

TEST_CASE("NaN and infinite weights are refused at load, naming the tensor and the element") {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      TempDir d;
      REQUIRE(make_model(*find_preset("tiny-mixtral"), d.path(), 3, dt, false).ok());
      REQUIRE(Model::load(d.path()).ok());
      // Poison one element in the middle of one expert's weight, in place in the file.
      const std::string name = "model.layers.1.block_sparse_moe.experts.2.w1.weight";
      size_t offset = 0;
      {
        auto f = SafetensorsFile::open(d.path() + "/model.safetensors");
        REQUIRE(f.ok());
        const TensorInfo* t = nullptr;
        for (const auto& [n, info] : f->tensors())
          if (n == name) t = &info;
        REQUIRE(t != nullptr);
        auto* base = static_cast<const char*>(f->tensors().begin()->second.data);
        for (const auto& [n, info] : f->tensors()) base = std::min(base, static_cast<const char*>(info.data));
        offset = static_cast<size_t>(static_cast<const char*>(t->data) - base) + 77 * dtype_size(dt);
        // The data section starts after the 8-byte length and the JSON header.
        std::ifstream in(d.path() + "/model.safetensors", std::ios::binary);
        uint64_t header = 0;
        in.read(reinterpret_cast<char*>(&header), 8);
        offset += 8 + header;
      }
      std::vector<char> bytes(8);
      convert_from_f32(&bad, dt, bytes.data(), 1);
      {
        std::fstream io(d.path() + "/model.safetensors", std::ios::binary | std::ios::in | std::ios::out);
        io.seekp(static_cast<std::streamoff>(offset));
        io.write(bytes.data(), static_cast<std::streamsize>(dtype_size(dt)));
      }
      const std::string e = load_error(d.path());
      CHECK_MESSAGE(e.find("tensor '" + name + "' holds a non-finite value") != std::string::npos, e);
      CHECK_MESSAGE(e.find("at element 77") != std::string::npos, e);
    }
  }
}

TEST_CASE("first_non_finite finds the first NaN or infinity in every dtype and nothing in finite data") {
  std::vector<float> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::ldexp(static_cast<float>(i % 17) - 8.0f, static_cast<int>(i % 60) - 30);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF64}) {
    std::vector<char> buf(v.size() * dtype_size(dt));
    auto fill = [&] {
      if (dt == DType::kF64) {
        for (size_t i = 0; i < v.size(); ++i) reinterpret_cast<double*>(buf.data())[i] = v[i];
      } else {
        convert_from_f32(v.data(), dt, buf.data(), v.size());
      }
    };
    std::vector<float> keep = v;
    if (dt == DType::kF16)  // f16 overflows past 65504: keep the finite test finite
      for (float& x : v) x = std::max(-60000.0f, std::min(60000.0f, x));
    fill();
    CHECK(first_non_finite(buf.data(), dt, v.size()) == -1);
    v[613] = std::numeric_limits<float>::infinity();
    v[820] = std::numeric_limits<float>::quiet_NaN();
    fill();
    CHECK(first_non_finite(buf.data(), dt, v.size()) == 613);
    CHECK(first_non_finite(buf.data(), dt, 600) == -1);
    v = keep;
  }
}

TEST_CASE("tiny-qwen2-moe and tiny-olmoe presets write checkpoints with their families' tensors, and they load") {
  {
    TempDir d;
    REQUIRE(make_model(*find_preset("tiny-qwen2-moe"), d.path(), 0, DType::kF32, false).ok());
    auto m = Model::load(d.path());
    REQUIRE_MESSAGE(m.ok(), m.status().to_string());
    const ModelConfig& c = (*m)->config();
    CHECK(c.family == ModelFamily::kQwen2Moe);
    const LayerWeights& l0 = (*m)->weights().layers[0];
    CHECK(l0.q_bias.cols == c.q_dim());
    CHECK(l0.v_bias.cols == c.kv_dim());
    CHECK(l0.shared.gate.rows == c.shared_expert_intermediate_size);
    CHECK(l0.shared.down.cols == c.shared_expert_intermediate_size);
    CHECK(l0.shared_gate.cols == c.hidden_size);
    CHECK_FALSE((*m)->weights().layers[1].sparse);
    CHECK((*m)->weights().layers[1].shared.gate.empty());  // dense layers have no shared expert
  }
  {
    TempDir d;
    REQUIRE(make_model(*find_preset("tiny-olmoe"), d.path(), 0, DType::kF32, false).ok());
    auto m = Model::load(d.path());
    REQUIRE_MESSAGE(m.ok(), m.status().to_string());
    const ModelConfig& c = (*m)->config();
    CHECK(c.family == ModelFamily::kOlmoe);
    CHECK(c.clip_qkv == 8.0);
    CHECK((*m)->weights().layers[2].q_norm.cols == c.q_dim());
    CHECK((*m)->weights().layers[2].k_norm.cols == c.kv_dim());
  }
}

TEST_CASE("Qwen2-MoE and OLMoE checkpoints: a missing bias or shared-expert tensor and a wrong norm shape are named") {
  {
    TempDir d;
    REQUIRE(make_model(*find_preset("tiny-qwen2-moe"), d.path(), 0, DType::kF32, false).ok());
    rewrite(d.path(), [](std::vector<TensorSpec>& s) {
      s.erase(std::remove_if(s.begin(), s.end(), [](const TensorSpec& t) { return t.name == "model.layers.2.self_attn.k_proj.bias"; }),
              s.end());
    });
    CHECK(load_error(d.path()).find("missing tensor 'model.layers.2.self_attn.k_proj.bias' (expected shape [64])") !=
          std::string::npos);
  }
  {
    TempDir d;
    REQUIRE(make_model(*find_preset("tiny-qwen2-moe"), d.path(), 0, DType::kF32, false).ok());
    rewrite(d.path(), [](std::vector<TensorSpec>& s) {
      for (TensorSpec& t : s)
        if (t.name == "model.layers.3.mlp.shared_expert_gate.weight") t.shape = {128};
    });
    CHECK(load_error(d.path()).find("'model.layers.3.mlp.shared_expert_gate.weight' has shape [128], expected [1, 128]") !=
          std::string::npos);
  }
  {
    TempDir d;
    REQUIRE(make_model(*find_preset("tiny-qwen2-moe"), d.path(), 0, DType::kF32, false).ok());
    rewrite(d.path(), [](std::vector<TensorSpec>& s) {
      s.erase(std::remove_if(s.begin(), s.end(),
                             [](const TensorSpec& t) { return t.name == "model.layers.0.mlp.shared_expert.up_proj.weight"; }),
              s.end());
    });
    CHECK(load_error(d.path()).find("missing tensor 'model.layers.0.mlp.shared_expert.up_proj.weight'") != std::string::npos);
  }
  {
    TempDir d;
    REQUIRE(make_model(*find_preset("tiny-olmoe"), d.path(), 0, DType::kF32, false).ok());
    rewrite(d.path(), [](std::vector<TensorSpec>& s) {
      for (TensorSpec& t : s)
        if (t.name == "model.layers.1.self_attn.q_norm.weight") t.shape = {32};  // per head, as Qwen3 stores it
    });
    CHECK(load_error(d.path()).find("'model.layers.1.self_attn.q_norm.weight' has shape [32], expected [128]") !=
          std::string::npos);
  }
}

TEST_CASE("the tiny-deepseek-v2 preset writes an MLA checkpoint that loads, and a missing MLA tensor is named") {
  TempDir d;
  REQUIRE(make_model(*find_preset("tiny-deepseek-v2"), d.path(), 0, DType::kF32, false).ok());
  auto m = Model::load(d.path());
  REQUIRE_MESSAGE(m.ok(), m.status().to_string());
  const ModelConfig& c = (*m)->config();
  CHECK(c.family == ModelFamily::kDeepseekV2);
  const LayerWeights& l1 = (*m)->weights().layers[1];
  CHECK(l1.q_a.rows == 64);
  CHECK(l1.kv_a.rows == 64 + 16);
  CHECK(l1.kv_b.rows == 4 * (32 + 32));
  CHECK(l1.shared.gate.rows == 96);
  CHECK(l1.shared_gate.empty());
  CHECK(l1.q.empty());
  CHECK_FALSE((*m)->weights().layers[0].sparse);
  // A missing latent projection is named.
  drop_tensor(d.path(), "model.layers.2.self_attn.kv_b_proj.weight");
  CHECK(load_error(d.path()).find("missing tensor 'model.layers.2.self_attn.kv_b_proj.weight' (expected shape [256, 64])") !=
        std::string::npos);
}

TEST_CASE("the tiny-glm4-moe preset writes a checkpoint with q/k/v biases, q/k norms and its router's correction bias that loads and generates") {
  TempDir d;
  REQUIRE(make_model(*find_preset("tiny-glm4-moe"), d.path(), 0, DType::kF32, false).ok());
  auto m = Model::load(d.path());
  REQUIRE_MESSAGE(m.ok(), m.status().to_string());
  const ModelConfig& c = (*m)->config();
  CHECK(c.family == ModelFamily::kGlm4Moe);
  CHECK(c.rotary_dim() == 16);
  CHECK(c.sigmoid_gate);
  CHECK(c.routed_scaling_factor == 2.5);
  CHECK(c.n_group == 4);
  const LayerWeights& l1 = (*m)->weights().layers[1];
  CHECK(l1.q_bias.cols == 4 * 32);
  CHECK(l1.k_bias.cols == 2 * 32);
  CHECK(l1.q_norm.cols == 32);
  CHECK(l1.router_bias.cols == 16);
  CHECK(l1.shared.gate.rows == 48);
  CHECK(l1.shared_gate.empty());
  CHECK_FALSE((*m)->weights().layers[0].sparse);
  CHECK(generated_tokens(*m) == 4);
  // A multi-token-prediction layer after the last one is skipped, as transformers skips it,
  // only while config.json declares it.
  rewrite(d.path(), [](std::vector<TensorSpec>& s) { s.push_back({"model.layers.3.eh_proj.weight", DType::kF32, {128, 256}}); });
  CHECK(load_error(d.path()).find("unexpected tensor 'model.layers.3.eh_proj.weight'") != std::string::npos);
  nlohmann::json cfg = nlohmann::json::parse(janus::test::read_file(d / "config.json"));
  cfg["num_nextn_predict_layers"] = 1;
  janus::test::write_file(d / "config.json", cfg.dump());
  auto with_mtp = Model::load(d.path());
  REQUIRE_MESSAGE(with_mtp.ok(), with_mtp.status().to_string());
  // Its q/k/v biases are required tensors, named when missing.
  drop_tensor(d.path(), "model.layers.2.self_attn.k_proj.bias");
  CHECK(load_error(d.path()).find("missing tensor 'model.layers.2.self_attn.k_proj.bias' (expected shape [64])") !=
        std::string::npos);
}

TEST_CASE("the tiny-deepseek-v3 preset writes a checkpoint with its router's correction bias and YaRN that loads and generates") {
  TempDir d;
  REQUIRE(make_model(*find_preset("tiny-deepseek-v3"), d.path(), 0, DType::kF32, false).ok());
  auto m = Model::load(d.path());
  REQUIRE_MESSAGE(m.ok(), m.status().to_string());
  const ModelConfig& c = (*m)->config();
  CHECK(c.family == ModelFamily::kDeepseekV3);
  CHECK(c.sigmoid_gate);
  CHECK(c.rope_yarn);
  CHECK(c.yarn.factor == 4.0);
  CHECK(c.n_group == 4);
  CHECK((*m)->weights().layers[1].router_bias.cols == 16);
  CHECK((*m)->weights().layers[0].router_bias.empty());
  CHECK(generated_tokens(*m) == 4);
  // Its correction bias is a required tensor, named when missing.
  drop_tensor(d.path(), "model.layers.2.mlp.gate.e_score_correction_bias");
  CHECK(load_error(d.path()).find("missing tensor 'model.layers.2.mlp.gate.e_score_correction_bias' (expected shape [16])") !=
        std::string::npos);
}
