// janus._janus.Engine: the single-process reference engine (runtime/model/reference_engine.h).
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

  py::list generate_batch(const std::vector<GenerateRequest>& reqs) {
    for (size_t i = 0; i < reqs.size(); ++i) check(validate_request(model_->config(), reqs[i], "prompt " + std::to_string(i)));
    Result<std::vector<GenerateResult>> out = [&] {
      py::gil_scoped_release nogil;
      return engine_->generate(reqs);
    }();
    std::vector<GenerateResult> results = unwrap(std::move(out));
    py::list l;
    for (size_t i = 0; i < results.size(); ++i) l.append(result_dict(std::move(results[i]), reqs[i].logprobs >= 0));
    return l;
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
    return owning_array(std::move(unwrap(std::move(out))[0].last_logits));
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
          [](Engine& e, std::vector<int32_t> ids, const py::kwargs& kw) {
            return py::object(e.generate_batch({make_request(std::move(ids), kw, "generate")})[0]);
          },
          py::arg("ids"))
      .def(
          "generate_batch",
          [](Engine& e, std::vector<std::vector<int32_t>> prompts, const py::kwargs& kw) {
            std::vector<GenerateRequest> reqs;
            for (auto& p : prompts) reqs.push_back(make_request(std::move(p), kw, "generate_batch"));
            return e.generate_batch(reqs);
          },
          py::arg("prompts"))
      .def("logits", &Engine::logits, py::arg("ids"))
      .def_property_readonly("model_dir", &Engine::dir)
      .def_property_readonly("vocab_size", [](const Engine& e) { return e.config().vocab_size; })
      .def_property_readonly("num_layers", [](const Engine& e) { return e.config().num_layers; })
      .def_property_readonly("num_experts", [](const Engine& e) { return e.config().num_experts; })
      .def_property_readonly("top_k", [](const Engine& e) { return e.config().top_k; });
}

}  // namespace janus::python
