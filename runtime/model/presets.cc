#include "runtime/model/presets.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "runtime/base/progress.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/sampling.h"

namespace janus {
namespace fs = std::filesystem;

namespace {

ModelConfig qwen3(int vocab, int hidden, int layers, int heads, int kv, int head_dim, int experts, int top_k, int moe_inter,
                  int inter, double theta) {
  ModelConfig c;
  c.family = ModelFamily::kQwen3Moe;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv;
  c.head_dim = head_dim;
  c.num_experts = experts;
  c.top_k = top_k;
  c.moe_intermediate_size = moe_inter;
  c.intermediate_size = inter;
  c.norm_topk_prob = true;
  c.qk_norm = true;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = theta;
  c.max_position_embeddings = 32768;
  c.eos_token_ids = {1};
  c.bos_token_id = 0;
  c.sparse_layer.assign(static_cast<size_t>(layers), true);
  return c;
}

// DeepSeek-V3's MoE side at CPU size, which GLM-4-MoE shares: one dense first layer, one
// shared expert of the experts' width, the noaux_tc router in 4 groups of which 2 are kept.
void noaux_tc_moe(double routed_scaling_factor, ModelConfig* c) {
  c->norm_topk_prob = true;
  c->shared_expert_intermediate_size = c->moe_intermediate_size;
  c->routed_scaling_factor = routed_scaling_factor;
  c->sigmoid_gate = true;
  c->n_group = 4;
  c->topk_group = 2;
  c->sparse_layer[0] = false;
}

std::vector<ModelPreset> build_presets() {
  std::vector<ModelPreset> p;
  p.push_back({"tiny-qwen3-moe",
               "Qwen3-MoE shape for CPU runs and CI: 4 layers, hidden 128, 32 experts top-4, GQA 4/2",
               qwen3(512, 128, 4, 4, 2, 32, 32, 4, 64, 256, 1e6), DType::kF32});
  {
    ModelConfig c = qwen3(512, 128, 3, 4, 2, 32, 8, 2, 192, 192, 1e6);
    c.family = ModelFamily::kMixtral;
    c.qk_norm = false;
    c.norm_topk_prob = true;
    c.rms_norm_eps = 1e-5;
    p.push_back({"tiny-mixtral", "Mixtral shape for CPU runs: 3 layers, hidden 128, 8 experts top-2, GQA 4/2", c,
                 DType::kF32});
  }
  {
    // Qwen1.5-MoE's structure at CPU size: q/k/v biases, a gated shared expert of its own
    // width beside the routed ones, top-k not renormalised, and one dense MLP layer.
    ModelConfig c = qwen3(512, 128, 4, 4, 2, 32, 16, 4, 64, 256, 1e6);
    c.family = ModelFamily::kQwen2Moe;
    c.qk_norm = false;
    c.qkv_bias = true;
    c.norm_topk_prob = false;
    c.shared_expert_intermediate_size = 192;
    c.shared_expert_gate = true;
    c.sparse_layer[1] = false;
    p.push_back({"tiny-qwen2-moe",
                 "Qwen2-MoE shape for CPU runs: 4 layers (layer 1 dense), hidden 128, 16 experts top-4 and a gated "
                 "shared expert of 192, q/k/v biases, GQA 4/2",
                 c, DType::kF32});
  }
  {
    // OLMoE's structure: q/k RMSNorm over the whole projection, clip_qkv, head_dim = hidden / heads.
    ModelConfig c = qwen3(512, 128, 3, 4, 4, 32, 16, 4, 64, 64, 1e4);
    c.family = ModelFamily::kOlmoe;
    c.qk_norm = false;
    c.qk_norm_full = true;
    c.clip_qkv = 8.0;
    c.norm_topk_prob = false;
    c.rms_norm_eps = 1e-5;
    p.push_back({"tiny-olmoe",
                 "OLMoE shape for CPU runs: 3 layers, hidden 128, 16 experts top-4, q/k norms over the whole "
                 "projection, clip_qkv 8, 4 heads",
                 c, DType::kF32});
  }
  {
    // DeepSeek-V2's structure at CPU size: MLA with a q LoRA, a dense first layer, two
    // ungated shared experts, group-limited routing scaled by routed_scaling_factor.
    ModelConfig c = qwen3(512, 128, 3, 4, 4, 16, 16, 4, 48, 256, 1e4);
    c.family = ModelFamily::kDeepseekV2;
    c.qk_norm = false;
    c.norm_topk_prob = false;
    c.q_lora_rank = 64;
    c.kv_lora_rank = 64;
    c.qk_nope_head_dim = 32;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    c.shared_expert_intermediate_size = 2 * 48;
    c.routed_scaling_factor = 2.0;
    c.n_group = 4;
    c.topk_group = 2;
    c.sparse_layer[0] = false;
    p.push_back({"tiny-deepseek-v2",
                 "DeepSeek-V2 shape for CPU runs: 3 layers (layer 0 dense), hidden 128, MLA (q LoRA 64, kv LoRA 64, "
                 "nope/rope/v 32/16/32, 4 heads), 16 experts top-4 in 4 groups (2 kept), 2 shared experts",
                 c, DType::kF32});
  }
  {
    // DeepSeek-V3's structure at CPU size: V2's MLA with YaRN (factor 4, mscale 1 / 1 as V3
    // ships), the noaux_tc router (sigmoid, correction bias, group top-2 sums, renormalised,
    // scaled 2.5), one dense first layer, one shared expert.
    ModelConfig c = qwen3(512, 128, 3, 4, 4, 16, 16, 4, 48, 256, 1e4);
    c.family = ModelFamily::kDeepseekV3;
    c.qk_norm = false;
    c.q_lora_rank = 64;
    c.kv_lora_rank = 64;
    c.qk_nope_head_dim = 32;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    noaux_tc_moe(2.5, &c);
    c.rope_yarn = true;
    c.yarn.factor = 4.0;
    c.yarn.original_max_position_embeddings = 8192;
    c.yarn.mscale = 1.0;
    c.yarn.mscale_all_dim = 1.0;
    p.push_back({"tiny-deepseek-v3",
                 "DeepSeek-V3 shape for CPU runs: 3 layers (layer 0 dense), hidden 128, MLA (q LoRA 64, kv LoRA 64, "
                 "nope/rope/v 32/16/32, 4 heads) with YaRN x4, 16 experts top-4 by sigmoid noaux_tc in 4 groups "
                 "(2 kept), 1 shared expert",
                 c, DType::kF32});
  }
  {
    // GLM-4.5's structure at CPU size: GQA with q/k/v biases and per-head q/k norms, RoPE
    // over half of each head, and DeepSeek-V3's MoE side (GLM-4.5 scales by 2.5 too).
    ModelConfig c = qwen3(512, 128, 3, 4, 2, 32, 16, 4, 48, 256, 1e4);
    c.family = ModelFamily::kGlm4Moe;
    c.qkv_bias = true;
    c.partial_rotary_factor = 0.5;
    c.rms_norm_eps = 1e-5;
    noaux_tc_moe(2.5, &c);
    p.push_back({"tiny-glm4-moe",
                 "GLM-4-MoE shape for CPU runs: 3 layers (layer 0 dense), hidden 128, GQA 4/2 heads of 32 with q/k/v "
                 "biases and q/k norms, partial rotary 0.5, 16 experts top-4 by sigmoid noaux_tc in 4 groups (2 kept), "
                 "1 shared expert",
                 c, DType::kF32});
  }
  p.push_back({"gpu-qwen3-moe",
               "Qwen3-30B-A3B-like for one GPU: 8 layers, hidden 2048, 32/4 heads of 128, 128 experts top-8, expert "
               "intermediate 768, vocab 32000",
               qwen3(32000, 2048, 8, 32, 4, 128, 128, 8, 768, 6144, 1e6), DType::kBF16});
  // One DeepSeek-V2-sized MoE layer for profiling the simulator's coefficients on a GPU:
  // DeepSeek-V2's hidden size, expert shape and top-6, 32 of its 160 experts (enough to
  // fit T(a) up to a = 32), and GQA attention (40/8 heads: the group size of the models
  // our attention kernel is tuned for); `janus simulate` scales its weight and KV costs
  // by bytes to DeepSeek-V2's MLA (runtime/serving/simulator.h says how).
  p.push_back({"dsv2-slice",
               "one DeepSeek-V2-sized MoE layer for profiling: hidden 5120, 32 experts of intermediate 1536 top-6, GQA "
               "40/8 heads of 128, vocab 32000",
               qwen3(32000, 5120, 1, 40, 8, 128, 32, 6, 1536, 12288, 1e4), DType::kBF16});
  return p;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

enum class Init { kUnit, kNorm, kLinear };

// Uniform with the wanted standard deviation: embeddings ~1, linear layers 1/sqrt(in)
// (activations keep their scale through the stack), norm weights 1 +- 0.1 (visibly not
// the identity, so a test notices a norm weight that is not applied).
void fill_tensor(const std::string& name, Init init, int64_t fan_in, uint64_t seed, DType dt, int64_t n, void* dst) {
  const uint64_t key = fnv1a(name) ^ (seed * 0x9e3779b97f4a7c15ull);
  const double half_width = std::sqrt(3.0);  // uniform(-a, a) has std a/sqrt(3)
  double scale = 1.0, offset = 0.0;
  if (init == Init::kLinear) scale = 1.0 / std::sqrt(static_cast<double>(fan_in));
  if (init == Init::kNorm) {
    scale = 0.1 / half_width;
    offset = 1.0;
  }
  constexpr int64_t kChunk = 4096;
  float buf[kChunk];
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t m = std::min(kChunk, n - i0);
    for (int64_t i = 0; i < m; ++i)
      buf[i] = static_cast<float>(offset + scale * half_width * (2.0 * counter_uniform(key, static_cast<uint64_t>(i0 + i)) - 1.0));
    convert_from_f32(buf, dt, static_cast<char*>(dst) + i0 * static_cast<int64_t>(dtype_size(dt)), static_cast<size_t>(m));
  }
}

}  // namespace

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> presets = build_presets();
  return presets;
}

