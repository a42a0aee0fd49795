// janus._janus.Engine: the single-process reference engine (runtime/model/reference_engine.h).
#include <optional>

#include "python/src/bindings.h"
#include "python/src/common.h"
#include "runtime/model/reference_engine.h"

namespace janus::python {

namespace {

class Engine {
 public:
  Engine(const std::string& model_dir, const std::string& device) {
    if (device != "cpu")
      raise(invalid_argument("Engine: the reference engine runs on \"cpu\" only, got device \"" + device +
                             "\" (a Deployment runs on CUDA devices)"));
    Result<std::shared_ptr<Model>> m = [&] {
      py::gil_scoped_release nogil;
      return Model::load(model_dir);
    }();
    model_ = unwrap(std::move(m));
    engine_ = std::make_unique<ReferenceEngine>(model_);
  }

  std::vector<std::vector<int32_t>> generate_batch(const std::vector<GenerateRequest>& reqs) {
    for (size_t i = 0; i < reqs.size(); ++i) check(validate_request(model_->config(), reqs[i], "prompt " + std::to_string(i)));
    Result<std::vector<GenerateResult>> out = [&] {
      py::gil_scoped_release nogil;
      return engine_->generate(reqs);
    }();
    std::vector<std::vector<int32_t>> tokens;
    for (GenerateResult& r : unwrap(std::move(out))) tokens.push_back(std::move(r.tokens));
    return tokens;
  }

  py::array_t<float> logits(std::vector<int32_t> ids) {
    GenerateRequest r;
    r.prompt = std::move(ids);
    r.max_new_tokens = 1;
    r.want_prompt_logits = true;
    r.stop_at_eos = false;
    check(validate_request(model_->config(), r, "prompt"));
    Result<std::vector<GenerateResult>> out = [&] {
      py::gil_scoped_release nogil;
      return engine_->generate({r});
    }();
    auto results = unwrap(std::move(out));
    // The array takes over the vector's memory: no copy.
    auto* v = new std::vector<float>(std::move(results[0].last_logits));
    py::capsule owner(v, [](void* p) { delete static_cast<std::vector<float>*>(p); });
    return py::array_t<float>({static_cast<py::ssize_t>(v->size())}, {static_cast<py::ssize_t>(sizeof(float))}, v->data(), owner);
  }

  const ModelConfig& config() const { return model_->config(); }
  const std::string& dir() const { return model_->dir(); }

 private:
  std::shared_ptr<Model> model_;
  std::unique_ptr<ReferenceEngine> engine_;
};

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<Engine>(m, "Engine")
      .def(py::init<const std::string&, const std::string&>(), py::arg("model_dir"), py::arg("device") = "cpu")
      .def(
          "generate",
          [](Engine& e, std::vector<int32_t> ids, int max_new_tokens, double temperature, std::optional<uint64_t> seed, double top_p,
             int top_k, bool stop_at_eos) {
            return e.generate_batch({make_request(std::move(ids), max_new_tokens, temperature, seed, top_p, top_k, stop_at_eos)})[0];
          },
          py::arg("ids"), py::arg("max_new_tokens") = 16, py::arg("temperature") = 0.0, py::arg("seed") = py::none(),
          py::arg("top_p") = 1.0, py::arg("top_k") = 0, py::arg("stop_at_eos") = true)
      .def(
          "generate_batch",
          [](Engine& e, std::vector<std::vector<int32_t>> prompts, int max_new_tokens, double temperature, std::optional<uint64_t> seed,
             double top_p, int top_k, bool stop_at_eos) {
            std::vector<GenerateRequest> reqs;
            for (auto& p : prompts) reqs.push_back(make_request(std::move(p), max_new_tokens, temperature, seed, top_p, top_k, stop_at_eos));
            return e.generate_batch(reqs);
          },
          py::arg("prompts"), py::arg("max_new_tokens") = 16, py::arg("temperature") = 0.0, py::arg("seed") = py::none(),
          py::arg("top_p") = 1.0, py::arg("top_k") = 0, py::arg("stop_at_eos") = true)
      .def("logits", &Engine::logits, py::arg("ids"))
      .def_property_readonly("model_dir", &Engine::dir)
      .def_property_readonly("vocab_size", [](const Engine& e) { return e.config().vocab_size; })
      .def_property_readonly("num_layers", [](const Engine& e) { return e.config().num_layers; })
      .def_property_readonly("num_experts", [](const Engine& e) { return e.config().num_experts; })
      .def_property_readonly("top_k", [](const Engine& e) { return e.config().top_k; });
}

GenerateRequest make_request(std::vector<int32_t> ids, int max_new_tokens, double temperature, std::optional<uint64_t> seed,
                             double top_p, int top_k, bool stop_at_eos) {
  GenerateRequest r;
  r.prompt = std::move(ids);
  r.max_new_tokens = max_new_tokens;
  r.sampling.temperature = static_cast<float>(temperature);
  r.sampling.top_p = static_cast<float>(top_p);
  r.sampling.top_k = top_k;
  r.sampling.seed = seed.value_or(0);
  r.stop_at_eos = stop_at_eos;
  return r;
}

}  // namespace janus::python
