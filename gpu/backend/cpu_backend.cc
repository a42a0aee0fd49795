#include "gpu/backend/cpu_backend.h"

#include <algorithm>

#include "runtime/model/cpu_forward.h"

namespace janus {
namespace {

Status require_host(const Tensor& t, const char* what) {
  if (!t.device.is_cpu()) return invalid_argument(std::string("CPU backend: ") + what + " is on " + t.device.name());
  return Status::Ok();
}

class CpuAttention final : public AttentionBackend {
 public:
  CpuAttention(std::shared_ptr<const Model> model, const BackendOptions& o) : fwd_(std::move(model)), kv_(o.kv) {}

  Device device() const override { return {}; }
  PagedKvCache& kv() override { return kv_; }

  Status embed(const std::vector<int32_t>& tokens, Tensor* x) override {
    *x = Tensor::host(DType::kF32, static_cast<int64_t>(tokens.size()), fwd_.config().hidden_size);
    fwd_.embed(tokens.data(), x->rows, x->as<float>());
    return Status::Ok();
  }

  Status attention(int layer, Tensor& x, const std::vector<cpu::KvRow>& rows, Tensor* h) override {
    JANUS_TRY(require_host(x, "x"));
    *h = Tensor::host(DType::kF32, x.rows, x.cols);
    fwd_.attention(layer, x.as<float>(), x.rows, rows.data(), kv_, h->as<float>());
    return Status::Ok();
  }

  Status dense_mlp(int layer, const Tensor& h, Tensor& x) override {
    JANUS_TRY(require_host(h, "h"));
    fwd_.dense_mlp(layer, h.as<float>(), h.rows, x.as<float>());
    return Status::Ok();
  }

  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    JANUS_TRY(require_host(h, "h"));
    const size_t n = static_cast<size_t>(h.rows * fwd_.config().top_k);
    ids->resize(n);
    w->resize(n);
    fwd_.route(layer, h.as<float>(), h.rows, ids->data(), w->data());
    return Status::Ok();
  }

  Status shared_expert(int layer, const Tensor& h, Tensor* partial) override {
    JANUS_TRY(require_host(h, "h"));
    *partial = Tensor::host(DType::kF64, h.rows, h.cols);
    fwd_.shared_expert(layer, h.as<float>(), h.rows, partial->as<double>());
    return Status::Ok();
  }

  Status add_moe_output(const std::vector<Tensor>& partials, Tensor& x) override {
    // Sum the instances' partial sums in double, in instance order, then add to x once:
    // the reference engine's arithmetic up to double rounding (see cpu_forward.h).
    const int64_t n = x.rows * x.cols;
    std::vector<double> acc(static_cast<size_t>(n), 0.0);
    for (const Tensor& p : partials) {
      JANUS_TRY(require_host(p, "MoE partial sums"));
      if (p.rows != x.rows || p.cols != x.cols)
        return internal_error("CPU backend: partial sums [" + std::to_string(p.rows) + ", " + std::to_string(p.cols) +
                              "] do not match the activations [" + std::to_string(x.rows) + ", " + std::to_string(x.cols) + "]");
      if (p.dtype == DType::kF64)
        for (int64_t i = 0; i < n; ++i) acc[static_cast<size_t>(i)] += p.as<double>()[i];
      else
        for (int64_t i = 0; i < n; ++i) acc[static_cast<size_t>(i)] += p.as<float>()[i];
    }
    fwd_.add_moe_output(acc.data(), x.rows, x.as<float>());
    return Status::Ok();
  }

  Status sample(const Tensor& x, const std::vector<SampleRow>& rows, std::vector<int32_t>* tokens,
                std::vector<std::vector<float>>* logits) override {
    JANUS_TRY(require_host(x, "x"));
    const int64_t H = x.cols, V = fwd_.config().vocab_size;
    std::vector<float> xs(rows.size() * static_cast<size_t>(H)), lg(rows.size() * static_cast<size_t>(V));
    for (size_t i = 0; i < rows.size(); ++i) std::copy_n(x.as<float>() + rows[i].row * H, H, xs.data() + i * H);
    fwd_.logits(xs.data(), static_cast<int64_t>(rows.size()), lg.data());
    tokens->resize(rows.size());
    logits->clear();
    for (size_t i = 0; i < rows.size(); ++i) {
      const float* l = lg.data() + i * V;
      (*tokens)[i] = sample_token(l, static_cast<int>(V), rows[i].params, rows[i].step);
      if (rows[i].want_logits) logits->emplace_back(l, l + V);
    }
    return Status::Ok();
  }

 private:
  CpuForward fwd_;
  PagedKvCache kv_;
};

class CpuRouter final : public RouterBackend {
 public:
  explicit CpuRouter(std::shared_ptr<const Model> model) : fwd_(std::move(model)) {}
  Device device() const override { return {}; }
  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    JANUS_TRY(require_host(h, "h"));
    const size_t n = static_cast<size_t>(h.rows * fwd_.config().top_k);
    ids->resize(n);
    w->resize(n);
    fwd_.route(layer, h.as<float>(), h.rows, ids->data(), w->data());
    return Status::Ok();
  }

 private:
  CpuForward fwd_;
};

class CpuExperts final : public ExpertBackend {
 public:
  explicit CpuExperts(std::shared_ptr<const Model> model) : fwd_(std::move(model)) {}
  Device device() const override { return {}; }
  DType partial_dtype() const override { return DType::kF64; }
  // The CPU reads weights in place from the mapped checkpoint: nothing to load.
  Status set_experts(const std::vector<int32_t>&) override { return Status::Ok(); }
  Status run(int layer, const Tensor& h, const std::vector<ExpertWork>& work, Tensor* partial) override {
    JANUS_TRY(require_host(h, "h"));
    *partial = Tensor::host(DType::kF64, h.rows, h.cols);
    fwd_.experts(layer, h.as<float>(), h.rows, work.data(), static_cast<int64_t>(work.size()), partial->as<double>());
    return Status::Ok();
  }

 private:
  CpuForward fwd_;
};

}  // namespace

std::unique_ptr<AttentionBackend> make_cpu_attention_backend(std::shared_ptr<const Model> model, const BackendOptions& o) {
  return std::make_unique<CpuAttention>(std::move(model), o);
}
std::unique_ptr<RouterBackend> make_cpu_router_backend(std::shared_ptr<const Model> model) {
  return std::make_unique<CpuRouter>(std::move(model));
}
std::unique_ptr<ExpertBackend> make_cpu_expert_backend(std::shared_ptr<const Model> model) {
  return std::make_unique<CpuExperts>(std::move(model));
}

}  // namespace janus