const ModelPreset* find_preset(const std::string& name) {
  for (const ModelPreset& p : model_presets())
    if (p.name == name) return &p;
  return nullptr;
}

Status make_model(const ModelPreset& preset, const std::string& dir, uint64_t seed, DType dtype, bool progress) {
  const ModelConfig& c = preset.config;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error(dir + ": cannot create directory: " + ec.message());

  struct Item {
    TensorSpec spec;
    Init init;
    int64_t fan_in;
  };
  std::vector<Item> items;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, Init init) {
    int64_t fan_in = shape.back();
    items.push_back({{name, dtype, std::move(shape)}, init, fan_in});
  };
  const int64_t H = c.hidden_size, V = c.vocab_size;
  const bool mixtral = c.family == ModelFamily::kMixtral;
  auto add_bias = [&](const std::string& name, int64_t n) {
    // Biases of the scale of the projection's outputs (std 1/sqrt(H)), visible but not dominant.
    items.push_back({{name, dtype, {n}}, Init::kLinear, H});
  };
  add("model.embed_tokens.weight", {V, H}, Init::kUnit);
  add("model.norm.weight", {H}, Init::kNorm);
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, H}, Init::kLinear);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, Init::kNorm);
    add(p + "post_attention_layernorm.weight", {H}, Init::kNorm);
    if (c.mla()) {
      const int64_t heads = c.num_heads, L = c.kv_lora_rank;
      if (c.q_lora_rank > 0) {
        add(p + "self_attn.q_a_proj.weight", {c.q_lora_rank, H}, Init::kLinear);
        add(p + "self_attn.q_a_layernorm.weight", {c.q_lora_rank}, Init::kNorm);
        add(p + "self_attn.q_b_proj.weight", {heads * c.qk_head_dim(), c.q_lora_rank}, Init::kLinear);
      } else {
        add(p + "self_attn.q_proj.weight", {heads * c.qk_head_dim(), H}, Init::kLinear);
      }
      add(p + "self_attn.kv_a_proj_with_mqa.weight", {L + c.qk_rope_head_dim, H}, Init::kLinear);
      add(p + "self_attn.kv_a_layernorm.weight", {L}, Init::kNorm);
      add(p + "self_attn.kv_b_proj.weight", {heads * (c.qk_nope_head_dim + c.v_head_dim), L}, Init::kLinear);
      add(p + "self_attn.o_proj.weight", {H, heads * c.v_head_dim}, Init::kLinear);
    } else {
      add(p + "self_attn.q_proj.weight", {c.q_dim(), H}, Init::kLinear);
      add(p + "self_attn.k_proj.weight", {c.kv_dim(), H}, Init::kLinear);
      add(p + "self_attn.v_proj.weight", {c.kv_dim(), H}, Init::kLinear);
      add(p + "self_attn.o_proj.weight", {H, c.q_dim()}, Init::kLinear);
    }
    if (c.qkv_bias) {
      add_bias(p + "self_attn.q_proj.bias", c.q_dim());
      add_bias(p + "self_attn.k_proj.bias", c.kv_dim());
      add_bias(p + "self_attn.v_proj.bias", c.kv_dim());
    }
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {c.head_dim}, Init::kNorm);
      add(p + "self_attn.k_norm.weight", {c.head_dim}, Init::kNorm);
    }
    if (c.qk_norm_full) {
      add(p + "self_attn.q_norm.weight", {c.q_dim()}, Init::kNorm);
      add(p + "self_attn.k_norm.weight", {c.kv_dim()}, Init::kNorm);
    }
    if (c.is_sparse(l)) {
      const int64_t I = c.moe_intermediate_size;
      const std::string moe = p + (mixtral ? "block_sparse_moe." : "mlp.");
      add(moe + "gate.weight", {c.num_experts, H}, Init::kLinear);
      if (c.sigmoid_gate) add(moe + "gate.e_score_correction_bias", {c.num_experts}, Init::kLinear);
      for (int e = 0; e < c.num_experts; ++e) {
        const std::string x = moe + "experts." + std::to_string(e) + ".";
        add(x + (mixtral ? "w1.weight" : "gate_proj.weight"), {I, H}, Init::kLinear);
        add(x + (mixtral ? "w3.weight" : "up_proj.weight"), {I, H}, Init::kLinear);
        add(x + (mixtral ? "w2.weight" : "down_proj.weight"), {H, I}, Init::kLinear);
      }
      if (c.has_shared_expert()) {
        const int64_t S = c.shared_expert_intermediate_size;
        const std::string s = p + (c.shared_expert_gate ? "mlp.shared_expert." : "mlp.shared_experts.");
        add(s + "gate_proj.weight", {S, H}, Init::kLinear);
        add(s + "up_proj.weight", {S, H}, Init::kLinear);
        add(s + "down_proj.weight", {H, S}, Init::kLinear);
        if (c.shared_expert_gate) add(p + "mlp.shared_expert_gate.weight", {1, H}, Init::kLinear);
      }
    } else {
      const int64_t I = c.intermediate_size;
      add(p + "mlp.gate_proj.weight", {I, H}, Init::kLinear);
      add(p + "mlp.up_proj.weight", {I, H}, Init::kLinear);
      add(p + "mlp.down_proj.weight", {H, I}, Init::kLinear);
    }
  }
  std::vector<TensorSpec> specs;
  for (const Item& it : items) specs.push_back(it.spec);

  {
    std::ofstream cfg(fs::path(dir) / "config.json");
    ModelConfig out = c;
    cfg << model_config_to_json(out);
    if (!cfg) return io_error(dir + "/config.json: cannot write");
  }
  std::unique_ptr<ProgressBar> bar;
  size_t total = 0;
  for (const TensorSpec& s : specs) {
    size_t n = dtype_size(s.dtype);
    for (int64_t d : s.shape) n *= static_cast<size_t>(d);
    total += n;
  }
  if (progress) bar = std::make_unique<ProgressBar>("make-model " + preset.name, static_cast<int64_t>(total), "B");
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"janus_preset", preset.name}, {"janus_seed", std::to_string(seed)}};
  JANUS_TRY(write_safetensors(
      (fs::path(dir) / "model.safetensors").string(), specs,
      [&](size_t i, void* dst) {
        const Item& it = items[i];
        int64_t n = 1;
        for (int64_t d : it.spec.shape) n *= d;
        fill_tensor(it.spec.name, it.init, it.fan_in, seed, dtype, n, dst);
      },
      meta, [&](size_t done, size_t) {
        if (bar) bar->update(static_cast<int64_t>(done));
      }));
  if (bar) bar->finish();
  return Status::Ok();
}

