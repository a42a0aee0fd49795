// janus._janus.Tokenizer: runtime/text's tokenizers and chat templates.
#include <optional>

#include "python/src/bindings.h"
#include "python/src/common.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"

namespace janus::python {

namespace {

class PyTokenizer {
 public:
  explicit PyTokenizer(const std::string& dir) : dir_(dir) {
    tok_ = unwrap(text::Tokenizer::load(dir));
    Result<std::string> source = text::load_chat_template(dir);
    if (source.ok()) {
      Result<text::ChatTemplate> t = text::ChatTemplate::parse(*source);
      if (t.ok()) tmpl_ = std::move(*t);
      else template_error_ = t.status();
    } else {
      template_error_ = source.status();
    }
  }

  std::vector<int32_t> encode(const std::string& s, bool add_special_tokens) const {
    Result<std::vector<int32_t>> r = [&] {
      py::gil_scoped_release nogil;
      return tok_->encode(s, add_special_tokens);
    }();
    return unwrap(std::move(r));
  }
  py::str decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
    std::string s = unwrap(tok_->decode(ids, skip_special_tokens));
    return py::str(s);
  }
  // messages and extra variables come as JSON text (the Python side dumps them).
  std::string apply(const std::string& messages_json, bool add_generation_prompt, const std::string& extra_json) const {
    if (!tmpl_) raise(template_error_.with_context("the tokenizer in " + dir_ + " has no usable chat template"));
    const std::string bos = tok_->bos_id() ? tok_->id_to_token(*tok_->bos_id()) : "";
    const auto eos_ids = tok_->eos_ids();
    const std::string eos = eos_ids.empty() ? "" : tok_->id_to_token(eos_ids.front());
    return unwrap(tmpl_->apply(messages_json, add_generation_prompt, bos, eos, extra_json));
  }
  const text::Tokenizer& tok() const { return *tok_; }

 private:
  std::string dir_;
  std::unique_ptr<text::Tokenizer> tok_;
  std::optional<text::ChatTemplate> tmpl_;
  Status template_error_;
};

}  // namespace

void bind_text(py::module_& m) {
  py::class_<PyTokenizer>(m, "Tokenizer")
      .def(py::init<const std::string&>(), py::arg("model_dir"))
      .def("encode", &PyTokenizer::encode, py::arg("text"), py::arg("add_special_tokens") = true)
      .def("decode", &PyTokenizer::decode, py::arg("ids"), py::arg("skip_special_tokens") = false)
      .def("apply_chat_template_json", &PyTokenizer::apply, py::arg("messages_json"), py::arg("add_generation_prompt") = false,
           py::arg("extra_json") = "")
      .def_property_readonly("vocab_size", [](const PyTokenizer& t) { return t.tok().vocab_size(); })
      .def_property_readonly("bos_id", [](const PyTokenizer& t) { return t.tok().bos_id(); })
      .def_property_readonly("eos_ids", [](const PyTokenizer& t) { return t.tok().eos_ids(); })
      .def("token_to_id", [](const PyTokenizer& t, const std::string& s) { return t.tok().token_to_id(s); }, py::arg("token"))
      .def("id_to_token", [](const PyTokenizer& t, int32_t id) { return t.tok().id_to_token(id); }, py::arg("id"))
      .def("is_special", [](const PyTokenizer& t, int32_t id) { return t.tok().is_special(id); }, py::arg("id"));
}

}  // namespace janus::python
