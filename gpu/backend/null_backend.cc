#include "gpu/backend/null_backend.h"

namespace janus {
namespace {

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

// k distinct experts for a row: a pseudo-random start and consecutive ids.
void null_route(const ModelConfig& c, int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) {
  const int k = c.top_k, E = c.num_experts;
  ids->resize(static_cast<size_t>(h.rows * k));
  w->assign(ids->size(), 1.0f / static_cast<float>(k));
  const uint64_t salt = static_cast<uint64_t>(h.rows) << 20;
  for (int64_t r = 0; r < h.rows; ++r) {
    const int base = static_cast<int>(mix(salt + static_cast<uint64_t>(layer) * 1000003u + static_cast<uint64_t>(r)) % E);
    for (int j = 0; j < k; ++j) (*ids)[static_cast<size_t>(r * k + j)] = (base + j) % E;
  }
}

Tensor uninitialised(DType dtype, int64_t rows, int64_t cols) {
  Tensor t;
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  std::shared_ptr<char[]> mem(new char[std::max<size_t>(t.bytes(), 1)]);
  t.data = mem.get();
  t.storage = std::shared_ptr<void>(mem, mem.get());
  return t;
}

class NullAttention final : public AttentionBackend {
 public:
  NullAttention(std::shared_ptr<const Model> m, const BackendOptions& o) : model_(std::move(m)), kv_(without_storage(o.kv)) {}
  Device device() const override { return {}; }
  PagedKvCache& kv() override { return kv_; }
  Status embed(const std::vector<int32_t>& tokens, Tensor* x) override {
    *x = uninitialised(DType::kF32, static_cast<int64_t>(tokens.size()), model_->config().hidden_size);
    return Status::Ok();
  }
  Status attention(int, Tensor& x, const std::vector<cpu::KvRow>&, Tensor* h) override {
    *h = uninitialised(DType::kF32, x.rows, x.cols);
    return Status::Ok();
  }
  Status dense_mlp(int, const Tensor&, Tensor&) override { return Status::Ok(); }
  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    null_route(model_->config(), layer, h, ids, w);
    return Status::Ok();
  }
  Status shared_expert(int, const Tensor& h, Tensor* partial) override {
    *partial = uninitialised(DType::kF64, h.rows, h.cols);
    return Status::Ok();
  }
  Status add_moe_output(const std::vector<Tensor>&, Tensor&) override { return Status::Ok(); }
  Status sample(const Tensor&, const std::vector<SampleRow>& rows, std::vector<int32_t>* tokens,
                std::vector<std::vector<float>>* logits) override {
    const int V = model_->config().vocab_size;
    tokens->resize(rows.size());
    logits->clear();
    for (size_t i = 0; i < rows.size(); ++i) {
      (*tokens)[i] = static_cast<int32_t>(mix(rows[i].step * 7919u + static_cast<uint64_t>(rows[i].row)) % static_cast<uint64_t>(V));
      if (rows[i].want_logits) logits->emplace_back(static_cast<size_t>(V), 0.f);
    }
    return Status::Ok();
  }

 private:
  static KvCacheShape without_storage(KvCacheShape s) {
    s.allocate_storage = false;
    return s;
  }
  std::shared_ptr<const Model> model_;
  PagedKvCache kv_;
};

class NullRouter final : public RouterBackend {
 public:
  explicit NullRouter(std::shared_ptr<const Model> m) : model_(std::move(m)) {}
  Device device() const override { return {}; }
  Status route(int layer, const Tensor& h, std::vector<int32_t>* ids, std::vector<float>* w) override {
    null_route(model_->config(), layer, h, ids, w);
    return Status::Ok();
  }

 private:
  std::shared_ptr<const Model> model_;
};

class NullExperts final : public ExpertBackend {
 public:
  explicit NullExperts(std::shared_ptr<const Model> m) : model_(std::move(m)) {}
  Device device() const override { return {}; }
  DType partial_dtype() const override { return DType::kF64; }
  Status set_experts(const std::vector<int32_t>&) override { return Status::Ok(); }
  Status run(int, const Tensor& h, const std::vector<ExpertWork>&, Tensor* partial) override {
    *partial = uninitialised(DType::kF64, h.rows, h.cols);
    return Status::Ok();
  }

 private:
  std::shared_ptr<const Model> model_;
};

}  // namespace

std::unique_ptr<AttentionBackend> make_null_attention_backend(std::shared_ptr<const Model> m, const BackendOptions& o) {
  return std::make_unique<NullAttention>(std::move(m), o);
}
std::unique_ptr<RouterBackend> make_null_router_backend(std::shared_ptr<const Model> m) {
  return std::make_unique<NullRouter>(std::move(m));
}
std::unique_ptr<ExpertBackend> make_null_expert_backend(std::shared_ptr<const Model> m) {
  return std::make_unique<NullExperts>(std::move(m));
}

}  // namespace janus
