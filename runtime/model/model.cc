#include "runtime/model/model.h"

#include <algorithm>
#include <atomic>
#include <set>

#include "runtime/base/parallel.h"

namespace janus {

WeightView WeightView::row(int64_t r) const {
  WeightView v = *this;
  v.data = static_cast<const char*>(data) + static_cast<size_t>(r * cols) * dtype_size(dtype);
  v.rows = 1;
  return v;
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// A NaN or infinity in a weight poisons every token that touches it, silently: refuse the
// checkpoint instead, naming the tensor and the first bad element. The scan reads each
// weight once, in parallel, while the pages are faulted in anyway.
Status check_finite(const TensorInfo& t) {
  const size_t n = static_cast<size_t>(t.numel());
  std::atomic<int64_t> first{-1};
  parallel_for(static_cast<int64_t>(n), int64_t{1} << 20, [&](int64_t b, int64_t e) {
    const int64_t at = first_non_finite(static_cast<const char*>(t.data) + static_cast<size_t>(b) * dtype_size(t.dtype), t.dtype,
                                        static_cast<size_t>(e - b));
    if (at < 0) return;
    int64_t seen = first.load();
    while ((seen < 0 || b + at < seen) && !first.compare_exchange_weak(seen, b + at)) {
    }
  });
  if (first.load() < 0) return Status::Ok();
  const size_t i = static_cast<size_t>(first.load());
  return invalid_argument(t.file + ": tensor '" + t.name + "' holds a non-finite value (" +
                          std::to_string(load_as_f32(t.data, t.dtype, i)) + ") at element " + std::to_string(i));
}

// Hands out tensors by name with their expected shape and remembers which were taken,
// so that whatever is left over at the end is reported as unexpected.
class Binder {
 public:
  explicit Binder(const Checkpoint& ck) : ck_(ck) {}

  bool has(const std::string& name) const { return ck_.find(name) != nullptr; }

  /// Tensors under `prefix` are in the checkpoint for something the forward pass does not
  /// run: not reported as unexpected.
  void skip_prefix(std::string prefix) { skipped_.push_back(std::move(prefix)); }

  Result<const TensorInfo*> take_raw(const std::string& name, const std::vector<int64_t>& shape) {
    const TensorInfo* t = ck_.find(name);
    if (t == nullptr) return not_found(ck_.dir() + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
    if (t->shape != shape)
      return invalid_argument(t->file + ": tensor '" + name + "' has shape " + t->shape_string() + ", expected " + shape_str(shape));
    JANUS_TRY(check_finite(*t));
    taken_.insert(name);
    return t;
  }

  Result<WeightView> take(const std::string& name, int64_t rows, int64_t cols) {
    std::vector<int64_t> shape = rows == 1 && cols > 0 ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
    JANUS_ASSIGN_OR_RETURN(const TensorInfo* t, take_raw(name, shape));
    return WeightView{t->data, t->dtype, rows, cols};
  }

  Status check_nothing_left() const {
    for (const auto& [name, info] : ck_.tensors())
      if (!taken_.count(name) && !skipped(name))
        return invalid_argument(info.file + ": unexpected tensor '" + name + "' " + info.shape_string() +
                                ": the config does not call for it (wrong config.json?)");
    return Status::Ok();
  }

 private:
  bool skipped(const std::string& name) const {
    return std::any_of(skipped_.begin(), skipped_.end(), [&](const std::string& p) { return name.rfind(p, 0) == 0; });
  }

  const Checkpoint& ck_;
  std::set<std::string> taken_;
  std::vector<std::string> skipped_;
};

// Rows [first_row, first_row + rows) of a fused tensor, as a [rows, cols] matrix.
WeightView slice_rows(const TensorInfo* t, int64_t first_row, int64_t rows, int64_t cols) {
  WeightView v;
  v.dtype = t->dtype;
  v.rows = rows;
  v.cols = cols;
  v.data = static_cast<const char*>(t->data) + static_cast<size_t>(first_row * cols) * dtype_size(t->dtype);
  return v;
}

Status bind_experts(Binder& b, const ModelConfig& c, const std::string& p, LayerWeights* lw) {
  const int64_t E = c.num_experts, H = c.hidden_size, I = c.moe_intermediate_size;
  const bool mixtral = c.family == ModelFamily::kMixtral;
  lw->experts.resize(static_cast<size_t>(E));
  // transformers 5 in memory: fused [E, 2I, H] gate_up and [E, H, I] down under mlp.experts.
  const std::string fused = p + "mlp.experts.gate_up_proj";
  if (b.has(fused)) {
    JANUS_ASSIGN_OR_RETURN(const TensorInfo* gu, b.take_raw(fused, {E, 2 * I, H}));
    JANUS_ASSIGN_OR_RETURN(const TensorInfo* dn, b.take_raw(p + "mlp.experts.down_proj", {E, H, I}));
    JANUS_ASSIGN_OR_RETURN(lw->router, b.take(p + "mlp.gate.weight", E, H));
    for (int64_t e = 0; e < E; ++e) {
      ExpertWeights& ew = lw->experts[static_cast<size_t>(e)];
      ew.gate = slice_rows(gu, e * 2 * I, I, H);
      ew.up = slice_rows(gu, e * 2 * I + I, I, H);
      ew.down = slice_rows(dn, e * H, H, I);
    }
    return Status::Ok();
  }
  const std::string moe = p + (mixtral ? "block_sparse_moe." : "mlp.");
  JANUS_ASSIGN_OR_RETURN(lw->router, b.take(moe + "gate.weight", E, H));
  for (int64_t e = 0; e < E; ++e) {
    ExpertWeights& ew = lw->experts[static_cast<size_t>(e)];
    const std::string x = moe + "experts." + std::to_string(e) + ".";
    JANUS_ASSIGN_OR_RETURN(ew.gate, b.take(x + (mixtral ? "w1.weight" : "gate_proj.weight"), I, H));
    JANUS_ASSIGN_OR_RETURN(ew.up, b.take(x + (mixtral ? "w3.weight" : "up_proj.weight"), I, H));
    JANUS_ASSIGN_OR_RETURN(ew.down, b.take(x + (mixtral ? "w2.weight" : "down_proj.weight"), H, I));
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<Model>> Model::load(const std::string& dir) {
  auto m = std::shared_ptr<Model>(new Model());
  m->dir_ = dir;
  JANUS_ASSIGN_OR_RETURN(m->config_, load_model_config(dir));
  JANUS_ASSIGN_OR_RETURN(m->checkpoint_, Checkpoint::open(dir));
  const ModelConfig& c = m->config_;
  Binder b(m->checkpoint_);
  ModelWeights& w = m->weights_;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  JANUS_ASSIGN_OR_RETURN(w.embed, b.take("model.embed_tokens.weight", V, H));
  JANUS_ASSIGN_OR_RETURN(w.final_norm, b.take("model.norm.weight", 1, H));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    JANUS_ASSIGN_OR_RETURN(w.lm_head, b.take("lm_head.weight", V, H));
  }
  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    JANUS_ASSIGN_OR_RETURN(lw.input_norm, b.take(p + "input_layernorm.weight", 1, H));
    JANUS_ASSIGN_OR_RETURN(lw.post_norm, b.take(p + "post_attention_layernorm.weight", 1, H));
    if (c.mla()) {
      const int64_t heads = c.num_heads, L = c.kv_lora_rank;
      if (c.q_lora_rank > 0) {
        JANUS_ASSIGN_OR_RETURN(lw.q_a, b.take(p + "self_attn.q_a_proj.weight", c.q_lora_rank, H));
        JANUS_ASSIGN_OR_RETURN(lw.q_a_norm, b.take(p + "self_attn.q_a_layernorm.weight", 1, c.q_lora_rank));
        JANUS_ASSIGN_OR_RETURN(lw.q_b, b.take(p + "self_attn.q_b_proj.weight", heads * c.qk_head_dim(), c.q_lora_rank));
      } else {
        JANUS_ASSIGN_OR_RETURN(lw.q, b.take(p + "self_attn.q_proj.weight", heads * c.qk_head_dim(), H));
      }
      JANUS_ASSIGN_OR_RETURN(lw.kv_a, b.take(p + "self_attn.kv_a_proj_with_mqa.weight", L + c.qk_rope_head_dim, H));
      JANUS_ASSIGN_OR_RETURN(lw.kv_a_norm, b.take(p + "self_attn.kv_a_layernorm.weight", 1, L));
      JANUS_ASSIGN_OR_RETURN(lw.kv_b, b.take(p + "self_attn.kv_b_proj.weight", heads * (c.qk_nope_head_dim + c.v_head_dim), L));
      JANUS_ASSIGN_OR_RETURN(lw.o, b.take(p + "self_attn.o_proj.weight", H, heads * c.v_head_dim));
    } else {
      JANUS_ASSIGN_OR_RETURN(lw.q, b.take(p + "self_attn.q_proj.weight", c.q_dim(), H));
      JANUS_ASSIGN_OR_RETURN(lw.k, b.take(p + "self_attn.k_proj.weight", c.kv_dim(), H));
      JANUS_ASSIGN_OR_RETURN(lw.v, b.take(p + "self_attn.v_proj.weight", c.kv_dim(), H));
      JANUS_ASSIGN_OR_RETURN(lw.o, b.take(p + "self_attn.o_proj.weight", H, c.q_dim()));
    }
    if (c.qkv_bias) {
      JANUS_ASSIGN_OR_RETURN(lw.q_bias, b.take(p + "self_attn.q_proj.bias", 1, c.q_dim()));
      JANUS_ASSIGN_OR_RETURN(lw.k_bias, b.take(p + "self_attn.k_proj.bias", 1, c.kv_dim()));
      JANUS_ASSIGN_OR_RETURN(lw.v_bias, b.take(p + "self_attn.v_proj.bias", 1, c.kv_dim()));
    }
    if (c.qk_norm) {
      JANUS_ASSIGN_OR_RETURN(lw.q_norm, b.take(p + "self_attn.q_norm.weight", 1, c.head_dim));
      JANUS_ASSIGN_OR_RETURN(lw.k_norm, b.take(p + "self_attn.k_norm.weight", 1, c.head_dim));
    }
    if (c.qk_norm_full) {
      JANUS_ASSIGN_OR_RETURN(lw.q_norm, b.take(p + "self_attn.q_norm.weight", 1, c.q_dim()));
      JANUS_ASSIGN_OR_RETURN(lw.k_norm, b.take(p + "self_attn.k_norm.weight", 1, c.kv_dim()));
    }
    lw.sparse = c.is_sparse(l);
    if (lw.sparse) {
      JANUS_TRY(bind_experts(b, c, p, &lw));
      if (c.sigmoid_gate) {  // a buffer of the router, saved beside its weight
        JANUS_ASSIGN_OR_RETURN(lw.router_bias, b.take(p + "mlp.gate.e_score_correction_bias", 1, c.num_experts));
      }
      if (c.has_shared_expert()) {
        const int64_t I = c.shared_expert_intermediate_size;
        // Qwen2-MoE: one gated mlp.shared_expert; DeepSeek: mlp.shared_experts, all of them as one MLP.
        const std::string s = p + (c.shared_expert_gate ? "mlp.shared_expert." : "mlp.shared_experts.");
        JANUS_ASSIGN_OR_RETURN(lw.shared.gate, b.take(s + "gate_proj.weight", I, H));
        JANUS_ASSIGN_OR_RETURN(lw.shared.up, b.take(s + "up_proj.weight", I, H));
        JANUS_ASSIGN_OR_RETURN(lw.shared.down, b.take(s + "down_proj.weight", H, I));
        if (c.shared_expert_gate) {
          // [1, H] on disk: a Linear(hidden, 1) weight, not a vector.
          JANUS_ASSIGN_OR_RETURN(const TensorInfo* g, b.take_raw(p + "mlp.shared_expert_gate.weight", {1, H}));
          lw.shared_gate = WeightView{g->data, g->dtype, 1, H};
        }
      }
    } else {
      const int64_t I = c.intermediate_size;
      JANUS_ASSIGN_OR_RETURN(lw.dense.gate, b.take(p + "mlp.gate_proj.weight", I, H));
      JANUS_ASSIGN_OR_RETURN(lw.dense.up, b.take(p + "mlp.up_proj.weight", I, H));
      JANUS_ASSIGN_OR_RETURN(lw.dense.down, b.take(p + "mlp.down_proj.weight", H, I));
    }
  }
  for (int i = 0; i < c.num_nextn_predict_layers; ++i) b.skip_prefix("model.layers." + std::to_string(c.num_layers + i) + ".");
  JANUS_TRY(b.check_nothing_left());
  return m;
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : checkpoint_.tensors()) n += t.nbytes;
  return n;
}

size_t Model::expert_bytes() const {
  size_t n = 0;
  for (const LayerWeights& l : weights_.layers)
    for (const ExpertWeights& e : l.experts) n += e.gate.nbytes() + e.up.nbytes() + e.down.nbytes();
  return n;
}

}  // namespace janus