std::string preset_cache_dir(const std::string& preset, uint64_t seed, DType dtype) {
  fs::path base;
  if (const char* m = std::getenv("JANUS_MODEL_CACHE"); m && *m) base = m;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) base = fs::path(x) / "janus" / "models";
  else if (const char* h = std::getenv("HOME"); h && *h) base = fs::path(h) / ".cache" / "janus" / "models";
  else base = fs::temp_directory_path() / "janus-models";
  std::string d = dtype == DType::kF32 ? "f32" : dtype == DType::kBF16 ? "bf16" : "f16";
  return (base / (preset + "-seed" + std::to_string(seed) + "-" + d)).string();
}

Result<std::string> ensure_preset_model(const std::string& name, uint64_t seed, DType dtype, bool progress) {
  const ModelPreset* p = find_preset(name);
  if (p == nullptr) return not_found("no model preset named '" + name + "'");
  const std::string dir = preset_cache_dir(name, seed, dtype);
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "model.safetensors", ec) && fs::exists(fs::path(dir) / "config.json", ec)) return dir;
  // Build beside the final place and rename, so that concurrent first runs (parallel
  // tests) never see a half-written model.
  const std::string tmp = dir + ".tmp" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  JANUS_TRY(make_model(*p, tmp, seed, dtype, progress));
  fs::rename(tmp, dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    if (!fs::exists(fs::path(dir) / "model.safetensors")) return io_error(dir + ": cannot move the new model into place");
  }
  return dir;
}

}  // namespace janus
